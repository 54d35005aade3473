"""The locked dependency sets: every install (`make install`, each Docker image, CI) takes
its packages from one of these files with `pip install --require-hashes`, then the project
itself with `--no-deps`. Linux x86_64, Python 3.11.

    python requirements/lock.py write UV [UV_ARGS]  # `make lock`: resolve again with uv
    python requirements/lock.py check               # `make lint`: fails when pyproject.toml
                                                    # has changed since (no network)

`write` resolves the largest set (dev) first and the others within its pins, so a package
has one version in every file; uv keeps a file's pins where they still fit (UV_ARGS
`--upgrade` or `--upgrade-package NAME` move them). Each file's header carries a digest of
pyproject.toml's dependency lists and of the extras its set installs; `check` recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "requirements"
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_28"

SETS: dict[str, tuple[str, ...]] = {
    # `make install` and CI: everything
    "dev": ("dev",),
    # grn:serve (the api, the worker): no torch; Milvus as a store
    "serve": ("milvus",),
    # grn:train: serve plus torch and the text encoder
    "train": ("milvus", "train", "text"),
    # grn:cuda: train plus faiss-gpu, which replaces faiss-cpu (both are the faiss module)
    "cuda": ("milvus", "train", "text", "gpu"),
    # grn:milvus: the Milvus standalone server of PyPI `milvus`, nothing of the project
    "milvus-server": ("milvus-server",),
}
ALONE = frozenset({"milvus-server"})
"""Sets of their extras' packages alone, without the project's own dependencies."""
LEFT_OUT: dict[str, tuple[str, ...]] = {"cuda": ("faiss-cpu",)}
"""Packages a set's file does not list although its extras bring them."""

STAMP = re.compile(r"^# pyproject-digest: ([0-9a-f]{64})$", re.MULTILINE)


def lock_path(name: str) -> Path:
    return FOLDER / f"{name}.lock"


def digest(pyproject: Path, name: str) -> str:
    """sha256 of what a set's resolution depends on: pyproject.toml's requires-python and
    dependency lists, the set's extras and the packages it leaves out."""
    project = tomllib.loads(pyproject.read_text())["project"]
    listed = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "extras": SETS[name],
        "left-out": LEFT_OUT.get(name, ()),
        "target": [PYTHON_VERSION, PLATFORM],
    }
    return hashlib.sha256(json.dumps(listed, sort_keys=True).encode()).hexdigest()


def compile_set(uv: list[str], name: str, constraints: Path | None) -> None:
    """`uv pip compile` of one set into its file (uv prefers the pins already there), its
    digest in the header."""
    lock = lock_path(name)
    source, extras = str(ROOT / "pyproject.toml"), [f"--extra={extra}" for extra in SETS[name]]
    if name in ALONE:  # the extras' requirement lines, as a requirements file
        optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "optional-dependencies"
        ]
        source, extras = str(FOLDER / f".{name}.in"), []
        Path(source).write_text("".join(f"{r}\n" for e in SETS[name] for r in optional[e]))
    command = [
        uv[0], "pip", "compile", source, f"--output-file={lock}", *extras,
        *(f"--no-emit-package={package}" for package in LEFT_OUT.get(name, ())),
        "--generate-hashes", f"--python-version={PYTHON_VERSION}",
        f"--python-platform={PLATFORM}", "--no-header", "--quiet", *uv[1:],
    ]  # fmt: skip
    if constraints is not None:
        command.append(f"--constraints={constraints}")
    resolved = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if resolved.returncode != 0:
        raise SystemExit(f"uv could not resolve the {name} set:\n{resolved.stderr}")
    header = (
        f"# The {name} set (extras: {', '.join(SETS[name])}), Linux x86_64, Python "
        f"{PYTHON_VERSION}, with hashes: `make lock` writes it (requirements/lock.py), "
        "`make lint` checks it.\n"
        f"# pyproject-digest: {digest(ROOT / 'pyproject.toml', name)}\n"
    )
    if name in ALONE:
        Path(source).unlink()
    listing = lock.read_text().replace(str(ROOT) + "/", "")
    if constraints is not None:  # the pins of dev.lock, from a temporary file
        listing = listing.replace(str(constraints), "requirements/dev.lock")
    lock.write_text(header + listing)


def pins(lock: Path) -> str:
    """A lock file's `name==version` lines, without hashes or comments."""
    return "".join(
        line.split()[0] + "\n" for line in lock.read_text().splitlines() if re.match(r"\w", line)
    )


def write(uv: list[str]) -> None:
    """Every set's file, from `uv` (its path, then arguments for each `uv pip compile`)."""
    FOLDER.mkdir(exist_ok=True)
    compile_set(uv, "dev", None)
    with tempfile.TemporaryDirectory() as scratch:
        constraints = Path(scratch) / "dev-pins.txt"
        constraints.write_text(pins(lock_path("dev")))
        for name in SETS:
            if name != "dev":
                compile_set(uv, name, constraints)


def stale(pyproject: Path, folder: Path) -> list[str]:
    """One line for each set whose file is missing or was written from other dependency
    lists than pyproject.toml's."""
    problems = []
    for name in SETS:
        lock = folder / f"{name}.lock"
        if not lock.is_file():
            problems.append(f"{lock.name} is missing")
            continue
        found = STAMP.search(lock.read_text())
        if found is None or found.group(1) != digest(pyproject, name):
            problems.append(f"{lock.name} was not written from pyproject.toml's dependencies")
    return problems


def main(argv: list[str]) -> int:
    if argv[:1] == ["write"] and len(argv) >= 2:
        write(argv[1:])
        return 0
    if argv == ["check"]:
        problems = stale(ROOT / "pyproject.toml", FOLDER)
        for problem in problems:
            print(f"requirements/{problem}: run `make lock`", file=sys.stderr)
        return 1 if problems else 0
    print("usage: python requirements/lock.py write UV [UV_ARGS] | check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
