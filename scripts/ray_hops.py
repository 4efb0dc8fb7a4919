"""Where a search through Ray Serve spends what the plain service does not: the same free-text searches through
`ticketsearch serve --index` and through Ray Serve over a 1-shard split of the same index, with the servers' own
stage timings, the bare HTTP round trip of each (`/healthz`), and a call from this process to a Serve deployment
against a call to a plain Ray actor (the same trivial method: Serve's handle against Ray's own).

    python scripts/ray_hops.py --index /tmp/sd/idx --out docs/ray_hops.json

Each system is timed once the machine is quiet (`bench_sharded.wait_quiet`); medians of 40 calls.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_sharded import free_port, plain_service, wait_quiet, wait_ready  # noqa: E402

from ticketsearch.atomic import atomic_write_json  # noqa: E402
from ticketsearch.settings import Settings  # noqa: E402

N = 40


def med(xs: list[float]) -> float:
    return round(statistics.median(xs), 2)


def timed_ms(fn: Callable[[], Any], n: int = N) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def measure(client: Any, search_path: str, titles: list[str]) -> dict[str, Any]:
    """`/healthz` and the searches: client-side medians, and the median of each stage the server reports."""
    client.post(search_path, json={"text": "warm up", "k": 1}).raise_for_status()
    quiet = wait_quiet()
    health = timed_ms(lambda: client.get("/healthz").raise_for_status())
    e2e: list[float] = []
    stages: dict[str, list[float]] = {}
    for t in titles:
        t0 = time.perf_counter()
        r = client.post(search_path, json={"text": t, "k": 10})
        r.raise_for_status()
        e2e.append((time.perf_counter() - t0) * 1000)
        for k, v in r.json().get("timings_ms", {}).items():
            stages.setdefault(k, []).append(v)
    st = {k: med(v) for k, v in stages.items()}
    return {"healthz_p50_ms": med(health), "search_p50_ms": med(e2e), "stages_p50_ms": st,
            "outside_stages_ms": round(med(e2e) - sum(st.values()), 2), "waited_for_quiet_s": quiet}


def handle_against_actor() -> dict[str, float]:
    """A trivial call from this process: to a Serve deployment's handle, and to a plain Ray actor."""
    import ray
    from ray import serve

    @ray.remote(num_cpus=0.25)
    class Actor:
        def call(self, method: str) -> str:
            return method

    @serve.deployment(ray_actor_options={"num_cpus": 0.25})
    class Sync:
        def call(self, method: str) -> str:
            return method

    @serve.deployment(ray_actor_options={"num_cpus": 0.25})
    class Async:
        async def call(self, method: str) -> str:
            return await asyncio.to_thread(lambda: method)

    actor = Actor.remote()  # type: ignore[attr-defined]
    ray.get(actor.call.remote("warm"))
    out = {"ray_actor_call_p50_ms": med(timed_ms(lambda: ray.get(actor.call.remote("count")), 200))}
    deployments: tuple[tuple[str, Any], ...] = (("serve_handle_sync_p50_ms", Sync),
                                                ("serve_handle_async_thread_p50_ms", Async))
    for name, cls in deployments:
        handle: Any = serve.run(cls.bind(), name=name, route_prefix=None)
        handle.call.remote("warm").result()

        def call(h: Any = handle) -> Any:
            return h.call.remote("count").result()

        out[name] = med(timed_ms(call, 200))
        serve.delete(name)
    return out


def main() -> None:
    import httpx

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import ray
    from ray import serve

    from ticketsearch.pipeline.search import SearchPipeline
    from ticketsearch.pipeline.sharding import split_index
    from ticketsearch.retrieval.threads import apply_threads
    from ticketsearch.service.ray_app import FRONT_APP, front_app

    settings = Settings()
    apply_threads(settings)
    one = SearchPipeline(args.index, settings)
    titles = [t.title for t in one.store.get_rows(one.store.row_ids().tolist()[:N], with_body=False)]
    one.close()
    out: dict[str, Any] = {"index": str(args.index), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                           "command": " ".join(sys.argv)}
    with plain_service(args.index) as c:
        out["plain"] = measure(c, "/v1/search", titles)
    tmp = Path(tempfile.mkdtemp(prefix="ray-hops-"))
    try:
        split_index(args.index, tmp / "collections" / "c", 1, settings, progress=False)
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        try:
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(front_app(tmp, settings, 1, 1), name=FRONT_APP, route_prefix="/")
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as c:
                wait_ready(c)
                out["ray_1_shard"] = measure(c, "/v1/collections/c/search", titles)
            out["calls"] = handle_against_actor()
        finally:
            serve.shutdown()
            ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_json(args.out, out)
    print(out)


if __name__ == "__main__":
    main()
