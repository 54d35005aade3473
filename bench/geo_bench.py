"""Georeferenced rasters and place filters, each against its baseline in one run.

    .venv/bin/python -m bench.geo_bench --out docs/results/geo-bench.json
    .venv/bin/python -m bench.geo_bench --tiling --grid 8 8 --rounds 2      # part 1 only, small
    .venv/bin/python -m bench.geo_bench --search --scenes 200000 --repeats 100  # part 2 only

1. `--tiling`: a mosaic of `--grid` rows x cols real UCM scenes (256 x 256 each: 16 x 16 is a
   4096 x 4096 px, 8-bit RGB, tiled and deflated GeoTIFF in UTM, `bench/mosaic.py`) is cut
   by `model.tile_archive.tile_rasters` (what `grn tile` calls) and the tiles embedded by
   `model.embedding.embed_archive` (what `grn embed` calls); the baseline is `embed_archive`
   over the same scenes as their original UCM files (JPEG), copied into an archive folder.
   The tiles hold the same pixels as the files, so the embeddings must agree (checked). Both
   run in this process with the served model, its engine and `configure_cpu_threads`' thread
   settings; an untimed embed first pays the one-off costs (imports, first engine build).
   Rounds alternate the order. Then the same as whole commands (`grn tile` + `grn embed`
   against `grn embed`, child processes), interpreter start and model loading included.
2. `--search`: a catalog of `--scenes` synthetic footprints (76.8 m squares, as a 256 px tile
   at 0.3 m, centres uniform over a `--region-km` square near Los Angeles) as a `SceneTable`
   built from arrays, and an index of as many random 128-d unit vectors (ids = the table's)
   built by `index.vectors.build_index` with the factory `grn reindex --factory auto` picks
   for that count, written as an index version and opened by the FAISS store as the service
   opens it (`FaissVersions.open`: memory-mapped, default search settings). A box keeping
   `--share` of the scenes; timed, interleaved: `service.usecases.search.rank` top-10 unfiltered and
   with the box (the arrays' mask, then the id allow-list search), the mask alone and the
   allow-list search alone. Then SQLite with the same footprints (`scenes` and
   `scene_footprints` rows, inserted through the triggers the migrations made, so the R*Tree
   is filled as `grn import` fills it): `service.storage.dialects.ids_in_box` (the R*Tree)
   against the same box as a plain WHERE on `scene_footprints`' columns (a full scan), interleaved.

Without --tiling or --search both parts run. The JSON file keeps the part not run from an
earlier run.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import MODEL, UCM, box_query_arguments, checked_grn, invocation, percentiles
from bench.mosaic import PIXEL_M, SCENE_PX, square_scenes, write_mosaic
from index.filters import SceneFilter

FOOTPRINT_M = SCENE_PX * PIXEL_M
"""76.8 m: a 256-pixel tile at UCM's 0.3 m."""
REGION_CENTRE = (-117.0, 34.0)
DIM = 128
K = 10


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


# -- part 1: tiling and embedding ---------------------------------------------------------------


def files_archive(scenes: list[Path], folder: Path) -> Path:
    """The scenes' original files as an archive folder (images/ and labels.csv)."""
    (folder / "images").mkdir(parents=True)
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["image", "scene", "split"])
        for path in scenes:
            shutil.copy(path, folder / "images" / path.name)
            writer.writerow([path.stem, path.parent.name, "train"])
    return folder


def png_bytes(rgb: np.ndarray, zlevel: int) -> bytes:
    """`model.tile_archive.encode_png` with GDAL's PNG ZLEVEL given (its default is 6)."""
    import rasterio
    from rasterio.io import MemoryFile

    height, width, _ = rgb.shape
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), MemoryFile() as memory:
        with memory.open(
            driver="PNG", width=width, height=height, count=3, dtype="uint8", ZLEVEL=zlevel
        ) as png:
            png.write(np.moveaxis(rgb, -1, 0))
        return bytes(memory.read())


def tile_breakdown(raster: Path) -> dict[str, Any]:
    """Where `tile_rasters`' time goes, step by step, once: the plan, reading the windows,
    encoding the PNGs (and, for comparison, encoding them at zlib level 1)."""
    from model.tile_archive import encode_png
    from model.tiling import plan_tiles, read_tiles

    steps: dict[str, float] = {}
    started = time.perf_counter()
    plan = plan_tiles(raster)
    steps["plan_s"] = time.perf_counter() - started
    started = time.perf_counter()
    images = [image.rgb for image in read_tiles(plan) if image.rgb is not None]
    steps["read_s"] = time.perf_counter() - started
    started = time.perf_counter()
    encoded = [encode_png(rgb) for rgb in images]
    steps["encode_png_s"] = time.perf_counter() - started
    started = time.perf_counter()
    fast = [png_bytes(rgb, 1) for rgb in images]
    steps["encode_png_zlevel_1_s"] = time.perf_counter() - started
    return {
        "includes": "one pass over the same raster; writing the files and labels.csv left out",
        **{key: round(value, 3) for key, value in steps.items()},
        "png_bytes": sum(map(len, encoded)),
        "png_zlevel_1_bytes": sum(map(len, fast)),
    }


def tiling(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    from model.embedding import embed_archive
    from model.tile_archive import tile_rasters

    rows, cols = args.grid
    count = rows * cols
    scenes = square_scenes(args.ucm, count, seed=0)
    mosaic = write_mosaic(work / "mosaic.tif", scenes, grid=(rows, cols))
    files = files_archive(scenes, work / "ucm-files")
    model = str(args.model)

    def embed(archive: Path, out: Path) -> tuple[float, Any]:
        started = time.perf_counter()
        embedded, broken = embed_archive(model, archive, out, progress=False)
        if broken or len(embedded.positions) != count:
            raise SystemExit(f"{archive}: embedded {len(embedded.positions)} of {count} scenes")
        return time.perf_counter() - started, embedded

    embed(files, work / "warm-up.npz")  # imports, the first engine build: paid once, untimed
    library: dict[str, list[float]] = {
        "tile_s": [], "tiles_embed_s": [], "tiles_embed_loop_s": [],
        "files_embed_s": [], "files_embed_loop_s": [],
    }  # fmt: skip
    commands: dict[str, list[float]] = {
        "grn_tile_s": [],
        "grn_embed_tiles_s": [],
        "grn_embed_files_s": [],
        **{
            f"grn_{step}_{case}_s": []
            for step in ("import", "reindex")
            for case in ("tiles", "files")
        },
    }
    outputs: dict[str, str] = {}
    engine = ""
    for round_no in range(args.rounds):
        order = ("tiles", "files") if round_no % 2 == 0 else ("files", "tiles")
        for case in order:
            if case == "tiles":
                tiles = work / f"tiles-{round_no}"
                started = time.perf_counter()
                report = tile_rasters([mosaic.path], tiles)
                library["tile_s"].append(time.perf_counter() - started)
                if report.written != count:
                    raise SystemExit(f"tiled {report.written} of {count} scenes")
                seconds, embedded = embed(tiles, work / f"tiles-{round_no}.npz")
                library["tiles_embed_s"].append(seconds)
                library["tiles_embed_loop_s"].append(embedded.seconds)
                engine = embedded.engine
            else:
                seconds, embedded = embed(files, work / f"files-{round_no}.npz")
                library["files_embed_s"].append(seconds)
                library["files_embed_loop_s"].append(embedded.seconds)
        if args.no_cli:
            continue
        for case in order:
            if case == "tiles":
                tiles = work / f"cli-tiles-{round_no}"
                seconds, outputs["grn tile"] = checked_grn(
                    "tile", str(mosaic.path), "--out", str(tiles)
                )
                commands["grn_tile_s"].append(seconds)
                seconds, outputs["grn embed (tiles)"] = checked_grn(
                    "embed", "--model", model, "--archive", str(tiles),
                    "--out", str(work / f"cli-tiles-{round_no}.npz"), "--quiet",
                )  # fmt: skip
                commands["grn_embed_tiles_s"].append(seconds)
            else:
                seconds, outputs["grn embed (files)"] = checked_grn(
                    "embed", "--model", model, "--archive", str(files),
                    "--out", str(work / f"cli-files-{round_no}.npz"), "--quiet",
                )  # fmt: skip
                commands["grn_embed_files_s"].append(seconds)
            # to searchable: the archive imported into a fresh database, then its index built
            archive = tiles if case == "tiles" else files
            settings = {
                "GRN_DATABASE_URL": f"sqlite:///{work / f'{case}-{round_no}.db'}",
                "GRN_INDEX_ROOT": str(work / f"index-{case}-{round_no}"),
            }
            checked_grn("db", "upgrade", env=settings)
            seconds, outputs[f"grn import ({case})"] = checked_grn(
                "import", str(archive), "--quiet", env=settings
            )
            commands[f"grn_import_{case}_s"].append(seconds)
            seconds, outputs[f"grn reindex ({case})"] = checked_grn(
                "reindex", "--model", model, "--archive", str(archive), "--quiet", env=settings
            )
            commands[f"grn_reindex_{case}_s"].append(seconds)

    breakdown = tile_breakdown(mosaic.path)
    tiles_bytes = sum(p.stat().st_size for p in (work / "tiles-0" / "images").iterdir())

    # the tiles hold the files' pixels: the same scene must get the same embedding
    tiles_npz, files_npz = np.load(work / "tiles-0.npz"), np.load(work / "files-0.npz")
    by_name = {str(n): v for n, v in zip(files_npz["names"], files_npz["embeddings"], strict=True)}
    stems = {f"{mosaic.path.stem}_{r}_{c}": stem for (r, c), stem in mosaic.scenes.items()}
    difference = max(
        float(np.abs(vector - by_name[stems[str(name)]]).max())
        for name, vector in zip(tiles_npz["names"], tiles_npz["embeddings"], strict=True)
    )

    median = {key: statistics.median(values) for key, values in library.items()}
    tile_s, tiles_embed_s, files_s = (
        median["tile_s"],
        median["tiles_embed_s"],
        median["files_embed_s"],
    )
    result: dict[str, Any] = {
        "scenes": count,
        "raster": {
            "grid": [rows, cols],
            "pixels": [cols * SCENE_PX, rows * SCENE_PX],
            "kind": "8-bit RGB GeoTIFF, 256 x 256 internal tiles, deflate, EPSG:32611",
            "bytes": mosaic.path.stat().st_size,
        },
        "baseline_files": {
            "kind": "the same UCM scenes as their original JPEG files, copied into an archive",
            "bytes": sum(p.stat().st_size for p in (files / "images").iterdir()),
        },
        "model": str(args.model),
        "engine": engine,
        "torch_threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "seconds_per_round": {
            key: [round(v, 3) for v in values] for key, values in library.items()
        },
        "tile": {
            "includes": "tile_rasters: plan (footprints reprojected to WGS84), read each 256 px "
            "window, encode PNG, write labels.csv, rename into place",
            "seconds": round(tile_s, 3),
            "scenes_per_s": round(count / tile_s, 1),
            "tiles_bytes": tiles_bytes,
            "breakdown": breakdown,
        },
        "tile_then_embed": {
            "includes": "tile_rasters, then embed_archive over the tiles (model load and engine "
            "check, archive read, PNG decode, network, .npz write)",
            "seconds": round(tile_s + tiles_embed_s, 3),
            "scenes_per_s": round(count / (tile_s + tiles_embed_s), 1),
            "embed_seconds": round(tiles_embed_s, 3),
            "embed_loop_scenes_per_s": round(count / median["tiles_embed_loop_s"], 1),
        },
        "grn_embed_files": {
            "includes": "embed_archive over the files (model load and engine check, archive "
            "read, JPEG decode, network, .npz write): what `grn embed` runs",
            "seconds": round(files_s, 3),
            "scenes_per_s": round(count / files_s, 1),
            "embed_loop_scenes_per_s": round(count / median["files_embed_loop_s"], 1),
        },
        "tile_then_embed_over_grn_embed": round(files_s / (tile_s + tiles_embed_s), 3),
        "tile_alone_over_grn_embed": round(files_s / tile_s, 3),
        "max_abs_embedding_difference_tiles_vs_files": difference,
        "load_average_after": load_average(),
    }
    if not args.no_cli:
        cmd = {key: statistics.median(values) for key, values in commands.items()}
        both = cmd["grn_tile_s"] + cmd["grn_embed_tiles_s"]
        result["whole_commands"] = {
            "includes": "child processes: interpreter start, imports, model load, the work",
            "seconds_per_round": {k: [round(v, 2) for v in vs] for k, vs in commands.items()},
            "grn_tile_then_grn_embed_s": round(both, 2),
            "grn_tile_then_grn_embed_scenes_per_s": round(count / both, 1),
            "grn_embed_files_s": round(cmd["grn_embed_files_s"], 2),
            "grn_embed_files_scenes_per_s": round(count / cmd["grn_embed_files_s"], 1),
            "tile_then_embed_over_grn_embed": round(cmd["grn_embed_files_s"] / both, 3),
            "to_searchable": to_searchable(cmd, count),
            "last_lines": outputs,
        }
    return result


def to_searchable(cmd: dict[str, float], count: int) -> dict[str, Any]:
    """A raster to searchable scenes (grn tile, import, reindex) against the same scenes as
    files (import, reindex), each into a fresh SQLite database and index."""
    raster = cmd["grn_tile_s"] + cmd["grn_import_tiles_s"] + cmd["grn_reindex_tiles_s"]
    files = cmd["grn_import_files_s"] + cmd["grn_reindex_files_s"]
    return {
        "includes": "child processes, each with interpreter start; `grn db upgrade` not counted",
        "raster_s": round(raster, 2),
        "raster_scenes_per_s": round(count / raster, 1),
        "files_s": round(files, 2),
        "files_scenes_per_s": round(count / files, 1),
        "raster_over_files": round(files / raster, 3),
    }


# -- part 2: place filters over 1M scenes -------------------------------------------------------


def synthetic_places(count: int, region_km: float, seed: int) -> np.ndarray:
    """(count, 6) footprints as `SceneTable.places`: FOOTPRINT_M squares, centres uniform
    over a region_km square around REGION_CENTRE."""
    from service.usecases.density import DEGREE_M

    rng = np.random.default_rng(seed)
    lon0, lat0 = REGION_CENTRE
    dlat = 1.0 / DEGREE_M
    dlon = dlat / math.cos(math.radians(lat0))
    region_m = region_km * 1000.0
    lon = lon0 + (rng.random(count) - 0.5) * region_m * dlon
    lat = lat0 + (rng.random(count) - 0.5) * region_m * dlat
    half_lon, half_lat = FOOTPRINT_M / 2 * dlon, FOOTPRINT_M / 2 * dlat
    return np.stack([lon - half_lon, lat - half_lat, lon + half_lon, lat + half_lat, lon, lat], 1)


def centred_box(region_km: float, share: float) -> tuple[float, float, float, float]:
    """A box at the region's centre that footprints meet with probability `share`: the
    centres within half a footprint of it, (side + footprint)^2 / region^2."""
    from service.usecases.density import DEGREE_M

    lon0, lat0 = REGION_CENTRE
    side_m = math.sqrt(share) * region_km * 1000.0 - FOOTPRINT_M
    half_lat = side_m / 2 / DEGREE_M
    half_lon = half_lat / math.cos(math.radians(lat0))
    return (lon0 - half_lon, lat0 - half_lat, lon0 + half_lon, lat0 + half_lat)


def scene_table(ids: np.ndarray, places: np.ndarray) -> Any:
    """A catalog of unlabelled scenes in one folder, with these footprints."""
    from service.storage.scene_table import SceneTable

    count = len(ids)
    codes = np.zeros(count, dtype=np.int32)
    return SceneTable(
        generation=1,
        ids=ids,
        names=np.asarray([f"scene{i:07d}" for i in ids.tolist()], dtype=object),
        folders=codes,
        folder_names=["synthetic"],
        splits=codes,
        split_names=["train"],
        labels=np.zeros((count, 0), dtype=bool),
        label_names=[],
        label_sets=codes,
        label_set_names=[()],
        places=places,
    )


def served_index(ids: np.ndarray, factory: str, root: Path, seed: int) -> tuple[Any, np.ndarray]:
    """Random unit vectors under these ids, built as `grn reindex` builds an index, opened as
    the service opens it; and the vectors."""
    from index.stores.faiss import FaissVersions
    from index.stores.faiss_versions import IndexStore
    from index.vectors import build_index

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((len(ids), DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = build_index(factory, ids, vectors, seed=seed)
    manifest = IndexStore(root).write_version(index, model_version="synthetic", factory=factory)
    del index
    store = FaissVersions(root)
    store.init_worker_thread()  # one FAISS thread, as each of the service's search threads
    return store.open(manifest.version, "synthetic"), vectors


def interleaved(cases: dict[str, Callable[[int], Any]], repeats: int) -> dict[str, list[float]]:
    """Each case `repeats` times, round after round in a rotating order; ms per call."""
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for n in range(repeats):
        shift = n % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            cases[name](n)
            times[name].append((time.perf_counter() - started) * 1000)
    return times


def exact_top(vectors: np.ndarray, ids: np.ndarray, query: np.ndarray) -> set[int]:
    scores = vectors @ query
    return set(ids[np.argpartition(-scores, K)[:K]].tolist())


def square_geojson(x0: float, y0: float, x1: float, y1: float) -> str:
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return json.dumps({"type": "Polygon", "coordinates": [ring]}, separators=(",", ":"))


def fill_footprints(url: str, ids: np.ndarray, places: np.ndarray, chunk: int = 50_000) -> float:
    """`scenes` and `scene_footprints` rows for every id, on a migrated database, in
    multi-row batches through the migrations' triggers (catalog changes, the R*Tree).
    Seconds taken."""
    from sqlalchemy import insert

    from service.storage.db import ArchiveImport, make_engine
    from service.storage.migrate import upgrade

    engine = make_engine(url)
    upgrade(engine)
    started = time.perf_counter()
    with engine.begin() as connection:
        archive_id = connection.execute(
            insert(ArchiveImport)
            .values(root="/synthetic", labels_csv="-", status="complete")
            .returning(ArchiveImport.id)
        ).scalar_one()
        for start in range(0, len(ids), chunk):
            part_ids = ids[start : start + chunk].tolist()
            part = places[start : start + chunk].tolist()
            connection.exec_driver_sql(
                "INSERT INTO scenes (id, name, scene, split, archive_id, path, media_type, "
                "width, height, checksum, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (i, f"scene{i:07d}", "synthetic", "train", archive_id, f"images/{i}.png",
                     "image/png", SCENE_PX, SCENE_PX, "0" * 64, "2026-12-04 00:00:00.000000")
                    for i in part_ids
                ],
            )  # fmt: skip
            connection.exec_driver_sql(
                "INSERT INTO scene_footprints (scene_id, min_lon, min_lat, max_lon, max_lat, "
                "lon, lat, geometry, crs, source, window) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (i, x0, y0, x1, y1, x, y,
                     square_geojson(x0, y0, x1, y1),
                     "EPSG:32611", "synthetic.tif", "0,0,256,256")
                    for i, (x0, y0, x1, y1, x, y) in zip(part_ids, part, strict=True)
                ],
            )  # fmt: skip
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds


def search(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import faiss
    from sqlalchemy import text

    from index.vectors import auto_factory
    from service.storage.db import make_engine
    from service.storage.dialects import ids_in_box
    from service.usecases.density import DEGREE_M
    from service.usecases.search import rank

    count = args.scenes
    ids = np.arange(1, count + 1, dtype=np.int64)
    places = synthetic_places(count, args.region_km, args.seed)
    table = scene_table(ids, places)
    box = centred_box(args.region_km, args.share)
    where = SceneFilter(bbox=box)
    allowed = table.allowed_ids(where)

    factory = args.factory or auto_factory(count, DIM, int(args.memory_budget_gb * 2**30))
    started = time.perf_counter()
    index, vectors = served_index(ids, factory, work / "index", args.seed)
    build_s = time.perf_counter() - started
    rng = np.random.default_rng(args.seed + 1)
    queries = rng.standard_normal((100, DIM), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    def query(n: int) -> np.ndarray:
        return queries[n % len(queries)]

    # checks: the box's hits lie in the box; recall against exact search, both ways
    recall: dict[str, list[int]] = {"unfiltered": [], "bbox": []}
    inside = set(allowed.tolist())
    for n in range(20):
        hits = [hit.scene.id for hit in rank(index, table, query(n), K, where)]
        if len(hits) != K or not set(hits) <= inside:
            raise SystemExit(f"the box search gave {len(hits)} hits, not {K} inside the box")
        recall["bbox"].append(len(set(hits) & exact_top(vectors[allowed - 1], allowed, query(n))))
        plain = [hit.scene.id for hit in rank(index, table, query(n), K, SceneFilter())]
        recall["unfiltered"].append(len(set(plain) & exact_top(vectors, ids, query(n))))
    del vectors

    # a diagnostic: the same mask with each of the six places columns contiguous
    by_column = dataclasses.replace(table, places=np.asfortranarray(table.places))
    cases: dict[str, Callable[[int], Any]] = {
        "unfiltered": lambda n: rank(index, table, query(n), K, SceneFilter()),
        "bbox": lambda n: rank(index, table, query(n), K, where),
        "mask_alone": lambda n: table.mask(where),
        "mask_alone_places_column_major": lambda n: by_column.mask(where),
        "allow_list_search_alone": lambda n: index.search(
            query(n)[None], K, SceneFilter(allow_ids=allowed)
        ),
    }
    interleaved(cases, 20)  # warm: the mapped lists into the page cache
    times = interleaved(cases, args.repeats)
    arrays = {name: percentiles(values, 3, (90,)) for name, values in times.items()}

    url = f"sqlite:///{work / 'footprints.db'}"
    fill_s = fill_footprints(url, ids, places)
    engine = make_engine(url)
    scan = text(
        "SELECT scene_id FROM scene_footprints WHERE max_lon >= :min_lon AND min_lon <= :max_lon "
        "AND max_lat >= :min_lat AND min_lat <= :max_lat"
    ).bindparams(min_lon=box[0], min_lat=box[1], max_lon=box[2], max_lat=box[3])
    rtree = ids_in_box("sqlite", box)
    with engine.connect() as connection:
        found = {
            "rtree": set(connection.execute(rtree).scalars()),
            "scan": set(connection.execute(scan).scalars()),
        }
        plans = {
            name: [
                str(row[-1])
                for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)
            ]
            for name, (sql, params) in {
                "rtree": (
                    "SELECT id FROM scene_footprint_boxes WHERE max_lon >= ? AND min_lon <= ? "
                    "AND max_lat >= ? AND min_lat <= ?",
                    (box[0], box[2], box[1], box[3]),
                ),
                "scan": (
                    "SELECT scene_id FROM scene_footprints WHERE max_lon >= ? AND min_lon <= ? "
                    "AND max_lat >= ? AND min_lat <= ?",
                    (box[0], box[2], box[1], box[3]),
                ),
            }.items()
        }
        sql_cases: dict[str, Callable[[int], Any]] = {
            "rtree_ids_in_box": lambda n: connection.execute(rtree).scalars().all(),
            "full_scan_where": lambda n: connection.execute(scan).scalars().all(),
        }
        interleaved(sql_cases, 3)
        sql_times = interleaved(sql_cases, args.sql_repeats)
    engine.dispose()
    extra = np.asarray(sorted(found["rtree"] - found["scan"]), dtype=np.int64)
    lon_m = DEGREE_M * math.cos(math.radians(REGION_CENTRE[1]))
    gaps_m = np.maximum.reduce(
        [
            (box[0] - places[extra - 1, 2]) * lon_m,
            (places[extra - 1, 0] - box[2]) * lon_m,
            (box[1] - places[extra - 1, 3]) * DEGREE_M,
            (places[extra - 1, 1] - box[3]) * DEGREE_M,
        ]
    )
    rtree_only = {
        "count": len(extra),
        "scan_only": len(found["scan"] - found["rtree"]),
        "max_gap_to_box_m": round(float(gaps_m.max()), 3) if len(extra) else None,
        "why": "the R*Tree keeps 32-bit floats, rounded outward: footprints that miss the box by "
        "less than the rounding are returned too",
    }
    sql = {name: percentiles(values, 3, (90,)) for name, values in sql_times.items()}

    return {
        "scenes": count,
        "footprints": f"{FOOTPRINT_M:g} m squares, centres uniform over a {args.region_km:g} km "
        f"square around lon {REGION_CENTRE[0]}, lat {REGION_CENTRE[1]}",
        "box": [round(v, 6) for v in box],
        "box_keeps": len(allowed),
        "box_keeps_share": round(len(allowed) / count, 5),
        "index": {
            "factory": factory,
            "how": "index.vectors.build_index (grn reindex's builder, factory as --factory auto "
            "picks), IndexStore.write_version, FaissVersions.open (memory-mapped, default "
            f"SearchSettings: nprobe 64); random {DIM}-d unit vectors",
            "faiss_threads": faiss.omp_get_max_threads(),
            "build_write_open_s": round(build_s, 1),
        },
        "k": K,
        "repeats": args.repeats,
        "queries": "100 random unit vectors, cycled",
        "recall_at_10_vs_exact": {
            "note": "20 queries; random vectors are an inverted file's worst case",
            "unfiltered": round(statistics.mean(recall["unfiltered"]) / K, 3),
            "bbox_vs_exact_over_the_box": round(statistics.mean(recall["bbox"]) / K, 3),
        },
        "arrays": {
            "includes": {
                "unfiltered": "service.usecases.search.rank, SceneFilter(): the index search "
                "and the catalog rows of the hits",
                "bbox": "service.usecases.search.rank with SceneFilter(bbox=...): "
                "SceneTable.allowed_ids (the mask on the places array), then the store's "
                "allow-list search (faiss IDSelectorBatch), and the rows",
                "mask_alone": "SceneTable.mask(SceneFilter(bbox=...))",
                "allow_list_search_alone": "the store's search with the box's ids as allow_ids",
                "mask_alone_places_column_major": "a diagnostic, not the service: the same "
                "mask on a copy of places in column-major (Fortran) order",
            },
            **arrays,
            "bbox_over_unfiltered_p50": round(
                arrays["bbox"]["p50_ms"] / arrays["unfiltered"]["p50_ms"], 2
            ),
        },
        "sqlite": {
            "rows": f"{count} scenes and {count} scene_footprints rows, inserted 50,000 a "
            "statement (executemany) with the foreign keys on, through the migrations' triggers",
            "fill_s": round(fill_s, 1),
            "ids_found": {name: len(values) for name, values in found.items()},
            "same_ids": found["rtree"] == found["scan"],
            "rtree_only": rtree_only,
            "query_plans": plans,
            "includes": "the query executed and every id fetched into Python (SQLAlchemy Core)",
            "repeats": args.sql_repeats,
            **sql,
            "full_scan_over_rtree_p50": round(
                sql["full_scan_where"]["p50_ms"] / sql["rtree_ids_in_box"]["p50_ms"], 1
            ),
        },
        "load_average_after": load_average(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiling", action="store_true", help="part 1 only (with --search: both)")
    parser.add_argument("--search", action="store_true", help="part 2 only (with --tiling: both)")
    parser.add_argument("--ucm", type=Path, default=UCM)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--grid", type=int, nargs=2, default=(16, 16), metavar=("ROWS", "COLS"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-cli", action="store_true", help="skip the whole-command timings")
    parser.add_argument("--scenes", type=int, default=1_000_000)
    parser.add_argument("--factory", help="FAISS factory (default: what auto picks)")
    parser.add_argument("--memory-budget-gb", type=float, default=8.0, help="as grn reindex's")
    box_query_arguments(parser, repeats=300)
    args = parser.parse_args()
    both = args.tiling == args.search
    result: dict[str, Any] = {}
    if args.out and args.out.is_file():
        result = json.loads(args.out.read_text())
    run = {
        "machine_cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime()),
        "command": invocation(),
    }
    with tempfile.TemporaryDirectory(prefix="grn-geo-bench-") as folder:
        work = Path(folder)
        if args.tiling or both:
            (work / "tiling").mkdir()
            result["tiling"] = {**run, **tiling(args, work / "tiling")}
            print(json.dumps(result["tiling"], indent=2), flush=True)
        if args.search or both:
            (work / "search").mkdir()
            result["search"] = {**run, **search(args, work / "search")}
            print(json.dumps(result["search"], indent=2), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
