"""What longitude as a circle costs an ordinary box query (issue 42): the place filters ask
their indexes for the box as it is and one turn of the Earth either side
(`model.lonlat.shifts`), where they asked for the box alone before. Both in one run,
interleaved, at growing archive sizes:

- arrays: `SceneTable.placed` against the one-slice test it replaced (`OneSlice`, kept
  here as the baseline), for a box keeping `--share` of the scenes;
- SQLite: `service.storage.dialects.ids_in_box` (the R*Tree asked up to three times, the ids
  joined) against one R*Tree query for the box (`_ids_in_plain_box`, the query it made
  before).

The footprints are `bench.geo_bench`'s synthetic 76.8 m squares near Los Angeles; the answers
must be the same (checked).

    .venv/bin/python -m bench.lonlat_bench --sizes 100000 1000000 \
        --out docs/results/lonlat-bench.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import box_query_arguments, percentiles
from bench.geo_bench import (
    centred_box,
    fill_footprints,
    interleaved,
    load_average,
    scene_table,
    synthetic_places,
)
from index.filters import SceneFilter


class OneSlice:
    """The arrays' box test before longitude wrapped: the rows sorted by western edge once (as
    `SceneTable` caches them), then per query one slice and four columns."""

    def __init__(self, places: np.ndarray) -> None:
        self.places = places
        rows = np.flatnonzero(~np.isnan(places[:, 0]))
        self.order = rows[np.argsort(places[rows, 0], kind="stable")]
        self.west = np.ascontiguousarray(places[self.order, 0])
        self.width = float((places[rows, 2] - places[rows, 0]).max())

    def placed(self, box: tuple[float, float, float, float]) -> np.ndarray:
        start = int(np.searchsorted(self.west, box[0] - self.width, side="left"))
        stop = int(np.searchsorted(self.west, box[2], side="right"))
        rows = self.order[start:stop]
        q = self.places[rows]
        ok = (q[:, 2] >= box[0]) & (q[:, 0] <= box[2]) & (q[:, 3] >= box[1]) & (q[:, 1] <= box[3])
        keep = np.zeros(len(self.places), dtype=bool)
        keep[rows[ok]] = True
        return keep


def one_size(count: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from service.storage.db import make_engine
    from service.storage.dialects import _ids_in_plain_box, ids_in_box

    ids = np.arange(1, count + 1, dtype=np.int64)
    places = synthetic_places(count, args.region_km, args.seed)
    table = scene_table(ids, places)
    box = centred_box(args.region_km, args.share)
    where = SceneFilter(bbox=box)
    baseline = OneSlice(table.places)
    assert (table.placed(where) == baseline.placed(box)).all()  # and sorts the table's rows
    arrays = interleaved(
        {
            "placed_with_turns": lambda n: table.placed(where),
            "placed_one_slice_baseline": lambda n: baseline.placed(box),
        },
        args.repeats,
    )
    url = f"sqlite:///{work / f'footprints-{count}.db'}"
    fill_footprints(url, ids, places)
    engine = make_engine(url)
    with engine.connect() as connection:
        turns, plain = ids_in_box("sqlite", box), _ids_in_plain_box("sqlite", box, 0)
        same = sorted(connection.execute(turns).scalars()) == sorted(
            connection.execute(plain).scalars()
        )
        assert same, "the R*Tree answers differ"
        sql = interleaved(
            {
                "ids_in_box_with_turns": lambda n: connection.execute(turns).scalars().all(),
                "one_box_baseline": lambda n: connection.execute(plain).scalars().all(),
            },
            args.sql_repeats,
        )
    engine.dispose()
    return {
        "scenes": count,
        "kept": int(table.placed(where).sum()),
        "arrays_ms": {name: percentiles(v, 3, (90,)) for name, v in arrays.items()},
        "sqlite_ms": {name: percentiles(v, 3, (90,)) for name, v in sql.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    box_query_arguments(parser, repeats=200)
    args = parser.parse_args()
    result: dict[str, Any] = {"load_before": load_average(), "share": args.share, "sizes": []}
    with tempfile.TemporaryDirectory(prefix="grn-lonlat-") as work:
        for count in args.sizes:
            result["sizes"].append(one_size(count, args, Path(work)))
            print(json.dumps(result["sizes"][-1]), flush=True)
    result["load_after"] = load_average()
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
