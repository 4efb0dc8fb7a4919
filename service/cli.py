"""The `ticketsearch` command line. Every failure prints one line naming the problem and exits with 2."""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional, TypeVar

import typer

from ticketsearch.api import TicketIndex, TicketReader
from ticketsearch.atomic import atomic_write_json
from ticketsearch.errors import StoreLockedError, TicketsearchError
from ticketsearch.index_data.demo import write_demo
from ticketsearch.index_data.trackers import FORMATS
from ticketsearch.index_dir import IndexDir
from ticketsearch.logs import configure_logging
from ticketsearch.pipeline.dedupe import dedupe as run_dedupe
from ticketsearch.pipeline.parts import index_settings, open_store
from ticketsearch.pipeline.sharding import split_index
from ticketsearch.requests import MAX_BODY, MAX_K, METHODS, DuplicateRequest, SearchRequest, as_datetime, named_date
from ticketsearch.rerank.explain import plot_attention
from ticketsearch.results import (
    DEFAULT_VALIDATION_FOLDS,
    INSTALL_RULES,
    MAX_SEED,
    MAX_VALIDATION_FOLDS,
    TRAIN_VARIANT_HELP,
    VALIDATION_FOLDS_HELP,
    calibration_problem,
    period_problem,
)
from ticketsearch.retrieval.evaluation import markdown_table
from ticketsearch.retrieval.manifest import Manifest
from ticketsearch.retrieval.query_kinds import parse_kinds
from ticketsearch.service.settings import get_service_settings
from ticketsearch.settings import get_settings

app = typer.Typer(
    name="ticketsearch",
    help="Retrieve-then-rerank search over support and bug tickets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


F = TypeVar("F", bound=Callable[..., Any])


@app.callback()
def configure() -> None:
    """Retrieve-then-rerank search over support and bug tickets."""
    from ticketsearch.retrieval.threads import apply_threads  # deferred: FAISS, not needed for --help

    apply_threads(get_settings())  # the process's thread counts, set once by the entry point


def one_line_errors(fn: F) -> F:
    """Turn a TicketsearchError into one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TicketsearchError as exc:
            fail(str(exc))

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps the signature mypy cannot see


QUERY_HELP = ("How each test duplicate is asked: full (its whole ticket), title (its title alone, as free text) or "
              "words:N (its first N words); repeat or comma-separate for one table each (the first is the main one).")
TRAIN_QUERIES_HELP = ("What the reranker learns from: full, title, words:N, or several (comma-separated): each "
                      "train duplicate as each of these queries.")


# the options of the commands that learn from an index's links (train, tune-encoder)
LinkedIndex = Annotated[Path, typer.Option("--index", help="Index directory with duplicate links (duplicate_of).")]
TrainBefore = Annotated[Optional[str], typer.Option("--train-before", help="End of the train period.")]
ValidBefore = Annotated[Optional[str], typer.Option("--valid-before", help="End of the validation period.")]


def split_dates(train_before: str | None, valid_before: str | None) -> tuple[Any, Any]:
    """--train-before and --valid-before as datetimes (None where not given: an 80/10/10 split by time)."""

    tb, vb = as_datetime(train_before, "--train-before"), as_datetime(valid_before, "--valid-before")
    problem = period_problem(tb, vb)  # the library's and a training job's rule
    if problem:
        fail(problem)
    return tb, vb


def read_text_file(path: str, option: str, limit: int) -> str:
    """The text of the file an option names ('-': standard input), read no further than `limit` characters of
    UTF-8 can take; longer, or not UTF-8, is one line naming the problem (the request's rule then checks the
    text's length in characters, as at every door)."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(4 * limit + 1)  # standard input is not ours to close
        else:
            with open(path, "rb") as fh:
                data = fh.read(4 * limit + 1)
    except OSError as exc:
        fail(f"{option}: cannot read {path!r}: {exc.strerror or exc}")
    if len(data) > 4 * limit:
        fail(f"{option}: longer than {limit:,} characters")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{option}: not UTF-8 text (byte {exc.start + 1})")


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def parse_pairs(pairs: list[str] | None, option: str) -> dict[str, list[str]]:
    """['k=v', 'k=w', 'j=x'] -> {'k': ['v', 'w'], 'j': ['x']}; 'k=v,w' also gives two values, and '\\,' is a
    comma within a value ('product=Acme\\, Inc' is one value)."""
    out: dict[str, list[str]] = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep or not key.strip() or not value.strip():
            fail(f"{option} expects K=V, got {p!r}")
        values = (v.replace("\\,", ",").strip() for v in re.split(r"(?<!\\),", value))
        out.setdefault(key.strip(), []).extend(v for v in values if v)
    return out


def parse_fields(field: list[str] | None, kinds: dict[str, str] | None = None) -> dict[str, object]:
    """--field K=V options -> the query ticket's own fields (one value, or a list for K=a,b), typed by the
    field's kind (`kinds`) as the request's rule expects them (a number for a numeric field, a list for a multi)."""
    return {k: typed(k, v, (kinds or {}).get(k), "--field") for k, v in parse_pairs(field, "--field").items()}


def parse_filters(filter_: list[str] | None, kinds: dict[str, str] | None = None) -> dict[str, object]:
    """--filter K=V options -> filters (a list of values per field, OR-ed), typed as `parse_fields`."""
    out: dict[str, object] = {}
    for k, v in parse_pairs(filter_, "--filter").items():
        value = typed(k, v, (kinds or {}).get(k), "--filter")
        out[k] = value if isinstance(value, list) else [value]
    return out


def typed(name: str, values: list[str], kind: str | None, option: str) -> object:
    """A K=V option's text as the value a field of `kind` takes (the CLI is a text door: the one rule of
    ticketsearch.requests then checks it like any other request's value)."""
    if kind == "numeric":
        try:
            numbers: list[object] = [float(v) for v in values]
        except ValueError:
            fail(f"{option} {name}: a number expected, got {','.join(values)!r}")
        return numbers[0] if len(numbers) == 1 else numbers
    if kind == "multi":
        return list(values)
    return values[0] if len(values) == 1 else list(values)


def field_kinds(reader: Any, asked: bool) -> dict[str, str]:
    """The index's (or the service collection's) field kinds, read only when a --field or --filter needs them."""
    if not asked:
        return {}
    schema = reader.pipeline.schema if hasattr(reader, "pipeline") else reader.schema()
    return {f.name: f.kind for f in schema.fields}


IndexOpt = Annotated[Optional[Path], typer.Option("--index", help="Index directory.")]
UrlOpt = Annotated[Optional[str], typer.Option(
    "--url", help="A running service (http://HOST:PORT): query it over HTTP instead of opening --index.")]
KeyOpt = Annotated[Optional[str], typer.Option("--key", envvar="TICKETSEARCH_KEY", help="API key for --url.")]
CollectionOpt = Annotated[Optional[str], typer.Option(
    "--collection", help="With --url: the collection to query (default: the service's 'default').")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (the API's shape).")]


def open_reader(index: Path | None, url: str | None, key: str | None,
                collection: str | None = None) -> TicketReader:
    """A TicketIndex on `index`, or a Client of the service at `url` (the same reads: `api.TicketReader`)."""

    if (index is None) == (url is None):
        fail("give either --index DIR or --url http://HOST:PORT")
    if url is not None:
        from ticketsearch.client import Client  # deferred: httpx, only with --url

        return Client(url, key=key, collection=collection)
    if collection is not None:
        fail("--collection goes with --url (a service's collection); --index opens one index directory")

    assert index is not None
    try:
        return TicketIndex.open(index)
    except StoreLockedError:
        fail(f"{index} is held by a running service ('ticketsearch serve'): query it with --url http://HOST:PORT")


def matched_label(m: Any) -> str:
    """A matched word as the CLI shows it: the word, or `word~match` where the hit holds another word."""
    return m.word if m.word.lower() == m.match.lower() else f"{m.word}~{m.match}"


def print_result(res: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(res.model_dump_json(indent=2))
        return
    for note in res.notes:
        typer.echo(f"note: {note}")
    if not res.hits:
        typer.echo("no hits")
        return
    for rank, h in enumerate(res.hits, start=1):
        brief = ", ".join(f"{k_}={v}" for k_, v in h.fields.items() if v not in (None, [], "") and k_ != "submitted")
        prob = f" p={h.probability:.2f}" if h.probability is not None else ""
        copy = "  (near copy)" if h.near_copy else ""
        typer.echo(f"{rank:>3}. {h.score:.4f}{prob}  {h.id:<14} {h.title[:70]}{copy}")
        if brief:
            typer.echo(f"       {brief[:110]}")
        if h.matched:
            typer.echo("       matched: " + ", ".join(matched_label(m) for m in h.matched))
        if h.attended:
            typer.echo("       attended: " + ", ".join(a.word for a in h.attended))


@app.command("demo-data")
@one_line_errors
def demo_data(
    out: Annotated[Path, typer.Option("--out", help="Output file (.jsonl or .jsonl.gz).")],
    n: Annotated[int, typer.Option("-n", min=1, max=1_000_000, help="Number of tickets.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    end: Annotated[Optional[str], typer.Option(
        "--end", help="When the last ticket is filed (a date or ISO time, UTC; default: now). One seed with another "
        "end gives the same tickets shifted in time.")] = None,
) -> None:
    """Generate synthetic support tickets (schema `support`) with clusters of reworded duplicates, outage bursts
    of look-alikes that are not duplicates, and long-tailed gaps to a duplicate's first report."""

    try:
        count = write_demo(out, n=n, seed=seed, end=as_datetime(end, "--end"))
    except ValueError as exc:
        fail(f"--end: {exc}")
    typer.echo(f"wrote {count} tickets to {out}")


@app.command()
@one_line_errors
def ingest(
    data: Annotated[Path, typer.Option("--data", help="Tickets: .jsonl[.gz], .csv[.gz] or .parquet; or a tracker "
                                       "export (a file or a folder of pages).")],
    index: Annotated[Path, typer.Option("--index", help="Index directory (created if missing).")],
    schema: Annotated[
        Optional[str], typer.Option("--schema", help="Built-in schema name (support, jira, bugzilla, github) or a TOML "
                                    "path; default: the format's own (jira, github; support otherwise).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto (detected from the content), tickets, jira, github or "
                                     "zendesk.")] = "auto",
    mapping: Annotated[Optional[Path], typer.Option(
        "--mapping", help="Zendesk: a field mapping TOML (default: the shipped zendesk_mapping.toml).")] = None,
    on_error: Annotated[
        str, typer.Option("--on-error", help="skip: report bad rows and go on; stop: write nothing.")
    ] = "skip",
    model: Annotated[
        Optional[str], typer.Option("--model", help="'minilm' or a local sentence-transformers dir.")
    ] = None,
    index_type: Annotated[Optional[str], typer.Option("--index-type", help="auto, flat, hnsw or ivf.")] = None,
    executor: Annotated[str, typer.Option(
        "--executor", help="local: read and encode in this process; ray: read, validate and encode on Ray (one "
        "encoder per worker, GPUs where the cluster has them).")] = "local",
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", help="With --executor ray: 'auto' or an address joins a running cluster; default: a "
        "local Ray instance.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Store tickets in DuckDB (upsert by id) and (re)build the vector and BM25 indexes, in one step."""
    from ticketsearch.pipeline.ingest import ingest_and_build  # deferred: torch, FAISS, BM25

    if on_error not in ("skip", "stop"):
        fail(f"--on-error must be 'skip' or 'stop', got {on_error!r}")
    if index_type not in (None, "auto", "flat", "hnsw", "ivf"):
        fail(f"--index-type must be auto, flat, hnsw or ivf, got {index_type!r}")

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if not data.exists():
        fail(f"{data}: no such file or folder")
    if mapping is not None and fmt not in ("zendesk", "auto"):
        fail("--mapping goes with --format zendesk")
    if executor not in ("local", "ray"):
        fail(f"--executor must be 'local' or 'ray', got {executor!r}")
    if ray_address is not None and executor != "ray":
        fail("--ray-address goes with --executor ray")
    settings = get_settings()
    if index_type:
        settings = settings.model_copy(update={"index_type": index_type})
    store, _, _ = ingest_and_build(  # the installed reranker's vectors are refreshed there too
        data, index, schema, on_error=on_error, model=model, settings=settings, progress=not quiet,
        log=lambda m: typer.echo(m, err=m.startswith("skipped")), fmt=fmt, mapping=mapping, executor=executor,
        ray_address=ray_address,
    )
    store.close()


@app.command()
@one_line_errors
def search(
    index: IndexOpt = None,
    text: Annotated[Optional[str], typer.Argument(help="Query text.")] = None,
    like: Annotated[
        Optional[str], typer.Option("--like", help="Find tickets similar to this indexed ticket id.")
    ] = None,
    field: Annotated[Optional[list[str]], typer.Option("--field", help="The query ticket's own field, K=V.")] = None,
    filter_: Annotated[
        Optional[list[str]], typer.Option(
            "--filter", help="Restrict candidates, K=V (repeat or comma = OR; '\\,' is a comma within a value).")
    ] = None,
    before: Annotated[Optional[str], typer.Option("--before", help="Only tickets created before this date.")] = None,
    after: Annotated[Optional[str], typer.Option("--after", help="Only tickets created on or after this date.")] = None,
    k: Annotated[int, typer.Option("-k", help=f"Number of hits (1 to {MAX_K}).")] = 10,
    method: Annotated[
        Optional[str], typer.Option("--method", help=f"First stage: {', '.join(METHODS)} (default: hybrid).")
    ] = None,
    rerank: Annotated[
        bool, typer.Option("--rerank/--no-rerank", help="Rerank the top 100 with the trained model.")
    ] = True,
    explain: Annotated[bool, typer.Option("--explain", help="Show the words each hit's features attended to.")] = False,
    title: Annotated[Optional[str], typer.Option("--title", help="The query ticket's title, apart from TEXT.")] = None,
    snippets: Annotated[bool, typer.Option(
        "--snippets", help="Each hit with a passage of its body and the words that match the query.")] = False,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
    collection: CollectionOpt = None,
) -> None:
    """Search the index by text, or by an indexed ticket's id with --like; reranks when a model is trained."""
    if text is None and like is None:
        fail("give a query TEXT or --like ID")
    reader = open_reader(index, url, key, collection)
    try:
        kinds = field_kinds(reader, bool(field or filter_))
        req = SearchRequest.of(text, like=like, title=title, fields=parse_fields(field, kinds),
                               filters=parse_filters(filter_, kinds), before=before, after=after, k=k, method=method,
                               rerank=rerank, explain=explain, snippets=snippets)
        res = reader.search(req)
    finally:
        reader.close()
    print_result(res, as_json)


@app.command()
@one_line_errors
def similar(
    ticket_id: Annotated[str, typer.Argument(help="An indexed ticket's id.")],
    index: IndexOpt = None,
    k: Annotated[int, typer.Option("-k", help=f"Number of hits (1 to {MAX_K}).")] = 10,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
    collection: CollectionOpt = None,
) -> None:
    """Tickets similar to an indexed ticket (never the ticket itself)."""
    reader = open_reader(index, url, key, collection)
    try:
        res = reader.similar(ticket_id, k=k)
    finally:
        reader.close()
    print_result(res, as_json)


@app.command()
@one_line_errors
def duplicates(
    title: Annotated[str, typer.Option("--title", help="The new ticket's title.")],
    index: IndexOpt = None,
    body: Annotated[str, typer.Option("--body", help="The new ticket's body.")] = "",
    body_file: Annotated[Optional[str], typer.Option(
        "--body-file", help="Read the body from this UTF-8 file ('-': standard input): a ticket's body (up to "
        f"{MAX_BODY:,} characters) can be longer than one shell argument may be (128 KiB).")] = None,
    created: Annotated[Optional[str], typer.Option("--created", help="Its creation time (ISO-8601).")] = None,
    field: Annotated[Optional[list[str]], typer.Option("--field", help="Its own field, K=V.")] = None,
    k: Annotated[int, typer.Option("-k", help=f"Number of candidates (1 to {MAX_K}).")] = 5,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
    collection: CollectionOpt = None,
) -> None:
    """Is this new ticket a duplicate of an indexed one? (the index's reranker, or the general model)"""
    if body_file is not None:
        if body:
            fail("give --body or --body-file, not both")
        body = read_text_file(body_file, "--body-file", MAX_BODY)
    reader = open_reader(index, url, key, collection)
    try:
        kinds = field_kinds(reader, bool(field))
        res = reader.duplicates(DuplicateRequest.of(
            {"title": title, "body": body, "created": created, "fields": parse_fields(field, kinds)}, k=k))
    finally:
        reader.close()
    if as_json:
        typer.echo(res.model_dump_json(indent=2))
        return
    if res.near_copy:
        typer.echo(f"duplicate: a near copy of {res.candidates[0].id}")
    elif res.is_duplicate is None or res.threshold is None:
        typer.echo(f"no verdict: {res.reason} (candidates in first-stage order)")
    else:
        verdict = "likely duplicate" if res.is_duplicate else "not a duplicate"
        prob = "-" if res.probability is None else f"{res.probability:.2f}"
        typer.echo(f"{verdict}: p={prob}, threshold {res.threshold:.2f} (precision {res.target_precision:.2f})")
    for rank, h in enumerate(res.candidates, start=1):
        p = "" if h.probability is None else f" p={h.probability:.2f}"
        typer.echo(f"{rank:>3}.{p}  {h.id:<14} {h.title[:70]}" + ("  (near copy)" if h.near_copy else ""))


@app.command()
@one_line_errors
def experiment(
    data: Annotated[Path, typer.Option("--data", help="Labelled tickets (duplicate_of set on duplicates).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (index, results.json, results.md).")],
    schema: Annotated[str, typer.Option("--schema", help="Built-in schema name or TOML path.")] = "jira",
    train_before: Annotated[str, typer.Option("--train-before", help="End of the train period.")] = "2015-01-01",
    test_since: Annotated[str, typer.Option("--test-since", help="Start of the test period.")] = "2016-01-01",
    window_days: Annotated[
        int, typer.Option("--window-days", min=1, help="Candidate window for the windowed table.")
    ] = 365,
    model: Annotated[Optional[str], typer.Option("--model", help="'minilm' or a local model directory.")] = None,
    rerank: Annotated[bool, typer.Option("--rerank/--no-rerank", help="Train and evaluate the rerankers.")] = True,
    rerank_budget: Annotated[
        float, typer.Option("--rerank-budget", min=10, help="Seconds of training per reranker variant.")
    ] = 900,
    query: Annotated[Optional[list[str]], typer.Option("--query", help=QUERY_HELP)] = None,
    train_queries: Annotated[Optional[list[str]], typer.Option("--train-queries", help=TRAIN_QUERIES_HELP)] = None,
    tune: Annotated[bool, typer.Option(
        "--tune-encoder/--no-tune-encoder",
        help="Tune the bi-encoder on the train links (rows dense-tuned, hybrid-tuned); installed, and reranked, "
        "only if validation improves.")] = True,
    tune_budget: Annotated[
        float, typer.Option("--tune-budget", min=10, help="Seconds of encoder tuning and its validation checks.")
    ] = 1200,
    validation_folds: Annotated[int, typer.Option(
        "--validation-folds", min=0, max=MAX_VALIDATION_FOLDS, help=VALIDATION_FOLDS_HELP)] = DEFAULT_VALIDATION_FOLDS,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Ingest a labelled file, build the indexes, tune fusion on validation, tune the encoder, train rerankers,
    evaluate on test."""
    from ticketsearch.pipeline.experiment import ExperimentConfig, run_experiment  # deferred: torch, FAISS, BM25

    if not data.is_file():
        fail(f"{data}: no such file")
    tb, ts = named_date(train_before, "--train-before"), named_date(test_since, "--test-since")
    if ts < tb:
        fail("--test-since must not be before --train-before")
    kinds, train_kinds = parse_kinds(query), parse_kinds(train_queries, "--train-queries")
    run_experiment(
        ExperimentConfig(data=data, out=out, schema=schema, train_before=tb, test_since=ts, window_days=window_days,
                         model=model, progress=not quiet, rerank=rerank, rerank_budget_s=rerank_budget,
                         queries=kinds, train_queries=train_kinds,
                         tune_encoder=tune, tune_budget_s=tune_budget, validation_folds=validation_folds),
        get_settings(), log=typer.echo,
    )


@app.command()
@one_line_errors
def evaluate(
    index: Annotated[Path, typer.Option("--index", help="Index directory of labelled tickets.")],
    since: Annotated[str, typer.Option("--since", help="Queries created on or after this date.")],
    until: Annotated[Optional[str], typer.Option("--until", help="Queries created before this date.")] = None,
    window_days: Annotated[Optional[int], typer.Option("--window-days", min=1, help="Candidate window.")] = None,
    exclude_easy: Annotated[
        bool, typer.Option("--exclude-easy", help="Drop duplicates filed within an hour or with an identical title.")
    ] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the JSON here.")] = None,
    query: Annotated[Optional[list[str]], typer.Option("--query", help=QUERY_HELP)] = None,
) -> None:
    """Evaluate the first-stage methods of an index on its duplicates (chronological protocol)."""
    from ticketsearch.pipeline.experiment import evaluate_methods  # deferred: torch, FAISS, BM25
    from ticketsearch.retrieval.encoder import Encoder  # deferred: torch, sentence-transformers
    from ticketsearch.retrieval.eval_index import (  # deferred: torch, FAISS, BM25
        first_stage_methods,
        kind_pools,
        load_eval_inputs,
    )

    kinds = parse_kinds(query)
    manifest = Manifest.load(index)
    settings = index_settings(manifest, get_settings())
    res: dict[str, Any] = {}
    with open_store(IndexDir(index), read_only=True) as store:
        encoder = Encoder(manifest.model, settings=settings)
        inp = load_eval_inputs(index, store, encoder)
        queries = inp.ev.queries(named_date(since, "--since"), as_datetime(until, "--until"))
        for kind in kinds:
            pools, _ = kind_pools(inp, store, encoder, kind, queries, window_days=window_days,
                                  exclude_easy=exclude_easy)
            res[kind.label] = evaluate_methods(pools, first_stage_methods(manifest.fusion, settings.fusion_depth))
            typer.echo(markdown_table(res[kind.label], f"{kind.label} queries"))
    if out:

        atomic_write_json(out, {"methods": res[kinds[0].label], "queries": res, "since": since, "until": until,
                                "window_days": window_days, "exclude_easy": exclude_easy})


@app.command()
@one_line_errors
def train(
    index: LinkedIndex,
    train_before: TrainBefore = None,
    valid_before: ValidBefore = None,
    variant: Annotated[str, typer.Option("--variant", help=TRAIN_VARIANT_HELP)] = "auto",
    loss: Annotated[str, typer.Option("--loss", help="bce, listwise or both.")] = "both",
    epochs: Annotated[int, typer.Option("--epochs", min=1, max=200)] = 20,
    seed: Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED)] = 0,
    train_queries: Annotated[Optional[list[str]], typer.Option("--train-queries", help=TRAIN_QUERIES_HELP)] = None,
    install: Annotated[str, typer.Option(
        "--install", help="auto: install the model only where it beats the first stage (and the general model) "
        "on validation; always: install it whatever validation says (the comparison is still printed).")] = "auto",
    validation_folds: Annotated[int, typer.Option(
        "--validation-folds", min=0, max=MAX_VALIDATION_FOLDS, help=VALIDATION_FOLDS_HELP)] = DEFAULT_VALIDATION_FOLDS,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Train the reranker from the index's duplicate links (80/10/10 time split by default) and install it
    where it validates better than the first stage."""
    from ticketsearch.pipeline.training import train_index, train_variants  # deferred: torch
    from ticketsearch.rerank.train import TrainConfig  # deferred: torch

    train_variants(variant)  # the library's check, before anything else: every door refuses the same names
    if loss not in ("bce", "listwise", "both"):
        fail(f"--loss must be bce, listwise or both; got {loss!r}")
    if install not in INSTALL_RULES:
        fail(f"--install must be one of {', '.join(INSTALL_RULES)}; got {install!r}")
    tb, vb = split_dates(train_before, valid_before)
    kinds = parse_kinds(train_queries, "--train-queries")
    res = train_index(index, tb, vb, variant, get_settings(), TrainConfig(loss=loss, epochs=epochs, seed=seed),  # type: ignore[arg-type]  # --loss and --install are checked above against the Literals
                      progress=not quiet, log=typer.echo, train_kinds=kinds, install_rule=install,
                      validation_folds=validation_folds)
    chosen = res["decision"].get("variant") or train_variants(variant)[0]  # "auto": the variant validation chose
    m, first = res["test"][chosen], res["first_stage"]["test"]
    held_out = (f"held-out test MRR {m['MRR']:.3f}, RR@10 {m['RR@10']:.3f} against the first stage's "
                f"{first['MRR']:.3f}, {first['RR@10']:.3f} over {m['queries']} queries" if m["queries"]
                else "no held-out test queries to score")
    if "installed" in res:
        typer.echo(f"installed {res['installed']}: {held_out}")
    elif res["decision"].get("use") == "general":
        g = res["test"].get("rerank-general", {})
        figures = (f"; the general model's held-out test MRR {g['MRR']:.3f}, RR@10 {g['RR@10']:.3f}"
                   if g.get("queries") else "")
        typer.echo(f"installed no reranker of its own (search reranks with the general model): {held_out}{figures}")
    else:
        typer.echo(f"installed no reranker (search keeps first-stage order): {held_out}")


@app.command()
@one_line_errors
def dedupe(
    index: Annotated[Path, typer.Option("--index", help="Index directory with a trained reranker.")],
    out: Annotated[Path, typer.Option("--out", help="Clusters: FILE.jsonl, or FILE.csv (one row per link).")],
    since: Annotated[Optional[str], typer.Option("--since", help="Only tickets created since this date.")] = None,
    precision: Annotated[float, typer.Option("--precision", help="Target precision: 0.8, 0.85, 0.9, 0.95 or 0.99 "
                                             "(the thresholds training stored).")] = 0.9,
    calibrate_since: Annotated[Optional[str], typer.Option(
        "--calibrate-since", help="Start of a period whose links are known (the validation period): the threshold "
        "is chosen there, with every ticket a query, as in the backlog.")] = None,
    calibrate_until: Annotated[Optional[str], typer.Option("--calibrate-until", help="Its end.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Find the duplicates in a backlog: each ticket (since DATE) against the earlier ones, pairs at the threshold
    for the chosen precision, grouped into clusters (proposed master first). An interrupted run resumes."""

    since_dt = as_datetime(since, "--since")
    cal = [as_datetime(calibrate_since, "--calibrate-since"), as_datetime(calibrate_until, "--calibrate-until")]
    problem = calibration_problem(cal[0], cal[1])  # the library's and a dedupe job's rule, before the index opens
    if problem:
        fail(problem)
    with TicketIndex.open(index) as idx:
        rep = run_dedupe(idx, out, precision=precision, since=since_dt, progress=not quiet, log=typer.echo,
                         calibrate_since=cal[0], calibrate_until=cal[1])
    typer.echo(f"{rep.tickets} tickets compared ({rep.resumed} resumed) in {rep.seconds:.1f}s: {rep.pairs} pairs at "
               f"p >= {rep.threshold:.3f} (precision {rep.precision}, {rep.basis}), {rep.new_pairs} of them not linked "
               f"yet, in {rep.clusters} clusters -> {rep.out}")


@app.command("tune-encoder")
@one_line_errors
def tune_encoder(
    index: LinkedIndex,
    train_before: TrainBefore = None,
    valid_before: ValidBefore = None,
    budget_s: Annotated[
        float, typer.Option("--budget-s", min=10, help="Seconds of training and validation checks.")
    ] = 1200,
    epochs: Annotated[int, typer.Option("--epochs", min=1, max=50, help="At most this many epochs.")] = 4,
    lr: Annotated[float, typer.Option("--lr", min=0.0, max=1e-2, help="AdamW learning rate.")] = 2e-5,
    retrain: Annotated[
        bool, typer.Option("--retrain/--no-retrain", help="Retrain the reranker on a newly installed encoder.")
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Tune the bi-encoder on the index's duplicate links; install it (re-encode, rebuild, re-tune fusion,
    retrain the reranker) only when validation improves."""
    from ticketsearch.pipeline.tune_encoder import TuneConfig, tune_index  # deferred: torch, sentence-transformers

    tb, vb = split_dates(train_before, valid_before)
    IndexDir(index).require_store()
    tune_index(index, tb, vb, get_settings(), TuneConfig(budget_s=budget_s, max_epochs=epochs, lr=lr),
               progress=not quiet, log=typer.echo, retrain=retrain)


@app.command()
@one_line_errors
def explain(
    index: Annotated[Path, typer.Option("--index", help="Index directory with a trained reranker.")],
    out: Annotated[Path, typer.Option("--out", help="PNG file for the bar chart.")],
    text: Annotated[Optional[str], typer.Argument(help="Query text.")] = None,
    like: Annotated[Optional[str], typer.Option("--like", help="Explain for this indexed ticket instead.")] = None,
    field: Annotated[Optional[list[str]], typer.Option("--field", help="The query ticket's own field, K=V.")] = None,
) -> None:
    """Draw the words the top hit's features attended to (a bar chart like the article's), and list them; for a
    reranker without attention (rerank-linear, the general model, concat), the query's words the top hit matches,
    by similarity."""

    if text is None and like is None:
        fail("give a query TEXT or --like ID")
    idx = TicketIndex.open(index)
    try:
        if idx.pipeline.reranker is None:
            fail("; ".join(idx.pipeline.notes))
        res = idx.search(text, like=like, fields=parse_fields(field, field_kinds(idx, bool(field))), k=1,
                         explain=True)
    finally:
        idx.close()
    top = res.hits[0] if res.hits else None
    if top is None:
        fail("nothing to explain: no hit")
    if top.attended:
        words, what = [(a.word, a.weight) for a in top.attended], "attended"
    else:  # no attention to draw: the query's words the top hit matches
        words, what = [(matched_label(m), m.similarity) for m in top.matched or []], "matches"
        if not words:
            fail("nothing to explain: the reranker has no attention and the top hit matches no content word of the "
                 "query")
    plot_attention(words, f"{top.id}: {top.title}" + ("" if top.attended else " (matched words)"), out)
    for note in res.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"top hit {top.id} (p={top.probability:.2f}) {what}: " + ", ".join(f"{w} {v:.3f}" for w, v in words))
    typer.echo("matched: " + (", ".join(f"{matched_label(m)} ({m.kind} {m.similarity:.2f})" for m in top.matched or [])
                              or "no content word of the query"))
    typer.echo(f"wrote {out}")


def parse_autoscale(text: str, replicas: int) -> tuple[int, int]:
    """--autoscale MIN:MAX (1 <= MIN <= MAX <= 64), which replaces --replicas."""
    lo, sep, hi = text.partition(":")
    if not (sep and lo.strip().isdigit() and hi.strip().isdigit()) or not 1 <= int(lo) <= int(hi) <= 64:
        fail(f"--autoscale must be MIN:MAX with 1 <= MIN <= MAX <= 64; got {text!r}")
    if replicas != 1:
        fail("give --replicas or --autoscale, not both")
    return int(lo), int(hi)


@app.command()
@one_line_errors
def serve(
    index: Annotated[Optional[Path], typer.Option(
        "--index", help="One index directory (built with 'ticketsearch ingest'), served as the collection "
        "'default'.")] = None,
    root: Annotated[Optional[Path], typer.Option(
        "--root", help="A folder of collections (ROOT/collections/NAME/, each an index directory); created if "
        "missing. Collections are created over HTTP: PUT /v1/collections/NAME.")] = None,
    host: Annotated[Optional[str], typer.Option("--host", help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", min=0, max=65535, help="Port (default 8000).")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
    on_ray: Annotated[bool, typer.Option("--ray", help="Serve on Ray Serve (needs --root and the [ray] extra): a "
                                      "replicated front and one deployment per shard of each collection.")] = False,
    shards: Annotated[int, typer.Option("--shards", min=1, max=64, help="With --ray: shards of a new collection "
                                        "(PUT /v1/collections/NAME may say \"shards\").")] = 1,
    replicas: Annotated[int, typer.Option("--replicas", min=1, max=64, help="With --ray: replicas of the front "
                                          "(query encoding, fusion, reranking) and copies of each shard (its "
                                          "primary and read replicas).")] = 1,
    autoscale: Annotated[Optional[str], typer.Option("--autoscale", help="With --ray: MIN:MAX front replicas, "
                                                     "scaled by Serve with the load (in place of --replicas).")] = None,
    ray_address: Annotated[str, typer.Option("--ray-address", help="With --ray: 'local' (start Ray here), 'auto' "
                                             "or a cluster's address.")] = "local",
) -> None:
    """Run the HTTP query service (FastAPI + uvicorn) on an index or a root of collections; Ctrl-C stops it."""

    import uvicorn  # deferred: uvicorn, only for serve

    from ticketsearch.service.app import create_app  # deferred: FastAPI, torch, FAISS
    from ticketsearch.service.auth import ApiKeys  # deferred: the service's modules (torch, FAISS)

    if log_level not in ("debug", "info", "warning", "error"):
        fail(f"--log-level must be debug, info, warning or error; got {log_level!r}")
    if (index is None) == (root is None):
        fail("give either --index DIR (one index) or --root DIR (a folder of collections)")
    settings, web = get_settings(), get_service_settings()
    keys = ApiKeys.parse(web.api_keys)
    bind = host or web.host
    if not keys.enabled:
        if bind not in ("127.0.0.1", "localhost"):
            typer.echo(f"warning: no API keys set (TICKETSEARCH_API_KEYS): binding 127.0.0.1, not {bind}", err=True)
        bind = "127.0.0.1"
        typer.echo("warning: no API keys set: the service is open to anyone on this machine", err=True)
    if index is not None:
        with open_store(IndexDir(index), read_only=False):  # held by another process: one line, exit 2, not a
            pass  # service that answers /healthz and 503 to everything else forever
    elif root is not None and root.exists() and not root.is_dir():
        fail(f"--root {root} is not a folder")
    configure_logging(log_level)
    if on_ray:
        if root is None:
            fail("--ray serves a root of collections: give --root DIR")
        try:
            import ray.serve  # noqa: F401  # deferred: Ray, only with --ray

            from ticketsearch.service import ray_app  # deferred: Ray
        except ImportError as exc:
            fail(f"--ray needs Ray Serve: pip install 'ticketsearch[ray]' ({exc})")
        assert root is not None
        scale = parse_autoscale(autoscale, replicas) if autoscale is not None else None
        root.mkdir(parents=True, exist_ok=True)
        ray_app.run(root, settings, shards, replicas, bind, port if port is not None else web.port,
                    address=ray_address, autoscale=scale)
        return
    if shards != 1 or replicas != 1 or autoscale is not None:
        fail("--shards, --replicas and --autoscale need --ray")
    app_ = create_app(index, settings, root=root, web=web)
    uvicorn.run(app_, host=bind, port=port if port is not None else web.port, log_level=log_level,
                timeout_graceful_shutdown=10)


@app.command("split")
@one_line_errors
def split(
    index: Annotated[Path, typer.Option("--index", help="The index directory to split (it is not changed).")],
    out: Annotated[Path, typer.Option("--out", help="The sharded collection to write, e.g. ROOT/collections/NAME "
                                      "(must not exist).")],
    shards: Annotated[int, typer.Option("--shards", min=1, max=64, help="Number of shards.")] = 2,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Split an index into a sharded collection by a hash of the ticket id (each shard a complete index with
    the same model; nothing is encoded again): served by 'ticketsearch serve --root ROOT [--ray]'."""

    layout = split_index(index, out, shards, get_settings(), progress=not quiet)
    counts = []
    for d in layout.dirs():
        with open_store(d) as store:
            counts.append(store.count())
    typer.echo(f"split {index} into {layout.shards} shards at {out}: {', '.join(map(str, counts))} tickets")


@app.command()
@one_line_errors
def info(index: Annotated[Path, typer.Option("--index", help="Index directory.")]) -> None:
    """Show an index directory's manifest, its ticket and link counts, and the reranker that serves it (which,
    trained when and on how many queries; or why none)."""
    d = IndexDir(index)
    manifest = asdict(Manifest.load(index))
    with open_store(d) as store:
        counts = {"tickets": store.count(), "duplicate_links": store.link_count()}
    typer.echo(json.dumps({**manifest, **counts, "reranker": reranker_info(d)}, indent=2))


def reranker_info(d: IndexDir) -> dict[str, Any]:
    """What reranks this index: its own trained model (name, checksum, when, on what), or the general one."""
    config = d.reranker_path / "config.json"
    if not config.is_file():
        general = get_settings().general_reranker
        return {"installed": None, "serves": "the general model" if general else "first-stage order",
                "why": "no model trained on this index yet (ticketsearch train)"}
    meta = json.loads(config.read_text())
    train = meta.get("train", {})
    return {"installed": meta.get("name"), "checksum": meta.get("checksum"), "trained_at": train.get("at"),
            "train_queries": train.get("queries"), "train_positives": train.get("positives"),
            "validation_queries": train.get("validation_queries"),
            "duplicate_threshold": meta.get("duplicate_threshold")}


def main() -> None:
    """The console script. A usage error (an unknown command or option, a value of the wrong type or out of its
    bounds) is one line naming the problem and where help is, exit 2, as every other error of the CLI (typer's
    own answer is a boxed panel of several lines)."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        sys.exit(1)
    except typer.TyperException as exc:  # click's usage errors, as typer raises them
        ctx = getattr(exc, "ctx", None)
        message = " ".join(str(getattr(exc, "format_message", exc.__str__)()).split())
        typer.echo(f"error: {message} (see {ctx.command_path if ctx else 'ticketsearch'} --help)", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
