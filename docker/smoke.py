"""Helpers of docker/smoke.sh, on the Python standard library only (the host needs python3,
not the project's environment):

  smoke.py subset UCM OUT [--per-class N]   a small archive: N scenes of each scene folder
                                            (train, val and test), images copied, labels rows
  smoke.py wait URL [--seconds S] [--expect TEXT]
                                            poll URL/readyz until 200 (or, with --expect, until
                                            its 503 message holds TEXT); prints the body
  smoke.py check URL KEY IMAGE              the checks through the published port
  smoke.py search URL IMAGE                 the top hits for IMAGE as JSON lines (to compare)
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any


def subset(ucm: Path, out: Path, per_class: int) -> None:
    with (ucm / "labels.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    wanted = {"train": max(1, per_class - 3), "val": 2, "test": 1}
    taken: dict[tuple[str, str], int] = {}
    kept = []
    for row in sorted(body, key=lambda r: (r[1], r[0])):
        key = (row[1], row[2])
        if taken.get(key, 0) < wanted.get(row[2], 0):
            taken[key] = taken.get(key, 0) + 1
            kept.append(row)
    for row in kept:
        source = next((ucm / "images" / row[1]).glob(f"{row[0]}.*"))
        target = out / "images" / row[1] / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    with (out / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *kept])
    print(f"{len(kept)} scenes in {out}")


def request(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def multipart(path: Path, fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    return multipart_file(path.name, path.read_bytes(), "image/jpeg", fields)


def multipart_file(
    filename: str, data: bytes, media_type: str, fields: dict[str, str] | None = None
) -> tuple[bytes, str]:
    """A form with `fields` and one file (`file`): the body and its Content-Type."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in (fields or {}).items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(f"{head}{value}\r\n".encode())
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
        f"\r\nContent-Type: {media_type}\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def wait(url: str, seconds: float, expect: str | None) -> str:
    """URL/readyz's body once it answers 200 (or, with `expect`, a 503 that says it); exits
    with the last answer after `seconds`."""
    deadline, last = time.monotonic() + seconds, "no answer"
    while time.monotonic() < deadline:
        try:
            status, body, _ = request("GET", f"{url}/readyz", timeout=5)
        except (OSError, urllib.error.URLError) as exc:
            last = f"no answer ({exc})"
        else:
            last = f"{status} {body.decode(errors='replace')}"
            if expect is None and status == 200:
                return body.decode()
            if expect is not None and status == 503 and expect in body.decode():
                return body.decode()
        time.sleep(1)
    sys.exit(f"{url}/readyz did not {'say ' + repr(expect) if expect else 'answer 200'}: {last}")


def _ok(condition: bool, what: str, detail: Any = "") -> None:
    if not condition:
        sys.exit(f"FAILED: {what} {detail}")
    print(f"ok: {what}")


def search_hits(url: str, image: Path, k: int = 10) -> list[dict[str, Any]]:
    body, content_type = multipart(image, {"k": str(k)})
    status, answer, _ = request("POST", f"{url}/search", body, {"Content-Type": content_type})
    _ok(status == 200, f"POST /search answers 200 (got {status})", answer[:300])
    return list(json.loads(answer)["hits"])


def check(url: str, key: str, image: Path) -> None:
    status, body, _ = request("GET", f"{url}/readyz")
    ready = json.loads(body)
    _ok(status == 200 and ready["status"] == "ready", "/readyz is ready", body[:300])
    _ok(ready["scenes"] > 0 and ready["index_count"] == ready["scenes"], "scenes indexed", ready)

    payload, content_type = multipart(image)
    status, body, _ = request("POST", f"{url}/classify", payload, {"Content-Type": content_type})
    _ok(status == 200 and json.loads(body)["labels"], "POST /classify on a real image", body[:300])

    hits = search_hits(url, image)
    _ok(
        len(hits) == 10 and hits[0]["image"] == image.stem,
        "/search finds the image first",
        hits[:2],
    )

    status, body, _ = request("GET", f"{url}/")
    _ok(status == 200 and b"<html" in body.lower(), "the page at /", status)
    status, body, _ = request("GET", f"{url}/vendor/leaflet/leaflet.js")
    _ok(status == 200 and b"Leaflet" in body[:2000], "the map's library is in the image", status)
    status, body, _ = request("GET", f"{url}/metrics")
    _ok(status == 200 and b"grn_" in body, "/metrics", status)

    status, body, _ = request("POST", f"{url}/admin/reload")
    _ok(status == 401, f"admin call refused without the key ({status})", body[:200])
    status, body, _ = request("POST", f"{url}/admin/reload", headers={"X-API-Key": "wrong" * 5})
    _ok(status == 403, f"admin call refused with a wrong key ({status})", body[:200])
    status, body, _ = request("POST", f"{url}/admin/reload", headers={"X-API-Key": key})
    _ok(status == 200, f"admin call accepted with the key ({status})", body[:200])
    check_job(url, key)
    check_writes(url, key, image)


def check_job(url: str, key: str) -> None:
    """An admin import, queued in PostgreSQL and run by the `worker` service."""
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    status, body, _ = request("POST", f"{url}/admin/import", b"{}", headers)
    _ok(status == 202, f"POST /admin/import queues a job ({status})", body[:300])
    job = wait_job(url, key, json.loads(body)["id"])
    _ok(
        job.get("status") == "succeeded" and "already present" in " ".join(job["output"]),
        "the worker service ran the import job",
        job,
    )


def wait_job(
    url: str,
    key: str,
    job_id: int,
    until: tuple[str, ...] = ("queued", "running"),
    seconds: float = 300.0,
) -> dict[str, Any]:
    """The admin job once its status is no longer one of `until` (default: once it ended)."""
    deadline, job = time.monotonic() + seconds, {}
    while time.monotonic() < deadline:
        _, body, _ = request("GET", f"{url}/admin/jobs/{job_id}", headers={"X-API-Key": key})
        job = json.loads(body)
        if job.get("status") not in until:
            break
        time.sleep(0.2)
    return job


def check_writes(url: str, key: str, image: Path) -> None:
    """A scene added through the published port, found, removed, gone."""
    copy = Path(tempfile.mkdtemp()) / "smoke-added.jpg"
    copy.write_bytes(image.read_bytes() + b"smoke")  # another file, the same pixels
    try:
        body, content_type = multipart(copy, {"name": "smoke-added"})
        status, answer, _ = request(
            "POST", f"{url}/scenes", body, {"Content-Type": content_type, "X-API-Key": key}
        )
        _ok(status == 201, f"POST /scenes adds a scene ({status})", answer[:300])
        added = json.loads(answer)["scenes"][0]["id"]
        found = [hit["image"] for hit in search_hits(url, copy)]
        _ok("smoke-added" in found[:2], "the added scene is found at once", found[:3])
        status, answer, _ = request("DELETE", f"{url}/scenes/{added}", headers={"X-API-Key": key})
        _ok(status == 204, f"DELETE /scenes/{{id}} removes it ({status})", answer[:300])
        found = [hit["image"] for hit in search_hits(url, copy)]
        _ok("smoke-added" not in found, "the removed scene is gone at once", found[:3])
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("subset")
    p.add_argument("ucm", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--per-class", type=int, default=8)
    p = sub.add_parser("wait")
    p.add_argument("url")
    p.add_argument("--seconds", type=float, default=900)
    p.add_argument("--expect")
    p = sub.add_parser("check")
    p.add_argument("url")
    p.add_argument("key")
    p.add_argument("image", type=Path)
    p = sub.add_parser("search")
    p.add_argument("url")
    p.add_argument("image", type=Path)
    args = parser.parse_args()
    if args.command == "subset":
        subset(args.ucm, args.out, args.per_class)
    elif args.command == "wait":
        print(wait(args.url, args.seconds, args.expect))
    elif args.command == "check":
        check(args.url, args.key, args.image)
    else:
        for hit in search_hits(args.url, args.image):
            print(json.dumps({"image": hit["image"], "score": round(hit["score"], 5)}))


if __name__ == "__main__":
    main()
