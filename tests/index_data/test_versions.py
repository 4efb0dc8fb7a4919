"""The versioned write rule (`index_data.versions`): applied only over an older stored version; a write without
a version is always applied and leaves the stored version; the store keeps it (tests/index_data/test_store.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from ticketsearch.index_data.versions import check_versions

T = datetime(2024, 2, 2)


def test_a_version_is_written_only_over_an_older_one() -> None:
    stored = {"A": T, "B": T, "C": T}
    c = check_versions(["A", "B", "C", "D"], [T - timedelta(microseconds=1), T, T + timedelta(microseconds=1), T],
                       stored)
    assert c.keep == [2, 3] and c.refused == ["A", "B"]  # older and equal refused; newer and unknown written
    assert c.versions == [("C", T + timedelta(microseconds=1)), ("D", T)]


def test_a_write_without_a_version_is_always_applied_and_stores_none() -> None:
    c = check_versions(["A", "B"], [None, None], {"A": T})
    assert (c.keep, c.versions, c.refused) == ([0, 1], [], [])
    c = check_versions(["A", "B", "C"], [None, T - timedelta(days=1), None], {"A": T, "B": T, "C": T})
    assert (c.keep, c.versions, c.refused) == ([0, 2], [], ["B"])


def test_order_is_kept_and_ids_are_matched_exactly() -> None:
    ids = [f"S-{i}" for i in range(6)]
    given = [T + timedelta(days=i % 3 - 1) for i in range(6)]  # -1, 0, +1 days around T
    c = check_versions(ids, given, dict.fromkeys(ids, T))
    assert c.keep == [2, 5] and c.refused == ["S-0", "S-1", "S-3", "S-4"]
    assert check_versions(["s-0"], [T], {"S-0": T + timedelta(days=1)}).keep == [0]  # another id, not refused
    with pytest.raises(ValueError):  # one version per row, never a shorter list read as "no version"
        check_versions(ids, given[:-1], {})


def test_a_check_cannot_be_changed_after_it_is_made() -> None:
    import dataclasses

    c = check_versions(["A"], [T], {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.keep = []  # type: ignore[misc]
