"""Per-key rates and budgets, per-model admission, and what calls cost."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools

import pytest

from genfoundry.core.errors import BudgetExceeded, Overloaded, RateLimited
from genfoundry.core.store import utcnow
from genfoundry.core.types import Usage
from genfoundry.gateway.keys import create_key
from genfoundry.gateway.quotas import Quotas, period_start
from genfoundry.models.admission import Admission
from genfoundry.models.pricing import SharedClock, api_cost, call_cost, per_million_output
from genfoundry.models.spec import Measured, ModelSpec, Price
from genfoundry.observe.calls import CallRecord, CallRecorder


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- rates ------------------------------------------------------------------------


def test_rate_limit_with_sliding_window(store):
    clock = FakeClock()
    quotas = Quotas(store, clock=clock)
    _, key = create_key(store, name="k", rpm_limit=2)
    quotas.check_rate(key)           # t=0
    clock.advance(10)
    quotas.check_rate(key)           # t=10
    clock.advance(10)
    with pytest.raises(RateLimited) as info:
        quotas.check_rate(key)       # t=20: two in the last minute
    assert info.value.retry_after == pytest.approx(40.0)  # the t=0 hit leaves the window at t=60
    assert info.value.status_code == 429
    clock.advance(40)
    quotas.check_rate(key)           # t=60: the t=0 hit has left the window
    clock.advance(1)
    with pytest.raises(RateLimited) as info:
        quotas.check_rate(key)       # t=61: hits at 10 and 60 remain
    assert info.value.retry_after == pytest.approx(9.0)


def test_refused_requests_do_not_count(store):
    clock = FakeClock()
    quotas = Quotas(store, clock=clock)
    _, key = create_key(store, name="k", rpm_limit=1)
    quotas.check_rate(key)
    for _ in range(5):
        clock.advance(10)
        with pytest.raises(RateLimited):
            quotas.check_rate(key)
    clock.advance(10)                # t=60: only the first hit counted
    quotas.check_rate(key)


def test_retry_after_is_at_least_one_second(store):
    clock = FakeClock()
    quotas = Quotas(store, clock=clock)
    _, key = create_key(store, name="k", rpm_limit=1)
    quotas.check_rate(key)
    clock.advance(59.9)
    with pytest.raises(RateLimited) as info:
        quotas.check_rate(key)
    assert info.value.retry_after == 1.0


def test_keys_are_counted_separately_and_default_rpm_applies(store):
    quotas = Quotas(store, default_rpm=1, clock=FakeClock())
    _, a = create_key(store, name="a")
    _, b = create_key(store, name="b")
    quotas.check_rate(a)
    quotas.check_rate(b)
    with pytest.raises(RateLimited, match="1 requests per minute"):
        quotas.check_rate(a)


def test_no_limit_means_unlimited(store):
    quotas = Quotas(store, clock=FakeClock())
    _, key = create_key(store, name="k")
    for _ in range(1000):
        quotas.check_rate(key)


# -- budgets ----------------------------------------------------------------------

_ids = itertools.count()


def record_call(recorder: CallRecorder, key_id: str, tokens: int, *, age: dt.timedelta | None = None):
    call = CallRecord(id=f"call-{next(_ids)}", endpoint="chat", status="ok", http_status=200,
                      latency_ms=1.0, key_id=key_id, prompt_tokens=tokens // 2,
                      completion_tokens=tokens - tokens // 2)
    if age is not None:
        call.created_at = utcnow() - age
    recorder.record(call)


@pytest.fixture()
def recorder(store):
    recorder = CallRecorder(store)
    yield recorder
    recorder.close()


def test_budget_exceeded(store, recorder):
    quotas = Quotas(store)
    _, key = create_key(store, name="k", token_budget=150, budget_period="total")
    _, other = create_key(store, name="other")
    record_call(recorder, key.id, 100)
    record_call(recorder, other.id, 1000)  # another key's calls do not count
    recorder.flush()
    quotas.check_budget(key)
    record_call(recorder, key.id, 60)
    recorder.flush()
    with pytest.raises(BudgetExceeded) as info:
        quotas.check_budget(key)
    assert "150" in info.value.message and info.value.retry_after >= 1
    assert info.value.status_code == 429 and info.value.code == "insufficient_quota"


@pytest.mark.parametrize("period, age", [("day", dt.timedelta(days=2)), ("month", dt.timedelta(days=40))])
def test_calls_before_the_period_do_not_count(store, recorder, period, age):
    quotas = Quotas(store)
    _, key = create_key(store, name="k", token_budget=100, budget_period=period)
    record_call(recorder, key.id, 10_000, age=age)
    record_call(recorder, key.id, 10)
    recorder.flush()
    quotas.check_budget(key)
    _, lifetime = create_key(store, name="lifetime", token_budget=100, budget_period="total")
    record_call(recorder, lifetime.id, 10_000, age=age)
    recorder.flush()
    with pytest.raises(BudgetExceeded):
        quotas.check_budget(lifetime)


def test_no_budget_means_unlimited(store, recorder):
    _, key = create_key(store, name="k")
    record_call(recorder, key.id, 10**9)
    recorder.flush()
    Quotas(store).check_budget(key)


def test_period_start():
    now = dt.datetime(2026, 11, 22, 15, 30, 12)
    assert period_start("day", now) == dt.datetime(2026, 11, 22)
    assert period_start("month", now) == dt.datetime(2026, 11, 1)
    assert period_start("total", now) == dt.datetime(1970, 1, 1)


# -- admission --------------------------------------------------------------------


async def until(condition, *, steps: int = 100) -> None:
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


def test_second_request_waits_and_third_is_refused():
    async def scenario():
        gate = Admission("m", concurrency=1, max_queue=1)
        release = asyncio.Event()
        entered: list[str] = []

        async def hold(tag: str):
            async with gate.slot():
                entered.append(tag)
                await release.wait()

        first = asyncio.create_task(hold("a"))
        await until(lambda: gate.running == 1)
        second = asyncio.create_task(hold("b"))
        await until(lambda: gate.waiting == 1)
        assert entered == ["a"]
        with pytest.raises(Overloaded) as info:
            async with gate.slot():
                entered.append("c")
        assert info.value.retry_after >= 1 and info.value.status_code == 429
        release.set()
        await asyncio.wait_for(asyncio.gather(first, second), timeout=5)
        assert entered == ["a", "b"]
        assert (gate.running, gate.waiting) == (0, 0)

    asyncio.run(scenario())


def test_slot_is_released_after_an_exception():
    async def scenario():
        gate = Admission("m", concurrency=1, max_queue=0)
        for _ in range(3):
            with pytest.raises(ValueError):
                async with gate.slot():
                    raise ValueError("request failed")
        assert (gate.running, gate.waiting) == (0, 0)
        async with gate.slot():  # would be Overloaded (max_queue=0) if the slot leaked
            assert gate.running == 1

    asyncio.run(asyncio.wait_for(scenario(), timeout=5))


def test_cancelled_waiter_leaves_the_queue():
    async def scenario():
        gate = Admission("m", concurrency=1, max_queue=1)
        release = asyncio.Event()

        async def hold():
            async with gate.slot():
                await release.wait()

        first = asyncio.create_task(hold())
        await until(lambda: gate.running == 1)
        waiter = asyncio.create_task(hold())
        await until(lambda: gate.waiting == 1)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert gate.waiting == 0
        release.set()
        await first
        async with gate.slot():
            assert gate.running == 1

    asyncio.run(asyncio.wait_for(scenario(), timeout=5))


def test_retry_after_grows_with_the_queue():
    gate = Admission("m", concurrency=2, max_queue=10, typical_seconds=2.0)
    assert gate.retry_after() == 1
    gate.waiting = 5
    assert gate.retry_after() == 6


# -- pricing ----------------------------------------------------------------------


def priced(**price) -> ModelSpec:
    return ModelSpec(name="m", provider="fake", location="memory", price=Price(**price))


def test_api_cost():
    spec = priced(input_per_million=1.0, output_per_million=2.0)
    assert api_cost(spec, Usage(prompt_tokens=1000, completion_tokens=500)) == pytest.approx(0.002)
    assert api_cost(priced(output_per_million=4.0), Usage(100, 250_000)) == pytest.approx(1.0)
    assert api_cost(priced(), Usage(100, 100)) is None
    assert api_cost(priced(per_hour=1.0), Usage(100, 100)) is None


def test_call_cost_per_hour_uses_attributed_seconds():
    spec = priced(per_hour=3.6)
    assert call_cost(spec, Usage(10, 10), attributed_seconds=10.0) == pytest.approx(0.01)
    assert call_cost(spec, Usage(10, 10), attributed_seconds=None) is None
    assert call_cost(priced(), Usage(10, 10), attributed_seconds=10.0) is None


def test_call_cost_prefers_token_prices():
    spec = priced(input_per_million=1.0, per_hour=3600.0)
    assert call_cost(spec, Usage(1_000_000, 0), attributed_seconds=1.0) == pytest.approx(1.0)


def test_per_million_output():
    assert per_million_output(priced(output_per_million=0.6)) == 0.6
    spec = priced(per_hour=0.36)
    assert per_million_output(spec) is None  # not measured yet
    spec.measured = Measured(decode_tokens_per_second=100.0)
    assert per_million_output(spec) == pytest.approx(1.0)  # 0.36 $/h / 360,000 tokens/h
    assert per_million_output(priced()) is None


def test_shared_clock_splits_overlapping_time():
    clock = FakeClock(0.0)
    shared = SharedClock(clock=clock)
    a = shared.begin()               # t=0: A alone for 1 s
    clock.advance(1)
    b = shared.begin()               # t=1: A and B together for 2 s
    clock.advance(2)
    a_seconds = shared.end(a, completion_tokens=30)  # t=3: B alone for 1 s
    clock.advance(1)
    b_seconds = shared.end(b, completion_tokens=10)  # t=4
    assert a_seconds == pytest.approx(2.0)
    assert b_seconds == pytest.approx(2.0)
    assert a_seconds + b_seconds == pytest.approx(4.0)  # all busy time, counted once
    assert shared.decode_tokens_per_second() == pytest.approx(40 / 4.0)


def test_shared_clock_idle_time_is_not_attributed():
    clock = FakeClock(0.0)
    shared = SharedClock(clock=clock)
    clock.advance(100)               # idle before the request
    start = shared.begin()
    clock.advance(3)
    assert shared.end(start) == pytest.approx(3.0)
    assert shared.decode_tokens_per_second() is None  # no tokens counted
