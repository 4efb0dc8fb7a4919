"""The library API: one index directory as one object.

```python
from ticketsearch import TicketIndex
idx = TicketIndex.open("demo/index")            # read-only unless writable=True
res = idx.search("customers charged twice", k=5, filters={"product": ["Billing Portal"]})
res.hits[0].id, res.hits[0].title, res.hits[0].score, res.hits[0].probability
idx.get("SUP-1900"); idx.similar("SUP-1900", k=5); idx.duplicates({"title": "...", "body": "..."})
idx.upsert([...]); idx.delete("SUP-1900")       # writable=True: searchable at once, checkpointed as it goes
```

The CLI and the HTTP service are thin layers over this object.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ticketsearch.errors import ConflictError, ReadOnlyError, RequestError, UnavailableError, reraise
from ticketsearch.index_data import feedback
from ticketsearch.index_data.records import sent_ticket
from ticketsearch.requests import DuplicateRequest, SearchRequest
from ticketsearch.results import DuplicateResult, SearchResult, TicketOut
from ticketsearch.settings import Settings, get_settings


class TicketReader(Protocol):
    """The reads every transport answers alike (`tests/service/test_congruence.py` holds them to the same
    answers): `TicketIndex` in process, over one index or a sharded collection (`TicketIndex.of_engine`), and
    `ticketsearch.client.Client` over HTTP, to a plain service or one on Ray Serve."""

    def search(self, text: str | SearchRequest | None = None, **options: Any) -> SearchResult: ...

    def similar(self, ticket_id: str, k: int = 10) -> SearchResult: ...

    def duplicates(self, ticket: Mapping[str, Any] | DuplicateRequest, k: int | None = None) -> DuplicateResult: ...

    def close(self) -> None: ...


class TicketIndex:
    """An index directory opened for searching, or (writable) for live updates as well."""

    def __init__(self, path: Path, settings: Settings, pipeline: Any = None, engine: Any = None) -> None:
        self.path = Path(path)
        self.settings = settings
        self._pipeline = pipeline  # SearchPipeline (read-only)
        self._engine = engine  # Engine (writable): owns its pipeline, the write path and checkpoints

    @classmethod
    def open(cls, path: Path | str, writable: bool = False, settings: Settings | None = None) -> TicketIndex:
        from ticketsearch.retrieval.threads import apply_threads  # deferred: FAISS (the client imports this module)

        settings = settings or get_settings()
        apply_threads(settings)  # the library's door: the process's FAISS and torch thread counts
        if writable:
            from ticketsearch.pipeline.engine import Engine  # deferred: torch, FAISS

            engine = Engine(Path(path), settings)
            engine.start()
            if engine.failure is not None:
                engine.close()
                raise reraise(engine.failure)  # its own type: a StoreLockedError stays one
            return cls(Path(path), settings, engine=engine)
        from ticketsearch.pipeline.search import SearchPipeline  # deferred: torch, FAISS

        return cls(Path(path), settings, pipeline=SearchPipeline(Path(path), settings))

    @classmethod
    def of_engine(cls, engine: Any) -> TicketIndex:
        """The index a running engine serves (the HTTP service's)."""
        return cls(engine.index_dir, engine.settings, engine=engine)

    @property
    def writable(self) -> bool:
        return self._engine is not None

    @property
    def pipeline(self) -> Any:
        """The search pipeline (stages, reranker, store) behind this index."""
        return self._engine.searcher if self._engine is not None else self._pipeline

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        elif self._pipeline is not None:
            self._pipeline.close()

    def __enter__(self) -> TicketIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reads --------------------------------------------------------------------------------------
    def search(self, text: str | SearchRequest | None = None, **options: Any) -> SearchResult:
        """Tickets like the query text (or like the indexed ticket `like=ID`), reranked when a model is trained.
        `options` are the fields of `SearchRequest` (title, k, fields, filters, before, after, method, rerank,
        explain, snippets), checked by its rules; or pass a built `SearchRequest`."""
        req = SearchRequest.of(text, **options)
        if self._engine is not None:
            return self._engine.run(req)
        return self._pipeline.run(req)

    def similar(self, ticket_id: str, k: int = 10, **kwargs: Any) -> SearchResult:
        """Tickets similar to an indexed ticket (never the ticket itself)."""
        return self.search(like=ticket_id, k=k, **kwargs)

    def duplicate_threshold(self) -> float:
        """The stored duplicate-probability threshold for `settings.duplicate_precision`. Raises
        UnavailableError when there is no reranker (none trained and the general model off or refused by
        training's decision) or no threshold for that precision."""
        reranker = self.pipeline.reranker
        if reranker is None:
            raise UnavailableError("no trained reranker yet (none trained, and the general model is off or lost to "
                                   "the first stage on validation): train one on the duplicate links "
                                   "('ticketsearch train', or POST /v1/collections/NAME/train)")
        try:
            threshold = reranker.duplicate_threshold(self.settings.duplicate_precision)
        except KeyError as exc:
            raise UnavailableError(str(exc.args[0])) from None
        if threshold is None:
            raise UnavailableError("the reranker's validation data reached no threshold for precision "
                                   f"{self.settings.duplicate_precision}")
        return threshold

    def duplicates(self, ticket: Mapping[str, Any] | DuplicateRequest, k: int | None = None,
                   snippets: bool | None = None) -> DuplicateResult:
        """Is this new ticket (`title`, optional `body`, `created`, `fields`) a duplicate of an indexed one?

        Without a model that can decide (none trained yet, or no threshold for the target precision) the
        answer still lists the candidates, in first-stage order, with `is_duplicate` and `probability` null and
        `reason` saying why: nothing is unavailable, there is just no verdict to give yet."""
        req = DuplicateRequest.of(ticket, k=k, snippets=snippets)
        try:
            threshold: float | None = self.duplicate_threshold()
            reason = None
        except UnavailableError as exc:
            threshold, reason = None, str(exc)
        res = self.search(req.search().model_copy(update={"rerank": threshold is not None}))
        copy = bool(res.hits) and res.hits[0].near_copy  # near copies come first: a duplicate by that rule
        if threshold is None:
            for hit in res.hits:
                hit.probability = None
            return DuplicateResult(is_duplicate=True if copy else None, probability=None, threshold=None,
                                   target_precision=self.settings.duplicate_precision,
                                   reason=None if copy else reason, near_copy=copy, candidates=res.hits)
        top = res.hits[0].probability if res.hits else None
        return DuplicateResult(is_duplicate=copy or (top is not None and top >= threshold), probability=top,
                               threshold=threshold, target_precision=self.settings.duplicate_precision,
                               reranker=res.reranker, near_copy=copy, candidates=res.hits)

    def get(self, ticket_id: str) -> TicketOut:
        """The stored ticket (NotFoundError if there is none): the same type the client's `get` returns."""
        if self._engine is not None:
            return TicketOut(**self._engine.get(ticket_id))
        return TicketOut(**self._pipeline.store.get(ticket_id).as_dict())

    def count(self) -> int:
        if self._engine is not None:
            return self._engine.count()
        return self._pipeline.store.count()

    # ---- writes -------------------------------------------------------------------------------------
    def _writer(self) -> Any:
        if self._engine is None:
            raise ReadOnlyError(f"{self.path} is open read-only: TicketIndex.open(path, writable=True) to write")
        return self._engine

    def upsert(self, tickets: Iterable[Mapping[str, Any]]) -> Any:
        """Insert or replace tickets by id; searchable when this returns. Each ticket by the rule of a ticket sent
        as JSON (`records.sent_ticket`, the API's and the client's rule): a bad one raises RequestError naming
        `tickets.N.FIELD`, a ticket marked a duplicate of itself ConflictError (the API's 422 and 409), and
        nothing is written."""

        engine = self._writer()
        schema = engine.store.schema
        rows = []
        for i, raw in enumerate(tickets):
            try:
                rows.append(sent_ticket(schema, raw, f"tickets.{i}", i + 1))
            except RequestError as exc:
                if exc.type == "conflict":
                    raise ConflictError(str(exc)) from None
                raise
        return engine.upsert(rows)

    def feedback(self, ticket_id: str, candidate_id: str, label: str, by: str | None = None) -> Any:
        """Record an agent's decision on a pair: `label` "duplicate" or "not_duplicate" (training uses them)."""
        return self._writer().record_feedback(ticket_id, candidate_id, label, by)

    def feedback_for(self, ticket_id: str) -> list[Any]:
        """The decisions recorded on pairs holding this ticket, newest first."""
        if self._engine is not None:
            return list(self._engine.feedback_for(ticket_id))

        return feedback.for_ticket(self._pipeline.store, ticket_id)

    def delete(self, ticket_id: str) -> int:
        """Delete a ticket; returns the change sequence number. Raises NotFoundError for an unknown id."""
        return int(self._writer().delete(ticket_id))


if TYPE_CHECKING:  # each transport implements the protocol (mypy checks this function's return)
    from ticketsearch.client import Client

    def _transports(index: TicketIndex, client: Client) -> list[TicketReader]:
        return [index, client]
