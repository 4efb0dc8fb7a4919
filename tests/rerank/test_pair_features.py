from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np

from ticketsearch.index_data.schema import Schema, load_schema
from ticketsearch.rerank.pair_features import (
    CODE_COLUMNS,
    _relative_gap,
    code_agreement,
    code_terms,
    pair_dim,
    pair_matrix,
    title_in_query,
    words,
)


# A row-by-row reference of the pair inputs (the oracle pair_matrix is checked against).
def pair_vector(
    schema: Schema,
    q_values: Mapping[str, Any],
    c_values: Mapping[str, Any],
    q_created: datetime,
    c_created: datetime,
    first_stage: Mapping[str, float],
) -> np.ndarray:
    """first_stage: dense and title cosines, bm25 normalised by the query's best, fused rank (1-based), and
    `title_in_query` (see there)."""
    out = [
        float(first_stage.get("dense", 0.0)),
        float(first_stage.get("title", 0.0)),
        float(first_stage.get("bm25", 0.0)),
        1.0 / math.log2(1.0 + float(first_stage.get("fused_rank", 1000.0))),
        float(first_stage.get("title_in_query", 0.0)),
        math.log1p(abs((q_created - c_created).total_seconds()) / 86400.0) / math.log1p(3650.0),
    ]
    for f in schema.fields:
        a, b = q_values.get(f.name), c_values.get(f.name)
        if f.kind == "categorical":
            both = a is not None and b is not None
            out += [float(both and str(a) == str(b)), float(both)]
        elif f.kind == "multi":
            sa, sb = set(a or ()), set(b or ())
            both = bool(sa) and bool(sb)
            inter = len(sa & sb)
            out += [inter / len(sa | sb) if both else 0.0, float(inter > 0), float(both)]
        elif f.kind == "numeric":
            both = a is not None and b is not None
            out += [_relative_gap(float(a), float(b)) if both else 0.0, float(both)]
    return np.asarray(out, dtype=np.float32)


def test_agreement_features_use_raw_values() -> None:
    jira = load_schema("jira")
    q = {"project": "NEWPROJ", "priority": "Major", "components": ["a", "b"], "versions": ["1.0"], "labels": []}
    c = {"project": "NEWPROJ", "priority": "Minor", "components": ["b", "c"], "versions": [], "labels": []}
    v = pair_vector(jira, q, c, datetime(2020, 1, 11), datetime(2020, 1, 1),
                    {"dense": 0.8, "title": 0.5, "bm25": 1.0, "fused_rank": 1, "title_in_query": 0.25})
    assert v.shape == (pair_dim(jira),) and v.dtype == np.float32
    assert v[:5].tolist() == [np.float32(0.8), 0.5, 1.0, 1.0, 0.25]
    assert 0 < v[5] < 1  # time gap, log-scaled
    # project: same and both present, even though "NEWPROJ" is in no vocabulary
    assert v[6:8].tolist() == [1.0, 1.0]
    # components: Jaccard 1/3, overlap, both present
    assert np.allclose(v[12:15], [1 / 3, 1.0, 1.0])
    # versions: one side empty
    assert v[15:18].tolist() == [0.0, 0.0, 0.0]


def test_title_in_query_counts_the_candidate_title_words_found_in_the_query() -> None:
    q = words("NameNode crashes on startup\nAfter upgrading, org.apache.hadoop.FSImage throws an NPE")
    assert title_in_query(q, words("NameNode crashes")) == 1.0
    assert title_in_query(q, words("NPE in org.apache.hadoop.FSImage")) == 2 / 3  # "in" is not in the query
    assert title_in_query(q, words("DataNode heartbeat lost")) == 0.0
    assert title_in_query(q, words("")) == 0.0


def test_pair_matrix_equals_pair_vector_row_by_row() -> None:
    import random


    rng = random.Random(0)
    for schema in (load_schema("jira"), load_schema("support")):
        def values(schema: Schema = schema) -> dict:
            out = {}
            for f in schema.fields:
                if f.kind == "categorical":
                    out[f.name] = rng.choice([None, "a", "b", 3])
                elif f.kind == "multi":
                    out[f.name] = rng.choice([None, [], ["x"], ["x", "y"], ["z"]])
                elif f.kind == "numeric":
                    out[f.name] = rng.choice([None, 0.0, 5.0, -2.5, 1e308])
            return out

        q = values()
        cands = [values() for _ in range(40)]
        created = [datetime(2020, 1, 1 + rng.randrange(28), rng.randrange(24)) for _ in range(40)]
        fs = [{"dense": rng.random(), "title": rng.random(), "bm25": rng.random(), "fused_rank": float(i + 1),
               "title_in_query": rng.random()} for i in range(40)]
        for q_created in (datetime(2020, 2, 1), datetime(2019, 12, 1)):
            m = pair_matrix(schema, q, cands, q_created, created, fs)
            rows = np.stack([pair_vector(schema, q, c, q_created, cc, f) for c, cc, f in zip(cands, created, fs)])
            np.testing.assert_allclose(m, rows, rtol=1e-6, atol=1e-7)


def test_pair_inputs_by_hand() -> None:
    """The formulas themselves, against numbers worked out by hand (the row-by-row reference above shares them)."""
    from ticketsearch.index_data.schema import FieldSpec
    from ticketsearch.rerank.pair_features import KIND_COLUMNS, by_query_kind

    assert _relative_gap(3.0, 1.0) == math.tanh(2 / 5) and _relative_gap(-2.0, 2.0) == math.tanh(4 / 5)
    assert _relative_gap(5.0, 5.0) == 0.0 and _relative_gap(0.0, 0.0) == 0.0
    assert _relative_gap(float("inf"), 1.0) == 1.0 and _relative_gap(float("nan"), 1.0) == 1.0
    assert _relative_gap(1e308, -1e308) == 1.0  # too large to compare: the widest gap
    assert _relative_gap(1e308, 1e308) == 1.0  # even when equal: their scale overflows

    kinds = ("categorical", "multi", "numeric", "date")
    schema = Schema(name="t", text_fields=("title", "body"),
                    fields=tuple(FieldSpec(name=k[:3], kind=k, source=k[:3]) for k in kinds))  # type: ignore[arg-type]
    assert KIND_COLUMNS == 6
    assert pair_dim(schema) == 6 + 2 + 3 + 2 + 0 and pair_dim(schema, query_kinds=True) == 13 + 6
    assert pair_dim(Schema(name="t", text_fields=("title",), fields=())) == 6

    mat = np.arange(2 * 9, dtype=np.float64).reshape(2, 9)
    whole, short = by_query_kind(mat, short=False), by_query_kind(mat, short=True)
    assert whole.dtype == np.float32 and whole.shape == short.shape == (2, 15)
    np.testing.assert_array_equal(whole, np.concatenate([mat[:, :6], mat[:, 6:], np.zeros((2, 6))], axis=1))
    np.testing.assert_array_equal(short, np.concatenate([np.zeros((2, 6)), mat[:, 6:], mat[:, :6]], axis=1))

    cat = Schema(name="t", text_fields=("title",), fields=(FieldSpec(name="cat", kind="categorical", source="cat"),))
    same = pair_matrix(cat, {"cat": "b"}, [{"cat": "a"}, {"cat": "b"}, {"cat": "c"}, {}], datetime(2020, 1, 1),
                       [datetime(2020, 1, 1)] * 4, [{}] * 4)
    np.testing.assert_array_equal(same[:, 6], [0, 1, 0, 0])  # equal values only (not an ordering of strings)
    np.testing.assert_array_equal(same[:, 7], [1, 1, 1, 0])  # both have a value
    m = pair_matrix(Schema(name="t", text_fields=("title",), fields=()), {}, [{}, {}], datetime(2020, 1, 11),
                    [datetime(2020, 1, 1), datetime(2020, 1, 11)], [{"fused_rank": 3.0}, {}])
    assert m.shape == (2, 6)
    np.testing.assert_allclose(m[0], [0, 0, 0, 1 / math.log2(4.0), 0, math.log1p(10) / math.log1p(3650)], rtol=1e-6)
    np.testing.assert_allclose(m[1], [0, 0, 0, 1 / math.log2(1001.0), 0, 0.0], rtol=1e-6)  # no rank: the 1000th


TRACE = """Query fails after the upgrade
FAILED: Execution Error, return code 2 from org.apache.hadoop.hive.ql.exec.tez.TezTask
java.lang.RuntimeException: org.apache.hadoop.hive.ql.metadata.HiveException: Hive Runtime Error
\tat java.lang.Thread.getStackTrace(Thread.java:1559)
\tat org.apache.hadoop.hive.ql.exec.MapJoinOperator.loadHashTable(MapJoinOperator.java:301)
\tat org.apache.hadoop.hive.ql.exec.MapJoinOperator.process(MapJoinOperator.java:410)
\tat org.apache.hadoop.hive.ql.exec.Operator.forward(Operator.java:837)
\tat org.apache.hadoop.hive.ql.exec.tez.TezProcessor.run(TezProcessor.java:150)
Caused by: java.io.IOException: QUOTA_EXCEEDED for /tmp
\tat org.apache.hadoop.hdfs.DFSClient.checkQuota(DFSClient.java:77)
"""


def test_code_terms_read_frames_exceptions_and_error_codes() -> None:
    """The top frames of each trace outside the JVM (three of them: not the entry points every trace shares),
    exception and error classes by their simple names, capitals with an underscore, and numbered errors."""
    terms = code_terms(TRACE)
    frames = {t for t in terms if t.startswith("at:")}
    assert frames == {"at:org.apache.hadoop.hive.ql.exec.MapJoinOperator.loadHashTable",
                      "at:org.apache.hadoop.hive.ql.exec.MapJoinOperator.process",
                      "at:org.apache.hadoop.hive.ql.exec.Operator.forward",
                      "at:org.apache.hadoop.hdfs.DFSClient.checkQuota"}  # a new trace after "Caused by"
    assert {"x:RuntimeException", "x:HiveException", "x:IOException"} <= terms and "x:Error" not in terms
    assert "c:QUOTA_EXCEEDED" in terms and "e:2" not in terms  # "code 2": too short to be an error number
    assert "e:10004" in code_terms("FAILED: SemanticException [Error 10004]: Line 1:7 Invalid table alias")
    assert code_terms("The page is slow when I open my invoices.") == frozenset()
    assert code_terms("") == frozenset()
    # numbered errors in any case; a text that is not ASCII read case-insensitively as Unicode has it (the fast
    # path lower-cases ASCII texts only: "ſ" matches "s" and "İ" lower-cases to two characters)
    assert code_terms("ERROR CODE: 500 then Status=404") == frozenset({"e:500", "e:404"})
    assert code_terms("ſtatus 404") == frozenset({"e:404"}) and code_terms("İerror 500") == frozenset()


def test_code_agreement_is_the_share_of_the_smaller_set() -> None:
    q = frozenset({"x:A", "x:B", "c:C_D"})
    out = code_agreement(q, [frozenset({"x:A"}), frozenset({"x:Z", "x:Y"}), frozenset(), q])
    assert out.shape == (4, CODE_COLUMNS)
    assert np.allclose(out, [[1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0]])
    assert not code_agreement(frozenset(), [q]).any()  # a query without code terms: nothing to agree on


def test_code_terms_are_cached_by_text_hash_and_read_only_when_missing() -> None:
    from ticketsearch.pipeline.pairs import CodeTerms

    cache = CodeTerms(limit=3)
    texts = {"h1": TRACE, "h2": "no code here", "h3": "QUOTA_EXCEEDED again", "h4": "Error 10004"}
    reads: list[list[str]] = []

    def read(hashes: list[str]):  # noqa: ANN202
        def texts_at(positions: list[int]) -> list[str]:
            reads.append([hashes[i] for i in positions])
            return [texts[hashes[i]] for i in positions]
        return texts_at

    first = cache.of(["h1", "h2"], read(["h1", "h2"]))
    assert first == [code_terms(TRACE), frozenset()] and reads == [["h1", "h2"]]
    assert cache.of(["h2", "h3", "h1"], read(["h2", "h3", "h1"])) == [frozenset(), frozenset({"c:QUOTA_EXCEEDED"}),
                                                                    code_terms(TRACE)]
    assert reads[-1] == ["h3"]  # the cached ones are not read again
    assert cache.of(["h4"], read(["h4"])) == [frozenset({"e:10004"})]  # over the limit: emptied, still right
    assert cache.of(["h1"], read(["h1"])) == [code_terms(TRACE)] and reads[-1] == ["h1"]
