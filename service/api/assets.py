"""Browser libraries the web page uses, installed from the npm registry and served by the
app (no CDN): today Leaflet, for the map of result footprints.

`grn assets` (run by `make install` and by the image build) downloads each package's
tarball once, checks it against the integrity hash pinned here (the registry's `dist.
integrity`), and unpacks the files the page needs into `GRN_ASSET_DIR`. The app serves that
folder under `/vendor/`; where it is missing the page says how to install it and works without
the map.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import NamedTuple

REGISTRY = "https://registry.npmjs.org"


class AssetError(RuntimeError):
    """A library could not be fetched or did not match its pinned hash."""


class Package(NamedTuple):
    """An npm package the page uses, pinned."""

    name: str
    version: str
    integrity: str
    """`sha512-...`, as `npm view NAME@VERSION dist.integrity` prints it."""
    files: tuple[str, ...]
    """Paths inside the tarball's `package/` folder to keep (a folder keeps its contents)."""

    @property
    def folder(self) -> str:
        """The folder under the asset directory, and under `/vendor/` in URLs."""
        return self.name

    @property
    def url(self) -> str:
        return f"{REGISTRY}/{self.name}/-/{self.name}-{self.version}.tgz"


LEAFLET = Package(
    name="leaflet",
    version="1.9.4",
    integrity="sha512-nxS1ynzJOmOlHp+iL3FyWqK89GtNL8U8rvlMOsQdTTssxZwCXh8N2NB3GDQOL+YR3XnWyZAxwQixURb+FA74PA==",
    files=("dist/leaflet.js", "dist/leaflet.css", "dist/images", "LICENSE"),
)
PACKAGES = (LEAFLET,)


def installed(asset_dir: Path, package: Package = LEAFLET) -> bool:
    """Whether the package's files are in place, at the pinned version."""
    stamp = asset_dir / package.folder / ".version"
    return stamp.is_file() and stamp.read_text().strip() == package.version


def _verified(data: bytes, package: Package) -> bytes:
    algorithm, _, expected = package.integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if digest != expected:
        raise AssetError(
            f"{package.url} does not match its pinned integrity {package.integrity} "
            f"(got {algorithm}-{digest}); nothing was installed"
        )
    return data


def fetch(asset_dir: Path, package: Package = LEAFLET, *, timeout: float = 60.0) -> Path:
    """Install one package into `asset_dir/<name>` (nothing to do when it is there); returns
    that folder. The files are unpacked beside it and moved in whole."""
    target = asset_dir / package.folder
    if installed(asset_dir, package):
        return target
    try:
        with urllib.request.urlopen(package.url, timeout=timeout) as response:
            data = _verified(response.read(), package)
    except OSError as exc:
        raise AssetError(
            f"cannot download {package.url} ({exc}); the web page's map needs it: run "
            "`grn assets` where the npm registry is reachable, or copy the folder "
            f"{target} from a machine that has it"
        ) from exc
    asset_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{package.folder}-", dir=asset_dir))
    # mkdtemp makes the folder its owner's alone: the service may run as another user (the
    # image installs as root and serves as grn), and StaticFiles answers 401 where it cannot read
    staging.chmod(0o755)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member in archive.getmembers():
                inside = member.name.removeprefix("package/")
                if not (member.isfile() and any(
                    inside == keep or inside.startswith(f"{keep}/") for keep in package.files
                )):  # fmt: skip
                    continue
                out = staging / Path(inside).relative_to(
                    "dist" if inside.startswith("dist/") else "."
                )
                out.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                out.write_bytes(source.read())
        (staging / ".version").write_text(package.version)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
