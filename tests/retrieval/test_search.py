"""End to end on a real index: 300 generated tickets in DuckDB, MiniLM embeddings in FAISS."""

from __future__ import annotations

from pathlib import Path

import pytest

from ticketsearch.errors import NotFoundError, QueryError
from ticketsearch.index_data.store import TicketStore
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.ingest import build_index
from ticketsearch.pipeline.search import SearchPipeline


@pytest.fixture(scope="module")
def searcher(built_index: Path, encoder, settings):
    s = SearchPipeline(built_index, settings=settings, encoder=encoder)
    yield s
    s.close()


@pytest.mark.parametrize("method", ["dense", "bm25", "hybrid"])
def test_own_text_finds_the_ticket_at_rank_1(searcher: SearchPipeline, demo_rows: list[dict], method: str) -> None:
    texts: dict[str, list[str]] = {}
    group = {r["id"]: r["duplicate_of"] or r["id"] for r in demo_rows}  # masters are never duplicates
    for r in demo_rows:
        texts.setdefault(r["title"] + "\n" + r["body"], []).append(r["id"])
    sample = demo_rows[::10]
    for r in sample:
        res = searcher.search(r["title"] + "\n" + r["body"], k=3, method=method)
        assert res.method == method
        own = texts[r["title"] + "\n" + r["body"]]
        ids = [h.id for h in res.hits]
        if method == "hybrid":
            # fusion also ranks by the title alone and by recency: another report of the same incident (or a
            # ticket that copied this one's subject line) may tie it; nothing else may come first
            first = next(i for i, h in enumerate(res.hits) if h.id in own)
            assert all(group[h.id] == group[r["id"]] or h.title == r["title"] for h in res.hits[:first]), (r["id"], ids)
            continue
        assert ids[0] in own, (r["id"], ids)
        if method != "bm25":
            assert res.hits[0].scores["dense"] > 0.99


# Measured on this fixture (300 generated tickets, 45 duplicates, first stage), R@10 / MRR: hybrid .978 / .649,
# dense .978 / .624, BM25 .933 / .578; a shuffled top 100 reaches R@10 .044. The floors sit a little under
# each (was: R@10 > .5 for hybrid alone, which a 40-point regression passed).
FLOORS = {"hybrid": (0.95, 0.6), "dense": (0.95, 0.58), "bm25": (0.9, 0.53)}


@pytest.mark.parametrize("method", sorted(FLOORS))
def test_duplicates_are_found_near_the_top(searcher: SearchPipeline, demo_rows: list[dict], method: str) -> None:
    dups = [r for r in demo_rows if r["duplicate_of"]]
    found, rr = 0, 0.0
    for r in dups:
        res = searcher.search(r["title"] + "\n" + r["body"], k=10, before=r["created"], method=method,
                              rerank=False)
        ids = [h.id for h in res.hits]
        if r["duplicate_of"] in ids:
            found += 1
            rr += 1 / (ids.index(r["duplicate_of"]) + 1)
    recall, mrr = found / len(dups), rr / len(dups)
    assert recall >= FLOORS[method][0] and mrr >= FLOORS[method][1], (method, recall, mrr)


@pytest.mark.parametrize("method", ["dense", "hybrid"])
def test_filters_hold_and_still_fill_k(searcher: SearchPipeline, method: str) -> None:
    res = searcher.search("payment failed", k=15, filters={"product": ["Mobile App"]}, method=method)
    assert len(res.hits) == 15
    assert all(h.fields["product"] == "Mobile App" for h in res.hits)
    res = searcher.search("payment failed", k=10, filters={"category": ["low", "medium"]}, before="2024-06-01",
                          method=method)
    assert len(res.hits) == 10
    assert all(h.fields["category"] in ("low", "medium") and h.created < "2024-06-01" for h in res.hits)
    res = searcher.search("payment failed", k=5, after="2099-01-01", method=method)
    assert res.hits == []


def test_bm25_filters_hold(searcher: SearchPipeline) -> None:
    res = searcher.search("refund card", k=5, filters={"product": ["Payments"]}, method="bm25")
    assert res.hits and all(h.fields["product"] == "Payments" for h in res.hits)
    assert all(h.scores["bm25"] > 0 for h in res.hits)


def test_like_excludes_the_ticket_itself(searcher: SearchPipeline, demo_rows: list[dict]) -> None:
    target = next(r for r in demo_rows if r["duplicate_of"])
    res = searcher.search(like=target["id"], k=10)
    ids = [h.id for h in res.hits]
    assert target["id"] not in ids and len(ids) == 10
    assert target["duplicate_of"] in ids


def test_bad_queries(searcher: SearchPipeline) -> None:
    with pytest.raises(QueryError, match="empty"):
        searcher.search("   ")
    with pytest.raises(QueryError, match="allowed: category"):
        searcher.search("x", filters={"status": ["Closed"]})
    with pytest.raises(QueryError, match="unknown field"):
        searcher.search("x", fields={"colour": "red"})
    with pytest.raises(QueryError, match="method: Input should be"):
        searcher.search("x", method="magic")
    with pytest.raises(QueryError, match="k: Input should be greater than or equal to 1"):
        searcher.search("x", k=0)
    with pytest.raises(QueryError, match="filters.affected_count: must be a number"):
        searcher.search("x", filters={"affected_count": ["lots"]})
    with pytest.raises(QueryError, match="before"):
        searcher.search("x", before="soon")
    with pytest.raises(NotFoundError):
        searcher.search(like="SUP-999999")
    assert searcher.search("x", fields={"category": "never-seen-value"}).hits  # unseen values are fine


def test_index_reloads_from_disk_with_identical_results(
    built_index: Path, searcher: SearchPipeline, encoder, settings
) -> None:
    again = SearchPipeline(built_index, settings=settings, encoder=encoder)
    try:
        for q in ("refund not received", "app crashes at startup", "SAML login loop"):
            for method in ("dense", "bm25", "hybrid"):
                a = [(h.id, round(h.score, 5)) for h in searcher.search(q, k=10, method=method).hits]
                b = [(h.id, round(h.score, 5)) for h in again.search(q, k=10, method=method).hits]
                assert a == b
    finally:
        again.close()


def test_rebuild_reuses_cached_embeddings(tmp_path: Path, demo_file: Path, encoder, settings) -> None:
    from ticketsearch.index_data.ingest import ingest_file
    from ticketsearch.index_data.schema import load_schema

    with TicketStore(IndexDir(tmp_path).store_path, schema=load_schema("support")) as store:
        ingest_file(store, demo_file, progress=False)
        first = build_index(tmp_path, store, encoder, "minilm", settings=settings, progress=False)
        ingest_file(store, demo_file, progress=False)
        second = build_index(tmp_path, store, encoder, "minilm", settings=settings, progress=False)
    assert first.encoded > 250 and second.encoded == 0 and second.tickets == 300
