"""The locked dependency sets of requirements/ (requirements/lock.py): written from
pyproject.toml as it is, every package pinned with its hashes, one version of a package
across the sets, the serving set without torch; `lock.py check` refuses a lock older than
pyproject.toml's dependency lists, without network."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "requirements" / "lock.py"


def lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOCK = lock_module()


def pinned(name: str) -> dict[str, tuple[str, list[str]]]:
    """package -> (version, hashes) of a set's lock file."""
    found: dict[str, tuple[str, list[str]]] = {}
    text = (REPO / "requirements" / f"{name}.lock").read_text()
    for entry in re.split(r"\n(?=\S)", text):
        if entry.startswith("#"):
            continue
        requirement = entry.split()[0]
        package, _, version = requirement.partition("==")
        assert version, f"{name}.lock: {requirement} is not pinned to one version"
        found[canonicalize_name(package)] = (version, re.findall(r"--hash=sha256:\w+", entry))
    return found


def direct_requirements(extras: tuple[str, ...], alone: bool = False) -> list[Requirement]:
    """What pyproject.toml asks for with these extras, on Linux x86_64 and Python 3.11, the
    project's own extras (dev's `grn-retrieval[train,text]`) unfolded; `alone`: the extras'
    lines without the project's dependencies."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    environment = {
        **default_environment(),
        "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
        "python_version": "3.11", "python_full_version": "3.11.7",
    }  # fmt: skip
    wanted, todo, seen = [], [*([] if alone else [None]), *extras], set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in project["optional-dependencies"][extra] if extra else project["dependencies"]:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate({**environment, "extra": ""}):
                continue
            if canonicalize_name(requirement.name) == canonicalize_name(project["name"]):
                todo.extend(requirement.extras)
            else:
                wanted.append(requirement)
    return wanted


@pytest.mark.parametrize("name", sorted(LOCK.SETS))
def test_every_set_pins_what_pyproject_asks_with_hashes(name: str) -> None:
    pins = pinned(name)
    assert all(hashes for _, hashes in pins.values()), [p for p, (_, h) in pins.items() if not h]
    for requirement in direct_requirements(LOCK.SETS[name], alone=name in LOCK.ALONE):
        package = canonicalize_name(requirement.name)
        if package in LOCK.LEFT_OUT.get(name, ()):
            assert package not in pins
            continue
        assert package in pins, f"{name}.lock lacks {requirement}"
        assert requirement.specifier.contains(pins[package][0], prereleases=True), (
            f"{name}.lock pins {package}=={pins[package][0]}, pyproject.toml asks {requirement}"
        )


def test_the_sets_agree_and_serving_has_no_torch() -> None:
    sets = {name: pinned(name) for name in LOCK.SETS}
    versions: dict[str, set[str]] = {}
    for pins in sets.values():
        for package, (version, _) in pins.items():
            versions.setdefault(package, set()).add(version)
    assert {p: v for p, v in versions.items() if len(v) > 1} == {}
    assert not {"torch", "torchvision", "triton"} & set(sets["serve"])
    assert not any(p.startswith("nvidia-") for p in sets["serve"])
    # torch as the train extra pins it, the files pip takes here (checked when locked)
    for name in ("train", "dev", "cuda"):
        assert sets[name]["torch"][0] == "2.14.1" and sets[name]["torchvision"][0] == "0.29.1"
    assert "faiss-gpu-cu12" in sets["cuda"] and "faiss-cpu" not in sets["cuda"]
    assert set(sets["serve"]) <= set(sets["train"]) <= set(sets["cuda"]) | {"faiss-cpu"}


def check(cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python requirements/lock.py check` as `make lint` runs it."""
    return subprocess.run(
        [sys.executable, "requirements/lock.py", "check"], cwd=cwd, capture_output=True, text=True
    )


def test_check_passes_on_the_committed_locks_and_refuses_a_changed_pyproject(
    tmp_path: Path,
) -> None:
    assert check(REPO).returncode == 0, check(REPO).stderr
    copy = tmp_path / "repo"
    (copy / "requirements").mkdir(parents=True)
    shutil.copy(SCRIPT, copy / "requirements")
    for lock in (REPO / "requirements").glob("*.lock"):
        shutil.copy(lock, copy / "requirements")
    pyproject = (REPO / "pyproject.toml").read_text()
    (copy / "pyproject.toml").write_text(pyproject.replace("# the CPU inference engine", "# x"))
    assert check(copy).returncode == 0, "a comment is not a dependency change"

    # a range changed in the gpu extra, which only cuda.lock installs: every lock is stale
    # (they share one resolution)
    changed = pyproject.replace('"faiss-gpu-cu12>=1.9"', '"faiss-gpu-cu12>=1.10"')
    assert changed != pyproject
    (copy / "pyproject.toml").write_text(changed)
    refused = check(copy)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"requirements/{name}.lock was not written from pyproject.toml's dependencies: "
        "run `make lock`"
        for name in LOCK.SETS
    ]

    (copy / "pyproject.toml").write_text(pyproject)
    (copy / "requirements" / "serve.lock").unlink()
    assert check(copy).stderr == "requirements/serve.lock is missing: run `make lock`\n"
