"""How long the `grn` command line takes to answer, against a baseline tree, in one run.

    git worktree add /tmp/grn-baseline <commit>
    python -m bench.cli_startup --baseline /tmp/grn-baseline --repeat 5

Each command runs as `python -m service.cli ...` in each tree (same interpreter and packages,
alternating trees), and the median wall time of `--repeat` runs is printed: `--help`, a usage
error (`import` without its argument), a one-line error (`search` with neither an image nor a
scene), and `status` (reading the model card, the index and the database of the settings).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from bench._common import DATABASE, INDEX_ROOT, MODEL, REPO, grn

COMMANDS = {
    "--help": ["--help"],
    "usage error": ["import"],
    "one-line error": ["search"],
    "status": ["status"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", type=Path, required=True, help="The tree to compare with.")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="Write the figures as JSON.")
    args = parser.parse_args()
    env = {
        "GRN_MODEL_PATH": str(MODEL),
        "GRN_DATABASE_URL": f"sqlite:///{DATABASE}",
        "GRN_INDEX_ROOT": str(INDEX_ROOT),
    }
    trees = {"baseline": args.baseline.resolve(), "this tree": REPO}
    rows = []
    for name, command in COMMANDS.items():
        times: dict[str, list[float]] = {tree: [] for tree in trees}
        for _ in range(args.repeat):
            for tree, path in trees.items():  # alternating, so both see the same load
                times[tree].append(grn(*command, env=env, tree=path)[0])
        medians = {tree: statistics.median(values) for tree, values in times.items()}
        rows.append({"command": name, **medians})
        print(
            f"{name:>16}: baseline {medians['baseline']:.2f} s, this tree "
            f"{medians['this tree']:.2f} s ({medians['baseline'] / medians['this tree']:.1f}x)"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
