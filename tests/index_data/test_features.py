from __future__ import annotations

import math
from datetime import datetime

import numpy as np

from ticketsearch.index_data.features import FeatureSpace
from ticketsearch.index_data.schema import FieldSpec, Schema

SCHEMA = Schema(
    name="t",
    text_fields=("title", "body"),
    fields=(
        FieldSpec("team", "categorical", "team", max_vocab=2),
        FieldSpec("tags", "multi", "tags", max_vocab=3),
        FieldSpec("users", "numeric", "users", transform="log1p"),
        FieldSpec("when", "date", "when"),
    ),
)
ROWS = [
    {"team": "a", "tags": ["x", "y"], "users": 0.0, "when": datetime(2024, 1, 1, 6)},
    {"team": "a", "tags": ["x"], "users": 9.0, "when": None},
    {"team": "b", "tags": ["z", "w"], "users": 99.0, "when": datetime(2024, 1, 2, 18)},
    {"team": "c", "tags": [], "users": None, "when": None},
]


def test_vocab_is_capped_by_frequency_with_oov_bucket() -> None:
    fs = FeatureSpace.fit(SCHEMA, ROWS)
    assert fs.stats["team"].vocab == ["a", "b"]  # 'c' is beyond the cap of 2
    assert fs.stats["tags"].vocab == ["x", "w", "y"]  # x twice, then ties by value
    assert fs.dim == (1 + 2) + (1 + 3) + 2 + 5
    v = fs.vector({"team": "c", "tags": ["x", "never-seen"], "users": 9.0, "when": None})
    off = fs.offsets
    assert v[off["team"]] == 1.0 and v[off["team"] + 1 : off["team"] + 3].sum() == 0  # OOV bucket
    assert v[off["tags"]] == 1.0 and v[off["tags"] + 1] == 1.0  # OOV + 'x'
    assert fs.is_oov("team", "c") and not fs.is_oov("team", "a")


def test_unseen_values_never_crash_and_missing_is_all_zero() -> None:
    fs = FeatureSpace.fit(SCHEMA, ROWS)
    v = fs.vector({})
    off = fs.offsets
    assert v[off["team"] : off["team"] + 3].sum() == 0
    assert v[off["users"] + 1] == 1.0  # missing flag
    assert v[off["when"] + 4] == 1.0
    fs.vector({"team": 12345, "tags": ["q"] * 5, "users": 1e9})  # no exception


def test_numeric_is_standardised_after_log1p() -> None:
    fs = FeatureSpace.fit(SCHEMA, ROWS)
    xs = [math.log1p(0.0), math.log1p(9.0), math.log1p(99.0)]
    mean = sum(xs) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / 3)
    assert math.isclose(fs.stats["users"].mean, mean, rel_tol=1e-9)
    z = fs.vector({"users": 9.0})[fs.offsets["users"]]
    assert math.isclose(z, (math.log1p(9.0) - mean) / std, rel_tol=1e-5)


def test_date_is_cyclical() -> None:
    fs = FeatureSpace.fit(SCHEMA, ROWS)
    v = fs.vector({"when": datetime(2024, 1, 1, 6)})  # 06:00 on a Monday
    o = fs.offsets["when"]
    assert np.allclose(v[o : o + 4], [1.0, 0.0, 0.0, 1.0], atol=1e-6)


def test_round_trip_and_matrix() -> None:
    fs = FeatureSpace.fit(SCHEMA, ROWS)
    again = FeatureSpace.from_dict(fs.to_dict())
    assert np.array_equal(fs.matrix(ROWS), again.matrix(ROWS))
    assert fs.matrix(ROWS).shape == (4, fs.dim)
