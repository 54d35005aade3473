"""Several trained heads on cached features, scored as one embedding, on the UCM test split.

    GRN_CACHE_DIR=.cache python -m bench.head_ensemble runs/a runs/b runs/a,runs/b,runs/c

Each argument is a run, or runs joined by commas: their unit embeddings side by side, each
scaled by 1/sqrt(n) (a cosine is then the mean of theirs), their probabilities averaged. The
heads are applied to their backbones' cached pooled features (one view, as `grn evaluate`
scores a served model). Printed per argument: k-NN sample-F1, mAP, P@10 and NDCG@10 with
blend 0 and 0.1.
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.join_sweep import ARCHIVE, Scored, figures, head_outputs
from model.archive import load_archive
from model.inference import ranking_vectors


def ensemble(parts: list[Scored]) -> Scored:
    scale = 1 / np.sqrt(len(parts))
    embeddings = np.hstack([scale * p[0] for p in parts]).astype(np.float32)
    return embeddings, np.mean([p[1] for p in parts], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("groups", nargs="+", help="a run, or runs joined by commas")
    groups = [argument.split(",") for argument in parser.parse_args().groups]
    archive = load_archive(ARCHIVE)
    train = archive.indices("train", labelled_only=True)
    test = archive.indices("test", labelled_only=True)
    by, qy = archive.label_matrix(train), archive.label_matrix(test)
    runs = sorted({run for group in groups for run in group})
    scored = {
        run: (head_outputs(run, archive, train), head_outputs(run, archive, test)) for run in runs
    }
    for group in groups:
        base = ensemble([scored[run][0] for run in group])
        query = ensemble([scored[run][1] for run in group])
        for blend in (0.0, 0.1):
            found = figures(ranking_vectors(*query, blend), ranking_vectors(*base, blend), qy, by)
            print(f"{'+'.join(group)} blend {blend}: {found}", flush=True)


if __name__ == "__main__":
    main()
