"""The filter type's own meaning (`SceneFilter`): which conditions a filter sets, the time
added (kept in UTC, at or after / strictly before), and a filter resolved for a backend
that evaluates only some conditions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from index.filters import SceneFilter, SceneMeta

NOON = datetime(2024, 6, 15, 12, tzinfo=UTC)


def test_times_are_kept_in_utc_and_set_conditions() -> None:
    paris = timezone(timedelta(hours=2))
    where = SceneFilter(added_after=datetime(2024, 6, 15, 14, tzinfo=paris))
    assert where.added_after == NOON and where.added_after.tzinfo == UTC
    assert SceneFilter(added_before=datetime(2024, 6, 15, 12)).added_before == NOON  # naive: UTC
    assert where.conditions() == {"added_after"} and where.restricts
    assert SceneFilter(added_before=NOON, exclude_ids=[3]).conditions() == {
        "added_before",
        "exclude_ids",
    }
    assert SceneFilter().conditions() == frozenset()


def test_after_keeps_its_instant_and_before_does_not() -> None:
    second = timedelta(seconds=1)
    window = SceneFilter(added_after=NOON, added_before=NOON + second)
    assert window.passes(1, SceneMeta(added=NOON))
    assert not window.passes(1, SceneMeta(added=NOON + second))
    assert not window.passes(1, SceneMeta(added=NOON - second))
    assert window.passes(1, SceneMeta(added=datetime(2024, 6, 15, 12)))  # naive: UTC
    assert not window.passes(1, SceneMeta())  # a scene of unknown time passes no window
    assert SceneFilter().passes(1, SceneMeta())


def test_resolved_keeps_what_a_backend_evaluates_and_allow_lists_the_rest() -> None:
    where = SceneFilter(
        labels_all=["water"], exclude_ids=[5], added_after=NOON, allow_ids=[1, 2, 3, 4]
    )
    asked: list[SceneFilter] = []

    def allowed(rest: SceneFilter) -> np.ndarray:
        asked.append(rest)
        return np.asarray([2, 3, 9], dtype=np.int64)

    resolved = where.resolved(frozenset({"exclude_ids", "allow_ids"}), allowed)
    assert [rest.conditions() for rest in asked] == [{"labels_all", "added_after"}]
    assert asked[0].labels_all == ["water"] and asked[0].added_after == NOON
    assert resolved.conditions() == {"exclude_ids", "allow_ids"}
    assert resolved.exclude_ids == [5]
    assert np.asarray(resolved.allow_ids).tolist() == [2, 3]  # met with the allow-list it had
    same = SceneFilter(exclude_ids=[5])
    assert same.resolved(frozenset({"exclude_ids"}), allowed) is same and len(asked) == 1


def test_acquisition_window_and_months() -> None:
    """Acquired at or after / strictly before, kept in UTC; months are UTC calendar months in
    any year; a scene of unknown acquisition time passes no acquisition condition."""
    second = timedelta(seconds=1)
    window = SceneFilter(acquired_after=NOON, acquired_before=NOON + second)
    assert window.conditions() == {"acquired_after", "acquired_before"}
    assert window.passes(1, SceneMeta(acquired=NOON))
    assert not window.passes(1, SceneMeta(acquired=NOON + second))
    assert not window.passes(1, SceneMeta(acquired=NOON - second))
    assert not window.passes(1, SceneMeta(added=NOON))  # the time added is another time
    summer = SceneFilter(months=[6, 7, 8])
    assert summer.conditions() == {"months"} and summer.restricts
    assert summer.passes(1, SceneMeta(acquired=datetime(1999, 7, 31, 23, tzinfo=UTC)))
    assert not summer.passes(1, SceneMeta(acquired=datetime(2024, 9, 1, tzinfo=UTC)))
    # 1 September 01:00 in Paris is 31 August 23:00 UTC: summer
    paris = timezone(timedelta(hours=2))
    assert summer.passes(1, SceneMeta(acquired=datetime(2024, 9, 1, 1, tzinfo=paris)))
    assert not summer.passes(1, SceneMeta())
    assert not SceneFilter(acquired_before=NOON).passes(1, SceneMeta())
    assert SceneFilter(months=()).conditions() == frozenset()


def test_milvus_gets_acquisition_conditions_as_an_allow_list() -> None:
    """Milvus rows keep no acquisition time: the service resolves those conditions on the
    catalog's arrays into ids, which the store's expression then carries."""
    from index.stores.milvus_filters import NATIVE_FILTERS, milvus_expression

    where = SceneFilter(labels_any=["water"], months=[6, 7, 8], acquired_after=NOON)
    with pytest.raises(ValueError, match="acquired_after, months"):
        milvus_expression(where)
    resolved = where.resolved(NATIVE_FILTERS, lambda rest: np.asarray([7, 3], dtype=np.int64))
    assert resolved.conditions() == {"labels_any", "allow_ids"}
    expression = milvus_expression(resolved)
    assert expression.params == {"labels_any": ["water"], "allow_ids": [7, 3]}
    assert expression.inline() == 'array_contains_any(labels, ["water"]) and id in [7, 3]'
