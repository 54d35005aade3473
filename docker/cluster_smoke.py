"""The checks of docker/cluster-smoke.sh (`make cluster-smoke`) on the compose `cluster`
profile, on the Python standard library only (with smoke.py's helpers). Each replica is
also addressed directly, at its address on the compose network (the host reaches it).

  cluster_smoke.py URL KEY --compose "docker compose ... --profile cluster" [--docker D]

  replicas   both API replicas ready, with the same model and index version
  visible    scenes written through the balancer are searched on each replica within 1 s
  jobs       an import runs once on one of the two workers; a reindex whose worker is
             killed (docker kill) is taken over by the other after the lease and succeeds,
             attempt 2; both replicas take up the new index version
  promotion  a model trained and promoted on the trainer image (`grn promote --force`):
             both replicas serve it
  load       searches, reads and writes through the balancer, one replica killed part way:
             no search or read fails, failed writes are at most those in flight on the
             killed replica, every acknowledged write is in PostgreSQL and searchable; the
             replica started again answers through the balancer again
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time

from cluster_load import JSON, Cluster, check_load, eventually, readiness, top_hit, write
from smoke import _ok, request, wait_job

REPLICAS = ("api", "api-2")
STEPS = ("replicas", "visible", "jobs", "promotion", "load")


def check_replicas(urls: dict[str, str]) -> None:
    states = {service: readiness(url) for service, url in urls.items()}
    served = {(state["model_version"], state["index_version"]) for state in states.values()}
    _ok(len(served) == 1, f"both replicas ready with one model and index version {served}", states)


def check_visible(url: str, key: str, urls: dict[str, str], count: int = 5) -> None:
    worst = 0.0
    for seed in range(count):
        status, scene, _ = write(url, key, seed)
        answered = time.monotonic()
        if scene is None:
            _ok(False, f"a scene written through the balancer (got {status})")
            return
        for service, replica in urls.items():
            while top_hit(replica, scene) != scene:
                if time.monotonic() - answered > 1.0:
                    _ok(False, f"{service} finds scene {scene} within 1 s of its write")
            worst = max(worst, time.monotonic() - answered)
    print(
        f"ok: each of {count} scenes found on both replicas at most {worst * 1000:.0f} ms "
        "after its write answered"
    )


def index_versions(urls: dict[str, str]) -> set[str]:
    return {readiness(url)["index_version"] for url in urls.values()}


def check_jobs(url: str, key: str, cluster: Cluster, urls: dict[str, str], lease: float) -> None:
    workers = cluster.run("ps", "-q", "worker").split()
    _ok(len(workers) == 2, "two workers run", workers)
    hosts = {cluster.inspect(worker, "{{.Config.Hostname}}"): worker for worker in workers}
    auth = {"X-API-Key": key, **JSON}

    def submit(kind: str) -> int:
        status, body, _ = request("POST", f"{url}/admin/{kind}", b"{}", auth)
        _ok(status == 202, f"POST /admin/{kind} queues a job", body[:300])
        return int(json.loads(body)["id"])

    done = wait_job(url, key, submit("import"))
    ran_on = (done.get("worker") or "").split(":")[0]
    _ok(
        done["status"] == "succeeded" and done["attempts"] == 1 and ran_on in hosts,
        f"the import job ran once, on worker {ran_on}",
        done,
    )

    before = index_versions(urls)
    job = submit("reindex")
    running = wait_job(url, key, job, until=("queued",))
    _ok(running["status"] == "running", "the reindex job runs", running)
    victim = running["worker"].split(":")[0]
    cluster.run("kill", hosts[victim], docker=True)
    killed = time.time()
    print(f"ok: worker {victim} killed while it ran the reindex job")
    done = wait_job(url, key, job, seconds=600)
    took_over = (done.get("worker") or "").split(":")[0]
    _ok(
        done["status"] == "succeeded"
        and done["attempts"] == 2
        and took_over in hosts
        and took_over != victim
        and any("stopped answering" in line for line in done["output"]),
        f"worker {took_over} took the job over {done['started'] - killed:.1f} s after the kill "
        f"(lease {lease:g} s) and finished it",
        done,
    )
    cluster.run("start", hosts[victim], docker=True)

    def taken_up() -> str | None:
        versions = index_versions(urls)
        return None if versions & before or len(versions) != 1 else versions.pop()

    version = eventually(taken_up, "both replicas take up the new index version", 60)
    print(f"ok: both replicas serve the new index version {version}")


CANDIDATE = "/data/models/candidate"
PROMOTE = (
    f"grn train --archive /archive --out {CANDIDATE} --mode head --epochs 2 --seed 1 --quiet"
    " --cache-dir /data/models/ucm-head/feature-cache"
    f" && grn promote --model {CANDIDATE}/model.safetensors --force"
)
"""A second model (another seed), trained on the features the first training cached, then
promoted whatever its figures, in one command on the trainer image, which training needs
(`grn promote` alone runs on the serving image as well: tests/service/test_without_torch.py)."""


def check_promotion(cluster: Cluster, urls: dict[str, str]) -> None:
    before = {readiness(url)["model_version"] for url in urls.values()}
    taken_up: dict[str, float] = {}  # when each replica first served another model
    promoting = threading.Event()

    def watch() -> None:
        while promoting.is_set() or len(taken_up) < len(urls):
            for service, url in urls.items():
                if service not in taken_up and readiness(url)["model_version"] not in before:
                    taken_up[service] = time.monotonic()
            time.sleep(0.2)

    promoting.set()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    run = ("run", "--rm", "--no-deps", "-T", "--entrypoint", "sh", "trainer", "-c", PROMOTE)
    said = cluster.run(*run)
    promoted = time.monotonic()
    promoting.clear()
    found = re.search(r"model (\S+) in service", said)
    _ok(
        found is not None and found.group(1) not in before,
        f"a second model trained and promoted in {promoted - started:.0f} s",
        said,
    )
    watcher.join(60)
    served = {readiness(url)["model_version"] for url in urls.values()}
    _ok(
        len(taken_up) == len(urls) and served == {found.group(1) if found else ""},
        f"both replicas serve model {served.pop()}, taken up "
        f"{max(taken_up.values()) - min(taken_up.values()):.1f} s apart",
        taken_up,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the balancer, http://127.0.0.1:PORT")
    parser.add_argument("key", help="the admin key")
    parser.add_argument("--compose", required=True, help="the compose command of the project")
    parser.add_argument("--docker", default="/usr/bin/docker")
    parser.add_argument("--steps", nargs="*", choices=STEPS, default=list(STEPS))
    parser.add_argument("--victim", default="api-2", choices=REPLICAS)
    parser.add_argument("--load-seconds", type=float, default=24.0)
    parser.add_argument("--lease", type=float, default=30.0, help="GRN_JOB_LEASE_SECONDS")
    args = parser.parse_args()
    cluster = Cluster(args.compose, args.docker)
    urls = {
        service: f"http://{cluster.address(cluster.container(service))}" for service in REPLICAS
    }
    for step in args.steps:
        started = time.monotonic()
        print(f"== cluster smoke: {step}", flush=True)
        if step == "replicas":
            check_replicas(urls)
        elif step == "visible":
            check_visible(args.url, args.key, urls)
        elif step == "jobs":
            check_jobs(args.url, args.key, cluster, urls, args.lease)
        elif step == "load":
            check_load(args.url, args.key, cluster, args.victim, args.load_seconds)
            urls = {s: f"http://{cluster.address(cluster.container(s))}" for s in REPLICAS}
        else:
            check_promotion(cluster, urls)
        print(f"{step}: {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
