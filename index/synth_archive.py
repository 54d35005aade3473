"""`grn synth`: a synthetic archive of any size that the product's own import loads.

    OUT/
      labels.csv      image,scene,split,footprint,<the model's labels>: what `grn import` reads
      scenes.csv      image,path,width,height,checksum,added,acquired: each scene's image file
                      (relative to OUT), its size and SHA-256, when it entered the archive and
                      when it was acquired (UTC, ISO 8601); `grn import --bulk` reads it instead
                      of decoding every image, today's plain import ignores it
      vectors/        the scenes' vectors for the model the parameters were fitted to
                      (`index.given_vectors`)
      source/         the real archive's images the scenes show (hard links, else copies)
      images/NNNNN/   one symbolic link per scene (10,000 a folder) to an image of `source`,
                      relative: the page shows a thumbnail with the scene's labels

Each scene is drawn from `index.synth_params` (vectors, probabilities, descriptors; labels,
folder, split and image of a real scene of its cluster). Footprints: scenes are 256 x 256
tiles at 0.3 m (76.8 m a side) in granules of 42 x 42 tiles laid at random over `region`;
a granule is added on one day of the `days` before `end` (in granule order: the archive grows
day by day) and was acquired up to 60 days before.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from tqdm import tqdm

from index.given_vectors import FOLDER, GivenVectorsWriter
from index.synth_params import SynthParams, draw_chunks
from model.archive import scene_id

TILE_M = 76.8
"""256 pixels at 0.3 m: UCM's scenes."""
GRANULE = 42
"""Tiles a side of a granule (a raster cut into scenes)."""
PER_FOLDER = 10_000
METRES_PER_DEGREE = 111_320.0
DEFAULT_REGION = (4.0, 44.0, 16.0, 54.0)
"""lon/lat box the granules are spread over (central Europe)."""


class SynthError(ValueError):
    """The archive cannot be written as asked."""


@dataclass
class SynthReport:
    folder: Path
    scenes: int
    granules: int
    seconds: float

    def summary(self) -> str:
        return (
            f"wrote {self.scenes} synthetic scenes in {self.granules} granules to {self.folder} "
            f"in {self.seconds:.1f} s"
        )


def _image_facts(source: Path, images: np.ndarray) -> tuple[list[tuple[int, int]], list[str]]:
    """(width, height) and SHA-256 of each real image the scenes link to."""
    from PIL import Image

    sizes, sums = [], []
    for relative in images:
        path = source / str(relative)
        if not path.is_file():
            raise SynthError(f"{path} does not exist: give --images the archive the "
                             "parameters were fitted on")  # fmt: skip
        with Image.open(path) as image:
            sizes.append(image.size)
        sums.append(hashlib.sha256(path.read_bytes()).hexdigest())
    return sizes, sums


def _copy_sources(source: Path, into: Path, images: np.ndarray) -> None:
    """The real images, inside the archive (hard links where the file system allows, else
    copies): `grn import` takes a scene's file where its link resolves, which must be under
    the archive folder."""
    for relative in dict.fromkeys(str(i) for i in images):
        target = into / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source / relative, target)
        except OSError:
            shutil.copyfile(source / relative, target)


def _footprint(lon: float, lat: float) -> str:
    """A tile's GeoJSON polygon with its south-west corner at (lon, lat), as `grn import`
    stores footprints (compact JSON)."""
    dlat = TILE_M / METRES_PER_DEGREE
    dlon = TILE_M / (METRES_PER_DEGREE * math.cos(math.radians(lat)))
    ring = [(lon, lat), (lon + dlon, lat), (lon + dlon, lat + dlat), (lon, lat + dlat), (lon, lat)]
    points = ",".join(f"[{x:.7f},{y:.7f}]" for x, y in ring)
    return f'{{"type":"Polygon","coordinates":[[{points}]]}}'


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_synthetic_archive(
    params: SynthParams,
    out: str | Path,
    count: int,
    *,
    images: str | Path,
    seed: int = 0,
    region: tuple[float, float, float, float] = DEFAULT_REGION,
    days: int = 730,
    end: datetime = datetime(2026, 12, 1, tzinfo=UTC),
    descriptors: bool = True,
    progress: bool = True,
) -> SynthReport:
    """Write `count` scenes to `out` (a new or empty folder); see the module docstring."""
    import time

    start = time.perf_counter()
    out = Path(out)
    if count < 1:
        raise SynthError("--scenes must be at least 1")
    if out.exists() and any(out.iterdir()):
        raise SynthError(f"{out} is not empty; give a new folder")
    source = Path(images).resolve()
    sizes, sums = _image_facts(source, params.member_images)
    suffixes = [Path(str(image)).suffix.lower() for image in params.member_images]
    out.mkdir(parents=True, exist_ok=True)
    _copy_sources(source, out / "source", params.member_images)
    rng = np.random.default_rng([seed, 1])
    granules = math.ceil(count / GRANULE**2)
    west, south, east, north = region
    corners = np.column_stack(
        [rng.uniform(west, east, granules), rng.uniform(south, north, granules)]
    )
    added_day = np.sort(rng.integers(0, days, granules))
    added_at = [end - timedelta(days=int(days - d)) for d in added_day]
    writer = GivenVectorsWriter(
        out / FOLDER, count, model_version=params.model_version,
        vector_dim=params.vector_dim, label_names=params.label_names,
        descriptor_dim=params.descriptor_dim if descriptors else None,
        made_by={"generator": "grn synth", "seed": seed, "fitted_on": params.fitted_on,
                 "spread": params.spread},
    )  # fmt: skip
    bar = tqdm(total=count, desc="synth", unit="scene", disable=not progress)
    with (
        (out / "labels.csv").open("w", newline="") as labels_file,
        (out / "scenes.csv").open("w", newline="") as scenes_file,
    ):
        labels_csv, scenes_csv = csv.writer(labels_file), csv.writer(scenes_file)
        labels_csv.writerow(["image", "scene", "split", "footprint", *params.label_names])
        scenes_csv.writerow(["image", "path", "width", "height", "checksum", "added", "acquired"])
        for first, drawn in draw_chunks(params, count, seed, descriptors=descriptors):
            ids = np.empty(len(drawn.members), np.int64)
            seconds = rng.integers(0, 86_400, len(ids))
            before = rng.integers(0, 60 * 86_400, len(ids))
            for k, member in enumerate(drawn.members.tolist()):
                number = first + k
                name = f"synth{seed}_{number:07d}"
                ids[k] = scene_id(name)
                granule, place = divmod(number, GRANULE**2)
                row, col = divmod(place, GRANULE)
                lon, lat = corners[granule]
                lat += row * TILE_M / METRES_PER_DEGREE
                lon += col * TILE_M / (METRES_PER_DEGREE * math.cos(math.radians(lat)))
                real = str(params.member_images[member])
                relative = f"images/{number // PER_FOLDER:05d}/{name}{suffixes[member]}"
                if number % PER_FOLDER == 0:
                    os.makedirs(os.path.join(out, os.path.dirname(relative)))
                os.symlink(f"../../source/{real}", os.path.join(out, relative))
                labels_csv.writerow([
                    name, params.member_folders[member], params.member_splits[member],
                    _footprint(lon, lat), *params.member_labels[member].tolist(),
                ])  # fmt: skip
                added = added_at[granule] + timedelta(seconds=int(seconds[k]))
                width, height = sizes[member]
                scenes_csv.writerow([
                    name, relative, width, height,
                    sums[member], _when(added), _when(added - timedelta(seconds=int(before[k]))),
                ])  # fmt: skip
            writer.add(first, ids, drawn.vectors, drawn.probabilities, drawn.descriptors)
            bar.update(len(ids))
    bar.close()
    writer.close()
    return SynthReport(out, count, granules, time.perf_counter() - start)
