"""What a caller may ask, defined once: a search, a duplicate check and an incoming ticket, with their limits and
the one rule for a query's fields and filters.

Every door builds these values: the HTTP service (they are its request bodies), the CLI, the client, the library
(`TicketIndex.search(text, **options)` is `SearchRequest.of(text, **options)`), the engine and the shards. A
limit lives here and nowhere else; a new search option is one field here plus the stage that reads it.

A request that breaks a rule raises `RequestError` (a `QueryError`) naming the field, e.g. `k` or
`fields.product`; the HTTP service answers it as 422 with `body.` before the field, the CLI as one line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ticketsearch.errors import RequestError
from ticketsearch.names import MAX_FIELD_NAME, MAX_FIELDS  # noqa: F401 - the request limits, re-exported

if TYPE_CHECKING:
    from ticketsearch.index_data.schema import FieldSpec, Schema

# The one rule for a ticket id, in files and over HTTP (records.py and service/schemas.py take it from here):
# 1 to MAX_ID_LEN characters, none of them a control character (Unicode Cc: U+0000-U+001F, U+007F-U+009F), and no
# whitespace at either end (files strip it first), and not only dots ('.' and '..' would change a URL's path
# once a client or a browser resolves it: an id is data, never a path). Anything else is fine: '/', '#', '?',
# '%', inner spaces, any script. The pattern has no look-around, so it reads the same in Python's re, Rust's
# regex (pydantic) and RE2 (Arrow): one character, or first-middle-last with a character that is not a dot at
# one of the three places.
MAX_ID_LEN = 256
CONTROL_CHARS = r"\x00-\x1f\x7f-\x9f"
_E, _ND, _C = rf"[^\s{CONTROL_CHARS}]", rf"[^.\s{CONTROL_CHARS}]", rf"[^{CONTROL_CHARS}]"  # end, not a dot, inner
ID_PATTERN = (rf"^(?:{_ND}|{_ND}{_C}*{_E}|{_E}{_C}*{_ND}|{_E}{_C}*[^.{CONTROL_CHARS}]{_C}*{_E})$")
_ID = re.compile(ID_PATTERN)


SELF_DUPLICATE = "duplicate_of points at the ticket itself"


def id_problem(tid: str) -> str | None:
    """Why `tid` is not a ticket id (see ID_PATTERN), or None."""
    if not tid:
        return "empty id"
    if len(tid) > MAX_ID_LEN:
        return f"id longer than {MAX_ID_LEN} characters"
    if _ID.fullmatch(tid) is None:
        if not tid.strip("."):
            return "an id must not be only dots ('.' and '..' are path steps, not ids)"
        return "an id must not hold control characters or start or end with whitespace"
    return None



def iso_utc(dt: datetime) -> str:
    """A stored time (naive UTC) as an answer gives it: ISO-8601 with its zone, `Z` (one rule for every door)."""
    naive = dt if dt.tzinfo is None else dt.astimezone(UTC).replace(tzinfo=None)
    return naive.isoformat() + "Z"


def parse_datetime(value: Any) -> datetime:
    """Parse ISO-8601 (date or date-time, with or without offset) to naive UTC."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str) and value.strip():
        s = value.strip()
        if s.endswith("Z"):
            s = s[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(s)
        except ValueError as exc:
            raise ValueError(f"not an ISO-8601 date: {value!r}") from exc
    else:
        raise ValueError(f"not an ISO-8601 date: {value!r}")
    return naive_utc(dt)


def now() -> datetime:
    """The time of a request, naive UTC as every stored date, to the hour: what a query or new ticket without a
    date is taken to be filed at (never a zero gap to every candidate by omission). To the hour, so that the same
    request gives the same scores within the hour (the time-gap input counts days: an hour moves it little)."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0, tzinfo=None)


def named_date(value: str | datetime, name: str) -> datetime:
    """A date given by name (a CLI option, a request's field); a bad one is a RequestError naming it (the CLI's
    one line, the API's 422)."""
    try:
        return parse_datetime(value)
    except ValueError as exc:
        raise RequestError(str(exc), field=name) from None


def as_datetime(value: str | datetime | None, name: str) -> datetime | None:
    """`named_date`, where None stays None."""
    return None if value is None else named_date(value, name)


def naive_utc(dt: datetime) -> datetime:
    """A datetime as naive UTC; at the ends of the calendar, where UTC would overflow, the offset is dropped."""
    if dt.tzinfo is None:
        return dt
    try:
        return dt.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        return dt.replace(tzinfo=None)



MAX_TEXT = 100_000  # characters of a value kept verbatim (a field's or a column's)
MAX_BODY = 200_000  # characters of a ticket's body, at every door (real JIRA tickets reach 187,000)
# characters of a query text: a whole ticket's body, since a new ticket's body is the text its duplicate check and
# a `search` with it read (the encoder reads the first max_seq_length tokens; BM25 and the near-copy rule all words)
MAX_QUERY = MAX_BODY
MAX_TITLE = 2_000
MAX_ID = MAX_ID_LEN  # the same limit and rule (ID_PATTERN) as ticket files: index_data/records.py
MAX_K = 100  # hits of one search, at every door (the reranker reorders the top 100)
MAX_VALUES = 100
MAX_BATCH = 1000  # tickets per POST /v1/tickets
METHODS = ("hybrid", "dense", "bm25", "title")  # first stages a request may name (retrieval/first_stage.py)
Method = Literal["hybrid", "dense", "bm25", "title"]
VISIBLE = r"[^\s\x00-\x1f\x7f-\x9f]"  # neither a space nor a control character
NOT_BLANK = VISIBLE  # at least one such character


def _field_value(v: Any) -> Any:
    """A field value: a string, a finite number, null, or a list of strings and numbers (the library may give a
    date field a datetime: it reads as its ISO-8601 string)."""
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, list):
        if len(v) > MAX_VALUES:
            raise ValueError(f"at most {MAX_VALUES} values")
        for x in v:
            _scalar(x)
        return v
    if isinstance(v, tuple | set):
        return _field_value(list(v))
    return None if v is None else _scalar(v)


def _scalar(x: Any, longest: int = MAX_TITLE) -> Any:
    if isinstance(x, bool) or not isinstance(x, (str, int, float)):
        raise ValueError(f"must be a string, a number or a list of them, not {type(x).__name__}")
    if isinstance(x, float) and not math.isfinite(x):
        raise ValueError("NaN and Infinity are not allowed")
    if isinstance(x, str) and len(x) > longest:
        raise ValueError(f"a value is longer than {longest} characters")
    return x


_SCALAR_SCHEMA: dict[str, Any] = {"anyOf": [{"type": "string", "maxLength": MAX_TITLE}, {"type": "number"}]}
FieldValue = Annotated[
    Any,
    BeforeValidator(_field_value),
    WithJsonSchema({"anyOf": [*_SCALAR_SCHEMA["anyOf"], {"type": "null"},
                              {"type": "array", "items": _SCALAR_SCHEMA, "maxItems": MAX_VALUES}]}),
]
FieldName = Annotated[str, Field(min_length=1, max_length=MAX_FIELD_NAME)]


def _kept_value(v: Any) -> Any:
    """A ticket's field as given: a schema field's value (checked by the field's rule) or a column the schema
    keeps verbatim (`keep`), so plain JSON values up to MAX_TEXT characters each."""
    if isinstance(v, tuple | set):
        v = list(v)
    for x in v if isinstance(v, list) else [v]:
        if x is not None or isinstance(v, list):
            _scalar(x, MAX_TEXT)
    if isinstance(v, list) and len(v) > MAX_VALUES:
        raise ValueError(f"at most {MAX_VALUES} values")
    return v


KeptValue = Annotated[Any, BeforeValidator(_kept_value), WithJsonSchema(
    {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "null"},
               {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "number"}]}}]})]
TicketId = Annotated[str, Field(min_length=1, max_length=MAX_ID, pattern=ID_PATTERN,
                                 description="Any characters but control characters, no space at either end.")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_max_length=MAX_TEXT)


def _iso_date(v: Any) -> datetime:
    """Dates are ISO-8601 strings (a number is not a date), read as files read them (naive UTC); the library
    may also pass a datetime."""
    if isinstance(v, datetime):
        return parse_datetime(v)
    if not isinstance(v, str):
        raise ValueError(f"must be an ISO-8601 date-time string, not {type(v).__name__}")
    return parse_datetime(v)


IsoDate = Annotated[datetime, BeforeValidator(_iso_date), WithJsonSchema({"type": "string", "format": "date-time"})]

M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: dict[str, Any]) -> M:
    """`model` from `data`, or a RequestError naming the first field that breaks a rule."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise request_error(exc) from None


def request_error(exc: ValidationError) -> RequestError:
    e = exc.errors()[0]
    loc = ".".join(str(x) for x in e.get("loc", ()))
    return RequestError(error_message(e), field=loc or None, type_=str(e.get("type", "value_error")))


def error_message(e: Any) -> str:
    """A validation error's message, in the request's terms (a blank text says so)."""
    pattern = (e.get("ctx") or {}).get("pattern") if e.get("type") == "string_pattern_mismatch" else None
    if pattern == NOT_BLANK:
        return "must not be empty or whitespace only"
    if pattern == ID_PATTERN and isinstance(e.get("input"), str):  # a file's words for an id, not the regex
        return id_problem(e["input"]) or "not a ticket id"
    msg = str(e.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


# ---- what a request may cost ---------------------------------------------------------------------------------
MAX_EXPLAINED = 20  # explain covers at most this many hits: each costs about as much as a whole ordinary search
COSTLY_TEXT = 10_000  # a query of more characters costs several ordinary searches (BM25 reads every term)
COSTLY_SNIPPETS = 20  # snippets for more hits than this
# what `SearchRequest.costly` counts, in words (the service's 429 and its documents say it)
COSTLY_KINDS = (f"explain, a query of over {COSTLY_TEXT:,} characters (a like ticket's text counts), snippets of "
                f"over {COSTLY_SNIPPETS} hits")


def explain_problem(k: int) -> str | None:
    """Why an explained search of `k` hits is refused (the one rule for the library, the CLI and the API)."""
    if k > MAX_EXPLAINED:
        return f"explain covers at most {MAX_EXPLAINED} hits: ask k <= {MAX_EXPLAINED} with explain (k is {k})"
    return None


# ---- a search ------------------------------------------------------------------------------------------------
class SearchRequest(Strict):
    """A search: by a query text (with an optional separate title), or like an indexed ticket (`like`)."""

    # the rule of `_text_or_like`, stated in the JSON schema too (the OpenAPI document)
    model_config = ConfigDict(json_schema_extra={
        "oneOf": [
            {"required": ["text"], "not": {"required": ["like"]}},
            {"required": ["like"], "not": {"anyOf": [{"required": ["text"]}, {"required": ["title"]}]}},
        ],
        # and `explain_problem`'s: an explained search covers at most MAX_EXPLAINED hits
        "if": {"required": ["explain"], "properties": {"explain": {"const": True}}},
        "then": {"properties": {"k": {"maximum": MAX_EXPLAINED}}},
    })

    # text and like may be left out, not sent as null (the JSON schema says which one a request gives)
    text: Annotated[str | None, WithJsonSchema({"type": "string", "maxLength": MAX_QUERY, "pattern": NOT_BLANK})] = \
        Field(default=None, max_length=MAX_QUERY, pattern=NOT_BLANK,
        description="Query text (the encoder reads its first max_seq_length tokens; the rest is cut). Give `text` or "
        "`like`.")
    like: Annotated[TicketId | None, WithJsonSchema({"type": "string", "maxLength": MAX_ID, "pattern": ID_PATTERN})] = \
        Field(default=None, description="Find tickets like this indexed ticket (never itself) instead of a query text.")
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
    method: Method | None = Field(default=None, description="First stage (default: hybrid).")
    rerank: StrictBool = Field(default=True, description="Rerank the top 100 with the trained model when there is one.")
    snippets: StrictBool = Field(default=False, description="Each hit carries a passage of its body and the words "
                                 "that match the query (`snippet`, `highlight`).")

    _title = field_validator("title")(lambda v: v.strip() or None if v is not None else None)

    @field_validator("text", "like", mode="before")
    @classmethod
    def _not_null(cls, v: Any) -> Any:
        if v is None:
            raise ValueError("must be a string (leave it out instead of null)")
        return v

    @model_validator(mode="after")
    def _text_or_like(self) -> SearchRequest:
        given = self.model_fields_set
        if "like" in given and given & {"text", "title"}:
            raise ValueError("give either a query text or like (an indexed ticket's id), not both")
        if self.like is None and self.text is None:
            raise ValueError("give a query text, or like (an indexed ticket's id)")
        if self.explain and (problem := explain_problem(self.k)):
            raise ValueError(problem)
        return self

    def costly(self, like_chars: int = 0) -> bool:
        """A search that costs several ordinary ones: explained, a query of over COSTLY_TEXT characters (for a
        search `like` an indexed ticket, that ticket's title and body: `like_chars`, which the caller reads from
        the store), or snippets of over COSTLY_SNIPPETS hits. The service runs only a few of these at once, per
        key and in all (`service.costs`), so that they cannot take the workers from ordinary searches."""
        chars = like_chars if self.like is not None else len(self.text or "") + len(self.title or "")
        return self.explain or chars > COSTLY_TEXT or (self.snippets and self.k > COSTLY_SNIPPETS)

    @classmethod
    def of(cls, text: str | SearchRequest | None = None, **options: Any) -> SearchRequest:
        """The library's spelling: `before`/`after` for `created_before`/`created_after`; None means unset. A
        built request passes through as it is."""
        data = {("created_" + k if k in ("before", "after") else k): v for k, v in options.items() if v is not None}
        if isinstance(text, SearchRequest):
            if not data:
                return text
            data = {**unset_none(text.model_dump(exclude_unset=True)), **data}
        elif text is not None:
            data["text"] = text
        return validated(cls, data)

    def filter_lists(self) -> dict[str, list[Any]]:
        return as_filters(self.filters)


def unset_none(values: Mapping[str, Any]) -> dict[str, Any]:
    """The values that are set: None means "not given" in the library's spelling."""
    return {k: v for k, v in values.items() if v is not None}


def as_filters(filters: dict[str, Any] | None) -> dict[str, list[Any]]:
    """Filters as field -> list of values: a single value is a list of one (the one home of this rule)."""
    return {k: list(v) if isinstance(v, (list, tuple, set)) else [v] for k, v in (filters or {}).items()}


# ---- a duplicate check ---------------------------------------------------------------------------------------
class DuplicateRequest(Strict):
    """Is this new ticket a duplicate of an indexed one?"""

    title: str = Field(max_length=MAX_TITLE, pattern=NOT_BLANK)  # the pattern needs a visible character
    body: str = Field(default="", max_length=MAX_BODY)  # a ticket's body, as an indexed ticket's (`TicketIn`)
    created: IsoDate | None = Field(default=None, description="Only tickets created before this are candidates.")
    fields: dict[FieldName, FieldValue] = Field(default_factory=dict, max_length=MAX_FIELDS)
    k: int = Field(default=5, ge=1, le=MAX_K)
    snippets: StrictBool = Field(default=False, description="Each candidate carries a passage of its body and the "
                                 "words that match the ticket (`snippet`, `highlight`).")

    @classmethod
    def of(cls, ticket: Mapping[str, Any] | DuplicateRequest, **options: Any) -> DuplicateRequest:
        """A duplicate check from a ticket's mapping (or a built check) and options (None means unset)."""
        given = ticket.model_dump(exclude_unset=True) if isinstance(ticket, DuplicateRequest) else ticket
        return validated(cls, {**unset_none(given), **unset_none(options)})

    def costly(self) -> bool:
        """As the search that finds its candidates (`SearchRequest.costly`)."""
        return self.search().costly()

    def search(self) -> SearchRequest:
        """The search that finds its candidates: the body as the text with the title apart (the title alone
        when there is no body: none with a visible character, as a ticket with only control characters in its
        body, which ingest takes), before its creation time."""
        body = self.body.strip() if re.search(VISIBLE, self.body) else ""
        return validated(SearchRequest, {
            "text": body or self.title.strip(), "title": self.title if body else None, "fields": self.fields,
            "created_before": self.created, "k": self.k, "snippets": self.snippets})


# ---- an incoming ticket --------------------------------------------------------------------------------------
class TicketIn(Strict):
    """An incoming ticket, at every door: the API's body, a webhook's ticket and each row of a file
    (`records.normalize_row` reads a row into this model first), with the same limits and messages."""

    id: TicketId
    title: str = Field(max_length=MAX_TITLE, pattern=NOT_BLANK)  # the pattern needs a visible character
    body: str = Field(default="", max_length=MAX_BODY)
    created: IsoDate
    updated: IsoDate | None = Field(
        default=None, description="The ticket's version (a tracker's `updated` time): a write whose `updated` is "
        "not newer than the stored one changes nothing and is listed as stale; without it, a write always applies.")
    duplicate_of: TicketId | None = None
    fields: dict[FieldName, KeptValue] = Field(
        default_factory=dict, max_length=MAX_FIELDS,
        description="The schema's fields (by name or source column) and the columns it keeps verbatim.")


# ---- the one rule for a query's fields and filters ----------------------------------------------------------
def checked_fields(schema: Schema, values: dict[str, Any], where: str, is_filter: bool = False) -> dict[str, Any]:
    """Field names must be in the schema and values of the field's type (unseen values are fine: they use the
    out-of-vocabulary bucket); null fields are dropped. Raises RequestError naming `where.NAME`."""
    allowed = schema.field_names
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise RequestError(unknown_field(unknown[0], allowed), field=f"{where}.{unknown[0]}", type_="unknown_field")
    for name, value in values.items():
        problem = value_problem(schema.field(name), value, is_filter)
        if problem:
            raise RequestError(problem, field=f"{where}.{name}")
    return {k: v for k, v in values.items() if v is not None}


def unknown_field(name: str, allowed: Iterable[str]) -> str:
    return f"unknown field {name!r}; allowed: {', '.join(allowed) or '(none)'}"


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
        if isinstance(v, str) and len(v) > MAX_TITLE:
            return f"a value is longer than {MAX_TITLE} characters"
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
