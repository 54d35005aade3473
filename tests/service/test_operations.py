"""Operations: metrics, request ids and JSON logs, access control, CORS, and admin jobs
started over HTTP, on a real server process."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from servers import (
    LiveServer,
    Served,
    copy_served,
    ended_job,
    eventually,
    prepared_database,
    server_env,
)

from model.archive import load_archive
from service.api.app import create_app
from service.api.security import InsecureSettingsError
from service.settings import Settings

KEY = "a-test-key-of-some-length"


@pytest.fixture(scope="module")
def ops(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, Path]]:
    workdir = tmp_path_factory.mktemp("ops")
    mine = copy_served(served, workdir)
    # a small archive folder of its own, for the admin import and reindex jobs
    archive = workdir / "archive"
    subset = load_archive(ucm_root, ucm_subset)
    for scene in subset.scenes[:100]:
        target = archive / "images" / scene.folder / scene.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(scene.path, target)
    lines = ucm_subset.read_text().splitlines()
    (archive / "labels.csv").write_text("\n".join(lines[:101]) + "\n")
    url = f"sqlite:///{workdir / 'grn.db'}"
    prepared_database(url, archive, archive / "labels.csv")
    env = server_env(
        mine,
        url,
        workdir,
        GRN_API_KEY=KEY,
        GRN_ARCHIVE_DIR=str(archive),
        GRN_CORS_ORIGINS='["http://maps.example.org"]',
        GRN_LOG_FORMAT="json",
    )
    with LiveServer(env, workdir / "server.log") as server:
        yield server, archive


def test_metrics_count_requests_batches_and_the_index(ops: tuple[LiveServer, Path]) -> None:
    server, archive = ops
    image = next((archive / "images").rglob("*.jpg")).read_bytes()
    with server.client() as client:
        for _ in range(3):
            assert client.post("/classify", files={"file": ("a.jpg", image)}).status_code == 200
        assert client.get("/scenes/1").status_code == 404
        text = client.get("/metrics").text
    assert 'grn_http_requests_total{method="POST",route="/classify",status="200"} 3.0' in text
    assert 'grn_http_requests_total{method="GET",route="/scenes/{scene_id}",status="404"}' in text
    assert 'grn_http_request_duration_seconds_bucket{le="0.5",method="POST",route="/classify"}' in (
        text
    )
    assert "grn_model_batch_size_count" in text and "grn_model_inference_seconds_sum" in text
    assert "grn_index_vectors 126.0" in text
    assert 'grn_index_info{index_version="' in text
    assert "grn_database_errors_total 0.0" in text


def test_request_ids_are_returned_and_logged_as_json(ops: tuple[LiveServer, Path]) -> None:
    server, _ = ops
    with server.client() as client:
        fresh = client.get("/labels")
        given = client.get("/labels", headers={"X-Request-ID": "trace-abc.123"})
        hostile = client.get("/labels", headers={"X-Request-ID": "bad id;" * 20})
    assert len(fresh.headers["x-request-id"]) == 32
    assert given.headers["x-request-id"] == "trace-abc.123"
    assert (
        hostile.headers["x-request-id"] != "bad id" and len(hostile.headers["x-request-id"]) == 32
    )

    def logged() -> list[dict[str, Any]]:
        text = server.log_path.read_text()
        whole = text[: text.rfind("\n") + 1].splitlines()  # not a line still being written
        lines = [json.loads(x) for x in whole if x.startswith("{")]
        return [x for x in lines if x.get("request_id") == "trace-abc.123"]

    mine = eventually(logged, "the request's log line")
    assert len(mine) == 1
    assert mine[0]["route"] == "/labels" and mine[0]["status"] == 200
    assert mine[0]["duration_ms"] > 0 and mine[0]["logger"] == "grn.requests"


def test_admin_endpoints_need_the_key(ops: tuple[LiveServer, Path]) -> None:
    server, _ = ops
    with server.client() as client:
        missing = client.post("/admin/reload")
        assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = client.post("/admin/reload", headers={"X-API-Key": "not-the-key"})
        assert wrong.status_code == 403 and wrong.json()["error"] == "forbidden"
        right = client.post("/admin/reload", headers={"Authorization": f"Bearer {KEY}"})
        assert right.status_code == 200 and right.json()["swapped"] is False
        assert client.get("/admin/jobs").status_code == 401
        assert client.get("/labels").status_code == 200  # reads are open by default


def test_cors_is_closed_except_for_configured_origins(ops: tuple[LiveServer, Path]) -> None:
    server, _ = ops
    preflight = {"Access-Control-Request-Method": "POST"}
    with server.client() as client:
        allowed = client.options(
            "/search", headers={"Origin": "http://maps.example.org", **preflight}
        )
        other = client.options("/search", headers={"Origin": "http://evil.example", **preflight})
        simple = client.get("/labels", headers={"Origin": "http://evil.example"})
    assert allowed.headers["access-control-allow-origin"] == "http://maps.example.org"
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-origin" not in simple.headers


def test_admin_import_and_reindex_jobs(ops: tuple[LiveServer, Path]) -> None:
    server, _ = ops
    auth = {"X-API-Key": KEY}
    with server.client() as client:
        before = client.get("/readyz").json()
        assert before["scenes"] == 100 and before["index_count"] == 126
        imported = client.post("/admin/import", headers=auth, json={})
        assert imported.status_code == 202, imported.text
        job = ended_job(client, imported.json()["id"], KEY)
        assert (
            job["status"] == "succeeded" and "imported 0 scenes (100 already" in job["output"][-1]
        )

        started = client.post("/admin/reindex", headers=auth, json={"incremental": True})
        assert started.status_code == 202
        again = client.post("/admin/reindex", headers=auth, json={})
        assert again.status_code == 409 and again.json()["error"] == "job_running"
        job = ended_job(client, started.json()["id"], KEY)
        assert job["status"] == "succeeded", job["output"]
        assert job["attempts"] == 1 and job["progress"] == 1.0 and job["worker"]
        after = client.get("/readyz").json()
        assert "grn_reloads_total 1.0" in client.get("/metrics").text
        # the 26 scenes not in this archive left the index, and the service took it up
        assert after["index_count"] == 100 and after["index_version"] != before["index_version"]
        assert after["model_version"] == before["model_version"]
        listed = client.get("/admin/jobs", headers=auth).json()
        assert [j["kind"] for j in listed[:2]] == ["reindex", "import"]
        bad = client.post("/admin/import", headers=auth, json={"archive": "/no/such/folder"})
        assert bad.status_code == 400 and bad.json()["error"] == "no_archive"
        assert client.get("/admin/jobs/999", headers=auth).status_code == 404


def test_keyed_reads_and_production_settings(served: Served, tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'x.db'}",
        model_path=served.model,
        index_root=served.index_root,
        api_key=KEY,  # type: ignore[arg-type]
        read_access="key",
        index_poll_seconds=0,
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/labels").status_code == 401
        assert client.get("/metrics", headers={"X-API-Key": "nope"}).status_code == 403
        assert client.get("/metrics", headers={"X-API-Key": KEY}).status_code == 200
        assert client.get("/healthz").status_code == 200  # probes stay open
        assert client.get("/").status_code == 200  # the page asks for the key itself
    for weak in ("", "change-me", "short"):
        with pytest.raises(InsecureSettingsError, match="GRN_API_KEY"):
            create_app(Settings(environment="production", api_key=weak))  # type: ignore[arg-type]
    create_app(Settings(environment="production", api_key=KEY))  # type: ignore[arg-type]
