"""The bound on costly requests by hand (service/costs.py): no server, so that each of its mutants is judged in a
second (scripts/mutate.py). The service-level test is tests/service/test_admission.py."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest

from ticketsearch.service.costs import CostlyRequests
from ticketsearch.service.gate import ApiError
from ticketsearch.service.metrics import Metrics


def refused(limiter: CostlyRequests, caller: str) -> ApiError:
    async def go() -> None:
        async with limiter.hold(caller, True):
            pass

    with pytest.raises(ApiError) as err:
        asyncio.run(go())
    return err.value


def test_per_key_and_total_bounds() -> None:
    metrics = Metrics()
    limiter = CostlyRequests(per_key=2, total=3, retry_after_s=7, metrics=metrics)

    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(limiter.hold("a", True))
            await stack.enter_async_context(limiter.hold("a", True))  # a's second: allowed (per_key 2)
            assert limiter.by_caller["a"] == 2 and limiter.running == 2
            err = await raises(limiter, "a")  # a's third: over its own bound
            assert err.status == 429 and err.headers == {"Retry-After": "7"} and err.type == "rate_limited"
            assert "this key" in err.reason
            await stack.enter_async_context(limiter.hold("b", True))  # the service's third: allowed (total 3)
            err = await raises(limiter, "c")  # the fourth, from a key with none: over the service's bound
            assert err.status == 429 and "the most the service runs at once" in err.reason
            async with limiter.hold("c", False):  # an ordinary request is never bounded
                assert limiter.running == 3
        assert limiter.running == 0 and dict(limiter.by_caller) == {}  # everything given back

    asyncio.run(scenario())
    assert metrics.limited._value.get() == 2  # each refusal counted


async def raises(limiter: CostlyRequests, caller: str) -> ApiError:
    try:
        async with limiter.hold(caller, True):
            pass
    except ApiError as exc:
        return exc
    raise AssertionError("not refused")


def test_a_failing_request_gives_its_place_back() -> None:
    limiter = CostlyRequests(per_key=1, total=1, retry_after_s=1)

    async def boom() -> None:
        async with limiter.hold("a", True):
            raise RuntimeError("the search failed")

    with pytest.raises(RuntimeError):
        asyncio.run(boom())
    assert limiter.running == 0 and "a" not in limiter.by_caller

    async def ok() -> bool:
        async with limiter.hold("a", True):
            return True

    assert asyncio.run(ok())  # the place is free again
    assert refused(CostlyRequests(per_key=1, total=0, retry_after_s=1), "z").status == 429
