"""The `ticketsearch` command line. Every failure prints one line naming the problem and exits with 2."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from index_data.errors import TicketsearchError

app = typer.Typer(
    name="ticketsearch",
    help="Retrieve-then-rerank search over support and bug tickets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(fn: F) -> F:
    """Turn a TicketsearchError into one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TicketsearchError as exc:
            fail(str(exc))

    return wrapper  # type: ignore[return-value]


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def parse_pairs(pairs: list[str] | None, option: str) -> dict[str, list[str]]:
    """['k=v', 'k=w', 'j=x'] -> {'k': ['v', 'w'], 'j': ['x']}; 'k=v,w' also gives two values."""
    out: dict[str, list[str]] = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep or not key.strip() or not value.strip():
            fail(f"{option} expects K=V, got {p!r}")
        out.setdefault(key.strip(), []).extend(v.strip() for v in value.split(",") if v.strip())
    return out


@app.command("demo-data")
@one_line_errors
def demo_data(
    out: Annotated[Path, typer.Option("--out", help="Output file (.jsonl or .jsonl.gz).")],
    n: Annotated[int, typer.Option("-n", min=1, max=1_000_000, help="Number of tickets.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
) -> None:
    """Generate synthetic support tickets (schema `support`) with clusters of reworded duplicates."""
    from index_data.demo import write_demo

    count = write_demo(out, n=n, seed=seed)
    typer.echo(f"wrote {count} tickets to {out}")


@app.command()
@one_line_errors
def ingest(
    data: Annotated[Path, typer.Option("--data", help="Tickets: .jsonl[.gz], .csv[.gz] or .parquet.")],
    index: Annotated[Path, typer.Option("--index", help="Index directory (created if missing).")],
    schema: Annotated[
        Optional[str], typer.Option("--schema", help="Built-in schema name (support, jira, bugzilla) or a TOML path.")
    ] = None,
    on_error: Annotated[str, typer.Option("--on-error", help="skip: report bad rows and go on; stop: write nothing.")] = "skip",
    model: Annotated[Optional[str], typer.Option("--model", help="'minilm' or a local sentence-transformers dir.")] = None,
    index_type: Annotated[Optional[str], typer.Option("--index-type", help="auto, flat, hnsw or ivf.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Store tickets in DuckDB (upsert by id) and (re)build the vector index, in one step."""
    from index_data.config import get_settings
    from index_data.ingest import ingest_file
    from index_data.schema import load_schema
    from index_data.store import TicketStore
    from retrieval.builder import build_index, store_path
    from retrieval.encoder import Encoder

    if on_error not in ("skip", "stop"):
        fail(f"--on-error must be 'skip' or 'stop', got {on_error!r}")
    if index_type not in (None, "auto", "flat", "hnsw", "ivf"):
        fail(f"--index-type must be auto, flat, hnsw or ivf, got {index_type!r}")
    if not data.is_file():
        fail(f"{data}: no such file")
    settings = get_settings()
    if index_type:
        settings = settings.model_copy(update={"index_type": index_type})
    db = store_path(index)
    sch = load_schema(schema) if schema else (None if db.exists() else load_schema("support"))
    with TicketStore(db, schema=sch) as store:
        report = ingest_file(store, data, on_error=on_error, progress=not quiet)  # type: ignore[arg-type]
        for err in report.errors[:20]:
            typer.echo(f"skipped {data}: {err}", err=True)
        if len(report.errors) > 20:
            typer.echo(f"skipped {len(report.errors) - 20} more malformed rows", err=True)
        typer.echo(
            f"ingested {report.rows_read - len(report.errors)} of {report.rows_read} rows "
            f"({report.inserted} new, {report.updated} updated, {len(report.errors)} skipped) "
            f"in {report.seconds:.2f}s ({report.rows_per_second:,.0f} rows/s)"
        )
        model_spec = model or settings.model
        encoder = Encoder(model_spec, settings=settings)
        build = build_index(index, store, encoder, model_spec, settings=settings, progress=not quiet)
    rate = f" ({build.encode_rate:.1f} tickets/s)" if build.encoded else ""
    typer.echo(
        f"indexed {build.tickets} tickets with {encoder.name} ({build.index_kind}): encoded {build.encoded}{rate}, "
        f"reused {build.cached} cached, {build.total_seconds:.1f}s in all -> {index}"
    )


@app.command()
@one_line_errors
def search(
    index: Annotated[Path, typer.Option("--index", help="Index directory.")],
    text: Annotated[Optional[str], typer.Argument(help="Query text.")] = None,
    like: Annotated[Optional[str], typer.Option("--like", help="Find tickets similar to this indexed ticket id.")] = None,
    field: Annotated[Optional[list[str]], typer.Option("--field", help="The query ticket's own field, K=V.")] = None,
    filter_: Annotated[
        Optional[list[str]], typer.Option("--filter", help="Restrict candidates, K=V (repeat or comma = OR).")
    ] = None,
    before: Annotated[Optional[str], typer.Option("--before", help="Only tickets created before this date.")] = None,
    after: Annotated[Optional[str], typer.Option("--after", help="Only tickets created on or after this date.")] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=1000, help="Number of hits.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Search the index by text, or by an indexed ticket's id with --like."""
    from retrieval.search import Searcher

    if text is None and like is None:
        fail("give a query TEXT or --like ID")
    fields = {k_: v[0] if len(v) == 1 else v for k_, v in parse_pairs(field, "--field").items()}
    searcher = Searcher(index)
    try:
        res = searcher.search(
            text, like=like, fields=fields, filters=parse_pairs(filter_, "--filter"), before=before, after=after, k=k
        )
    finally:
        searcher.close()
    if as_json:
        typer.echo(json.dumps({"query": res.query_text, "hits": [h.as_dict() for h in res.hits],
                               "timings_ms": res.timings_ms}, indent=2, ensure_ascii=False))
        return
    if not res.hits:
        typer.echo("no hits")
        return
    for rank, h in enumerate(res.hits, start=1):
        brief = ", ".join(f"{k_}={v}" for k_, v in h.fields.items() if v not in (None, [], "") and k_ != "submitted")
        typer.echo(f"{rank:>3}. {h.score:.3f}  {h.id:<14} {h.title[:70]}")
        if brief:
            typer.echo(f"       {brief[:110]}")


@app.command()
@one_line_errors
def info(index: Annotated[Path, typer.Option("--index", help="Index directory.")]) -> None:
    """Show an index directory's manifest."""
    from dataclasses import asdict

    from retrieval.manifest import Manifest

    typer.echo(json.dumps(asdict(Manifest.load(index)), indent=2))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
