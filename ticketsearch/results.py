"""What the library and the service answer: one `Hit` type with one JSON shape for the library, the CLI's `--json`
and the API; collections and training jobs as the service and its client see them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ticketsearch.requests import IsoDate


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
    snippet: str | None = Field(
        default=None, description="A short passage of the ticket's body around its first word that matches the "
        "query (with snippets).")
    highlight: list[str] | None = Field(
        default=None, description="The words of the title and snippet that match a query word (the same stem; "
        "stopwords left out), lower case, for highlighting (with snippets).")
    attended: list[AttendedWord] | None = Field(
        default=None, description="Explanation: the words of this ticket the reranker attended to (explain).")
    near_copy: bool = Field(
        default=False, description="Its words are nearly the query's own (at least 80% of their distinct words "
        "shared, dense cosine at least .9): near copies come first and are duplicates, whatever the model says "
        "and whatever the dates.")


class SearchResult(BaseModel):
    query: str = Field(description="The query text as searched (title and body joined as the index does).")
    method: str = Field(description="The first stage that produced the candidates.")
    reranked: bool
    reranker: str | None = Field(
        default=None, description="The model that reordered the hits (`NAME@CHECKSUM`: the collection's own trained "
        "model, or the general one); null when the hits are in first-stage order.")
    threshold: float | None = Field(
        default=None, description="The duplicate-probability threshold of the model that reranked, for the "
        "service's target precision: a hit at or above it is a likely duplicate (null: no model, or none stored).")
    hits: list[Hit]
    notes: list[str] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict)


class DuplicateResult(BaseModel):
    """The answer to "is this new ticket a duplicate?". It needs a reranker (the index's own or the general one)
    with a stored threshold; without one the verdict and probability are null, `reason` says why, and the
    candidates are in first-stage order."""

    is_duplicate: bool | None = Field(description="null when there is no model to decide with (see `reason`).")
    probability: float | None = Field(description="The best candidate's calibrated duplicate probability.")
    threshold: float | None = Field(
        description="Chosen on validation data for the target precision; stored with the model (null: no model).")
    target_precision: float
    reason: str | None = Field(default=None, description="Why there is no verdict (null when there is one).")
    reranker: str | None = Field(default=None, description="The model that decided (`NAME@CHECKSUM`).")
    near_copy: bool = Field(default=False, description="The best candidate is a near copy of the ticket (see "
                            "`Hit.near_copy`): a duplicate by that rule, whatever its probability.")
    candidates: list[Hit]


class SchemaField(BaseModel):
    name: str
    kind: Literal["categorical", "multi", "numeric", "date"]
    values: list[str] = Field(default_factory=list, description="Known values, most frequent first (categorical and "
                              "multi fields; at most 100).")


class CollectionSchema(BaseModel):
    """A collection's field schema, with the values its tickets hold (what a form offers)."""

    name: str
    text_fields: list[str]
    fields: list[SchemaField]


RerankerKind = Literal["trained", "general", "none"]


class RerankerStatus(BaseModel):
    status: RerankerKind = Field(
        description="'trained': the collection's own model reranks; 'general': the shipped general model does; "
        "'none': results are in first-stage order.")
    model: str | None = Field(default=None, description="`NAME@CHECKSUM` of the model that reranks.")
    reason: str | None = Field(default=None, description="Why (the last training's decision), when known.")


class CollectionInfo(BaseModel):
    name: str
    tickets: int = Field(description="Tickets stored (as of the last checkpoint when the collection is closed).")
    schema_name: str = Field(description="The schema's name (`support`, `jira`, `bugzilla` or an inline one's).")
    model: str = Field(description="The encoder the collection is indexed with.")
    reranker: RerankerStatus
    open: bool = Field(description="Loaded in memory now (collections open on first use and close when idle).")
    training: bool = Field(default=False, description="A training job is running.")
    shards: int | None = Field(default=None, description="Shards the collection is split into (null: one index).")
    duplicate_precision: float = Field(default=0.9, description="The target precision of its duplicate verdicts "
                                       "(its own, or the service's TICKETSEARCH_DUPLICATE_PRECISION).")


InstallRule = Literal["auto", "always"]
INSTALL_RULES: tuple[InstallRule, ...] = get_args(InstallRule)  # `decide_install`'s: validation decides, or install
MAX_VALIDATION_FOLDS = 4  # `pipeline.folds`: each fold trains the model again, so the limit bounds a training's cost
# every door's default (`train`, `experiment`, a training job): with two folds validation ordered the rerankers
# closer to the test period's order on hive and hadoop than alone, for 65% more training time on hive
# (docs/RESULTS.md)
DEFAULT_VALIDATION_FOLDS = 2
VALIDATION_FOLDS_HELP = ("Earlier periods, each as long as the validation period, whose duplicates join validation "
                         f"in the install decision (the model trained again on what precedes each; 0 to "
                         f"{MAX_VALIDATION_FOLDS}). Periods a tuned encoder learned from are skipped.")


# What `ticketsearch train` and a training job may train (`pipeline.variants.train_variants` checks the rest:
# LightGBM for rerank-lambdamart): "auto" trains rerank-linear and rerank-cross+pair and installs the linear one
# unless the fusion model validates clearly better (`pipeline.folds.OCCAM_MARGIN`).
TrainVariant = Literal["auto", "rerank-linear", "rerank-cross+pair", "rerank-cross+pair+code", "rerank-lambdamart",
                       "rerank-cross", "rerank-concat"]
TRAIN_VARIANTS: tuple[str, ...] = get_args(TrainVariant)
TRAIN_VARIANT_HELP = ("auto (rerank-linear and rerank-cross+pair: the linear model unless the fusion model validates "
                      "better by more than .02 MRR), rerank-linear (a logistic regression on the pair inputs: no "
                      "token states, no candidate vectors), rerank-cross+pair, rerank-cross+pair+code (with the "
                      "agreement of the two tickets' stack frames, exception classes and error codes), "
                      "rerank-lambdamart (LightGBM on top of cross+pair: pip install 'ticketsearch[ltr]'), "
                      "rerank-cross or rerank-concat.")


MAX_SEED = 2**31 - 1  # a training seed, at every door


def period_problem(train_before: datetime | None, valid_before: datetime | None) -> str | None:
    """Why a train/validation split is refused (the one rule for the library, the CLI and a training job)."""
    if train_before is not None and valid_before is not None and valid_before <= train_before:
        return "valid_before must be after train_before"
    return None


def calibration_problem(since: datetime | None, until: datetime | None) -> str | None:
    """Why a dedupe run's calibration period is refused (the library, the CLI and a dedupe job)."""
    if (since is None) != (until is None):
        return "a calibration period needs its start and its end: calibrate_since and calibrate_until together"
    if since is not None and until is not None and until <= since:
        return "calibrate_until must be after calibrate_since"
    return None


P = TypeVar("P", bound=BaseModel)


def refused_if(problem: str | None, params: P) -> P:
    """A model validator's answer: `params`, or the problem as pydantic's error (the API's 422)."""
    if problem:
        raise ValueError(problem)
    return params


class TrainParams(BaseModel):
    """What a training job trains (the defaults of `ticketsearch train`); dates as every request reads them
    (ISO-8601 strings, naive UTC)."""

    model_config = ConfigDict(extra="forbid")

    train_before: IsoDate | None = Field(default=None, description="End of the train period (default: 80% of "
                                         "tickets by creation time).")
    valid_before: IsoDate | None = Field(default=None, description="End of the validation period (default 90%); "
                                         "after train_before.")
    variant: TrainVariant = Field(default="auto", description=TRAIN_VARIANT_HELP)
    epochs: int = Field(default=20, ge=1, le=200)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    install: InstallRule = Field(default="auto", description="auto: install the trained model only "
                                               "where it beats the first stage (and the general model) on "
                                               "validation; always: install it whatever validation says.")
    validation_folds: int = Field(default=DEFAULT_VALIDATION_FOLDS, ge=0, le=MAX_VALIDATION_FOLDS,
                                  description=VALIDATION_FOLDS_HELP)

    @model_validator(mode="after")
    def _period(self) -> TrainParams:
        return refused_if(period_problem(self.train_before, self.valid_before), self)


class DedupeParams(BaseModel):
    """What a dedupe job compares (the options of `ticketsearch dedupe`)."""

    model_config = ConfigDict(extra="forbid")

    since: IsoDate | None = Field(default=None, description="Only tickets created since then (default: all).")
    precision: float = Field(default=0.9, ge=0.5, le=0.99, description="Target precision of the kept links.")
    calibrate_since: IsoDate | None = Field(default=None, description="A labelled period to choose the threshold "
                                            "on, with every ticket a query (default: the threshold training stored).")
    calibrate_until: IsoDate | None = Field(default=None, description="Its end (with calibrate_since).")

    @model_validator(mode="after")
    def _calibration(self) -> DedupeParams:
        return refused_if(calibration_problem(self.calibrate_since, self.calibrate_until), self)


class JobInfo(BaseModel):
    id: str
    collection: str
    kind: Literal["train", "dedupe"] = "train"
    state: Literal["queued", "running", "done", "failed"]
    created: str
    started: str | None = None
    finished: str | None = None
    seconds: float | None = Field(default=None, description="Running time so far, or in all.")
    progress: list[str] = Field(default_factory=list, description="The job's log so far (its last lines).")
    params: TrainParams | DedupeParams
    validation: dict[str, Any] | None = Field(
        default=None, description="Validation figures (MRR, RR@10, ...): the first stage and the trained model.")
    result: dict[str, Any] | None = Field(
        default=None, description="`installed` (bool), `model` (what search reranks with now: `NAME@CHECKSUM`, or "
        "null for first-stage order), `decision` (why), and the held-out test figures.")
    error: str | None = None


class FeedbackDecision(BaseModel):
    """An agent's decision on a pair of tickets (the latest decision on a pair wins)."""

    ticket_id: str
    candidate_id: str
    label: Literal["duplicate", "not_duplicate"]
    by: str | None = None
    at: str = Field(description="When it was recorded (ISO-8601, UTC).")

    @classmethod
    def of(cls, d: Any) -> FeedbackDecision:
        return cls(ticket_id=d.ticket_id, candidate_id=d.candidate_id, label=d.label, by=d.by,
                   at=d.at.isoformat(timespec="seconds") + "Z")


class TicketOut(BaseModel):
    """A stored ticket as every door gives it (the library's `get`, the API, the client)."""

    id: str
    title: str
    body: str
    created: str = Field(description="ISO-8601 creation time, UTC (`Z`).")
    duplicate_of: str | None
    fields: dict[str, Any]
