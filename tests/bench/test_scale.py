"""`bench.scale` end to end at 2,000 scenes on SQLite, for correctness only (its timings are
the benchmark's business): through a real server, every filtered search by id returns the
brute-force top 10 (labels, box, added and acquisition dates) over the archive's own vectors
and descriptors (an exact index at this size), no page comes back short, the cursor pages and
the export hold what they should, a full reindex swaps in with no failed search, and added
scenes are found by a search."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from model.heads import unpack_heads

REPO = Path(__file__).resolve().parents[2]
SCENES = 2000


def test_the_scale_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    model = tmp_path / "model.safetensors"
    unpack_heads(REPO / "model/defaults/ucm-head.heads.safetensors", model)
    out = tmp_path / "scale.json"
    command = [
        sys.executable, "-m", "bench.scale", "--scenes", str(SCENES), "--database", "sqlite",
        "--model", str(model), "--work", str(tmp_path / "work"), "--out", str(out),
        "--searches", "10", "--filtered-searches", "5", "--uploads", "2", "--adds", "2",
        "--page-repeat", "1",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = json.loads(out.read_text())["results"]
    assert result["scenes"] == SCENES and result["reconcile"]["exit"] == 0
    search = result["search"]
    kinds = ("labels", "bbox", "added", "acquired")
    assert set(search) == {"unfiltered"} | {f"{k} {s}" for k in kinds for s in ("1%", "50%")}
    for name, figures in search.items():
        assert figures["recall_at_10"] == 1.0, name
        assert figures["short_pages"] == 0, name
        assert figures["n"] == (10 if name == "unfiltered" else 5)
    assert 0.005 <= search["bbox 1%"]["selectivity"] <= 0.02
    assert 0.4 <= search["labels 50%"]["selectivity"] <= 0.6
    assert 0.005 <= search["acquired 1%"]["selectivity"] <= 0.02  # the bulk import read them
    assert 0.4 <= search["acquired 50%"]["selectivity"] <= 0.6
    assert [page["depth"] for page in result["pages"]] == ["0", "N/2", "last"]
    assert result["export"]["rows"] == SCENES
    reindex = result["reindex"]
    assert reindex["swapped"] and reindex["failures"] == 0, reindex
    assert result["adds"]["found"]["n"] == 2
