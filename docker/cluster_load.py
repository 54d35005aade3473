"""The plumbing of docker/cluster_smoke.py (the compose project, a scene written, a scene
searched) and its load run: searches, reads and writes through the balancer while one API
replica is killed (docker kill), then counted: what failed, what was in flight on the killed
replica, whether every acknowledged write is in PostgreSQL and searchable, and whether the
replica started again takes requests again. Python's standard library only."""

from __future__ import annotations

import functools
import json
import random
import shlex
import statistics
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from smoke import _ok, multipart_file, request, wait

JSON = {"Content-Type": "application/json"}
T = TypeVar("T")
Answer = tuple[int, int | None, str]
"""A request's status, the scene a write made, the balancer's X-Upstream."""


class Cluster:
    """The compose project: its containers, their addresses, docker kill and start."""

    def __init__(self, compose: str, docker: str) -> None:
        self.compose = shlex.split(compose)
        self.docker = shlex.split(docker)

    def run(self, *args: str, docker: bool = False) -> str:
        command = [*(self.docker if docker else self.compose), *args]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"FAILED: {shlex.join(command)}:\n{(done.stdout + done.stderr)[-3000:]}")
        return done.stdout

    def container(self, service: str) -> str:
        found = self.run("ps", "-q", service).split()
        if len(found) != 1:
            _ok(False, f"one {service} container runs", found)
        return found[0]

    def inspect(self, container: str, template: str) -> str:
        return self.run("inspect", "--format", template, container, docker=True).strip()

    def address(self, container: str) -> str:
        """host:port of a replica on the compose network."""
        ip = self.inspect(container, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
        return f"{ip}:8000"

    def sql(self, query: str) -> list[str]:
        psql = ("exec", "-T", "postgres", "psql", "-U", "grn", "-d", "grn", "-At", "-c")
        return self.run(*psql, query).split()


def eventually(check: Callable[[], T | None], what: str, seconds: float) -> T:
    """The first value of `check()` that is not None within `seconds` (exits saying `what`
    did not happen otherwise)."""
    deadline = time.monotonic() + seconds
    while (value := check()) is None:
        if time.monotonic() > deadline:
            _ok(False, f"{what} within {seconds:g} s")
        time.sleep(0.1)
    return value


def readiness(url: str, seconds: float = 600) -> dict[str, Any]:
    return dict(json.loads(wait(url, seconds, None)))


def noise_png(seed: int, size: int = 64) -> bytes:
    """A PNG of seeded noise: another image, with an embedding of its own, for every seed."""
    rows = random.Random(seed).randbytes(size * size * 3)
    raw = b"".join(b"\0" + rows[i * size * 3 : (i + 1) * size * 3] for i in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    image = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + image


def write(url: str, key: str, seed: int) -> Answer:
    """POST /scenes of the seed's image: the status, the scene's id on 201, and which replica
    answered (the balancer's X-Upstream; empty when it did not say)."""
    body, media = multipart_file(
        f"cluster-{seed}.png", noise_png(seed), "image/png", {"name": f"cluster-{seed}"}
    )
    status, answer, headers = request(
        "POST", f"{url}/scenes", body, {"Content-Type": media, "X-API-Key": key}
    )
    scene = int(json.loads(answer)["scenes"][0]["id"]) if status == 201 else None
    return status, scene, headers.get("X-Upstream", "")


def top_hit(url: str, scene: int) -> int | None:
    """The first hit of a search by `scene` (itself included) on `url`."""
    query = json.dumps({"scene_id": scene, "k": 1, "include_query": True}).encode()
    status, answer, _ = request("POST", f"{url}/search", query, JSON, timeout=10)
    hits = json.loads(answer)["hits"] if status == 200 else []
    return int(hits[0]["id"]) if hits else None


@dataclass
class Call:
    kind: str
    started: float
    ended: float
    status: int
    """0: no answer at all."""
    upstream: str
    """The replicas the balancer tried, in order ("a:8000, b:8000")."""
    seed: int | None = None
    scene: int | None = None

    def tried(self, address: str) -> bool:
        return address in self.upstream.split(", ")


def run_load(
    url: str, key: str, scenes: list[int], seconds: float, kill: Callable[[], None]
) -> list[Call]:
    """Three searchers, a reader and two writers through the balancer for `seconds`; `kill()`
    a third of the way in."""
    calls: list[Call] = []
    stop = threading.Event()
    seeds = iter(range(1000, 10**6))
    lock = threading.Lock()

    def timed(kind: str, send: Callable[[], Answer], seed: int | None = None) -> None:
        started = time.monotonic()
        try:
            status, scene, upstream = send()
        except OSError as exc:
            status, scene, upstream = 0, None, str(exc)
        calls.append(Call(kind, started, time.monotonic(), status, upstream, seed, scene))

    def search() -> Answer:
        query = {"scene_id": random.choice(scenes), "k": 10}
        status, _, headers = request("POST", f"{url}/search", json.dumps(query).encode(), JSON)
        return status, None, headers.get("X-Upstream", "")

    def read() -> Answer:
        status, _, headers = request("GET", f"{url}/scenes/{random.choice(scenes)}")
        return status, None, headers.get("X-Upstream", "")

    def loop(kind: str) -> None:
        while not stop.is_set():
            if kind == "write":
                with lock:
                    seed = next(seeds)
                timed(kind, functools.partial(write, url, key, seed), seed)
            else:
                timed(kind, search if kind == "search" else read)

    threads = [
        threading.Thread(target=loop, args=(kind,))
        for kind in ("search", "search", "search", "read", "write", "write")
    ]
    for thread in threads:
        thread.start()
    time.sleep(seconds / 3)
    kill()
    time.sleep(seconds * 2 / 3)
    stop.set()
    for thread in threads:
        thread.join()
    return calls


def check_load(url: str, key: str, cluster: Cluster, victim_service: str, seconds: float) -> None:
    listed = json.loads(request("GET", f"{url}/scenes?limit=100")[1])["scenes"]
    scenes = [int(scene["id"]) for scene in listed]
    victim = cluster.container(victim_service)
    address = cluster.address(victim)
    window: list[float] = []

    def kill() -> None:
        window.append(time.monotonic())
        cluster.run("kill", victim, docker=True)
        window.append(time.monotonic())

    calls = run_load(url, key, scenes, seconds, kill)
    killing, killed = window
    print(
        f"load: {len(calls)} requests in {seconds:g} s, {victim_service} ({address}) killed "
        f"at {killing - min(c.started for c in calls):.1f} s"
    )
    for kind in ("search", "read", "write"):
        mine = [c for c in calls if c.kind == kind]
        answered = [c for c in mine if 200 <= c.status < 300]
        times = sorted(c.ended - c.started for c in answered)
        print(
            f"  {kind:6} {len(mine):5} sent, {len(answered):5} 2xx, "
            f"{len(mine) - len(answered):3} failed; p50 {statistics.median(times) * 1000:.0f} ms, "
            f"max {times[-1] * 1000:.0f} ms"
        )
    failed = [c for c in calls if not 200 <= c.status < 300]
    in_flight = [c for c in calls if c.started < killed and c.ended > killing and c.tried(address)]
    writes_in_flight = [c for c in in_flight if c.kind == "write"]
    print(
        f"  in flight on {victim_service} when it was killed: {len(in_flight)} "
        f"({len(writes_in_flight)} writes); failed: {len(failed)} "
        f"{sorted({(c.kind, c.status) for c in failed})}"
    )
    _ok(all(c.kind == "write" for c in failed), "no search or read failed")
    _ok(
        len(failed) <= len(writes_in_flight) and all(c.tried(address) for c in failed),
        "failed writes are at most those in flight on the killed replica",
    )
    later = [c for c in calls if c.started > killed + 1 and 200 <= c.status < 300]
    _ok(
        bool(later) and all(c.upstream.split(", ")[-1] != address for c in later),
        f"after the kill the other replica answered all {len(later)} requests",
    )

    acknowledged = [c.scene for c in calls if c.kind == "write" and c.scene is not None]
    stored = cluster.sql(f"SELECT id FROM scenes WHERE id IN ({','.join(map(str, acknowledged))})")
    _ok(
        sorted(map(int, stored)) == sorted(acknowledged),
        f"all {len(acknowledged)} acknowledged writes are in PostgreSQL",
    )
    lost = [scene for scene in acknowledged if top_hit(url, scene) != scene]
    _ok(not lost, f"all {len(acknowledged)} acknowledged writes are searchable", lost)
    again = [write(url, key, c.seed)[0] for c in failed if c.seed is not None]
    _ok(
        all(status in (201, 409) for status in again),
        f"the failed writes sent again: {again.count(409)} had been stored before the replica "
        f"died (409 duplicate), {again.count(201)} had not and are now (201)",
        again,
    )
    restart(url, cluster, victim_service, victim, address)


def restart(url: str, cluster: Cluster, service: str, container: str, address: str) -> None:
    """Start a killed replica again and check that the balancer sends it requests."""
    started = time.monotonic()
    cluster.run("start", container, docker=True)
    now = cluster.address(container)
    readiness(f"http://{now}")
    if now != address:  # nginx resolved the name once, when it started
        cluster.run("exec", "-T", "balancer", "nginx", "-s", "reload")
        print(f"  {service} came back at {now} (was {address}): the balancer reloaded")

    def answered_by_it() -> float | None:
        upstream = request("GET", f"{url}/labels")[2].get("X-Upstream", "")
        return time.monotonic() - started if upstream == now else None

    took = eventually(answered_by_it, f"{service} answers through the balancer again", 30)
    print(f"ok: {service} started again answers through the balancer {took:.1f} s after its start")
