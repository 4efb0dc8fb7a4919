"""The congruence battery on Ray Serve: a 2-shard collection (a split of the trained index) served by the Ray
front answers every good request as the index itself does (ids in order, scores within 1e-6) and every bad one
with the same error class, through the HTTP client (the fifth transport of `api.TicketReader`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ticketsearch.api import TicketIndex
from ticketsearch.client import Client
from ticketsearch.settings import Settings

from ..demo_rows import generate
from .battery import battery, hits, same
from .test_ray_app import free_port

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_client(local_ray, trained_index: Path, tmp_path_factory: pytest.TempPathFactory,  # noqa: ANN001
               settings: Settings) -> Iterator[Client]:
    from ray import serve

    from ticketsearch.pipeline.sharding import split_index
    from ticketsearch.service.ray_app import FRONT_APP, front_app

    root = tmp_path_factory.mktemp("raycongruence")
    split_index(trained_index, root / "collections" / "acme", 2, settings, progress=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(front_app(root, settings, shards=2, replicas=1), name=FRONT_APP, route_prefix="/")
        deadline = time.monotonic() + 180
        while httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the front never became ready"
            time.sleep(0.5)
        client = Client(f"http://127.0.0.1:{port}", collection="acme")
        yield client
        client.close()
    finally:
        serve.shutdown()


def test_ray_serve_gives_the_same_answers_and_the_same_errors(ray_client: Client, trained_index: Path,
                                                             settings: Settings) -> None:
    good, bad = battery(generate(1000, seed=11))
    with TicketIndex.open(trained_index, settings=settings) as one:
        for opts in good:
            want = hits(one.search(**opts))
            assert want, opts
            same(want, hits(ray_client.search(**opts)), f"ray {opts}")
        for opts, kind in bad:
            with pytest.raises(kind):
                one.search(**opts)
            with pytest.raises(kind):
                ray_client.search(**opts)
