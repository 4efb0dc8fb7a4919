"""Agents' decisions on pairs (index_data/feedback.py): the library's rule is the API's."""

from __future__ import annotations

from pathlib import Path

import pytest

from ticketsearch.errors import NotFoundError, QueryError, RequestError
from ticketsearch.index_data import feedback
from ticketsearch.index_data.store import TicketStore

from .test_store import SUPPORT, tk


def test_a_decision_has_the_apis_limits_in_the_library(tmp_path: Path) -> None:
    from ticketsearch.service.schemas import FeedbackRequest

    assert FeedbackRequest.model_json_schema()["properties"]["by"]["anyOf"][0]["maxLength"] == feedback.MAX_BY
    with TicketStore(tmp_path / "t.duckdb", schema=SUPPORT) as s:
        s.upsert([tk(1), tk(2)])
        d = feedback.record(s, "S-1", "S-2", "duplicate", by="a" * feedback.MAX_BY)
        assert d.by == "a" * feedback.MAX_BY and feedback.for_ticket(s, "S-2")[0].label == "duplicate"
        with pytest.raises(RequestError, match="at most 200 characters") as info:
            feedback.record(s, "S-1", "S-2", "not_duplicate", by="a" * (feedback.MAX_BY + 1))
        assert info.value.field == "by"
        assert feedback.for_ticket(s, "S-1")[0].label == "duplicate"  # nothing of the refused one was kept
        with pytest.raises(QueryError, match="label must be one of"):
            feedback.record(s, "S-1", "S-2", "maybe")
        with pytest.raises(NotFoundError):
            feedback.record(s, "S-1", "S-9", "duplicate")
