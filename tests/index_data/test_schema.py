from __future__ import annotations

from pathlib import Path

import pytest

from ticketsearch.errors import SchemaError
from ticketsearch.index_data.schema import LEAKY_FIELDS, builtin_schema_names, load_schema


def test_builtin_schemas_are_listed_and_load() -> None:
    names = builtin_schema_names()
    assert {"support", "jira", "bugzilla"} <= set(names)
    support = load_schema("support")
    assert support.text_fields == ("title", "body")
    kinds = {f.name: f.kind for f in support.fields}
    assert kinds["category"] == "categorical"
    assert kinds["affected_count"] == "numeric"
    assert kinds["submitted"] == "date"


def test_jira_schema_has_filing_time_fields_only() -> None:
    jira = load_schema("jira")
    assert {"project", "issuetype", "priority", "components", "versions", "labels"} <= set(jira.field_names)
    for f in jira.fields:
        assert f.source.lower() not in LEAKY_FIELDS and f.name not in LEAKY_FIELDS
    assert jira.field("components").kind == "multi"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


def test_schema_from_path(tmp_path: Path) -> None:
    p = write(tmp_path, 'name = "x"\n[[fields]]\nname = "team"\nkind = "categorical"\nmax_vocab = 3\n')
    s = load_schema(str(p))
    assert s.name == "x" and s.field("team").max_vocab == 3 and s.field("team").source == "team"


@pytest.mark.parametrize(
    "text, needle",
    [
        ('name = "x"\n[[fields]]\nname = "resolution"\nkind = "categorical"\n', "leaks the answer"),
        ('name = "x"\n[[fields]]\nname = "r"\nsource = "fixVersions"\nkind = "multi"\n', "leaks the answer"),
        ('name = "x"\n[[fields]]\nname = "a"\nkind = "blob"\n', "kind must be one of"),
        ('name = "x"\n[[fields]]\nname = "A b"\nkind = "numeric"\n', "name must match"),
        ('name = "x"\n[[fields]]\nname = "a"\nkind = "numeric"\n'
         '[[fields]]\nname = "a"\nkind = "numeric"\n', "duplicate"),
        ('name = "x"\n[[fields]]\nname = "a"\nkind = "categorical"\ntransform = "log1p"\n', "transform"),
        ('name = "x"\n[[fields]]\nname = "a"\nkind = "numeric"\ncolour = 1\n', "unknown keys"),
        ("name = \n", "invalid TOML"),
        ('[text]\nfields = ["title"]\n', "'name'"),
        ('name = "my schema"\n', "'name' must be 1-63 characters"),
        ('name = "x"\n[[fields]]\nname = "a"\nkind = "categorical"\nsource = "' + "s" * 65 + '"\n',
         "source must be a string of 1-64"),  # no ticket could name it: a field is named in at most 64
        ('name = "x"\n[[fields]]\nname = "a"\nkind = "categorical"\nmax_vocab = true\n', "max_vocab"),
        ('name = "x"\n[[fields]]\nname = "a"\nkind = "categorical"\nmax_vocab = 100001\n', "max_vocab"),
        ('name = "x"\nkeep = ["' + "k" * 65 + '"]\n', "keep must be a list of at most 64"),
        ('name = "x"\nfields = 3\n', "fields must be a list"),
    ],
)
def test_bad_schemas_are_rejected_with_a_reason(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(SchemaError, match=needle):
        load_schema(str(write(tmp_path, text)))


def test_leaky_field_allowed_when_asked(tmp_path: Path) -> None:
    p = write(tmp_path, 'name = "x"\nallow_leaky_fields = true\n[[fields]]\nname = "status"\nkind = "categorical"\n')
    assert load_schema(str(p)).field_names == ["status"]


def test_unknown_schema_name() -> None:
    with pytest.raises(SchemaError, match="neither a built-in schema"):
        load_schema("no-such-schema")


def test_round_trip_dict() -> None:
    from ticketsearch.index_data.schema import Schema

    s = load_schema("jira")
    assert Schema.from_dict(s.to_dict()) == s


def test_an_inline_schema_has_the_limits_of_a_file() -> None:
    """The API's inline schema (`InlineSchema`) states the limits `schema._parse` enforces on a TOML file."""
    from pydantic import ValidationError

    from ticketsearch.index_data.schema import MAX_VOCAB, Schema
    from ticketsearch.service.schemas import InlineSchema

    for bad in ({"name": "my schema"}, {"name": "x", "fields": [{"name": "a", "kind": "numeric", "source": "s" * 65}]},
                {"name": "x", "fields": [{"name": "a", "kind": "categorical", "max_vocab": MAX_VOCAB + 1}]}):
        with pytest.raises(ValidationError):
            InlineSchema.model_validate(bad)
        with pytest.raises(SchemaError):
            Schema.from_dict(bad)
    edge = {"name": "x.y-1", "fields": [{"name": "a", "kind": "categorical", "source": "s" * 64,
                                         "max_vocab": MAX_VOCAB}]}
    parsed = Schema.from_dict(InlineSchema.model_validate(edge).model_dump(exclude_none=True))
    assert parsed.field("a").source == "s" * 64
