"""Every endpoint through a real HTTP server process, on SQLite and on PostgreSQL."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from servers import LiveServer, Served

from model.archive import load_archive, scene_id
from service.storage.migrate import head_revision


def labels_of(subset, name: str) -> set[str]:  # type: ignore[no-untyped-def]
    scene = subset.scenes[subset.index_of(name)]
    return {n for n, v in zip(subset.label_names, scene.labels, strict=True) if v}


def assert_error(response, status: int, code: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"status", "error", "message"} and body["status"] == status
    assert body["message"]
    if code is not None:
        assert body["error"] == code, body
    return body


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 90, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_health_readiness_and_openapi(live: LiveServer, served: Served) -> None:
    with live.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready"
        assert ready["model_version"].startswith("grn-")
        assert ready["index_count"] == 126 and ready["scenes"] == 126
        assert ready["schema_revision"] == head_revision()
        spec = client.get("/openapi.json").json()
        assert {"/classify", "/search", "/scenes", "/labels", "/readyz"} <= set(spec["paths"])
        assert set(spec["paths"]["/search"]["post"]["requestBody"]["content"]) == {
            "application/json",
            "multipart/form-data",
        }
        assert client.get("/docs").status_code == 200
        assert_error(client.get("/no/such/route"), 404, "not_found")


def test_classify_one_and_several_images(live: LiveServer, subset) -> None:  # type: ignore[no-untyped-def]
    first, second = subset.scenes[0], subset.scenes[50]
    with live.client() as client:
        ready = client.get("/readyz").json()
        one = client.post("/classify", files={"file": (first.path.name, first.path.read_bytes())})
        assert one.status_code == 200, one.text
        body = one.json()
        assert [s["label"] for s in body["labels"]] == subset.label_names
        assert all(0.0 <= s["probability"] <= 1.0 for s in body["labels"])
        assert body["predicted"] == [s["label"] for s in body["labels"] if s["present"]]
        assert body["model_version"] == ready["model_version"] and body["elapsed_ms"] > 0
        both = client.post(
            "/classify",
            files=[
                ("file", (first.path.name, first.path.read_bytes())),
                ("file", (second.path.name, second.path.read_bytes())),
            ],
        ).json()
        assert [r["filename"] for r in both["results"]] == [first.path.name, second.path.name]
        got = [s["probability"] for s in both["results"][0]["labels"]]
        want = [s["probability"] for s in body["labels"]]
        np.testing.assert_allclose(got, want, atol=1e-5)  # batched as one, the same answer


def test_classify_refuses_bad_uploads(live: LiveServer, subset) -> None:  # type: ignore[no-untyped-def]
    jpeg = subset.scenes[0].path.read_bytes()
    with live.client() as client:
        assert_error(client.post("/classify", data={"k": "3"}), 400, "missing_file")
        assert_error(
            client.post("/classify", files={"file": ("x.jpg", b"not an image at all")}),
            400,
            "invalid_image",
        )
        assert_error(
            client.post("/classify", files={"file": ("cut.jpg", jpeg[: len(jpeg) // 3])}),
            400,
            "invalid_image",
        )
        assert_error(client.post("/classify", files={"file": ("e.png", b"")}), 400, "invalid_image")
        # 2 MiB request limit in these servers
        assert_error(
            client.post("/classify", files={"file": ("big.jpg", jpeg * 200)}), 413, "too_large"
        )
        # 4 megapixel limit: a 3000 x 3000 PNG of one colour is a small file
        assert_error(
            client.post("/classify", files={"file": ("huge.png", png_bytes(3000, 3000))}),
            413,
            "too_large",
        )
        assert_error(
            client.post("/classify", files=[("file", ("a.jpg", jpeg))] * 5), 400, "bad_multipart"
        )
        assert_error(client.post("/classify", files={"image": ("a.jpg", jpeg)}), 400)
        assert client.get("/readyz").status_code == 200  # and the server is still fine


def test_search_by_scene_id(live: LiveServer, subset) -> None:  # type: ignore[no-untyped-def]
    query = subset.scenes[10]
    qid = scene_id(query.name)
    with live.client() as client:
        body = client.post("/search", json={"scene_id": qid, "k": 5}).json()
        hits = body["hits"]
        assert len(hits) == 5 and body["total"] == 5 and body["query_id"] == str(qid)
        assert str(qid) not in [h["id"] for h in hits]  # the query itself is left out
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True)
        for hit in hits:
            assert hit["id"] == str(scene_id(hit["image"]))  # ids are strings of digits
            assert set(hit["labels"]) == labels_of(subset, hit["image"])
            assert hit["scene"] == subset.scenes[subset.index_of(hit["image"])].folder
        itself = client.post(
            "/search", json={"scene_id": qid, "k": 5, "include_query": True}
        ).json()["hits"]
        assert itself[0]["id"] == str(qid) and itself[0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert [h["id"] for h in itself[1:]] == [h["id"] for h in hits[:4]]
        image = client.get(hits[0]["image_url"])
        assert image.status_code == 200
        assert image.content == subset.scenes[subset.index_of(hits[0]["image"])].path.read_bytes()
        assert "max-age" in image.headers["cache-control"]
        again = client.get(hits[0]["image_url"], headers={"If-None-Match": image.headers["etag"]})
        assert again.status_code == 304
        thumb = client.get(hits[0]["thumbnail_url"])
        assert thumb.headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(thumb.content)).size) == 128
        assert (
            client.get(
                hits[0]["thumbnail_url"], headers={"If-None-Match": thumb.headers["etag"]}
            ).status_code
            == 304
        )


def test_search_filters_in_sql_still_return_k(live: LiveServer, subset) -> None:  # type: ignore[no-untyped-def]
    qid = scene_id(subset.scenes[0].name)
    with live.client() as client:
        both = client.get("/scenes", params={"labels_all": ["buildings", "cars"], "limit": 1000})
        matching = both.json()["total"]
        assert matching >= 5
        hits = client.post(
            "/search",
            json={"scene_id": qid, "k": 1000, "labels_all": ["buildings", "cars"]},
        ).json()["hits"]
        # every matching scene but the query itself, when k allows
        assert len(hits) == matching - (
            "cars" in labels_of(subset, subset.scenes[0].name)
            and "buildings" in labels_of(subset, subset.scenes[0].name)
        )
        assert all({"buildings", "cars"} <= set(h["labels"]) for h in hits)
        any_hits = client.post(
            "/search", json={"scene_id": qid, "k": 10, "labels_any": ["ship", "tanks"]}
        ).json()["hits"]
        assert len(any_hits) == 10
        assert all({"ship", "tanks"} & set(h["labels"]) for h in any_hits)
        folder = client.post("/search", json={"scene_id": qid, "k": 3, "scene": "harbor"}).json()[
            "hits"
        ]
        assert len(folder) == 3 and {h["scene"] for h in folder} == {"harbor"}
        plain = client.post("/search", json={"scene_id": qid, "k": 6}).json()["hits"]
        excluded = client.post(
            "/search", json={"scene_id": qid, "k": 4, "exclude_ids": [plain[0]["id"]]}
        ).json()["hits"]
        assert [h["id"] for h in excluded] == [h["id"] for h in plain[1:5]]
        scored = client.post(
            "/search", json={"scene_id": qid, "k": 50, "min_score": plain[2]["score"]}
        ).json()["hits"]
        assert [h["id"] for h in scored] == [h["id"] for h in plain[:3]]


def test_search_paging(live: LiveServer, subset) -> None:  # type: ignore[no-untyped-def]
    qid = scene_id(subset.scenes[3].name)
    with live.client() as client:
        full = client.post("/search", json={"scene_id": qid, "k": 25}).json()
        pages, offset = [], 0
        while offset is not None:
            page = client.post(
                "/search", json={"scene_id": qid, "k": 25, "offset": offset, "limit": 10}
            ).json()
            assert page["total"] == 25
            pages.extend(page["hits"])
            offset = page["next_offset"]
        assert [h["id"] for h in pages] == [h["id"] for h in full["hits"]]


def test_search_by_upload_with_form_fields(live: LiveServer, subset) -> None:  # type: ignore[no-untyped-def]
    query = subset.scenes[20]
    with live.client() as client:
        response = client.post(
            "/search",
            files={"file": (query.path.name, query.path.read_bytes())},
            data={"k": "3", "labels_any": "grass,trees"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["hits"]) == 3 and body["query_id"] is None
        assert all({"grass", "trees"} & set(h["labels"]) for h in body["hits"])
        by_id = client.post(
            "/search",
            json={
                "scene_id": scene_id(query.name),
                "k": 3,
                "labels_any": ["grass", "trees"],
                "include_query": True,
            },
        ).json()
        # the same image searched by upload or by id: the same neighbours
        assert [h["id"] for h in body["hits"]] == [h["id"] for h in by_id["hits"]]
        assert body["index_version"] == by_id["index_version"]


def test_search_errors(live: LiveServer, subset) -> None:  # type: ignore[no-untyped-def]
    real = scene_id(subset.scenes[0].name)
    with live.client() as client:
        assert_error(client.post("/search", json={"scene_id": 12345, "k": 5}), 404)
        assert_error(client.post("/search", json={"scene_id": 2**63, "k": 5}), 422)
        assert_error(client.post("/search", json={"scene_id": -1}), 422, "invalid_request")
        assert_error(client.post("/search", json={"scene_id": 1, "k": 0}), 422)
        assert_error(client.post("/search", json={"scene_id": 1, "k": 1001}), 422)
        assert_error(client.post("/search", json={"k": 3}), 422)
        assert_error(client.post("/search", json={"scene_id": 1, "nonsense": 3}), 422)
        assert_error(
            client.post(
                "/search", content=b"{not json", headers={"content-type": "application/json"}
            ),
            422,
        )
        assert_error(
            client.post("/search", content=b"abc", headers={"content-type": "text/plain"}),
            400,
            "unsupported_media_type",
        )
        body = assert_error(
            client.post("/search", json={"scene_id": real, "labels_all": ["volcano"]}),
            400,
            "unknown_label",
        )
        assert "buildings" in body["message"]  # says which labels exist
        assert_error(
            client.post("/search", files={"file": ("x.jpg", b"garbage")}, data={"k": "3"}),
            400,
            "invalid_image",
        )
        assert_error(
            client.post("/search", files={"file": ("x.jpg", b"garbage")}, data={"k": "many"}),
            422,
        )


def test_scenes_and_labels(live: LiveServer, subset, ucm_subset: Path) -> None:  # type: ignore[no-untyped-def]
    with live.client() as client:
        everything = client.get("/scenes", params={"limit": 1000}).json()
        assert everything["total"] == 126 and len(everything["scenes"]) == 126
        ids = [int(s["id"]) for s in everything["scenes"]]
        assert sorted(ids) == sorted(scene_id(s.name) for s in subset.scenes)
        first = client.get("/scenes", params={"limit": 50}).json()
        second = client.get("/scenes", params={"limit": 50, "offset": 50}).json()
        assert [int(s["id"]) for s in first["scenes"] + second["scenes"]] == ids[:100]
        assert first["next_offset"] == 50
        harbor = client.get("/scenes", params={"scene": "harbor", "split": "train"}).json()
        assert harbor["total"] == 4 and {s["scene"] for s in harbor["scenes"]} == {"harbor"}
        one = everything["scenes"][7]
        detail = client.get(f"/scenes/{one['id']}").json()
        assert detail == one and set(detail["labels"]) == labels_of(subset, detail["image"])
        assert_error(client.get("/scenes/123"), 404, "scene_not_found")
        assert_error(client.get("/scenes/abc"), 422)
        assert_error(client.get("/scenes/-5"), 422)
        assert_error(client.get(f"/scenes/{2**70}"), 422)
        assert_error(client.get("/scenes/..%2F..%2Fetc%2Fpasswd/image"), 404)
        assert_error(client.get("/scenes", params={"labels_all": "volcano"}), 400, "unknown_label")
        counts = {c["name"]: c["count"] for c in client.get("/labels").json()["labels"]}
        with ucm_subset.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert counts == {name: sum(int(r[name]) for r in rows) for name in subset.label_names}


def test_ids_survive_a_javascript_client(live: LiveServer, subset) -> None:  # type: ignore[no-untyped-def]
    """63-bit ids travel as strings of digits (JavaScript numbers keep 53 bits); requests take
    them as strings or integers."""
    big = next(s for s in subset.scenes if scene_id(s.name) > 2**53)
    qid = scene_id(big.name)
    with live.client() as client:
        text = client.post("/search", json={"scene_id": str(qid), "k": 3}).text
        assert f'"query_id":"{qid}"' in text
        as_int = client.post("/search", json={"scene_id": qid, "k": 3}).json()
        assert as_int["query_id"] == str(qid)
        for hit in as_int["hits"]:
            assert client.get(f"/scenes/{hit['id']}").json()["id"] == hit["id"]
        excluded = client.post(
            "/search", json={"scene_id": str(qid), "k": 3, "exclude_ids": [as_int["hits"][0]["id"]]}
        ).json()
        assert as_int["hits"][0]["id"] not in [h["id"] for h in excluded["hits"]]
        spec = client.get("/openapi.json").json()["components"]["schemas"]
        assert spec["Hit"]["properties"]["id"]["type"] == "string"
        assert spec["SceneOut"]["properties"]["id"]["pattern"] == "^[0-9]{1,19}$"


def test_search_answers_labels_and_csv_in_the_same_request(live: LiveServer, subset) -> None:  # type: ignore[no-untyped-def]
    scene = subset.scenes[12]
    qid = scene_id(scene.name)
    data = scene.path.read_bytes()
    with live.client() as client:
        classified = client.post("/classify", files={"file": (scene.path.name, data)}).json()
        by_upload = client.post(
            "/search", files={"file": (scene.path.name, data)}, data={"k": "4", "classify": "true"}
        ).json()
        by_id = client.post("/search", json={"scene_id": str(qid), "k": 4, "classify": True}).json()
        plain = client.post("/search", json={"scene_id": str(qid), "k": 4}).json()
        for body in (by_upload, by_id):
            assert body["predicted"] == classified["predicted"]
            got = [round(s["probability"], 4) for s in body["labels"]]
            assert got == [round(s["probability"], 4) for s in classified["labels"]]
        assert plain["labels"] is None and plain["predicted"] is None
        table = client.post("/search", json={"scene_id": str(qid), "k": 4, "format": "csv"})
        assert table.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(table.text)))
        assert rows[0] == ["rank", "id", "image", "scene", "score", "labels", "image_url", "added"]
        assert [row[1] for row in rows[1:]] == [h["id"] for h in plain["hits"]]
        assert [row[7] for row in rows[1:]] == [h["added"] for h in plain["hits"]]
        # imported by the fixture: today
        assert datetime.now(UTC) - datetime.fromisoformat(rows[1][7]) < timedelta(days=1)
        assert [row[0] for row in rows[1:]] == ["1", "2", "3", "4"]
        assert rows[1][5] == ";".join(plain["hits"][0]["labels"])


def test_previews_of_any_format(live: LiveServer, subset, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import tifffile

    from model.imageio import read_image

    qid = scene_id(subset.scenes[5].name)
    with live.client() as client:
        full = client.get(f"/scenes/{qid}/preview")
        assert full.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(full.content)).size == (256, 256)
        small = client.get(f"/scenes/{qid}/preview", params={"size": 64})
        # snapped up to the smallest step (issue 42): at most a handful of renderings a scene
        assert max(Image.open(io.BytesIO(small.content)).size) == 128
        assert small.headers["x-preview-size"] == "128"
        again = client.get(
            f"/scenes/{qid}/preview",
            params={"size": 64},
            headers={"If-None-Match": small.headers["etag"]},
        )
        assert again.status_code == 304
        # a 16-bit, 4-band TIFF upload comes back as a JPEG a browser shows
        pixels = np.concatenate(
            [read_image(subset.scenes[5].path).astype(np.uint16) * 257,
             np.full((256, 256, 1), 65535, np.uint16)], axis=2,
        )  # fmt: skip
        tiff = tmp_path / "four.tif"
        tifffile.imwrite(tiff, pixels, photometric="minisblack", planarconfig="contig")
        rendered = client.post(
            "/preview", files={"file": ("four.tif", tiff.read_bytes())}, params={"size": 128}
        )
        assert rendered.status_code == 200, rendered.text
        assert Image.open(io.BytesIO(rendered.content)).size == (128, 128)
        assert_error(
            client.post("/preview", files={"file": ("notes.jpg", b"plain text")}),
            400,
            "invalid_image",
        )


def test_archive_browsing_by_name_and_folder(live: LiveServer, subset) -> None:  # type: ignore[no-untyped-def]
    with live.client() as client:
        found = client.get("/scenes", params={"q": "harbor", "order": "name"}).json()
        names = [s["image"] for s in found["scenes"]]
        assert found["total"] == 6 and names == sorted(names)
        assert all("harbor" in n for n in names)
        assert client.get("/scenes", params={"q": "%"}).json()["total"] == 0  # no wildcard
        folders = client.get("/folders").json()["folders"]
        assert len(folders) == 21 and sum(f["count"] for f in folders) == 126
        assert folders == sorted(folders, key=lambda f: f["name"])


def test_bad_images_are_named_once_in_plain_words(live: LiveServer) -> None:
    with live.client() as client:
        body = assert_error(
            client.post("/classify", files={"file": ("notes.jpg", b"meeting notes")}),
            400,
            "invalid_image",
        )
    assert body["message"].count("notes.jpg") == 1 and "BytesIO" not in body["message"]
    assert "cannot decode it" in body["message"]


def test_api_docs_work_offline(live: LiveServer) -> None:
    with live.client() as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page).text
            assert "/docs-assets/" in html
            assert "cdn." not in html and "fonts.googleapis" not in html
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
            response = client.get(f"/docs-assets/{asset}")
            assert response.status_code == 200 and len(response.content) > 100_000


def test_the_openapi_document_describes_each_endpoint(live: LiveServer) -> None:
    with live.client() as client:
        spec = client.get("/openapi.json").json()
    errors = {
        (path, method): {int(s) for s in op["responses"] if int(s) >= 400}
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    }
    assert errors[("/healthz", "get")] == set()
    assert errors[("/readyz", "get")] == {503}
    assert errors[("/search", "post")] == {400, 401, 403, 404, 409, 413, 422, 503}
    assert errors[("/labels", "get")] == {401, 403, 503}
    assert errors[("/admin/reindex", "post")] == {400, 401, 403, 409, 422}
    assert len({frozenset(e) for e in errors.values()}) >= 8  # not one list for all
    schemas = spec["components"]["schemas"]
    undocumented = [
        (name, field)
        for name, schema in schemas.items()
        if not name.endswith("ValidationError")
        for field, prop in schema.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert undocumented == []
    body = spec["paths"]["/search"]["post"]["requestBody"]["content"]
    request = body["application/json"]["schema"]
    assert request["examples"][0]["k"] == 20
    assert all(prop.get("description") for prop in request["properties"].values())
    assert set(body["multipart/form-data"]["schema"]["properties"]) >= {"file", "k", "classify"}
    assert schemas["SceneOut"]["examples"][0]["image"] == "harbor12"


def test_an_archive_without_the_models_labels_gets_no_classifier_answers(
    served: Served, ucm_root: Path, ucm_unlabelled: Path, tmp_path: Path
) -> None:
    """Served with a model trained elsewhere, an archive without labels is embedded and
    searched, and the model's classifier (another archive's labels) stays out of the
    answers."""
    from servers import prepared_database, server_env

    url = f"sqlite:///{tmp_path / 'grn.db'}"
    prepared_database(url, ucm_root, ucm_unlabelled)
    scene = load_archive(ucm_root, ucm_unlabelled).scenes[12]
    data = scene.path.read_bytes()
    with (
        LiveServer(server_env(served, url, tmp_path), tmp_path / "server.log") as server,
        server.client() as client,
    ):
        classified = client.post("/classify", files={"file": (scene.path.name, data)})
        assert classified.status_code == 200, classified.text
        body = classified.json()
        assert body["labels"] == [] and body["predicted"] == []
        assert body["results"] == [{"filename": scene.path.name, "labels": [], "predicted": []}]
        assert body["note"].startswith("no labels: the archive does not carry the model's labels")
        by_upload = client.post(
            "/search", files={"file": (scene.path.name, data)}, data={"k": "4", "classify": "true"}
        ).json()
        by_id = client.post(
            "/search", json={"scene_id": str(scene_id(scene.name)), "k": 4, "classify": True}
        ).json()
        for found in (by_upload, by_id):
            assert found["labels"] is None and found["predicted"] is None
            assert found["note"] == body["note"]
            assert len(found["hits"]) == 4 and all(h["labels"] == [] for h in found["hits"])
        assert_error(
            client.post("/classify", files={"file": ("x.jpg", b"not an image at all")}),
            400, "invalid_image",
        )  # fmt: skip


def test_the_classifier_answers_only_for_archives_that_carry_its_labels() -> None:
    from types import SimpleNamespace

    from service.usecases.classify import classifier_applies

    card = SimpleNamespace(label_names=["water", "trees"])
    assert classifier_applies(card, ["trees", "water"])  # type: ignore[arg-type]
    assert classifier_applies(card, ["cars", "trees", "water"])  # type: ignore[arg-type]
    assert not classifier_applies(card, [])  # type: ignore[arg-type]
    assert not classifier_applies(card, ["water", "crops"])  # type: ignore[arg-type]
