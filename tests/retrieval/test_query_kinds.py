"""Query kinds: how a short query is cut from a labelled ticket, and how evaluation asks it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ticketsearch.errors import QueryError
from ticketsearch.index_dir import IndexDir
from ticketsearch.pipeline.parts import open_store
from ticketsearch.retrieval.eval_index import kind_pools, load_eval_inputs, scorers
from ticketsearch.retrieval.lexical import bm25_text
from ticketsearch.retrieval.query_kinds import FULL, QueryKind, parse_kinds


def test_parse_and_cut() -> None:
    assert parse_kinds(None) == [FULL]
    assert [k.label for k in parse_kinds(["full,title", "words:5", "title"])] == ["full", "title", "words:5"]
    assert QueryKind.parse("title").text("  Crash on start ", "body text") == "Crash on start"
    assert QueryKind.parse("words:4").text("Crash on start", "when the  disk\nis full") == "Crash on start when"
    assert QueryKind.parse("words:50").text("", "only a body") == "only a body"
    assert not FULL.short and QueryKind.parse("words:3").short
    for bad in ("words", "words:0", "words:-1", "titles", "words:9999", ""):
        with pytest.raises(QueryError, match="--query"):
            QueryKind.parse(bad)
    with pytest.raises(QueryError, match="--train-queries"):
        parse_kinds(["full,nope"], "--train-queries")


def test_short_queries_are_scored_as_search_scores_a_free_text(built_index: Path, encoder) -> None:
    """A title query's dense and title scores use the title's own vector (one vector, as search does for a
    free text) and BM25 sees the title alone; full queries keep the ticket's vectors and text."""
    with open_store(IndexDir(built_index), read_only=True) as store:
        inp = load_eval_inputs(built_index, store, encoder)
        ev = inp.ev
        queries = ev.queries()[:5]
        pools, views = kind_pools(inp, store, encoder, QueryKind.parse("title"), queries)
        full_pools, none = kind_pools(inp, store, encoder, FULL, queries)
    assert none is None and views is not None and len(pools) == len(full_pools) > 0
    for p, f in zip(pools, full_pools):
        vec = encoder.encode([ev.titles[p.q]])[0]
        assert np.allclose(p.scores["dense"], inp.dense[p.pool] @ vec, atol=1e-5)
        assert np.allclose(p.scores["title"], inp.title[p.pool] @ vec, atol=1e-5)
        assert np.allclose(p.scores["bm25"], inp.bm25.scores(ev.titles[p.q])[inp.bm25_pos[p.pool]])
        assert np.allclose(f.scores["bm25"], inp.bm25.scores(bm25_text(ev.titles[f.q], ev.bodies[f.q]))[
            inp.bm25_pos[f.pool]])
        # the whole ticket and its title alone are different queries
        assert not np.allclose(p.scores["dense"], f.scores["dense"])
    assert set(scorers(inp, views)) == set(scorers(inp))
