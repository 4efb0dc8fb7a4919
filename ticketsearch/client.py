"""A client of a running `ticketsearch serve`: the same reads as `TicketIndex`, over the HTTP API.

```python
from ticketsearch.client import Client
with Client("http://127.0.0.1:8000", key="...") as c:
    c.search("customers charged twice", k=5).hits[0].id
```
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from ticketsearch.errors import NotFoundError, QueryError, TicketsearchError, UnavailableError
from ticketsearch.results import DuplicateResult, SearchResult


class Client:
    def __init__(self, url: str, key: str | None = None, timeout: float = 60.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise QueryError(f"--url must start with http:// or https://, got {url!r}")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise TicketsearchError(f"{self.url}: cannot reach the service ({type(exc).__name__}: {exc})") from None
        if r.status_code < 400:
            return r.json()
        try:
            items = r.json()["detail"]
            reason = "; ".join(f"{i['field']}: {i['reason']}" for i in items)
        except (ValueError, KeyError, TypeError):
            reason = r.text[:200]
        error = {404: NotFoundError, 422: QueryError, 503: UnavailableError}.get(r.status_code, TicketsearchError)
        raise error(f"{self.url} answered {r.status_code}: {reason}")

    def search(
        self, text: str | None = None, *, title: str | None = None, k: int = 10,
        filters: Mapping[str, Any] | None = None, fields: Mapping[str, Any] | None = None,
        before: str | datetime | None = None, after: str | datetime | None = None, method: str | None = None,
        rerank: bool = True, explain: bool = False, like: str | None = None,
    ) -> SearchResult:
        if like is not None:
            if text or title:
                raise QueryError("give either a query text or --like ID, not both")
            return self.similar(like, k=k)
        body: dict[str, Any] = {"text": text or "", "k": k, "rerank": rerank, "explain": explain}
        for name, value in (("title", title), ("method", method), ("created_before", before), ("created_after", after)):
            if value is not None:
                body[name] = value.isoformat() if isinstance(value, datetime) else value
        if filters:
            body["filters"] = {n: list(v) if isinstance(v, (list, tuple)) else v for n, v in filters.items()}
        if fields:
            body["fields"] = dict(fields)
        return SearchResult.model_validate(self._call("POST", "/v1/search", json=body))

    def similar(self, ticket_id: str, k: int = 10) -> SearchResult:
        path = f"/v1/tickets/{quote(ticket_id, safe='')}/similar"
        return SearchResult.model_validate(self._call("GET", path, params={"k": k}))

    def duplicates(self, ticket: Mapping[str, Any], k: int = 5) -> DuplicateResult:
        body = {n: v for n, v in ticket.items() if v not in (None, {}, "") or n == "title"}
        body["k"] = k
        return DuplicateResult.model_validate(self._call("POST", "/v1/duplicates", json=body))

    def get(self, ticket_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/tickets/{quote(ticket_id, safe='')}"))
