"""Request and response models of the HTTP API. Unknown fields, wrong types, NaN and Infinity are refused."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    Tag,
    WithJsonSchema,
    field_validator,
)

from ticketsearch.index_data.records import ID_PATTERN, MAX_ID_LEN, parse_datetime
from ticketsearch.index_data.schema import FieldSpec, Schema

MAX_TEXT = 100_000  # characters; the encoder itself reads the first max_seq_length tokens
MAX_TITLE = 2_000
MAX_ID = MAX_ID_LEN  # the same limit and rule (ID_PATTERN) as ticket files: index_data/records.py
MAX_K = 100
MAX_FIELDS = 64
MAX_VALUES = 100
MAX_BATCH = 1000  # tickets per POST /v1/tickets
VISIBLE = r"[^\s\x00-\x1f\x7f-\x9f]"  # neither a space nor a control character
NOT_BLANK = VISIBLE  # at least one such character

def _field_value(v: Any) -> Any:
    """A field value: a string, a finite number, null, or a list of strings and numbers."""
    if isinstance(v, list):
        if len(v) > MAX_VALUES:
            raise ValueError(f"at most {MAX_VALUES} values")
        for x in v:
            _scalar(x)
        return v
    return None if v is None else _scalar(v)


def _scalar(x: Any) -> Any:
    if isinstance(x, bool) or not isinstance(x, (str, int, float)):
        raise ValueError(f"must be a string, a number or a list of them, not {type(x).__name__}")
    if isinstance(x, float) and not math.isfinite(x):
        raise ValueError("NaN and Infinity are not allowed")
    if isinstance(x, str) and len(x) > MAX_TITLE:
        raise ValueError(f"a value is longer than {MAX_TITLE} characters")
    return x


_SCALAR_SCHEMA: dict[str, Any] = {"anyOf": [{"type": "string", "maxLength": MAX_TITLE}, {"type": "number"}]}
FieldValue = Annotated[
    Any,
    BeforeValidator(_field_value),
    WithJsonSchema({"anyOf": [*_SCALAR_SCHEMA["anyOf"], {"type": "null"},
                              {"type": "array", "items": _SCALAR_SCHEMA, "maxItems": MAX_VALUES}]}),
]
FieldName = Annotated[str, Field(min_length=1, max_length=64)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_max_length=MAX_TEXT)


TicketId = Annotated[str, Field(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN,
                                 description="Any characters but control characters, no space at either end.")]


def _iso_date(v: Any) -> datetime:
    """Dates are ISO-8601 strings only (a number is not a date), read as files read them (naive UTC)."""
    if not isinstance(v, str):
        raise ValueError(f"must be an ISO-8601 date-time string, not {type(v).__name__}")
    return parse_datetime(v)


IsoDate = Annotated[datetime, BeforeValidator(_iso_date), WithJsonSchema({"type": "string", "format": "date-time"})]


class SearchRequest(Strict):
    text: str = Field(min_length=1, max_length=MAX_TEXT, pattern=NOT_BLANK,
                      description="Query text (the encoder reads its first max_seq_length tokens; the rest is cut).")
    title: str | None = Field(default=None, max_length=MAX_TITLE,
                              description="Optional separate title of the query ticket.")
    fields: dict[FieldName, FieldValue] = Field(
        default_factory=dict, max_length=MAX_FIELDS,
        description="The query ticket's own structured fields (unseen values are fine).")
    filters: dict[FieldName, FieldValue] = Field(
        default_factory=dict, max_length=MAX_FIELDS,
        description="Restrict candidates: field -> value or list of values (OR).")
    created_before: IsoDate | None = None
    created_after: IsoDate | None = None
    k: int = Field(default=10, ge=1, le=MAX_K)
    explain: StrictBool = False
    method: Literal["hybrid", "dense", "bm25", "title"] | None = Field(
        default=None, description="First stage (default: hybrid).")
    rerank: StrictBool = Field(default=True, description="Rerank the top 100 with the trained model when there is one.")
    snippets: StrictBool = Field(default=False, description="Each hit carries a passage of its body and the words "
                                 "that match the query (`snippet`, `highlight`).")

    _title = field_validator("title")(lambda v: v.strip() or None if v is not None else None)


class DuplicateRequest(Strict):
    title: str = Field(min_length=1, max_length=MAX_TITLE, pattern=NOT_BLANK)
    body: str = Field(default="", max_length=MAX_TEXT)
    created: IsoDate | None = Field(default=None, description="Only tickets created before this are candidates.")
    fields: dict[FieldName, FieldValue] = Field(default_factory=dict, max_length=MAX_FIELDS)
    k: int = Field(default=5, ge=1, le=MAX_K)
    snippets: StrictBool = Field(default=False, description="Each candidate carries a passage of its body and the "
                                 "words that match the ticket (`snippet`, `highlight`).")


class TicketIn(Strict):
    id: TicketId
    title: str = Field(min_length=1, max_length=MAX_TITLE, pattern=NOT_BLANK)
    body: str = Field(default="", max_length=MAX_TEXT)
    created: IsoDate
    duplicate_of: TicketId | None = None
    fields: dict[FieldName, FieldValue] = Field(default_factory=dict, max_length=MAX_FIELDS)


# POST /v1/tickets takes one ticket or a list. The union is tagged by the body's JSON type, so an error names
# only the shape that was sent; app.py drops the tag from the error's field ("body.created", "body.3.created").
BATCH_TAGS = ("ticket", "tickets")
TicketBatch = Annotated[
    Annotated[TicketIn, Tag("ticket")]
    | Annotated[list[TicketIn], Field(min_length=1, max_length=MAX_BATCH), Tag("tickets")],
    Discriminator(lambda v: "tickets" if isinstance(v, list) else "ticket" if isinstance(v, dict) else None,
                  custom_error_type="ticket_or_list",
                  custom_error_message="must be a ticket object or a list of tickets"),
]


class TicketOut(BaseModel):
    id: str
    title: str
    body: str
    created: str
    duplicate_of: str | None
    fields: dict[str, Any]


class UpsertResponse(BaseModel):
    inserted: int
    updated: int
    ids: list[str]
    change_seq: int


class DeleteResponse(BaseModel):
    deleted: str
    change_seq: int


class ErrorItem(BaseModel):
    field: str = Field(description="Where the problem is, e.g. 'body.k' or 'path.ticket_id'.")
    reason: str
    type: str


class ErrorResponse(BaseModel):
    detail: list[ErrorItem]


class Health(BaseModel):
    status: str
    detail: str | None = None
    tickets: int | None = None


# ---- the index's own field schema, in the OpenAPI document and in validation --------------------------
_STR = {"type": "string", "maxLength": MAX_TITLE}
_DATE = {"type": "string", "format": "date-time"}


def _kind_schema(spec: FieldSpec) -> dict[str, Any]:
    if spec.kind == "categorical":
        return {"anyOf": [_STR, {"type": "number"}]}
    if spec.kind == "multi":
        return {"type": "array", "items": _STR, "maxItems": MAX_VALUES}
    if spec.kind == "numeric":
        return {"type": "number", "minimum": 0} if spec.transform == "log1p" else {"type": "number"}
    return _DATE


def fields_json_schema(schema: Schema, description: str) -> dict[str, Any]:
    """The query ticket's fields: the index schema's names, each with its type (null allowed)."""
    return {"type": "object", "description": description, "additionalProperties": False,
            "properties": {f.name: {"anyOf": [_kind_schema(f), {"type": "null"}]} for f in schema.fields}}


def filters_json_schema(schema: Schema, description: str) -> dict[str, Any]:
    """Filters: a value or a non-empty list of values per field (OR); a list-valued field matches any."""
    props = {}
    for f in schema.fields:
        one = _STR if f.kind == "multi" else _kind_schema(f)
        props[f.name] = {"anyOf": [one, {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_VALUES}]}
    return {"type": "object", "description": description, "additionalProperties": False, "properties": props}


def patch_openapi(doc: dict[str, Any], schema: Schema) -> dict[str, Any]:
    comps = doc.get("components", {}).get("schemas", {})
    for model in ("SearchRequest", "DuplicateRequest", "TicketIn"):
        props = comps.get(model, {}).get("properties", {})
        if "fields" in props:
            props["fields"] = fields_json_schema(schema, props["fields"].get("description", "Structured fields."))
        if "filters" in props:
            props["filters"] = filters_json_schema(schema, props["filters"].get("description", "Filters."))
    return doc


def value_problem(spec: FieldSpec, value: Any, is_filter: bool) -> str | None:
    """Why `value` does not fit the field's type (the same rules as the OpenAPI document), or None."""
    if value is None:
        return "a filter value must not be null" if is_filter else None
    values = value if isinstance(value, list) and (is_filter or spec.kind == "multi") else [value]
    if is_filter and isinstance(value, list) and not value:
        return "needs at least one value"
    if spec.kind == "multi" and not is_filter:
        if not isinstance(value, list):
            return "must be a list of strings"
    for v in values:
        if isinstance(v, list):
            if is_filter:
                return "takes a value or a list of values, not nested lists"
            return "takes a single value, not a list"
        if spec.kind == "multi" and not isinstance(v, str):
            return "values must be strings"
        if spec.kind == "categorical" and not isinstance(v, (str, int, float)):
            return "must be a string or a number"
        if spec.kind == "numeric":
            if not isinstance(v, (int, float)):
                return "must be a number"
            if spec.transform == "log1p" and v < 0:
                return "must be at least 0"
        if spec.kind == "date":
            if not isinstance(v, str):
                return "must be an ISO-8601 date-time string"
            try:
                parse_datetime(v)
            except ValueError as exc:
                return str(exc)
    return None


# ---- collections ------------------------------------------------------------------------------------------
class InlineField(Strict):
    name: str = Field(min_length=1, max_length=63)
    kind: Literal["categorical", "multi", "numeric", "date"]
    source: str | None = Field(default=None, max_length=200, description="The input column (default: the name).")
    max_vocab: int = Field(default=1000, ge=1, le=100_000)
    transform: Literal["none", "log1p"] = "none"


class InlineSchema(Strict):
    """A field schema given inline: the layout of the TOML schema files, as JSON."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    text: dict[Literal["fields"], list[Literal["title", "body"]]] = Field(
        default={"fields": ["title", "body"]}, description="The text fields the encoder reads.")
    fields: list[InlineField] = Field(default_factory=list, max_length=MAX_FIELDS)


class CollectionCreate(Strict):
    schema_: Literal["support", "jira", "bugzilla", "github"] | InlineSchema = Field(
        alias="schema", description="A built-in schema's name, or an inline schema.")
    general_model: StrictBool = Field(
        default=False, description="Rerank with the shipped general model until a model of its own is trained "
        "(default: first-stage order, which the answers say).")
    shards: int | None = Field(
        default=None, ge=1, le=64, description="Split the collection into this many shards by a hash of the "
        "ticket id, each a complete index (default: the service's --shards on a Ray service, else one index).")

    def schema_spec(self) -> str | dict[str, Any]:
        s = self.schema_
        return s if isinstance(s, str) else s.model_dump(exclude_none=True)


class FeedbackRequest(Strict):
    ticket_id: TicketId = Field(description="The ticket the agent was looking at.")
    candidate_id: TicketId = Field(description="The candidate the agent decided on.")
    label: Literal["duplicate", "not_duplicate"]
    by: str | None = Field(default=None, max_length=200, description="Who decided (an agent's name or id).")
