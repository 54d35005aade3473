"""The real UCM data `grn synth` is fitted to: every scene embedded by a model (the vectors the
index ranks by, in two views: the scene as it is and rotated by 90 degrees), with its label
probabilities and backbone descriptors (first view), labels, folder, split and image file.
Cached in an .npz; `bench.synth_fit` reads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def real_ucm(model: Path, archive_dir: Path, cache: Path) -> dict[str, np.ndarray]:
    """The arrays above (cached in `cache`), in the archive's order."""
    if cache.exists():
        with np.load(cache) as data:
            return dict(data)
    from model.archive import iter_images, load_archive
    from model.card import load_model
    from model.features import apply_view
    from model.inference import batched, predict, prepare_batch

    net, card = load_model(model, "cpu")
    archive = load_archive(archive_dir)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("x0", "x1", "p", "d")}
    for chunk in batched(iter_images(archive, archive.indices(), workers=2), 32):
        images = [image for _, image in chunk]
        first = predict(net, card, prepare_batch(images, card.input_size), torch.device("cpu"))
        turned = prepare_batch([apply_view(i, 4) for i in images], card.input_size)
        second = predict(net, card, turned, torch.device("cpu"))
        parts["x0"].append(first.embeddings)
        parts["x1"].append(second.embeddings)
        parts["p"].append(first.probabilities)
        parts["d"].append(first.descriptors)
    root = archive.root.resolve()
    data = {
        "vectors": np.stack([np.concatenate(parts["x0"]), np.concatenate(parts["x1"])], axis=1),
        "probabilities": np.concatenate(parts["p"]).astype(np.float32),
        "descriptors": np.concatenate(parts["d"]).astype(np.float32),
        "labels": archive.label_matrix().astype(np.uint8),
        "label_names": np.asarray(archive.label_names),
        "folders": np.asarray([s.folder for s in archive.scenes]),
        "splits": np.asarray([s.split for s in archive.scenes]),
        "images": np.asarray([str(s.path.resolve().relative_to(root)) for s in archive.scenes]),
        "model_version": np.asarray(card.version),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **data)
    return data
