"""Error types shared by every layer. A TicketsearchError carries a one-line, user-facing message."""

from __future__ import annotations


class TicketsearchError(Exception):
    """Base class for errors that are reported to the user as one line."""


class SchemaError(TicketsearchError):
    """A schema file is missing, malformed or refers to a forbidden field."""


class RowError(TicketsearchError):
    """One input row is malformed. `line` is 1-based (the data row number for CSV/Parquet)."""

    def __init__(self, line: int, reason: str, ticket_id: str | None = None, where: str | None = None,
                 field: str | None = None) -> None:
        self.line = line
        self.reason = reason  # "FIELD: what is wrong" when `field` is given
        self.ticket_id = ticket_id
        self.where = where or f"line {line}"  # a tracker export's records say where they are otherwise
        self.field = field  # the ticket's field it concerns ("title", "fields.product"), as the API names it
        self.detail = reason.removeprefix(f"{field}: ") if field else reason
        place = self.where + (f" (id {ticket_id!r})" if ticket_id else "")
        super().__init__(f"{place}: {reason}")

    def __reduce__(self) -> tuple[type[RowError], tuple[int, str, str | None, str, str | None]]:  # across processes
        return RowError, (self.line, self.reason, self.ticket_id, self.where, self.field)


class IngestError(TicketsearchError):
    """An ingest was refused; nothing was written."""


class NotFoundError(TicketsearchError):
    """A ticket id or index directory does not exist."""


class QueryError(TicketsearchError):
    """A search request is invalid (unknown filter field, bad value, bad date)."""


class RequestError(QueryError):
    """A request breaks a rule of `ticketsearch.requests`: `field` names where (`k`, `fields.product`; None: the
    request as a whole), `type` the kind of problem (as the HTTP API's error items say it)."""

    def __init__(self, reason: str, field: str | None = None, type_: str = "value_error") -> None:
        self.reason = reason
        self.field = field
        self.type = type_
        super().__init__(f"{field}: {reason}" if field else reason)

    def __reduce__(self) -> tuple[type[RequestError], tuple[str, str | None, str]]:  # across processes (Ray)
        return RequestError, (self.reason, self.field, self.type)


class StoreError(TicketsearchError):
    """The ticket store cannot be opened or written (not a data problem)."""


class DiskFullError(StoreError):
    """A write found no room on the disk that holds the store: nothing of it was written."""


class StoreLockedError(StoreError):
    """Another process holds the ticket store open for writing (a running service, or an ingest)."""


class UnavailableError(TicketsearchError):
    """What was asked needs a part this index does not have yet (a trained reranker, a stored threshold)."""


class ReadOnlyError(TicketsearchError):
    """A write to an index opened read-only."""


class ConflictError(TicketsearchError):
    """What was asked conflicts with the current state (a collection that exists, a job already running)."""


class JobNotFoundError(NotFoundError):
    """A service job id that does not exist (in that collection)."""


class CollectionNotFoundError(NotFoundError):
    """A collection that does not exist, or that the caller may not see (the same answer for both)."""


def one_line(exc: BaseException) -> str:
    """How a failure is told in one line: a TicketsearchError by its message, anything else with its class."""
    return str(exc) if isinstance(exc, TicketsearchError) else f"{type(exc).__name__}: {exc}"


def as_unavailable(what: str, failure: BaseException) -> UnavailableError:
    """A part that failed to start, as the layer above reports it: unavailable, the failure kept as the cause
    (`__cause__`: a StoreLockedError behind it stays one)."""
    err = UnavailableError(f"{what}: {one_line(failure)}")
    err.__cause__ = failure
    return err


def reraise(failure: BaseException) -> TicketsearchError:
    """A start-up failure as the library raises it: its own type when it is one of ours, else a
    TicketsearchError naming the class, chained to the original."""
    if isinstance(failure, TicketsearchError):
        return failure
    err = TicketsearchError(one_line(failure))
    err.__cause__ = failure
    return err
