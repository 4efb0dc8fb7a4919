"""Request and response models of the HTTP API. Unknown fields, wrong types, NaN and Infinity are refused."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    StrictBool,
    Tag,
)

from ticketsearch.index_data.feedback import MAX_BY
from ticketsearch.index_data.schema import MAX_VOCAB, SCHEMA_NAME_PATTERN, FieldSpec, Schema
from ticketsearch.names import FIELD_PATTERN, NAME_MAX
from ticketsearch.requests import (  # noqa: F401 - the request models and limits, defined once, re-exported here
    ID_PATTERN,
    MAX_BATCH,
    MAX_BODY,
    MAX_FIELD_NAME,
    MAX_FIELDS,
    MAX_ID,
    MAX_K,
    MAX_QUERY,
    MAX_TEXT,
    MAX_TITLE,
    MAX_VALUES,
    NOT_BLANK,
    VISIBLE,
    DuplicateRequest,
    FieldName,
    FieldValue,
    IsoDate,
    SearchRequest,
    Strict,
    TicketId,
    TicketIn,
    value_problem,
)

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


class UpsertResponse(BaseModel):
    inserted: int
    updated: int
    ids: list[str] = Field(description="The ids written, in order.")
    change_seq: int
    stale: list[str] = Field(default_factory=list, description="Ids not written: the stored version (`updated`) "
                             "is as new as the one given, or newer.")
    repeated: list[str] = Field(default_factory=list, description="Ids given more than once in the batch: the "
                                "last occurrence was written.")


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
            kept = props["fields"].get("additionalProperties") if model == "TicketIn" else None
            props["fields"] = fields_json_schema(schema, props["fields"].get("description", "Structured fields."))
            for name in schema.keep if kept else ():  # a ticket may carry the columns its schema keeps verbatim
                props["fields"]["properties"].setdefault(name, kept)
        if "filters" in props:
            props["filters"] = filters_json_schema(schema, props["filters"].get("description", "Filters."))
    return doc


# ---- collections ------------------------------------------------------------------------------------------
class InlineField(Strict):
    name: str = Field(min_length=1, max_length=NAME_MAX, pattern=FIELD_PATTERN,
                      description="A column of the ticket store: a lower-case identifier.")
    kind: Literal["categorical", "multi", "numeric", "date"]
    source: str | None = Field(default=None, min_length=1, max_length=MAX_FIELD_NAME,
                               description="The input column (default: the name).")
    max_vocab: int = Field(default=1000, ge=1, le=MAX_VOCAB)
    transform: Literal["none", "log1p"] = "none"


class InlineSchema(Strict):
    """A field schema given inline: the layout of the TOML schema files, as JSON."""

    name: str = Field(min_length=1, max_length=63, pattern=SCHEMA_NAME_PATTERN)
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

    duplicate_precision: float | None = Field(
        default=None, gt=0, lt=1, description="The target precision of this collection's duplicate verdicts: the "
        "stored threshold for it decides (default: the service's TICKETSEARCH_DUPLICATE_PRECISION, 0.9).")

    def schema_spec(self) -> str | dict[str, Any]:
        s = self.schema_
        return s if isinstance(s, str) else s.model_dump(exclude_none=True)


class CollectionUpdate(Strict):
    duplicate_precision: float | None = Field(
        gt=0, lt=1, description="The target precision of this collection's duplicate verdicts; null: the "
        "service's TICKETSEARCH_DUPLICATE_PRECISION. Used by the next request.")


class FeedbackRequest(Strict):
    ticket_id: TicketId = Field(description="The ticket the agent was looking at.")
    candidate_id: TicketId = Field(description="The candidate the agent decided on.")
    label: Literal["duplicate", "not_duplicate"]
    by: str | None = Field(default=None, max_length=MAX_BY, description="Who decided (an agent's name or id).")
