"""Request and response models of the HTTP API. Unknown fields, wrong types, NaN and Infinity are refused."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator

MAX_TEXT = 100_000  # characters; the encoder itself reads the first max_seq_length tokens
MAX_TITLE = 2_000
MAX_ID = 200
MAX_K = 100
MAX_FIELDS = 64
MAX_VALUES = 100

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


def _naive_utc(v: datetime | None) -> datetime | None:
    if v is not None and v.tzinfo is not None:
        return v.astimezone(timezone.utc).replace(tzinfo=None)
    return v


def _not_blank(v: str | None) -> str | None:
    if v is not None and not v.strip():
        raise ValueError("must not be empty or whitespace only")
    return v


class SearchRequest(Strict):
    text: str = Field(min_length=1, max_length=MAX_TEXT, description="Query text (longer texts are truncated to the encoder's limit).")
    title: str | None = Field(default=None, max_length=MAX_TITLE, description="Optional separate title of the query ticket.")
    fields: dict[FieldName, FieldValue] = Field(default_factory=dict, max_length=MAX_FIELDS,
                                                description="The query ticket's own structured fields (unseen values are fine).")
    filters: dict[FieldName, FieldValue] = Field(default_factory=dict, max_length=MAX_FIELDS,
                                                 description="Restrict candidates: field -> value or list of values (OR).")
    created_before: datetime | None = None
    created_after: datetime | None = None
    k: int = Field(default=10, ge=1, le=MAX_K)
    explain: bool = False
    method: Literal["hybrid", "dense", "bm25", "title"] | None = Field(default=None, description="First stage (default: hybrid).")
    rerank: bool = Field(default=True, description="Rerank the top 100 with the trained model when there is one.")

    _text = field_validator("text")(_not_blank)
    _title = field_validator("title")(lambda v: v.strip() or None if v is not None else None)
    _dates = field_validator("created_before", "created_after")(_naive_utc)


class AttendedWord(BaseModel):
    word: str
    weight: float


class Hit(BaseModel):
    id: str
    title: str
    created: str
    fields: dict[str, Any]
    score: float = Field(description="The final ranking score (the rerank score when reranked).")
    retrieval_score: float | None = Field(description="First-stage score.")
    rerank_score: float | None
    probability: float | None = Field(description="Calibrated probability that this is a duplicate of the query.")
    scores: dict[str, float] = Field(description="Per first-stage method scores.")
    attended: list[AttendedWord] | None = None


class SearchResponse(BaseModel):
    hits: list[Hit]
    method: str
    reranked: bool
    notes: list[str]
    timings_ms: dict[str, float]


class DuplicateRequest(Strict):
    title: str = Field(default="", max_length=MAX_TITLE)
    body: str = Field(default="", max_length=MAX_TEXT)
    created: datetime | None = Field(default=None, description="Only tickets created before this are candidates.")
    fields: dict[FieldName, FieldValue] = Field(default_factory=dict, max_length=MAX_FIELDS)
    k: int = Field(default=5, ge=1, le=MAX_K)

    _dates = field_validator("created")(_naive_utc)


class DuplicateResponse(BaseModel):
    is_duplicate: bool
    probability: float | None = Field(description="The best candidate's calibrated duplicate probability.")
    threshold: float = Field(description="Chosen on validation data for the configured precision; stored with the model.")
    target_precision: float
    candidates: list[Hit]


class TicketIn(Strict):
    id: str = Field(min_length=1, max_length=MAX_ID, pattern=r"^\S(.*\S)?$")
    title: str = Field(default="", max_length=MAX_TITLE)
    body: str = Field(default="", max_length=MAX_TEXT)
    created: datetime
    duplicate_of: str | None = Field(default=None, max_length=MAX_ID)
    fields: dict[FieldName, FieldValue] = Field(default_factory=dict, max_length=MAX_FIELDS)

    _dates = field_validator("created")(_naive_utc)


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
