"""Training under torchrun (2 processes, gloo on the CPU) gives the losses, weights and
memory bank of one process training on the same global batches, and a run checkpointed by
one process resumes on two."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")


def train_args(ucm_root: Path, ucm_subset: Path, out: Path, cache: Path) -> list[str]:
    # head mode without dropout or batch norm: the only randomness is the data order and the
    # views, drawn the same way whatever the number of processes
    return [
        "train", "--archive", str(ucm_root), "--labels", str(ucm_subset), "--out", str(out),
        "--mode", "head", "--backbone", "tiny", "--no-pretrained", "--input-size", "32",
        "--hidden-dim", "0", "--dropout", "0", "--feature-views", "2", "--epochs", "3",
        "--batch-size", "16", "--lr", "0.05", "--lr-step", "2", "--loss", "sndl_bce",
        "--cache-dir", str(cache), "--device", "cpu", "--quiet", "--drop-last",
    ]  # fmt: skip


@pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="needs torchrun")
def test_two_processes_match_one(ucm_root: Path, ucm_subset: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cache = tmp_path / "cache"
    one = subprocess.run(
        [sys.executable, "-m", "service.cli",
         *train_args(ucm_root, ucm_subset, tmp_path / "one", cache)],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "service.cli",
         *train_args(ucm_root, ucm_subset, tmp_path / "two", cache)],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    summary = json.loads((tmp_path / "two" / "train_summary.json").read_text())
    assert summary["processes"] == 2
    a = torch.load(tmp_path / "one" / "last_state.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "last_state.pt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 3 * (84 // 16)  # 5 full batches an epoch
    torch.testing.assert_close(b["bank"], a["bank"], rtol=1e-5, atol=1e-5)
    for key, value in a["net"].items():
        torch.testing.assert_close(b["net"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    for row_a, row_b in zip(a["history"], b["history"], strict=True):
        for key in ("loss", "sndl", "bce"):
            assert row_b[key] == pytest.approx(row_a[key], rel=1e-4), key
    # a run killed in its second epoch on one process resumes on two: the same result
    stopped = subprocess.run(
        [sys.executable, "-m", "service.cli",
         *train_args(ucm_root, ucm_subset, tmp_path / "resumed", cache)],
        cwd=REPO, env={**env, "GRN_FAULT_KILL_AT": "train-step:7"}, capture_output=True,
        text=True,
    )  # fmt: skip
    assert stopped.returncode == -9, stopped.stderr
    first = torch.load(tmp_path / "resumed" / "last_state.pt", weights_only=True)
    assert first["epoch"] == 0
    resumed = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "service.cli",
         *train_args(ucm_root, ucm_subset, tmp_path / "resumed", cache)],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    c = torch.load(tmp_path / "resumed" / "last_state.pt", weights_only=True)
    assert c["global_step"] == a["global_step"]
    torch.testing.assert_close(c["bank"], a["bank"], rtol=1e-5, atol=1e-5)
    for key, value in a["net"].items():
        torch.testing.assert_close(c["net"][key], value, rtol=1e-4, atol=1e-5, msg=key)

    # and the weights moved: the comparison is not of two untrained networks
    start = torch.load(tmp_path / "one" / "last_state.pt", weights_only=True)["history"][0]
    assert start["loss"] != a["history"][-1]["loss"]


@pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="needs torchrun")
def test_unlabelled_scenes_distil_the_same_on_two_processes(
    ucm_root: Path, ucm_partly_labelled: Path, tmp_path: Path
) -> None:
    """21 of the 84 train scenes are unlabelled: each process takes every other one of each
    batch's share (so the processes hold different numbers of rows), and the distillation
    term over all of them trains as one process does."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cache = tmp_path / "cache"
    states = {}
    for name, launcher in (
        ("one", [sys.executable, "-m", "service.cli"]),
        ("two", [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "service.cli"]),
    ):
        args = train_args(ucm_root, ucm_partly_labelled, tmp_path / name, cache)
        args[args.index("--batch-size") + 1] = "14"  # 63 labelled: 4 full batches of 14
        done = subprocess.run(
            [*launcher, *args, "--distill", "1"], cwd=REPO, env=env, capture_output=True,
            text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert "(21 unlabelled in the distillation term only)" in done.stderr
        states[name] = torch.load(tmp_path / name / "last_state.pt", weights_only=True)
    a, b = states["one"], states["two"]
    assert a["global_step"] == b["global_step"] == 3 * (63 // 14)
    for key, value in a["net"].items():
        torch.testing.assert_close(b["net"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    for row_a, row_b in zip(a["history"], b["history"], strict=True):
        assert row_b["distill"] > 0
        for key in ("loss", "sndl", "bce", "distill"):
            assert row_b[key] == pytest.approx(row_a[key], rel=1e-4), key
