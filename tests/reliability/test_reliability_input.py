"""Bad input to the Client: a clear InvalidQueryError before anything is sent, never a crash."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import closefunnel as cf
from closefunnel.emulator import Emulator

EmulatorFactory = Callable[..., AbstractAsyncContextManager[Emulator]]
QuietCheck = Callable[[cf.Client], Awaitable[None]]

PIPELINE = "pipe_0000000000000000000000"
RELATIVE = cf.FunnelQuery(pipeline=PIPELINE, report_range="this-month")
DATED = cf.FunnelQuery(
    pipeline=PIPELINE,
    report_range=cf.DateRange(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)),
)

#: Anything a careless caller (or a web form) might pass where a value is expected.
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.binary(max_size=10),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    st.sampled_from([*cf.RELATIVE_RANGES, *cf.SAME_DAYS_RANGES, "", " ", "json", "csv", "JSON"]),
    st.just(RELATIVE),
    st.just(DATED.report_range),
)
_ANYTHING = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(name="emu")
async def _emu(start_emulator: EmulatorFactory) -> AsyncIterator[Emulator]:
    """A demo emulator whose log proves whether anything was sent."""
    async with start_emulator() as emu:
        yield emu


@pytest.fixture(name="client")
async def _client(emu: Emulator) -> AsyncIterator[cf.Client]:
    """A client of the emulator."""
    async with cf.Client(api_key=emu.api_key, base_url=emu.base_url) as client:
        yield client


def _calls(client: cf.Client) -> list[tuple[str, Callable[[], Awaitable[object]]]]:
    return [
        ("query is None", lambda: client.funnel_totals(None)),  # type: ignore[arg-type]
        ("query is a str", lambda: client.funnel_totals(PIPELINE)),  # type: ignore[arg-type]
        ("query is a body dict", lambda: client.funnel_totals(RELATIVE.to_body())),  # type: ignore[arg-type]
        ("format xml", lambda: client.funnel_totals(RELATIVE, format="xml")),  # type: ignore[arg-type]
        ("format None", lambda: client.funnel_totals(RELATIVE, format=None)),  # type: ignore[arg-type]
        ("no compared range", lambda: client.compare_totals(RELATIVE)),
        ("unknown compared name", lambda: client.compare_totals(RELATIVE, "last-decade")),
        ("compared is an int", lambda: client.compare_totals(RELATIVE, 42)),  # type: ignore[arg-type]
        ("compared is None", lambda: client.compare_totals(RELATIVE, None)),  # type: ignore[arg-type]
        ("same-days on relative", lambda: client.compare_totals(RELATIVE, "same-days-last-year")),
        ("relative on dates", lambda: client.compare_totals(DATED, "last-month")),
        ("one bad of two", lambda: client.compare_totals(RELATIVE, "last-year", "nope")),
        ("compare junk query", lambda: client.compare_totals("junk", "last-month")),  # type: ignore[arg-type]
        ("compare format pdf", lambda: client.compare_totals(RELATIVE, "last-year", format="pdf")),  # type: ignore[arg-type]
    ]


async def test_client_methods_refuse_junk_before_sending(client: cf.Client, emu: Emulator) -> None:
    """Every Client method given a bad query, format or compared range raises InvalidQueryError."""
    for name, call in _calls(client):
        with pytest.raises(cf.InvalidQueryError) as info:
            await call()
        assert info.value.field, name
        assert info.value.rule, name
        assert isinstance(info.value, ValueError), name
    assert emu.log == []


async def test_bulk_runs_report_junk_per_item_and_send_nothing(
    client: cf.Client, emu: Emulator, assert_quiet: QuietCheck
) -> None:
    """A bulk run with bad items or a bad compared range yields typed errors, sends nothing."""
    junk_items: list[Any] = [None, "pipe_x", 3, RELATIVE.to_body()]
    items = [item async for item in client.totals_many(junk_items)]
    assert len(items) == len(junk_items)
    assert all(isinstance(item.error, cf.InvalidQueryError) for item in items)
    bad = "last-decade"
    compared = [item async for item in client.compare_many([RELATIVE, DATED], bad)]
    assert len(compared) == 2
    assert all(isinstance(item.error, cf.InvalidQueryError) for item in compared)
    compared = [item async for item in client.compare_many([RELATIVE])]
    assert [type(item.error) for item in compared] == [cf.InvalidQueryError]
    assert emu.log == []
    await assert_quiet(client)


@_ANYTHING
@given(query=junk, compared=st.lists(junk, max_size=3), fmt=junk)
async def test_any_junk_is_refused_or_answered(
    client: cf.Client, emu: Emulator, query: Any, compared: list[Any], fmt: Any
) -> None:
    """Arbitrary arguments end in a result or InvalidQueryError; refused calls send nothing."""
    emu.clear_log()
    refused: cf.InvalidQueryError | None = None
    try:
        if compared:
            await client.compare_totals(query, *compared, format=fmt)
        else:
            await client.funnel_totals(query, format=fmt)
    except cf.InvalidQueryError as exc:
        refused = exc
    except cf.NotFoundError:
        pass  # a well-formed query for a pipeline the organization does not have
    if refused is not None and not isinstance(refused, cf.BadRequestError):
        assert emu.log == [], refused  # refused by the client: nothing reached the server


@settings(max_examples=300, deadline=None)
@given(query=st.sampled_from([RELATIVE, DATED]), compared=junk)
def test_validate_compared_raises_only_invalid_query(query: cf.FunnelQuery, compared: Any) -> None:
    """validate_compared accepts a range or raises InvalidQueryError, whatever it is given."""
    field = "compared"
    try:
        cf.validate_compared(query, compared)
    except cf.InvalidQueryError as exc:
        field = exc.field or ""
    assert field == "compared"


@settings(max_examples=300, deadline=None)
@given(
    option=st.sampled_from(
        ["api_key", "token", "base_url", "tz_offset", "max_concurrency", "timeout", "retry"]
    ),
    value=junk,
)
def test_client_options_are_checked_up_front(option: str, value: Any) -> None:
    """Any value for any constructor option builds a client or raises InvalidQueryError."""
    kwargs: dict[str, Any] = {"api_key": "api_x.secret"}
    if option == "token":
        kwargs = {}
    kwargs[option] = value
    field: str | None = option
    try:
        client = cf.Client(**kwargs)
    except cf.InvalidQueryError as exc:
        field = exc.field
    else:
        assert client.base_url.startswith("http")
        client._closed = True  # never opened a session; nothing to close
    assert field


@pytest.mark.parametrize("field", ["max_wait", "backoff_initial", "backoff_max"])
@pytest.mark.parametrize("value", [-1.0, math.nan])
def test_retry_policy_refuses_negative_and_nan(field: str, value: float) -> None:
    """RetryPolicy refuses negative and NaN waits (NaN would disable every comparison)."""
    with pytest.raises(ValueError, match=field):
        cf.RetryPolicy(**{field: value})  # type: ignore[arg-type]
