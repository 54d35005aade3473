"""The deployment files, checked without a Docker engine: the Dockerfile linted by hadolint,
docker-compose.yml read and checked as compose would read it (and by compose v2 itself when
it is installed: docker/engine.sh), and each compose service's command run here with that
service's environment against the local PostgreSQL. The images and the compose project run
for real in docker/smoke.sh (`make compose-smoke`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from servers import REPO, Served, free_port, postgres_schema

KEY = "compose-test-key-0123456789"
_VARIABLE = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} substitution."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, kind, rest = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if kind == "?":
            raise ValueError(f"compose would refuse to start: {rest}")
        return rest or ""

    return _VARIABLE.sub(substitute, value)


def compose(env: dict[str, str]) -> dict[str, Any]:
    return interpolate(yaml.safe_load((REPO / "docker-compose.yml").read_text()), env)  # type: ignore[no-any-return]


def dockerfile_stages() -> list[str]:
    text = (REPO / "Dockerfile").read_text()
    return re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, flags=re.MULTILINE)


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape() -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = dockerfile_stages()
    assert stages[-1] == "cpu" and {"cuda", "serve", "train"} <= set(stages)  # cpu: default
    # the serving image is built without torch, the trainer image on top of it
    serve = text.split("AS serve-deps\n", 1)[1].split("\nFROM ", 1)[0]
    installs = [line for line in serve.splitlines() if not line.lstrip().startswith("#")]
    assert "torch" not in "\n".join(installs).replace('! python -c "import torch"', "")
    assert re.search(r"^FROM serve-deps AS serve$", text, flags=re.MULTILINE)
    # and train starts from the same dependencies: a code change never rebuilds torch's layer
    assert re.search(r"^FROM serve-deps AS train$", text, flags=re.MULTILINE)
    assert re.search(r"^FROM train AS cpu$", text, flags=re.MULTILINE)
    # no `# syntax=` line: BuildKit's built-in frontend, nothing fetched from a registry
    assert not re.search(r"^#\s*syntax\s*=", text, flags=re.MULTILINE | re.IGNORECASE)
    assert re.search(r"^ARG BASE_IMAGE=grn-base/python:3\.11-bookworm$", text, flags=re.MULTILINE)
    # each image's packages are a locked set (hashes checked by install-deps.sh): no pip
    # install of a name or range in the Dockerfile itself
    locks = {"serve-deps": "serve", "train": "train", "cuda": "cuda", "milvus": "milvus-server"}
    for stage, locked in locks.items():
        body = text.split(f"AS {stage}\n", 1)[1].split("\nFROM ", 1)[0]
        assert f"source=requirements/{locked}.lock,target=/tmp/deps/{locked}.lock" in body
        assert f"sh /tmp/deps/install-deps.sh {locked}" in body
    assert "pip install" not in text and "ARG TORCH_SOURCE" not in text
    install = (REPO / "docker" / "install-deps.sh").read_text()
    assert 'pip install --require-hashes --requirement "/tmp/deps/$1.lock"' in install
    assert "milvus" in stages
    for stage in ("serve", "train", "cpu", "cuda", "milvus"):
        body = text.split(f"AS {stage}\n", 1)[1].split("\nFROM ", 1)[0]
        lines = [line for line in body.splitlines() if line and not line.startswith("#")]
        assert lines[-1] == "USER 10001:10001"  # never root
        if stage == "cpu":
            continue
        if stage == "milvus":  # the server binary of PyPI `milvus` and its runner only
            assert "install-deps.sh milvus-server" in body and "target=/src" not in body
            assert "bench.milvus_server" in body and "foreground" in body
            for secret in ("pip.conf", "ca.crt", "constraints.txt"):
                assert f"--mount=type=secret,id={secret}" in body
            continue
        # pip's settings come in as BuildKit secrets, the sources as a bind mount: neither
        # the host's configuration nor the sources are copied into a layer
        for secret in ("pip.conf", "ca.crt", "constraints.txt"):
            assert f"--mount=type=secret,id={secret}" in body
        assert "--mount=type=bind,target=/src" in body
    assert not re.search(r"^(COPY|ADD)\b", text, flags=re.MULTILINE)
    assert re.search(r"HEALTHCHECK .*\n?.*/readyz", text)
    assert 'ENTRYPOINT ["grn"]' in text and 'CMD ["serve"]' in text  # the same image runs jobs
    # every volume compose mounts under /data exists in the image, owned by the service's
    # user: an empty named volume takes the folder's owner, else it is root's and unwritable
    made = re.search(r"mkdir -p ([^\\&]+)", text)
    assert made is not None and "chown -R grn:grn /data" in text
    mounted = {v.split(":")[1] for v in compose({})["services"]["api"]["volumes"] if ":/data/" in v}
    assert mounted and mounted <= set(made.group(1).split()), (mounted, made.group(1))


def test_compose_file_is_what_the_deployment_needs() -> None:
    spec = compose({"GRN_API_KEY": KEY, "GRN_ARCHIVE": "/srv/archive"})
    services = spec["services"]
    assert set(services) == {
        "postgres", "migrate", "api", "api-gpu", "worker", "trainer", "milvus", "api-2",
        "balancer",
    }  # fmt: skip
    postgres = services["postgres"]
    assert postgres["image"] == "grn-base/postgres:15-bookworm"  # docker/base-images.sh
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "api-gpu"):
        api = services[name]
        assert api["command"] == ["up"]  # migrate, import, train, reindex, serve
        assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
        mounts = {v.split(":")[1]: v for v in api["volumes"]}
        assert {"/data/models", "/data/index", "/archive"} <= set(mounts)
        assert mounts["/archive"] == "/srv/archive:/archive:ro"
        assert api["build"]["target"] in dockerfile_stages()
        environment = api["environment"]
        assert environment["GRN_ENVIRONMENT"] == "production"
        assert environment["GRN_API_KEY"] == KEY
        assert environment["GRN_ARCHIVE_SOURCE"] == "/srv/archive"
        assert "/readyz" in " ".join(api["healthcheck"]["test"])
        assert all(port.startswith("127.0.0.1:") for port in api["ports"])  # loopback only
    assert services["api"]["ports"] == ["127.0.0.1:8000:8000"]
    # admin jobs run in the worker service (as many as scaled), with the api's volumes
    worker = services["worker"]
    assert worker["command"] == ["worker"] and "ports" not in worker
    assert worker["healthcheck"] == {"disable": True}  # it serves no /readyz
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert worker["volumes"] == services["api"]["volumes"]
    assert worker["environment"]["GRN_EMBEDDED_WORKER"] == "false"
    assert services["api"]["environment"]["GRN_EMBEDDED_WORKER"] == "false"
    assert any(v.endswith(":/data/store") for v in services["api"]["volumes"])
    # api, worker and migrate run the image without torch; the trainer, with torch, trains
    # the first model (`grn up --train-only`) into the volume the api reads
    for name in ("api", "worker", "migrate"):
        assert services[name]["image"] == "grn:serve"
        assert services[name]["build"]["target"] == "serve"
    trainer = services["trainer"]
    assert trainer["image"] == "grn:train" and trainer["build"]["target"] == "train"
    assert trainer["command"] == ["up", "--train-only"] and "ports" not in trainer
    assert trainer["volumes"] == services["api"]["volumes"]
    assert trainer["restart"] == "on-failure" and trainer["healthcheck"] == {"disable": True}
    assert services["api-gpu"]["build"]["target"] == "cuda"
    assert services["api-gpu"]["profiles"] == ["gpu"] and "profiles" not in services["api"]
    device = services["api-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert set(spec["volumes"]) >= {"pgdata", "models", "index", "milvus"}
    # without a key or an archive compose starts all the same: the api says what to fix
    bare = compose({})["services"]["api"]
    assert bare["environment"]["GRN_API_KEY"] == ""
    assert bare["environment"]["GRN_ARCHIVE_SOURCE"] == ""
    assert "no-archive:/archive:ro" in bare["volumes"]
    # Milvus: an opt-in profile (and the cluster's); the api reaches it by its service name
    # when asked to, and waits for it where it runs
    milvus = services["milvus"]
    assert milvus["profiles"] == ["milvus", "cluster"]
    assert "healthz" in " ".join(milvus["healthcheck"]["test"])
    assert milvus["image"] == "grn:milvus" and milvus["build"]["target"] == "milvus"
    assert any(v.endswith(":/var/lib/milvus") for v in milvus["volumes"])
    for name in ("api", "worker", "api-2"):
        assert services[name]["depends_on"]["milvus"] == {
            "condition": "service_healthy", "required": False,
        }  # fmt: skip
    assert services["api"]["environment"]["GRN_VECTOR_STORE"] == "faiss"
    chosen = compose({"GRN_API_KEY": KEY, "GRN_VECTOR_STORE": "milvus"})["services"]["api"]
    assert chosen["environment"]["GRN_VECTOR_STORE"] == "milvus"
    assert chosen["environment"]["GRN_MILVUS_URI"] == "http://milvus:19530"


def test_the_cluster_profile_balances_its_replicas() -> None:
    """Two API replicas of the serving image over the same volumes and settings, one of them
    preparing (`grn up`), behind nginx, whose upstream names exactly those replicas, on one
    loopback port; a short job lease can be set for the workers."""
    services = compose({"GRN_API_KEY": KEY, "GRN_JOB_LEASE_SECONDS": "5"})["services"]
    cluster = {name for name, spec in services.items() if "cluster" in spec.get("profiles", [])}
    assert cluster == {"milvus", "api-2", "balancer"}
    api, replica = services["api"], services["api-2"]
    assert replica["command"] == ["serve"] and api["command"] == ["up"]
    assert replica["image"] == api["image"] == "grn:serve"
    for same in ("environment", "volumes", "healthcheck"):
        assert replica[same] == api[same], same
    assert "ports" not in replica
    assert services["worker"]["environment"]["GRN_JOB_LEASE_SECONDS"] == "5"
    balancer = services["balancer"]
    assert balancer["image"] == "grn-base/nginx:bookworm"  # docker/base-images.sh
    assert balancer["ports"] == ["127.0.0.1:8080:80"]
    assert set(balancer["depends_on"]) == {"api", "api-2"}
    [mount] = balancer["volumes"]
    conf, target = mount.split(":")[:2]
    assert target == "/etc/nginx/nginx.conf" and mount.endswith(":ro")
    text = (REPO / conf).read_text()
    upstream = re.search(r"upstream grn \{(.*?)\}", text, flags=re.DOTALL)
    assert upstream is not None
    servers = re.findall(r"^\s*server (\S+?):8000\b", upstream.group(1), flags=re.MULTILINE)
    assert sorted(servers) == ["api", "api-2"]
    # searches are retried on the other replica (they change nothing); writes only when the
    # failed replica never had them, as nginx does by default
    assert re.search(r"location ~ \^/search.*?non_idempotent;", text, flags=re.DOTALL)
    assert text.count("non_idempotent") == 1
    assert compose({})["services"]["worker"]["environment"]["GRN_JOB_LEASE_SECONDS"] == "30"


def compose_v2() -> list[str] | None:
    """`docker compose` (v2, the CLI plugin) when there is one; Debian bookworm's
    docker-compose 1.29 does not read this file (top-level `name:`) and is not used."""
    for docker in ("/usr/bin/docker", shutil.which("docker")):
        if docker and Path(docker).is_file():
            found = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
            if found.returncode == 0 and "version v1" not in found.stdout.lower():
                return [docker, "compose"]
    return None


def test_compose_v2_validates_the_file_with_every_profile(tmp_path: Path) -> None:
    command = compose_v2()
    if command is None:
        pytest.skip("no compose v2 here (docker/engine.sh installs it)")
    for env in ({"GRN_API_KEY": KEY, "GRN_ARCHIVE": str(tmp_path)}, {}):
        check = subprocess.run(
            [*command, "-f", str(REPO / "docker-compose.yml"), "--profile", "gpu",
             "--profile", "milvus", "--profile", "cluster", "config", "--quiet"],
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("GRN_")} | env,
        )  # fmt: skip
        assert check.returncode == 0, check.stderr
    services = subprocess.run(
        [*command, "-f", str(REPO / "docker-compose.yml"), "--profile", "gpu",
         "--profile", "milvus", "--profile", "cluster", "config", "--services"],
        capture_output=True,
        text=True,
    ).stdout.split()  # fmt: skip
    assert set(services) == {
        "postgres", "migrate", "api", "api-gpu", "worker", "trainer", "milvus", "api-2",
        "balancer",
    }  # fmt: skip
    # without a profile, the services that wait for Milvus start without it
    plain = subprocess.run(
        [*command, "-f", str(REPO / "docker-compose.yml"), "config", "--services"],
        capture_output=True,
        text=True,
    ).stdout.split()  # fmt: skip
    assert set(plain) == {"postgres", "migrate", "api", "worker", "trainer"}


def host_paths(value: str, root: Path) -> str:
    """Container paths (/data, /archive) -> folders of this test."""
    return re.sub(r"(?<![\w/])/(data|archive)\b", lambda m: str(root / m.group(1)), value)


def run_grn(args: list[str], env: dict[str, str], root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *[host_paths(a, root) for a in args]],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )


def test_compose_services_run_with_their_environment(
    served: Served, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    from model.archive import load_archive

    # the archive mounted at /archive: 60 scenes of the UCM subset with their labels file
    archive = tmp_path / "archive"
    subset = load_archive(ucm_root, ucm_subset)
    for scene in subset.scenes[:60]:
        (archive / "images").mkdir(parents=True, exist_ok=True)
        shutil.copy(scene.path, archive / "images" / scene.path.name)
    (archive / "labels.csv").write_text("\n".join(ucm_subset.read_text().splitlines()[:61]) + "\n")
    spec = compose({"GRN_API_KEY": KEY, "GRN_ARCHIVE": str(archive)})
    with postgres_schema() as database_url:

        def service_env(name: str) -> dict[str, str]:
            env = {
                k: host_paths(str(v), tmp_path)
                for k, v in spec["services"][name]["environment"].items()
            }
            assert env["GRN_DATABASE_URL"].startswith("postgresql://grn:")
            env["GRN_DATABASE_URL"] = database_url  # the local server stands in for `postgres`
            return env

        migrate = run_grn(spec["services"]["migrate"]["command"], service_env("migrate"), tmp_path)
        assert migrate.returncode == 0, migrate.stderr
        # the models volume already holds a model (a copy of a trained one, to keep the test
        # short; tests/service/test_prepare.py trains one): `up` imports, indexes and serves
        api_env = service_env("api")
        model_path = Path(api_env["GRN_MODEL_PATH"])
        model_path.parent.mkdir(parents=True)
        shutil.copy(served.model, model_path)

        port = free_port()
        log = (tmp_path / "api.log").open("w")
        api = subprocess.Popen(
            [sys.executable, "-m", "service.cli", *spec["services"]["api"]["command"]],
            cwd=REPO,
            env={**os.environ, **api_env, "GRN_PORT": str(port), "GRN_DEVICE": "cpu"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline, ready = time.monotonic() + 180, None
            while time.monotonic() < deadline and api.poll() is None:
                try:
                    ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                    if ready.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
            assert ready is not None and ready.status_code == 200, (
                tmp_path / "api.log"
            ).read_text()
            body = ready.json()
            assert body["scenes"] == 60 and body["index_count"] == 60
            reload = httpx.post(f"http://127.0.0.1:{port}/admin/reload", headers={"X-API-Key": KEY})
            assert reload.status_code == 200
            # an admin job waits for the worker service, which runs it
            queued = httpx.post(
                f"http://127.0.0.1:{port}/admin/import", headers={"X-API-Key": KEY}, json={}
            )
            assert queued.status_code == 202, queued.text
            time.sleep(2)
            job_url = f"http://127.0.0.1:{port}/admin/jobs/{queued.json()['id']}"
            assert httpx.get(job_url, headers={"X-API-Key": KEY}).json()["status"] == "queued"
            worker = subprocess.Popen(
                [sys.executable, "-m", "service.cli", *spec["services"]["worker"]["command"]],
                cwd=REPO,
                env={**os.environ, **service_env("worker")},
                stdout=(tmp_path / "worker.log").open("w"),
                stderr=subprocess.STDOUT,
            )
            try:
                deadline, job = time.monotonic() + 120, {}
                while time.monotonic() < deadline:
                    job = httpx.get(job_url, headers={"X-API-Key": KEY}).json()
                    if job["status"] not in ("queued", "running"):
                        break
                    time.sleep(0.5)
                assert job["status"] == "succeeded", (job, (tmp_path / "worker.log").read_text())
            finally:
                worker.terminate()
                worker.wait(timeout=20)
        finally:
            api.terminate()
            api.wait(timeout=20)
            log.close()
        text = (tmp_path / "api.log").read_text()
        assert "is present: not training" in text
        # the production settings log JSON lines
        assert any(line.startswith("{") for line in text.splitlines())
