"""A phrase read word by word onto the catalog's own names: its labels and scene folders,
before any sentence encoder (`service.usecases.text`), so that what is read is what the
archive calls things and can be said back exactly.

The rules, in order:
- The phrase is cut into words (letters and digits; hyphens, underscores and spaces all
  separate), lower case. `STOP_WORDS` ("a", "in", "with", "through", ...) are skipped.
- At each word the longest run of up to three words that names something is read: a label
  first, then a scene folder, then an entry of `SYNONYMS` whose target the catalog has.
  Names compare without case, spaces, hyphens or underscores ("bare soil", "Bare_Soil" and
  "bare-soil" are one; "golf course" is the folder golfcourse), and a run's last word in the
  singular or the plural ("ships" is ship, "tree" is trees, "harbors" is harbor).
- "no", "not", "without", "except", "excluding" and "nor" put the next thing read into
  `labels_none` (words not understood and stop words between do not end the negation;
  punctuation does: "no volcano, cars" asks for cars). A folder cannot be excluded (nor a
  second one asked for: a scene lies in one folder); it is then read as its label synonym
  when `SYNONYMS` has one ("without a forest": labels_none trees; "river through forest":
  folder river, labels_all trees), else its words are reported as not understood.
- A word that reads as nothing is reported in `words_not_understood` (runs of them are what
  the encoder may read afterwards), never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

SYNONYMS: dict[str, str] = {
    # labels
    "boat": "ship", "vessel": "ship", "ferry": "ship", "yacht": "ship",
    "aircraft": "airplane", "plane": "airplane", "aeroplane": "airplane", "jet": "airplane",
    "house": "buildings", "building": "buildings", "roof": "buildings",
    "car": "cars", "vehicle": "cars", "automobile": "cars",
    "forest": "trees", "woods": "trees", "woodland": "trees",
    "lake": "water", "river": "water", "pond": "water", "pool": "water",
    "ocean": "sea",
    "road": "pavement", "street": "pavement", "asphalt": "pavement", "concrete": "pavement",
    "soil": "bare-soil", "dirt": "bare-soil",
    "shrub": "chaparral", "scrub": "chaparral", "bush": "chaparral",
    "lawn": "grass", "meadow": "grass",
    "pier": "dock", "jetty": "dock", "wharf": "dock", "marina": "dock",
    "tank": "tanks",
    "trailer": "mobile-home",
    # scene folders
    "harbour": "harbor", "port": "harbor",
    "car park": "parkinglot", "parking": "parkinglot",
    "farmland": "agricultural", "farm": "agricultural", "crops": "agricultural",
    "highway": "freeway", "motorway": "freeway",
    "junction": "intersection", "crossroads": "intersection",
    "bridge": "overpass", "flyover": "overpass",
    "airstrip": "runway",
    "trailer park": "mobilehomepark",
    "baseball field": "baseballdiamond", "ballpark": "baseballdiamond",
}  # fmt: skip
"""Common words for the catalog's labels and folders (each read only when the catalog has
its target and no label or folder of its own is so named: UCM's folder forest is read as
that folder, "woods" as the label trees)."""

STOP_WORDS = frozenset(
    {
        "a",
        "an",
        "the",
        "some",
        "many",
        "few",
        "lots",
        "of",
        "in",
        "on",
        "at",
        "by",
        "to",
        "from",
        "into",
        "near",
        "next",
        "beside",
        "along",
        "between",
        "through",
        "across",
        "around",
        "over",
        "under",
        "with",
        "and",
        "or",
        "but",
        "also",
        "show",
        "me",
        "find",
        "any",
        "all",
        "scene",
        "scenes",
        "image",
        "images",
        "photo",
        "photos",
        "area",
        "areas",
        "aerial",
        "view",
        "there",
        "is",
        "are",
        "has",
        "have",
        "having",
    }
)
NEGATIONS = frozenset({"no", "not", "without", "except", "excluding", "nor"})
LONGEST = 3
"""Words in the longest name read ("mobile home park")."""


@dataclass
class Reading:
    labels_all: list[str] = field(default_factory=list)
    """Labels the phrase asks for."""
    labels_none: list[str] = field(default_factory=list)
    """Labels the phrase excludes."""
    folders: list[str] = field(default_factory=list)
    """The scene folder named, if any (at most one)."""
    words_not_understood: list[str] = field(default_factory=list)
    """Words of the phrase nothing reads (stop words such as "a", "in" are not counted)."""
    unread: list[tuple[str, bool]] = field(default_factory=list)
    """Runs of words not understood and whether each was negated: for the encoder."""

    def add(self, label: str, *, negated: bool) -> None:
        target = self.labels_none if negated else self.labels_all
        if label not in target:
            target.append(label)


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _forms(word: str) -> list[str]:
    """The word, its singular and its plural (as spelt by the simple English rules)."""
    forms = [word, word + "s"]
    if word.endswith("ies"):
        forms.append(word[:-3] + "y")
    if word.endswith(("ses", "xes", "ches", "shes")):
        forms.append(word[:-2])
    if word.endswith("s") and not word.endswith("ss"):
        forms.append(word[:-1])
    return forms


class Lexicon:
    """The names a catalog's phrases are read onto: its labels, its folders, and the
    synonyms whose targets it has."""

    def __init__(self, labels: Sequence[str], folders: Sequence[str]) -> None:
        self.labels, self.folders = list(labels), list(folders)
        self._names: dict[str, tuple[str, str]] = {}
        self._labels: dict[str, str] = {}  # what reads as a label, for negations
        for phrase, target in SYNONYMS.items():
            kind = "label" if target in labels else "folder" if target in folders else None
            if kind is not None:
                self._names[_key(phrase)] = (kind, target)
            if kind == "label":
                self._labels[_key(phrase)] = target
        self._names.update({_key(name): ("folder", name) for name in folders})
        self._names.update({_key(name): ("label", name) for name in labels})
        self._labels.update({_key(name): name for name in labels})

    def name(self, words: Sequence[str], *, labels_only: bool = False) -> tuple[str, str] | None:
        """(kind, name) that the words name, or None."""
        head = "".join(words[:-1])
        for form in _forms(words[-1]):
            if labels_only and (label := self._labels.get(head + form)):
                return ("label", label)
            if not labels_only and (found := self._names.get(head + form)):
                return found
        return None

    def read(self, phrase: str) -> Reading:
        """The phrase read by the rules above."""
        words = re.findall(r"[a-z0-9]+|[,;.:!?]", phrase.lower().replace("'s", ""))
        reading, negated, i = Reading(), False, 0
        unknown: list[tuple[int, str, bool]] = []  # (position, word, negated)
        while i < len(words):
            word = words[i]
            if not word.isalnum() or word in NEGATIONS or word in STOP_WORDS:
                negated = word in NEGATIONS or (negated and word.isalnum())  # punctuation ends it
                i += 1
                continue
            size, found = self._longest(words, i)
            span = words[i : i + size]
            if found is not None and self._took(reading, found, span, negated=negated):
                negated = False
            else:  # a negation waits for the next thing read
                unknown.extend((i + n, word, negated) for n, word in enumerate(span))
            i += size
        reading.words_not_understood = [word for _, word, _ in unknown]
        for n, (position, word, negation) in enumerate(unknown):
            if n and unknown[n - 1][0] == position - 1:  # the run goes on
                reading.unread[-1] = (f"{reading.unread[-1][0]} {word}", reading.unread[-1][1])
            else:
                reading.unread.append((word, negation))
        reading.labels_all = [n for n in reading.labels_all if n not in reading.labels_none]
        return reading

    def _took(
        self, reading: Reading, found: tuple[str, str], span: list[str], *, negated: bool
    ) -> bool:
        """Whether what the span names is taken into the reading: a folder only when asked
        for and no other folder is (else its label synonym, if it has one)."""
        kind, name = found
        if kind == "folder":
            if not negated and reading.folders in ([], [name]):
                reading.folders[:] = [name]
                return True
            label = self.name(span, labels_only=True)
            if label is None:
                return False
            name = label[1]
        reading.add(name, negated=negated)
        return True

    def _longest(self, words: Sequence[str], start: int) -> tuple[int, tuple[str, str] | None]:
        for size in range(LONGEST, 0, -1):
            span = words[start : start + size]
            if len(span) < size or any(w in STOP_WORDS or w in NEGATIONS or not w.isalnum()
                                       for w in span):  # fmt: skip
                continue
            found = self.name(span)
            if found is not None:
                return size, found
        return 1, None
