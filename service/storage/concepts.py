"""Saved concepts in SQL (`concepts`, migration 0008): each row a name, the scenes that
taught it and the probe they fitted. Plain reads and writes; fitting and scoring are the use
case's (`service.usecases.saved_concepts`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from index.filters import utc
from service.storage.db import ConceptRow, utcnow


class ConceptNotFoundError(LookupError):
    """No saved concept of this name."""

    def __str__(self) -> str:  # a KeyError-like repr would quote the message
        return str(self.args[0]) if self.args else "no such concept"


class ConceptExistsError(ValueError):
    """A saved concept has this name already."""


@dataclass(frozen=True)
class StoredConcept:
    """A saved concept as SQL holds it."""

    name: str
    positives: tuple[int, ...]
    negatives: tuple[int, ...]
    threshold: float
    model_version: str
    index_version: str
    weights: np.ndarray
    bias: float
    created: datetime | None = None
    updated: datetime | None = None


def _ids(text: str) -> tuple[int, ...]:
    return tuple(int(i) for i in json.loads(text))


def _stored(row: ConceptRow) -> StoredConcept:
    return StoredConcept(
        name=row.name,
        positives=_ids(row.positives),
        negatives=_ids(row.negatives),
        threshold=row.threshold,
        model_version=row.model_version,
        index_version=row.index_version,
        weights=np.frombuffer(row.weights, dtype=np.float32),
        bias=row.bias,
        created=utc(row.created_at),
        updated=utc(row.updated_at),
    )


def _fill(row: ConceptRow, concept: StoredConcept, now: datetime) -> None:
    row.name = concept.name
    row.positives = json.dumps([str(i) for i in concept.positives])
    row.negatives = json.dumps([str(i) for i in concept.negatives])
    row.threshold = float(concept.threshold)
    row.model_version = concept.model_version
    row.index_version = concept.index_version
    row.weights = np.asarray(concept.weights, dtype=np.float32).tobytes()
    row.bias = float(concept.bias)
    row.updated_at = now


class ConceptStore:
    """The saved concepts of one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def all(self) -> list[StoredConcept]:
        """Every saved concept, by name."""
        with Session(self.engine) as session:
            rows = session.scalars(select(ConceptRow).order_by(ConceptRow.name)).all()
            return [_stored(row) for row in rows]

    def get(self, name: str) -> StoredConcept:
        """The concept called `name`; `ConceptNotFoundError` when there is none."""
        with Session(self.engine) as session:
            return _stored(self._row(session, name))

    def check_free(self, name: str) -> None:
        """`ConceptExistsError` when a concept is called `name`."""
        with Session(self.engine) as session:
            if session.scalar(select(ConceptRow.id).where(ConceptRow.name == name)):
                raise self._taken(name)

    def add(self, concept: StoredConcept) -> StoredConcept:
        """Save a new concept; `ConceptExistsError` when its name is taken."""
        self.check_free(concept.name)
        with Session(self.engine, expire_on_commit=False) as session:
            now = utcnow()
            row = ConceptRow(created_at=now)
            _fill(row, concept, now)
            session.add(row)
            self._commit(session, concept.name)
            return _stored(row)

    def update(self, name: str, concept: StoredConcept) -> StoredConcept:
        """Replace the concept called `name` by `concept` (renamed when its name differs:
        `ConceptExistsError` when that name is taken); its creation time stays."""
        with Session(self.engine, expire_on_commit=False) as session:
            if concept.name != name:
                self.check_free(concept.name)
            row = self._row(session, name)
            _fill(row, concept, utcnow())
            self._commit(session, concept.name)
            return _stored(row)

    def delete(self, name: str) -> None:
        """Forget the concept called `name`; `ConceptNotFoundError` when there is none."""
        with Session(self.engine) as session, session.begin():
            session.delete(self._row(session, name))

    @staticmethod
    def _row(session: Session, name: str) -> ConceptRow:
        row = session.scalar(select(ConceptRow).where(ConceptRow.name == name))
        if row is None:
            raise ConceptNotFoundError(
                f"no saved concept is called {name!r}: `GET /concepts` lists them"
            )
        return row

    def _commit(self, session: Session, name: str) -> None:
        """Commit; a name taken meanwhile by another writer (the unique key) is the same
        `ConceptExistsError` as one taken before."""
        try:
            session.commit()
        except IntegrityError as exc:
            session.rollback()
            raise self._taken(name) from exc

    @staticmethod
    def _taken(name: str) -> ConceptExistsError:
        return ConceptExistsError(
            f"a concept called {name!r} is saved already: choose another name, or refine that "
            "one (PATCH /concepts/NAME, `grn concept refine`)"
        )
