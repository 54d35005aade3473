"""Acquisition times for test archives: an `acquired` column added to a labels file, the
scenes getting `GIVEN` in turn (by name), zones, edges and every accepted form included."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from servers import LiveServer, Served, live_server

from model.archive import Archive, load_archive

GIVEN = [
    "",  # not known
    "2019-06-30T23:30:00-02:00",  # 1 July 01:30 UTC
    "2020-01-15",
    "2021-08-31T23:59:59.999999Z",
    "2022-12-01T00:30:00+01:00",  # 30 November 23:30 UTC
    "2023-06-15T12:00:00",  # no zone: UTC
    "2024:03:10 08:00:00",  # TIFF's form
]
"""The acquisition times the scenes get in turn, by name."""


def dated_labels(labels: Path, target: Path, given: list[str] = GIVEN) -> dict[str, str]:
    """`labels` with an `acquired` column after image,scene,split, its cells `given` in turn;
    each image's cell."""
    with labels.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    cells = {row[0]: given[i % len(given)] for i, row in enumerate(sorted(rows))}
    with target.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*header[:3], "acquired", *header[3:]])
        writer.writerows([*row[:3], cells[row[0]], *row[3:]] for row in rows)
    return cells


WRITE_KEY = "write-key-0123456789abcdef"


@contextmanager
def dated_server(
    kind: str, served: Served, ucm_root: Path, labels: Path, workdir: Path
) -> Iterator[tuple[LiveServer, Archive]]:
    """A server (writes allowed with `WRITE_KEY`) over the archive of `labels` dated by
    `dated_labels`, in a database of `kind`, and the archive as read from the dated labels."""
    dated = workdir / "labels.csv"
    dated_labels(labels, dated)
    env = {"GRN_WRITE_KEY": WRITE_KEY, "GRN_STORE_DIR": str(workdir / "store")}
    with live_server(kind, served, ucm_root, dated, workdir, **env) as (server, _):
        yield server, load_archive(ucm_root, dated)
