"""Text search says what it understood: a phrase is read word by word onto the catalog's
labels and scene folders (`service.usecases.reading`), the answer's `understood` says it
exactly, the hits satisfy it, and a phrase of which nothing is understood is a 400 naming
its words: over the UCM subset (21 folders, 6 scenes each) on SQLite and PostgreSQL, through
the API and `grn search --text --url` as typed."""

from __future__ import annotations

import pytest
from commands import grn
from servers import LiveServer
from servers import search_ok as search

from service.usecases.reading import Lexicon

UCM_LABELS = ["airplane", "bare-soil", "buildings", "cars", "chaparral", "court", "dock",
              "field", "grass", "mobile-home", "pavement", "sand", "sea", "ship", "tanks",
              "trees", "water"]  # fmt: skip
UCM_FOLDERS = ["agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral",
               "denseresidential", "forest", "freeway", "golfcourse", "harbor", "intersection",
               "mediumresidential", "mobilehomepark", "overpass", "parkinglot", "river",
               "runway", "sparseresidential", "storagetanks", "tenniscourt"]  # fmt: skip

PHRASES = {
    # phrase: (labels_all, labels_none, folders, words_not_understood)
    "golf course": ([], [], ["golfcourse"], []),
    "ships in a harbour": (["ship"], [], ["harbor"], []),
    "river through forest": (["trees"], [], ["river"], []),
    "Boats and DOCKS": (["ship", "dock"], [], [], []),
    "storage tanks without trees": ([], ["trees"], ["storagetanks"], []),
    "bare_soil, no mobile homes": (["bare-soil"], ["mobile-home"], [], []),
    "parked aircraft beside a volcano": (["airplane"], [], [], ["parked", "volcano"]),
}


def understood(labels_all: list[str], labels_none: list[str], folders: list[str],
               words: list[str]) -> dict[str, list[str]]:  # fmt: skip
    return {"labels_all": labels_all, "labels_none": labels_none, "folders": folders,
            "words_not_understood": words, "not_understood": words}  # fmt: skip


@pytest.mark.parametrize("phrase", PHRASES)
def test_the_word_reading(phrase: str) -> None:
    """The reading alone, without the encoder: plurals, case, separators, synonyms, a second
    folder read as its label synonym, a negation, unknown words kept."""
    read = Lexicon(UCM_LABELS, UCM_FOLDERS).read(phrase)
    got = (read.labels_all, read.labels_none, read.folders, read.words_not_understood)
    assert got == PHRASES[phrase]


def test_synonyms_need_their_target_in_the_catalog() -> None:
    """A synonym whose target the catalog lacks reads as nothing; a folder of the catalog's
    own wins over a synonym of the same word."""
    read = Lexicon(["ship"], []).read("a forest with a boat")
    assert (read.labels_all, read.folders, read.words_not_understood) == (
        ["ship"], [], ["forest"],
    )  # fmt: skip
    assert Lexicon(["trees"], ["forest"]).read("forest").folders == ["forest"]
    assert Lexicon(["trees"], []).read("forest").labels_all == ["trees"]


def test_text_search_says_what_it_understood(live: LiveServer) -> None:
    for phrase, expected in PHRASES.items():
        body = search(live, text=phrase, k=20)
        assert body["understood"] == understood(*expected), phrase
        labels_all, labels_none, folders, _ = expected
        for hit in body["hits"]:
            assert set(labels_all) <= set(hit["labels"]), (phrase, hit)
            assert not set(labels_none) & set(hit["labels"]), (phrase, hit)
            assert not folders or hit["scene"] == folders[0], (phrase, hit)
    # the three phrases find what they say: 6 golf courses, 6 harbours with ships, 5
    # of the 6 rivers with trees
    assert [len(search(live, text=p, k=20)["hits"]) for p in list(PHRASES)[:3]] == [6, 6, 5]
    # the same hits as the fields the reading stands for
    fields = search(live, labels_all=["ship"], scene="harbor", k=20)
    text = search(live, text="ships in a harbour", k=20)
    assert [h["id"] for h in text["hits"]] == [h["id"] for h in fields["hits"]]
    with live.client() as client:
        nothing = client.post("/search", json={"text": "a volcano at dusk"})
        clash = client.post("/search", json={"text": "golf course", "scene": "harbor"})
    assert nothing.status_code == 400 and nothing.json()["error"] == "text_not_understood"
    assert "volcano, dusk" in nothing.json()["message"]  # it names the words
    assert "airplane" in nothing.json()["message"]  # and lists the vocabulary
    assert clash.status_code == 400 and "golfcourse" in clash.json()["message"]


def test_grn_search_text_says_what_it_understood(live: LiveServer) -> None:
    done = grn("search", "--text", "ships in a harbour, no cars, a volcano", "--url", live.url)
    assert done.returncode == 0, done.stderr
    assert "understood: ship; folder harbor; not cars — not understood: volcano" in done.stderr
    api = search(live, text="ships in a harbour, no cars")
    rows = done.stdout.splitlines()[1:]  # under the header row
    assert [row.split()[2] for row in rows] == [h["id"] for h in api["hits"]] and rows
    refused = grn("search", "--text", "a volcano at dusk", "--url", live.url)
    assert refused.returncode == 1
    assert "not understood: volcano, dusk" in refused.stderr
