from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ticketsearch.settings import Settings

from .demo_rows import generate

# Nothing a test runs writes outside a temporary directory: the per-machine cache (ONNX exports) goes here,
# for this process and the servers it starts.
_CACHE = tempfile.mkdtemp(prefix="ticketsearch-cache-")
os.environ["TICKETSEARCH_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

# Several test workers on this machine's cores: each computes on one thread (torch and FAISS), as the servers the
# tests start do (TICKETSEARCH_THREADS=1). Two workers at torch's default of one thread per core each spin on
# each other's cores: measured, a training test took 60 s beside another instead of 10 s alone.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch  # noqa: E402  # set before any test computes

    torch.set_num_threads(1)


# ---- --test-order: run each module's tests in file order, reversed, or shuffled (modules stay grouped) -------


def _test_order(value: str) -> str:
    kind, _, seed = value.partition(":")
    if value in ("file", "reverse") or (kind == "random" and seed.lstrip("-").isdigit()):
        return value
    raise argparse.ArgumentTypeError(f"expected file, reverse or random:SEED (an integer), got {value!r}")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--test-order",
        type=_test_order,
        default="file",
        metavar="file|reverse|random:SEED",
        help="order of the tests within each module: file (default), reverse, or random:SEED (a seeded shuffle); "
        "every module must pass in any order",
    )


RAY_SCOPE = "ray"  # the modules named test_ray_*.py (each starts a local Ray instance: `local_ray`)


@pytest.hookimpl(optionalhook=True)  # without xdist (-p no:xdist) there is no such hook
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With `--dist loadfile`, the Ray modules are one work unit, run one after another on one worker, where
    each would otherwise hold the other worker idle on the Ray lock (`local_ray`) while it ran its own."""
    if config.getoption("dist", None) != "loadfile":
        return None  # xdist's own scheduler
    from xdist.scheduler import LoadFileScheduling

    class RayModulesTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return RAY_SCOPE if Path(path).name.startswith("test_ray_") else path

    return RayModulesTogether(config, log)


@pytest.hookimpl(tryfirst=True)  # before pytest's own reordering, which still groups parametrized fixtures
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    order: str = config.getoption("--test-order")
    if order == "file":
        return
    rng = random.Random(int(order.partition(":")[2])) if order.startswith("random:") else None
    by_module: dict[str, list[pytest.Item]] = {}
    for item in items:
        by_module.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    items[:] = []
    for group in by_module.values():
        if rng is None:
            group.reverse()
        else:
            rng.shuffle(group)
        items.extend(group)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A local Ray instance (num_cpus=2) for a module's Ray tests: skipped with the reason where Ray is absent,
    failed in CI (the dev extra installs it). One at a time across pytest-xdist's workers (a file lock in the
    directory they share), so that two Ray instances never contend for the same two cores."""
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("Ray is not installed (the dev extra installs it)")
        pytest.skip("Ray is not installed: pip install 'ticketsearch[ray]'")
    from filelock import FileLock

    with FileLock(str(tmp_path_factory.getbasetemp().parent / "ticketsearch-ray.lock")):
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield ray
        finally:
            ray.shutdown()


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def encoder(settings: Settings):
    from ticketsearch.retrieval.encoder import Encoder

    return Encoder("minilm", settings=settings)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def demo_rows() -> list[dict]:
    return generate(300, seed=7)


@pytest.fixture(scope="session")
def demo_file(tmp_path_factory: pytest.TempPathFactory, demo_rows: list[dict]) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "demo.jsonl", demo_rows)


@pytest.fixture(scope="session")
def built_index(tmp_path_factory: pytest.TempPathFactory, demo_file: Path, encoder, settings: Settings) -> Path:
    """A real index directory: DuckDB store + FAISS index over 300 generated tickets, built with MiniLM."""
    from ticketsearch.index_data.ingest import ingest_file
    from ticketsearch.index_data.schema import load_schema
    from ticketsearch.index_data.store import TicketStore
    from ticketsearch.index_dir import IndexDir
    from ticketsearch.pipeline.ingest import build_index

    index_dir = tmp_path_factory.mktemp("index")
    with TicketStore(IndexDir(index_dir).store_path, schema=load_schema("support")) as store:
        ingest_file(store, demo_file, progress=False)
        build_index(index_dir, store, encoder, "minilm", settings=settings, progress=False)
    return index_dir


# ---- an index of 1,000 generated tickets, and copies of it with a trained reranker (service and pipeline) -----
# Each is built once per test run, by whichever worker asks first (the other waits on its lock instead of building
# the same thing beside it on the same two cores), and never changed after: every worker tests its own copy.


def _run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory this run's workers share: pytest-xdist puts each worker's base directory in it; without
    xdist, the run's own base directory."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """`build(directory)` run once per test run for `name`, under a file lock the workers share; the finished
    directory appears whole (built beside, then renamed) and is read only by copying it (`own_copy`)."""
    from filelock import FileLock

    root = _run_dir(tmp_path_factory) / "built-once"
    root.mkdir(exist_ok=True)
    done = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not done.is_dir():
            work = root / f"{name}.partial"
            shutil.rmtree(work, ignore_errors=True)
            build(work)
            work.rename(done)
    return done


def own_copy(tmp_path_factory: pytest.TempPathFactory, source: Path, name: str) -> Path:
    target = tmp_path_factory.mktemp(name) / "idx"
    shutil.copytree(source, target)
    return target


def _pristine_index(tmp_path_factory: pytest.TempPathFactory, encoder: Any, settings: Settings) -> Path:
    def build(target: Path) -> None:
        from ticketsearch.index_data.ingest import ingest_file
        from ticketsearch.index_data.schema import load_schema
        from ticketsearch.index_data.store import TicketStore
        from ticketsearch.index_dir import IndexDir
        from ticketsearch.pipeline.ingest import build_index

        data = write_jsonl(tmp_path_factory.mktemp("rr") / "d.jsonl", generate(1000, seed=11))
        with TicketStore(IndexDir(target).store_path, schema=load_schema("support")) as store:
            ingest_file(store, data, progress=False)
            build_index(target, store, encoder, "minilm", settings=settings, progress=False)

    return built_once(tmp_path_factory, "index", build)


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory: pytest.TempPathFactory, encoder, settings) -> Path:
    return own_copy(tmp_path_factory, _pristine_index(tmp_path_factory, encoder, settings), "rr")


@pytest.fixture(scope="session")
def trained_index(tmp_path_factory: pytest.TempPathFactory, encoder, settings) -> Path:
    from typer.testing import CliRunner

    from ticketsearch.index_dir import IndexDir
    from ticketsearch.service.cli import app

    pristine = _pristine_index(tmp_path_factory, encoder, settings)

    def build(target: Path) -> None:
        shutil.copytree(pristine, target)
        # installed whatever validation says: on demo data, where time no longer gives the answer away, the model
        # barely beats the first stage (docs/RESULTS.md), and these tests are about serving an installed fusion
        # model (token states, candidate vectors, attention: `linear_index` has the linear one)
        res = CliRunner().invoke(app, ["train", "--index", str(target), "--variant", "rerank-cross+pair", "--epochs",
                                       "3", "--install", "always", "--validation-folds", "0", "-q"])
        assert res.exit_code == 0, res.output
        assert "installed rerank-cross+pair" in res.output and "installed as asked" in res.output

    target = own_copy(tmp_path_factory, built_once(tmp_path_factory, "trained", build), "trained")
    cfg = json.loads((IndexDir(target).reranker_path / "config.json").read_text())
    assert {"a", "b"} <= set(cfg["calibration"]) and cfg["features"]["schema"]["name"] == "support"
    assert (IndexDir(target).reranker_path / "model.safetensors").is_file()
    return target


@pytest.fixture(scope="session")
def linear_index(tmp_path_factory: pytest.TempPathFactory, encoder, settings) -> Path:
    """A copy of `index_dir` with the linear variant installed (`train --variant rerank-linear`), and the token
    states its training found in the index (none were encoded for it: `token_files` before and after)."""
    from typer.testing import CliRunner

    from ticketsearch.index_dir import IndexDir
    from ticketsearch.service.cli import app

    pristine = _pristine_index(tmp_path_factory, encoder, settings)

    def build(target: Path) -> None:
        shutil.copytree(pristine, target)
        cache = IndexDir(target).token_cache_path(encoder.key)
        before = sorted(p.name for p in cache.rglob("*")) if cache.exists() else []
        res = CliRunner().invoke(app, ["train", "--index", str(target), "--variant", "rerank-linear", "--install",
                                       "always", "--validation-folds", "0", "-q"])
        assert res.exit_code == 0, res.output
        assert "installed rerank-linear" in res.output and "installed as asked" in res.output
        after = sorted(p.name for p in cache.rglob("*")) if cache.exists() else []
        assert after == before, "the linear variant's training encoded token states"

    return own_copy(tmp_path_factory, built_once(tmp_path_factory, "linear", build), "linear")


