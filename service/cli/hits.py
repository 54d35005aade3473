"""How `grn search` prints hits (a table, CSV or JSON, as POST /search and POST
/search/concept answer them) and what a text query was read as: shared by the local and the
--url answers."""

from __future__ import annotations

import csv
import sys
from typing import Any

import typer

from service.cli.app import print_json, print_table
from service.cli.regions import print_match_maps


def hit_json(hit: Any) -> dict[str, Any]:
    return {"id": str(hit.scene.id), "image": hit.scene.name, "scene": hit.scene.folder,
            "score": round(hit.score, 6), "labels": list(hit.scene.labels)}  # fmt: skip


UNDERSTOOD = ("labels_all", "labels_none", "folders", "words_not_understood")
"""The fields of a search's `understood`, as POST /search answers them."""
HIT_COLUMNS = ["rank", "id", "image", "scene", "score", "labels"]


def understood_line(understood: dict[str, Any]) -> str:
    """What a text was read as, in one line: "understood: ship; folder harbor; not cars —
    not understood: volcano"."""
    read = [", ".join(understood["labels_all"])] if understood["labels_all"] else []
    read += [f"folder {folder}" for folder in understood["folders"]]
    if understood["labels_none"]:
        read.append(f"not {', '.join(understood['labels_none'])}")
    line = f"understood: {'; '.join(read) or 'nothing'}"
    if understood["words_not_understood"]:
        line += f" — not understood: {', '.join(understood['words_not_understood'])}"
    return line


def print_hits(body: dict[str, Any], output: str) -> None:
    hits = body["hits"]
    understood = body.get("understood")
    if understood and output != "json":
        typer.echo(understood_line(understood), err=True)
    if body.get("reranked") and output != "json":
        typer.echo(
            "re-ranked by the backbone's descriptors: the query looks like content the model "
            "did not train on",
            err=True,
        )
    if output == "json":
        print_json(body)
        return
    if output == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(HIT_COLUMNS)
        for rank, hit in enumerate(hits, start=1):
            writer.writerow([rank, hit["id"], hit["image"], hit["scene"], f"{hit['score']:.6f}",
                             ";".join(hit["labels"])])  # fmt: skip
        return
    if not hits:
        typer.echo("no scene matches", err=True)
        return
    rows = [
        [rank, f"{hit['score']:.4f}", hit["id"], hit["image"], ",".join(hit["labels"])]
        for rank, hit in enumerate(hits, start=1)
    ]
    print_table(["rank", "score", "id", "image", "labels"], rows, right="rank score id")
    print_match_maps(hits)
