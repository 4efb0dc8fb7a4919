"""Query kinds: how an agent's search is cut from a labelled duplicate, for evaluation and for training.

- `full`: the duplicate's whole ticket (title, body and fields, placed in time), as `search --like` sends it;
- `title`: its title alone, as free text;
- `words:N`: the first N words of its text (title, then body), as free text.

A short query is what an agent types: free text with no fields and no date, so it goes through search as
`search(text)` does (`SearchPipeline.query`): one vector for the dense and the title lists, BM25 over the
text itself, no field values for the reranker, no time gap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ticketsearch.errors import QueryError

MAX_WORDS = 512
_KIND = re.compile(r"^(full|title|words:(\d+))$")


@dataclass(frozen=True)
class QueryKind:
    name: str  # "full", "title" or "words"
    words: int = 0  # N for "words"

    @classmethod
    def parse(cls, value: str, option: str = "--query") -> QueryKind:
        m = _KIND.match(value.strip())
        if not m:
            raise QueryError(f"{option} must be full, title or words:N; got {value!r}")
        if m.group(2) is not None:
            n = int(m.group(2))
            if not 1 <= n <= MAX_WORDS:
                raise QueryError(f"{option} words:N needs 1 <= N <= {MAX_WORDS}; got {n}")
            return cls("words", n)
        return cls(m.group(1))

    @property
    def label(self) -> str:
        return f"words:{self.words}" if self.name == "words" else self.name

    @property
    def short(self) -> bool:
        """A free-text query (no fields, no date), not the whole ticket."""
        return self.name != "full"

    def text(self, title: str, body: str) -> str:
        """The free text of a short query cut from a ticket (not defined for `full`, which is the ticket)."""
        if self.name == "title":
            return (title or "").strip()
        if self.name == "words":
            return " ".join(f"{title or ''} {body or ''}".split()[: self.words])
        raise ValueError("a full query is the ticket itself, not a free text")


FULL = QueryKind("full")
SHORT_QUERY_WORDS = 32  # a free text of at most this many words (no title, no fields) is a short query


def is_short_query(title: str, text: str, has_fields: bool) -> bool:
    """Whether search asks a query as a short one: free text of a few words, no title, no fields (a pasted
    ticket, a titled one or one with fields is a whole ticket)."""
    return not title.strip() and not has_fields and len(text.split()) <= SHORT_QUERY_WORDS


def parse_kinds(values: list[str] | None, option: str = "--query") -> list[QueryKind]:
    """Kinds from repeated or comma-separated options, in order, without repeats (default: full)."""
    kinds: list[QueryKind] = []
    for v in values or ["full"]:
        for part in v.split(","):
            k = QueryKind.parse(part, option)
            if k not in kinds:
                kinds.append(k)
    return kinds
