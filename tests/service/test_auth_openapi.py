"""The API key in the OpenAPI document: both ways of sending it declared as security schemes,
`security` on exactly the operations that answer 401 without a key (which depends on
GRN_READ_ACCESS), and the key accepted as a header or a bearer token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from servers import Served, prepared_database

from service.api.app import create_app
from service.settings import Settings

ADMIN_KEY = "admin-key-0123456789abcdef"
WRITE_KEY = "write-key-0123456789abcdef"
SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {"type": "http", "scheme": "bearer"},
}
WRITES = {
    ("post", "/scenes"), ("patch", "/scenes/{scene_id}"), ("delete", "/scenes/{scene_id}"),
    ("post", "/concepts"), ("patch", "/concepts/{name}"), ("delete", "/concepts/{name}"),
}  # fmt: skip
READS = {("post", "/search"), ("post", "/classify"), ("get", "/labels"), ("get", "/metrics")}
OPEN = {("get", "/healthz"), ("get", "/readyz")}


@pytest.fixture(scope="module", params=["open", "key"])
def keyed(
    request: pytest.FixtureRequest,
    served: Served,
    ucm_root: Path,
    ucm_subset: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TestClient, str]]:
    """An app over the UCM subset with an admin key and a write key, its reads open or keyed:
    a client of it and its GRN_READ_ACCESS."""
    workdir = tmp_path_factory.mktemp(f"auth-{request.param}")
    url = f"sqlite:///{workdir / 'grn.db'}"
    prepared_database(url, ucm_root, ucm_subset)
    settings = Settings(
        database_url=url,
        model_path=served.model,
        index_root=served.index_root,
        thumbnail_dir=workdir / "thumbnails",
        store_dir=workdir / "store",
        api_key=ADMIN_KEY,  # type: ignore[arg-type]
        write_key=WRITE_KEY,  # type: ignore[arg-type]
        read_access=request.param,
        index_poll_seconds=0,
        embedded_worker=False,
    )
    with TestClient(create_app(settings)) as client:
        yield client, request.param


def operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    }


def test_the_document_declares_the_key_where_a_request_needs_it(
    keyed: tuple[TestClient, str],
) -> None:
    client, read_access = keyed
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert set(schemes) == set(SCHEMES)
    for name, scheme in schemes.items():
        assert scheme.pop("description") and scheme == SCHEMES[name], name
    declared = operations(spec)
    keyed_operations = {op for op, operation in declared.items() if "security" in operation}
    admin = {op for op in declared if op[1].startswith("/admin/")}
    assert len(admin) >= 8 and admin | WRITES <= keyed_operations
    assert not OPEN & keyed_operations
    assert (READS & keyed_operations) == (READS if read_access == "key" else set())
    for operation in keyed_operations:  # either scheme will do
        assert declared[operation]["security"] == [{"ApiKey": []}, {"Bearer": []}], operation
    # what the document says is what the service does: without a key, 401 exactly there
    for method, path in declared:
        concrete = path.replace("{scene_id}", "1").replace("{job_id}", "1")
        response = client.request(method, concrete.replace("{name}", "x"))
        needs_key = response.status_code == 401
        assert needs_key == ((method, path) in keyed_operations), (method, path, response.text)
        if needs_key:
            assert response.headers["www-authenticate"] == "Bearer"
            assert "`X-API-Key` or `Authorization: Bearer`" in response.json()["message"]


def test_the_key_passes_as_a_header_or_a_bearer_token(keyed: tuple[TestClient, str]) -> None:
    client, read_access = keyed
    for headers in (
        {"X-API-Key": ADMIN_KEY},
        {"Authorization": f"Bearer {ADMIN_KEY}"},
        {"Authorization": f"bearer  {ADMIN_KEY}"},  # the scheme in any case, spaces trimmed
    ):
        assert client.get("/admin/jobs", headers=headers).status_code == 200, headers
        labels = client.get("/labels", headers=headers)
        assert labels.status_code == 200 and labels.json()["labels"], headers
    for headers in ({"X-API-Key": WRITE_KEY}, {"Authorization": f"Bearer {WRITE_KEY}"}):
        past_the_key = client.delete("/scenes/9999999", headers=headers)
        assert past_the_key.status_code == 404, past_the_key.text
        assert client.get("/admin/jobs", headers=headers).status_code == 403  # writes only
    # a header key wins over a bearer token, as before
    both = {"X-API-Key": "wrong-key", "Authorization": f"Bearer {ADMIN_KEY}"}
    assert client.get("/admin/jobs", headers=both).status_code == 403
    for headers in ({"X-API-Key": "wrong-key"}, {"Authorization": "Bearer wrong-key"}):
        wrong = client.get("/admin/jobs", headers=headers)
        assert wrong.status_code == 403 and wrong.json()["message"] == "the API key is not valid"
        read = client.get("/labels", headers=headers)
        assert read.status_code == (403 if read_access == "key" else 200)
    for headers in ({"Authorization": f"Basic {ADMIN_KEY}"}, {"Authorization": "Bearer"}):
        assert client.get("/admin/jobs", headers=headers).status_code == 401, headers


def test_with_no_key_configured_keyed_operations_are_refused() -> None:
    client = TestClient(create_app(Settings(api_key="", write_key="")))  # type: ignore[arg-type]  # no lifespan: the key is checked first
    spec = client.get("/openapi.json").json()
    assert spec["paths"]["/admin/jobs"]["get"]["security"] == [{"ApiKey": []}, {"Bearer": []}]
    refused = client.get("/admin/jobs", headers={"X-API-Key": ADMIN_KEY})
    assert refused.status_code == 403 and "no GRN_API_KEY is configured" in refused.text
    written = client.delete("/scenes/1", headers={"Authorization": f"Bearer {WRITE_KEY}"})
    assert written.status_code == 403 and "GRN_API_KEY or GRN_WRITE_KEY" in written.text
