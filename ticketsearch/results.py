"""What a search answers: one `Hit` type with one JSON shape, for the library, the CLI's `--json` and the API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class AttendedWord(BaseModel):
    word: str
    weight: float


class MatchedWord(BaseModel):
    word: str = Field(description="A content word of the query.")
    match: str = Field(description="The word of this ticket that it matches.")
    kind: str = Field(description="'exact' (the same word or stem) or 'near' (close in the encoder's token states).")
    similarity: float = Field(description="Cosine of the two words' token states.")


class Hit(BaseModel):
    id: str
    title: str
    created: str = Field(description="ISO-8601 creation time.")
    fields: dict[str, Any] = Field(description="The ticket's structured fields (schema names and JSON values).")
    score: float = Field(description="The final ranking score (the rerank score when reranked).")
    retrieval_score: float = Field(description="First-stage score (fused for hybrid).")
    rerank_score: float | None = Field(default=None, description="The reranker's logit; null when not reranked.")
    probability: float | None = Field(
        default=None, description="Calibrated probability that this is a duplicate of the query (reranked only).")
    scores: dict[str, float] = Field(default_factory=dict, description="Per first-stage method scores.")
    matched: list[MatchedWord] | None = Field(
        default=None, description="Explanation: the query's content words this ticket holds, exactly or nearly "
        "(stopwords, punctuation and bare numbers left out); with explain, reranked hits only.")
    attended: list[AttendedWord] | None = Field(
        default=None, description="Explanation: the words of this ticket the reranker attended to (explain).")


class SearchResult(BaseModel):
    query: str = Field(description="The query text as searched (title and body joined as the index does).")
    method: str = Field(description="The first stage that produced the candidates.")
    reranked: bool
    hits: list[Hit]
    notes: list[str] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict)


class DuplicateResult(BaseModel):
    """The answer to "is this new ticket a duplicate?" (needs a reranker: the index's own or the general one)."""

    is_duplicate: bool
    probability: float | None = Field(description="The best candidate's calibrated duplicate probability.")
    threshold: float = Field(description="Chosen on validation data for the target precision; stored with the model.")
    target_precision: float
    candidates: list[Hit]
