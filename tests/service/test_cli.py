"""The command-line contract, end to end: demo-data, ingest (DuckDB + FAISS), search, and one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ticketsearch.index_dir import IndexDir
from ticketsearch.service.cli import app

from ..demo_rows import DEMO_END_ARG

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    data = root / "demo.jsonl"
    code, out, err = run("demo-data", "--out", str(data), "-n", "250", "--seed", "3", "--end", DEMO_END_ARG)
    assert code == 0, err
    code, out, err = run("ingest", "--data", str(data), "--index", str(root / "idx"), "--schema", "support", "-q")
    assert code == 0, err
    assert "250 new" in out and "encoded" in out
    return data, root / "idx"


def test_search_json_rank_1_and_filters(cli_index: tuple[Path, Path]) -> None:
    data, idx = cli_index
    first = json.loads(data.read_text().splitlines()[42])
    code, out, _ = run("search", "--index", str(idx), first["title"] + "\n" + first["body"], "-k", "3", "--json")
    assert code == 0
    hits = json.loads(out)["hits"]
    assert hits[0]["title"] == first["title"] and hits[0]["scores"]["dense"] > 0.99
    code, out, _ = run("search", "--index", str(idx), first["title"], "-k", "3", "--json", "--method", "bm25")
    assert code == 0 and json.loads(out)["method"] == "bm25"
    assert json.loads(out)["hits"][0]["title"] == first["title"]
    code, out, _ = run("search", "--index", str(idx), "login", "--filter", "channel=chat,phone",
                       "--before", "2024-12-01", "-k", "12", "--json")
    hits = json.loads(out)["hits"]
    assert code == 0 and len(hits) == 12
    assert all(h["fields"]["channel"] in ("chat", "phone") and h["created"] < "2024-12-01" for h in hits)
    code, out, err = run("search", "--index", str(idx), "login", "--filter", "channel=chat\\,phone", "--json")
    assert code == 0 and json.loads(out)["hits"] == [], err  # one value with a comma in it: no channel has it
    from ticketsearch.service.cli import parse_pairs

    assert parse_pairs(["product=Acme\\, Inc", "product=a, b", "c=x\\,y,,z"], "--filter") == {
        "product": ["Acme, Inc", "a", "b"], "c": ["x,y", "z"]}


def test_like_and_text_output(cli_index: tuple[Path, Path]) -> None:
    _, idx = cli_index
    code, out, _ = run("search", "--index", str(idx), "--like", "SUP-5", "-k", "4")
    assert code == 0
    assert "SUP-5 " not in out
    _, js, _ = run("search", "--index", str(idx), "--like", "SUP-5", "-k", "4", "--json")
    ids = [h["id"] for h in json.loads(js)["hits"]]
    at = [out.find(f"{tid} ") for tid in ids]  # the text shows the JSON's hits, each once, in its order
    assert len(ids) == 4 and -1 not in at and at == sorted(at), (ids, out)
    assert all(out.count(f"{tid} ") == 1 for tid in ids), out


def test_reingest_is_idempotent_and_reuses_embeddings(cli_index: tuple[Path, Path], tmp_path: Path) -> None:
    data, idx = cli_index
    copy = tmp_path / "idx"
    shutil.copytree(idx, copy)
    q = ["search", "--index", str(copy), "password reset broken", "-k", "10", "--json"]
    before = json.loads(run(*q)[1])["hits"]
    code, out, err = run("ingest", "--data", str(data), "--index", str(copy), "-q")
    assert code == 0, err
    assert "0 new, 250 updated" in out and "encoded 0" in out
    assert json.loads(run(*q)[1])["hits"] == before


@pytest.mark.parametrize(
    "args, needle",
    [
        (["search", "--index", "{idx}", "x", "--filter", "status=Closed"], "filters.status: unknown field 'status'"),
        (["search", "--index", "{idx}", "x", "--filter", "status"], "expects K=V"),
        (["search", "--index", "{idx}", "x", "--field", "colour=red"], "unknown field"),
        (["search", "--index", "{idx}", "x", "--before", "next week"], "before"),
        (["search", "--index", "{idx}", "--like", "NOPE-1"], "not found"),
        (["search", "--index", "{idx}"], "give a query"),
        (["search", "--index", "{idx}", "x", "--method", "magic"], "method: Input should be 'hybrid'"),
        (["search", "--index", "/nonexistent", "x"], "not an index directory"),
        (["ingest", "--data", "/nonexistent.jsonl", "--index", "{tmp}/i"], "no such file"),
        (["ingest", "--data", "{data}", "--index", "{idx}", "--schema", "jira"], "built with schema 'support'"),
        (["ingest", "--data", "{data}", "--index", "{tmp}/i", "--schema", "nope"], "neither a built-in"),
        (["ingest", "--data", "{data}", "--index", "{tmp}/i", "--on-error", "maybe"], "--on-error"),
        (["ingest", "--data", "{data}", "--index", "{tmp}/i", "--executor", "spark"], "--executor must be"),
        (["ingest", "--data", "{data}", "--index", "{tmp}/i", "--ray-address", "auto"], "goes with --executor ray"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli_index, tmp_path: Path, args: list[str], needle: str) -> None:
    data, idx = cli_index
    args = [a.format(idx=idx, data=data, tmp=tmp_path) for a in args]
    code, out, err = run(*args)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err


def test_stop_on_bad_rows_writes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text(
        json.dumps({"id": "A", "title": "ok", "created": "2024-01-01"}) + "\n"
        + json.dumps({"id": "B", "title": "bad", "created": "not a date"}) + "\n"
    )
    code, _, err = run("ingest", "--data", str(data), "--index", str(tmp_path / "i"), "--on-error", "stop", "-q")
    assert code == 2 and "line 2 (id 'B')" in err and "nothing was written" in err
    assert not (tmp_path / "i").exists()  # the index it would have created is not left behind, empty


@pytest.mark.parametrize("name,content", [("plain.jsonl", "hello world\nthis is not json\n"),
                                          ("cols.csv", "name,text\na,b\nc,d\n"), ("empty.jsonl", "")])
def test_a_file_that_gives_no_ticket_is_an_error_and_leaves_no_index(tmp_path: Path, name: str,
                                                                       content: str) -> None:
    data = tmp_path / name
    data.write_text(content)
    code, out, err = run("ingest", "--data", str(data), "--index", str(tmp_path / "i"), "-q")
    lines = [x for x in err.splitlines() if not x.startswith("skipped ")]
    assert code == 2 and len(lines) == 1 and "no ticket was ingested" in lines[0], (out, err)
    assert "a row needs id, title and created" in lines[0]
    assert not (tmp_path / "i").exists()


def test_a_file_that_gives_no_ticket_leaves_an_existing_index_as_it_was(cli_index: tuple[Path, Path],
                                                                        tmp_path: Path) -> None:
    _, idx = cli_index
    from ticketsearch.index_data.store import TicketStore

    with TicketStore(IndexDir(idx).store_path, read_only=True) as s:
        before = s.count()
    (tmp_path / "junk.jsonl").write_text("[1, 2, 3]\n")
    code, _, err = run("ingest", "--data", str(tmp_path / "junk.jsonl"), "--index", str(idx), "-q")
    assert code == 2 and "no ticket was ingested" in err
    with TicketStore(IndexDir(idx).store_path, read_only=True) as s:
        assert s.count() == before


def test_console_script_help() -> None:
    exe = Path(sys.executable).parent / "ticketsearch"
    assert exe.is_file(), "the ticketsearch console script is installed beside this Python"
    for sub in ([], ["demo-data"], ["ingest"], ["search"], ["info"]):
        res = subprocess.run([str(exe), *sub, "--help"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and "Usage" in res.stdout


def test_cli_next_to_a_running_service(trained_index: Path, tmp_path: Path) -> None:
    """`search|similar|duplicates --url` go through the HTTP API (same JSON as the API); reading the index
    that a server holds says so in one line and names --url."""
    import httpx

    from .server import Server

    key = "cli-reader-key-1"
    shutil.copytree(trained_index, tmp_path / "idx")
    srv = Server(tmp_path / "idx", tmp_path / "server.log", env={"TICKETSEARCH_API_KEYS": f"{key}:read"}).start()
    try:
        code, out, err = run("search", "--index", str(tmp_path / "idx"), "refund")
        assert code == 2 and "--url" in err and "running service" in err and len(err.strip().splitlines()) == 1
        code, out, err = run("search", "--url", srv.url, "--key", key, "refund not received", "-k", "3", "--json")
        assert code == 0, err
        body = json.loads(out)
        api = httpx.post(srv.url + "/v1/search", json={"text": "refund not received", "k": 3},
                         headers={"Authorization": f"Bearer {key}"}, timeout=60).json()
        assert set(body) == set(api) and body["reranked"] and len(body["hits"]) == 3
        assert [h["id"] for h in body["hits"]] == [h["id"] for h in api["hits"]]
        assert set(body["hits"][0]) == set(api["hits"][0])
        res = runner.invoke(app, ["similar", "SUP-10", "--url", srv.url, "--json"], env={"TICKETSEARCH_KEY": key})
        assert res.exit_code == 0, res.output
        assert "SUP-10" not in [h["id"] for h in json.loads(res.stdout)["hits"]]
        res = runner.invoke(app, ["duplicates", "--title", "Refund missing", "--url", srv.url],
                            env={"TICKETSEARCH_KEY": key})
        assert res.exit_code == 0 and "threshold" in res.stdout, res.output
        code, out, err = run("search", "--url", srv.url, "--key", "wrong-key-0000000", "refund")
        assert code == 2 and "401" in err and len(err.strip().splitlines()) == 1
    finally:
        srv.stop()
    # once the service is gone, the same read works from the index directly
    code, out, err = run("search", "--index", str(tmp_path / "idx"), "refund", "-k", "2", "--json")
    assert code == 0 and len(json.loads(out)["hits"]) == 2, err


def test_search_limits_and_options_are_the_requests(cli_index: tuple[Path, Path]) -> None:
    """The CLI's search takes the API's limits (ticketsearch.requests: one home) and every option the API has."""
    from ticketsearch.requests import MAX_K, MAX_QUERY

    data, idx = cli_index
    code, out, err = run("search", "--index", str(idx), "login", "-k", str(MAX_K + 1))
    assert code == 2 and err == f"error: k: Input should be less than or equal to {MAX_K}\n" and not out  # not cut
    code, out, _ = run("search", "--index", str(idx), "login", "-k", str(MAX_K), "--json", "--no-rerank")
    assert code == 0 and len(json.loads(out)["hits"]) == MAX_K
    code, out, err = run("search", "--index", str(idx), "   ")
    assert code == 2 and err.count("\n") == 1 and "text" in err and "empty" in err
    code, out, err = run("search", "--index", str(idx), "x" * (MAX_QUERY + 1))  # the API's limit, not a crash
    assert code == 2 and err == f"error: text: String should have at most {MAX_QUERY} characters\n" and not out
    code, out, err = run("duplicates", "--index", str(idx), "--title", "t", "--body", "b" * (MAX_QUERY + 1))
    assert code == 2 and "body" in err and f"at most {MAX_QUERY} characters" in err and err.count("\n") == 1
    code, out, err = run("search", "--index", str(idx), "login", "--field", "affected_count=many")
    assert code == 2 and "affected_count" in err and "number" in err
    first = json.loads(data.read_text().splitlines()[42])
    code, out, _ = run("search", "--index", str(idx), first["body"], "--title", first["title"], "--snippets",
                       "--field", "affected_count=3", "--filter", f"channel={first['fields']['channel']}", "-k", "3",
                       "--json")
    assert code == 0
    res = json.loads(out)
    assert res["query"].startswith(first["title"] + "\n")  # the title went with the text, apart from it
    top = res["hits"][0]
    assert top["title"] == first["title"] and top["snippet"] and top["highlight"]


def test_train_says_in_one_line_what_it_lacks(tmp_path: Path) -> None:
    """`train` never creates the index it was asked to train, and an index without links is one line, exit 2."""
    code, out, err = run("train", "--index", str(tmp_path / "typo"))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "no ticket store" in err
    assert not (tmp_path / "typo").exists()
    data = tmp_path / "t.jsonl"
    data.write_text("".join(json.dumps({"id": f"N-{i}", "title": f"unlinked ticket {i}", "created": "2025-01-0"
                                        f"{i + 1}"}) + "\n" for i in range(3)))
    assert run("ingest", "--data", str(data), "--index", str(tmp_path / "idx"), "-q")[0] == 0
    code, out, err = run("train", "--index", str(tmp_path / "idx"))
    assert code == 2 and err.count("\n") == 1 and "has 0 duplicate link(s)" in err, err
    code, out, err = run("train", "--index", str(tmp_path / "idx"), "--install", "sometimes")
    assert code == 2 and err.count("\n") == 1 and "--install must be one of auto, always" in err, err
    code, out, err = run("train", "--index", str(tmp_path / "idx"), "--validation-folds", "5")  # the API's bound
    assert code == 2 and "'--validation-folds'" in err and "less than or equal" in err, err


def test_info_says_what_reranks_the_index(cli_index: tuple[Path, Path], trained_index: Path) -> None:
    _, idx = cli_index
    code, out, err = run("info", "--index", str(idx))
    assert code == 0, err
    got = json.loads(out)
    assert got["tickets"] > 0 and got["reranker"]["installed"] is None
    assert got["reranker"]["serves"] == "the general model"
    code, out, err = run("info", "--index", str(trained_index))
    rr = json.loads(out)["reranker"]
    assert code == 0 and rr["installed"] == "rerank-cross+pair" and len(rr["checksum"]) >= 12
    assert rr["trained_at"].endswith("+00:00") and rr["train_queries"] > 0 and rr["train_positives"] >= rr[
        "train_queries"]


def test_similar_and_duplicates_on_an_index(cli_index: tuple[Path, Path]) -> None:
    """`similar` and `duplicates` with --index answer as the library does; the text shows the JSON's hits."""
    from ticketsearch.api import TicketIndex
    from ticketsearch.requests import MAX_BODY

    data, idx = cli_index
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    src = rows[42]
    code, out, err = run("similar", src["id"], "--index", str(idx), "--json")
    assert code == 0, err
    got = [h["id"] for h in json.loads(out)["hits"]]
    with TicketIndex.open(idx) as ti:
        assert got == [h.id for h in ti.similar(src["id"]).hits] and src["id"] not in got and len(got) == 10
        lib = ti.duplicates({"title": src["title"], "body": src["body"], "fields": src["fields"]})
    code, text, _ = run("similar", src["id"], "--index", str(idx))
    at = [text.find(f"{tid} ") for tid in got]
    assert code == 0 and -1 not in at and at == sorted(at), text
    code, out, err = run("duplicates", "--index", str(idx), "--title", src["title"], "--body", src["body"],
                         *[a for k, v in src["fields"].items() for a in ("--field", f"{k}={v}")], "--json")
    assert code == 0, err
    dup = json.loads(out)
    assert dup["is_duplicate"] is True and dup["candidates"][0]["id"] == src["id"]  # a copy of an indexed ticket
    assert [c["id"] for c in dup["candidates"]] == [c.id for c in lib.candidates]
    # a body from a file or standard input (a real shell takes at most 128 KiB in one argument; a body 200,000
    # characters): the same request, the same answer
    (idx.parent / "body.txt").write_text(src["body"], encoding="utf-8")
    for where, stdin in ((str(idx.parent / "body.txt"), None), ("-", src["body"].encode())):
        res = runner.invoke(app, ["duplicates", "--index", str(idx), "--title", src["title"], "--body-file", where,
                                  *[a for k, v in src["fields"].items() for a in ("--field", f"{k}={v}")], "--json"],
                            input=stdin)
        assert res.exit_code == 0 and json.loads(res.stdout) == dup, (where, res.stderr)
    (idx.parent / "latin1.txt").write_bytes("Umsatzsteuer f\xfcr M\xe4rz".encode("latin-1"))
    (idx.parent / "long.txt").write_text("b" * (MAX_BODY + 1), encoding="utf-8")
    for args, needle in (
            (["--body", "x", "--body-file", str(idx.parent / "body.txt")], "give --body or --body-file, not both"),
            (["--body-file", str(idx.parent / "missing.txt")], "--body-file: cannot read"),
            (["--body-file", str(idx.parent)], "--body-file: cannot read"),
            (["--body-file", str(idx.parent / "latin1.txt")], "--body-file: not UTF-8 text (byte 15)"),
            (["--body-file", str(idx.parent / "long.txt")], f"body: String should have at most {MAX_BODY} char")):
        code, out, err = run("duplicates", "--index", str(idx), "--title", "t", *args)
        assert code == 2 and needle in err and err.count("\n") == 1 and not out, (args, err)
    code, out, _ = run("duplicates", "--index", str(idx), "--title", "Lattice gauge theory on a quantum annealer",
                       "--body", "Monte Carlo of quark confinement at finite temperature.", "--json")
    assert code == 0 and json.loads(out)["is_duplicate"] is False  # about nothing the index holds
    code, _, err = run("similar", "NOPE-404", "--index", str(idx))
    assert code == 2 and "NOPE-404" in err and len(err.strip().splitlines()) == 1


def test_search_explain_prints_the_words_it_returns(trained_index: Path) -> None:
    """`search --explain`: each hit's attended words, as the JSON gives them, in the text under the hit."""
    query = "the app crashes when I export a report"
    code, out, err = run("search", "--index", str(trained_index), query, "-k", "3", "--explain", "--json")
    assert code == 0, err
    hits = json.loads(out)["hits"]
    assert len(hits) == 3 and all(h["attended"] for h in hits)
    code, text, _ = run("search", "--index", str(trained_index), query, "-k", "3", "--explain")
    assert code == 0
    for h in hits:
        line = "attended: " + ", ".join(a["word"] for a in h["attended"])
        assert line in text and text.index(line) > text.index(f"{h['id']} "), (line, text)
    code, _, err = run("search", "--index", str(trained_index), query, "-k", "21", "--explain")
    assert code == 2 and "explain" in err and len(err.strip().splitlines()) == 1


def test_explain_draws_matched_words_for_a_reranker_without_attention(linear_index: Path, tmp_path: Path) -> None:
    code, out, err = run("explain", "--index", str(linear_index), "customers were charged twice", "--out",
                         str(tmp_path / "x.png"))
    assert code == 0, err
    assert "matches: " in out and "with rerank-linear" in out and "this reranker has no attention" in out, out
    assert (tmp_path / "x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_split_writes_every_ticket_to_the_shard_its_id_hashes_to(cli_index: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    from ticketsearch.index_data.store import TicketStore
    from ticketsearch.pipeline.sharding import ShardLayout, shard_of

    data, idx = cli_index
    out_dir = tmp_path / "collections" / "sharded"
    code, out, err = run("split", "--index", str(idx), "--out", str(out_dir), "--shards", "3", "-q")
    assert code == 0, err
    layout = ShardLayout.load(out_dir)
    ids: list[str] = []
    for i, d in enumerate(layout.dirs()):
        with TicketStore(d.store_path, read_only=True) as st:
            mine = [t.id for t in st.get_rows(st.row_ids().tolist(), with_body=False)]
        assert mine and all(shard_of(t, 3) == i for t in mine)
        ids += mine
    assert sorted(ids) == sorted(json.loads(line)["id"] for line in data.read_text().splitlines())
    assert out.strip().endswith("tickets") and "into 3 shards" in out
    code, _, err = run("split", "--index", str(idx), "--out", str(out_dir), "--shards", "2", "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1 and layout.shards == ShardLayout.load(out_dir).shards


def test_ingest_options_index_type_model_and_mapping(tmp_path: Path) -> None:
    """--index-type builds that FAISS kind; --model names the encoder the manifest records (a missing one is a
    one-line error that leaves no index); --mapping maps a Zendesk export's fields."""
    from ticketsearch.retrieval.manifest import Manifest

    data = tmp_path / "d.jsonl"
    code, _, err = run("demo-data", "--out", str(data), "-n", "60", "--seed", "5", "--end", DEMO_END_ARG)
    assert code == 0, err
    code, _, err = run("ingest", "--data", str(data), "--index", str(tmp_path / "hnsw"), "--index-type", "hnsw",
                       "--model", "minilm", "-q")
    assert code == 0, err
    m = Manifest.load(tmp_path / "hnsw")
    assert m.index_kind == "hnsw" and m.model == "minilm"
    code, _, err = run("ingest", "--data", str(data), "--index", str(tmp_path / "bad"), "--index-type", "annoy")
    assert code == 2 and "annoy" in err and len(err.strip().splitlines()) == 1
    code, _, err = run("ingest", "--data", str(data), "--index", str(tmp_path / "nomodel"), "--model",
                       str(tmp_path / "no-such-model"), "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "nomodel" / "index").exists()
    fixtures = Path(__file__).parents[1] / "index_data" / "fixtures" / "zendesk" / "tickets.json"
    mapping = tmp_path / "m.toml"
    mapping.write_text('[fields]\nproduct = "custom:360000000001"\nchannel = "via.channel"\n')
    code, _, err = run("ingest", "--data", str(fixtures), "--index", str(tmp_path / "zd"), "--mapping",
                       str(mapping), "-q")
    assert code == 0, err
    from ticketsearch.index_data.store import TicketStore

    with TicketStore(IndexDir(tmp_path / "zd").store_path, read_only=True) as st:
        assert st.get("501").values["product"] == "enterprise"
    mapping.write_text("[fields]\nproduct = 3\n")
    code, _, err = run("ingest", "--data", str(fixtures), "--index", str(tmp_path / "zd2"), "--mapping",
                       str(mapping), "-q")
    assert code == 2 and "schema field" in err and len(err.strip().splitlines()) == 1


def test_a_usage_error_is_one_line_from_the_console_script(tmp_path: Path) -> None:
    """The installed `ticketsearch` answers a usage error (a value of the wrong type or out of its bounds, an
    unknown command or option) in one line naming the problem and where help is, exit 2, as every other error
    of the CLI: not typer's boxed panel of several lines. --help still prints help and exits 0."""
    import os
    import subprocess
    import sys

    exe = str(Path(sys.executable).parent / "ticketsearch")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for args, needle in ((["search", "--index", str(tmp_path), "x", "-k", "many"], "Invalid value for '-k'"),
                         (["train", "--index", str(tmp_path), "--validation-folds", "9"], "less than or equal to 4"),
                         (["serch"], "No such command 'serch'")):
        res = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, env=env)
        lines = [x for x in res.stderr.splitlines() if not x.startswith("warning: ")]
        assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
        assert needle in lines[0] and "--help)" in lines[0] and not res.stdout, res.stderr
    res = subprocess.run([exe, "search", "--help"], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0 and "--filter" in res.stdout
