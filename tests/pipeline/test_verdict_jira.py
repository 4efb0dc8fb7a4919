"""The verdict's properties on real tickets (issue 29): 300 Apache Hadoop JIRA issues (a seeded sample of the
shared `apache_hadoop.jsonl.gz`, 2006-2018, bodies cut at 1,500 characters, only the fields known at filing;
`fixtures/hadoop_sample.jsonl.gz`), served as a new team's index is before it trains: by the shipped general
model. A ticket refiled word for word is found first and called a duplicate at any gap and with no date; a copy
with words changed a year later too; tickets about things the index never saw are not, dated or not."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from ticketsearch.api import TicketIndex
from ticketsearch.index_data.ingest import ingest_file
from ticketsearch.index_data.schema import load_schema
from ticketsearch.index_data.store import TicketStore
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.ingest import build_index
from ticketsearch.settings import Settings

from .test_verdict import GAPS_DAYS, STRANGERS, refiled

SAMPLE = Path(__file__).parent / "fixtures" / "hadoop_sample.jsonl.gz"


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def index(rows: list[dict], tmp_path_factory: pytest.TempPathFactory, encoder, settings: Settings
          ) -> Iterator[TicketIndex]:
    root = tmp_path_factory.mktemp("hadoop")
    data = root / "sample.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with TicketStore(IndexDir(root).store_path, schema=load_schema("jira")) as store:
        ingest_file(store, data, progress=False)
        build_index(root, store, encoder, "minilm", settings=settings, progress=False)
    idx = TicketIndex.open(root, settings=settings)
    assert idx.pipeline.reranker is not None  # the general model serves an index without a model of its own
    yield idx
    idx.close()


def sources(rows: list[dict], n: int) -> list[dict]:
    return random.Random(5).sample(rows, n)


def test_a_real_ticket_refiled_is_first_and_a_duplicate_at_any_gap_and_undated(index: TicketIndex,
                                                                                 rows: list[dict]) -> None:
    for t in sources(rows, 8):
        created = datetime.fromisoformat(t["created"]).replace(tzinfo=None)
        for ticket in [refiled(t, created=(created + timedelta(days=d)).isoformat()) for d in GAPS_DAYS] + [
                refiled(t)]:
            res = index.duplicates(ticket, k=5)
            assert res.candidates[0].id == t["id"], (t["id"], ticket.get("created"), res.candidates[0].id)
            assert res.is_duplicate is True, (t["id"], ticket.get("created"), res.probability)


def test_a_real_ticket_with_words_changed_a_year_later_is_still_first_and_a_duplicate(index: TicketIndex,
                                                                                       rows: list[dict]) -> None:
    for t in sources(rows, 5):
        words = t["body"].split()
        for i in (1, len(words) // 2):
            words[i] = "frobnicated"
        created = datetime.fromisoformat(t["created"]).replace(tzinfo=None) + timedelta(days=365)
        res = index.duplicates(refiled(t, body=" ".join(words), created=created.isoformat()), k=5)
        assert res.candidates[0].id == t["id"] and res.is_duplicate is True, (t["id"], res.probability)


def test_a_topic_hadoop_never_saw_is_not_a_duplicate_dated_or_not(index: TicketIndex, rows: list[dict]) -> None:
    newest = datetime.fromisoformat(rows[-1]["created"]).replace(tzinfo=None)
    for title, body in STRANGERS:
        for created in (None, newest.isoformat(), (newest + timedelta(days=1)).isoformat()):
            res = index.duplicates({"title": title, "body": body, **({"created": created} if created else {})})
            assert res.is_duplicate is False and not res.near_copy, (title, created, res.probability)
