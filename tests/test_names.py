"""Names that become a folder, a file or a column (`ticketsearch.names`): each rule checked whole, the same at
every door."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ticketsearch.errors import QueryError, SchemaError
from ticketsearch.index_data.schema import Schema
from ticketsearch.names import (
    COLLECTION_PATTERN,
    FIELD_PATTERN,
    JOB_ID_PATTERN,
    NAME_MAX,
    check_collection_name,
    is_collection_name,
    is_field_name,
    is_job_id,
    new_job_id,
)
from ticketsearch.pipeline.collections import Collections
from ticketsearch.pipeline.jobs import TrainingJobs
from ticketsearch.settings import Settings

GOOD_COLLECTIONS = ["a", "0", "acme", "acme-2", "a_b-c", "9lives", "a" * NAME_MAX, "z" + "-" * (NAME_MAX - 1)]
BAD_COLLECTIONS = ["", "-a", "_a", "A", "Acme", "a" * (NAME_MAX + 1), "abc\n", "\nabc", "a b", "a/b", "a\\b", ".",
                   "..", "a.b", "é", "acme\x00", " acme", "acme "]
GOOD_FIELDS = ["a", "prio", "prio_2", "a" * NAME_MAX, "x_"]
BAD_FIELDS = ["", "1a", "_a", "A", "a-b", "a" * (NAME_MAX + 1), "prio\n", "a b", 'a"b', "a;b", "é"]


@pytest.mark.parametrize("name", GOOD_COLLECTIONS)
def test_a_collection_name_of_the_rule_is_accepted(name: str) -> None:
    assert is_collection_name(name) and check_collection_name(name) == name


@pytest.mark.parametrize("name", BAD_COLLECTIONS)
def test_a_collection_name_outside_the_rule_is_refused_with_the_rule(name: str) -> None:
    assert not is_collection_name(name)
    with pytest.raises(QueryError, match=rf"must be 1-{NAME_MAX} characters of a-z, 0-9, '_' and '-'"):
        check_collection_name(name)


def test_non_strings_are_no_names() -> None:
    for v in (None, 1, b"acme", ["acme"]):
        assert not is_collection_name(v) and not is_field_name(v) and not is_job_id(v)


@pytest.mark.parametrize("name", GOOD_FIELDS)
def test_a_field_name_is_a_lower_case_identifier(name: str) -> None:
    assert is_field_name(name)
    assert Schema.from_dict({"name": "s", "fields": [{"name": name, "kind": "categorical"}]}).fields[0].name == name


@pytest.mark.parametrize("name", BAD_FIELDS)
def test_a_field_name_that_is_not_an_identifier_is_refused_by_the_schema(name: str) -> None:
    assert not is_field_name(name)
    with pytest.raises(SchemaError, match="name must match"):
        Schema.from_dict({"name": "s", "fields": [{"name": name, "kind": "categorical"}]})


def test_job_ids_are_sixteen_hex_digits_and_nothing_else() -> None:
    ids = {new_job_id() for _ in range(200)}
    assert len(ids) == 200 and all(is_job_id(i) and len(i) == 16 for i in ids)
    good = next(iter(ids))
    for bad in ("", good[:-1], good + "0", good.upper() if good.upper() != good else "A" * 16, good + "\n",
                "../" + good[3:], "g" * 16, " " + good[1:]):
        assert not is_job_id(bad), bad


def test_the_patterns_read_the_same_in_python_and_in_the_api() -> None:
    """The API's schemas carry the patterns (pydantic's regex, where `$` is the very end): Python checks whole
    strings, so a final newline is refused at both."""
    from pydantic import BaseModel, Field, ValidationError

    for pattern, good, bad in ((COLLECTION_PATTERN, GOOD_COLLECTIONS, BAD_COLLECTIONS),
                               (FIELD_PATTERN, GOOD_FIELDS, BAD_FIELDS)):
        class M(BaseModel):
            v: str = Field(pattern=pattern, max_length=NAME_MAX)

        for v in good:
            M(v=v)
        for v in bad:
            with pytest.raises(ValidationError):
                M(v=v)
            assert re.fullmatch(pattern, v) is None
    assert re.fullmatch(JOB_ID_PATTERN, new_job_id())


def test_the_library_refuses_what_the_api_refuses(tmp_path: Path) -> None:
    """Collections (the library and CLI door): a name with a final newline never becomes a folder; a job id
    outside the rule never reaches a file."""
    colls = Collections.at_root(tmp_path, Settings(cache_dir=tmp_path / "cache"), models=object())  # type: ignore[arg-type]
    for bad in ("acme\n", "..", "a/b"):
        with pytest.raises(QueryError, match="collection name"):
            colls.create(bad, "support")
        with pytest.raises(QueryError):
            colls.path(bad)
        assert not colls.exists(bad)
    assert list((tmp_path / "collections").iterdir()) == []
    (tmp_path / "collections" / "Not-A-Name").mkdir()
    assert colls.names() == []
    jobs = TrainingJobs(colls, Settings(cache_dir=tmp_path / "cache"))
    from ticketsearch.errors import JobNotFoundError

    for bad in ("../../x", "0123456789abcdef\n", "0123456789ABCDEF"):
        with pytest.raises(JobNotFoundError):
            jobs.get("acme", bad)


def test_an_error_echoes_at_most_80_characters_of_a_name() -> None:
    name = "x" * 79 + "Y" + "z" * 500
    with pytest.raises(QueryError) as err:
        check_collection_name(name)
    assert repr(name[:80]) in str(err.value) and "z" not in str(err.value).replace("characters of a-z", "")
