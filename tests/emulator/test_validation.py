# ruff: noqa: E501  (the table of bad bodies reads best one case per line)
"""Bad requests get Close's error bodies (400/401/404/405/413), never a 500."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from emulator_helpers import DOCS_REQUEST, TOTALS, basic, post_totals
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closefunnel.emulator import Emulator

RANGE = {"start": "2019-01-01T00:00:00Z", "end": "2019-01-08T00:00:00Z"}
BASE = {"pipeline": DOCS_REQUEST["pipeline"], "type": "active-stage-cohort"}


def _with(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {**BASE, "report_datetime_range": RANGE}
    for key, value in changes.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    return body


BAD_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown field", _with(colour="red"), "colour"),
    ("missing pipeline", _with(pipeline=...), "pipeline"),
    ("pipeline not a string", _with(pipeline=12), "pipeline"),
    ("empty pipeline", _with(pipeline=""), "pipeline"),
    ("missing type", _with(type=...), "type"),
    ("bad type", _with(type="funnel"), "type"),
    ("type not a string", _with(type=["created-cohort"]), "type"),
    ("bad relative range", _with(report_datetime_range=..., report_relative_range="next-week"), "report_relative_range"),
    ("same-days as report range", _with(report_datetime_range=..., report_relative_range="same-days-last-week"), "report_relative_range"),
    ("relative range not a string", _with(report_datetime_range=..., report_relative_range=3), "report_relative_range"),
    ("both report ranges", _with(report_relative_range="this-month"), "report_datetime_range"),
    ("both cohort ranges", _with(type="created-cohort", cohort_relative_range="this-month", cohort_datetime_range=RANGE), "cohort_datetime_range"),
    ("active needs report range", _with(report_datetime_range=...), "report_relative_range"),
    ("created needs cohort range", _with(type="created-cohort"), "cohort_relative_range"),
    ("range not an object", _with(report_datetime_range="2019-01-01/2019-01-08"), "report_datetime_range"),
    ("range missing end", _with(report_datetime_range={"start": RANGE["start"]}), "report_datetime_range"),
    ("range extra key", _with(report_datetime_range={**RANGE, "tz": "UTC"}), "report_datetime_range"),
    ("range not ISO", _with(report_datetime_range={"start": "yesterday", "end": RANGE["end"]}), "report_datetime_range"),
    ("range naive", _with(report_datetime_range={"start": "2019-01-01T00:00:00", "end": RANGE["end"]}), "report_datetime_range"),
    ("range number", _with(report_datetime_range={"start": 1546300800, "end": RANGE["end"]}), "report_datetime_range"),
    ("range empty", _with(report_datetime_range={"start": RANGE["start"], "end": RANGE["start"]}), "report_datetime_range"),
    ("range inverted", _with(report_datetime_range={"start": RANGE["end"], "end": RANGE["start"]}), "report_datetime_range"),
    ("range year 1", _with(report_datetime_range={"start": "0001-01-01T00:00:00Z", "end": RANGE["end"]}), "report_datetime_range"),
    ("compared relative with datetime base", _with(compared_relative_range="last-month"), "compared_relative_range"),
    ("compared datetime with relative base", _with(report_datetime_range=..., report_relative_range="this-month", compared_datetime_range="same-days-last-month"), "compared_datetime_range"),
    ("compared datetime not same-days", _with(compared_datetime_range="last-month"), "compared_datetime_range"),
    ("compared relative bad", _with(report_datetime_range=..., report_relative_range="this-month", compared_relative_range="same-days-last-week"), "compared_relative_range"),
    ("compared custom malformed", _with(compared_custom_range={"start": "x", "end": "y"}), "compared_custom_range"),
    ("two compared fields", _with(compared_datetime_range="same-days-last-week", compared_custom_range=RANGE), "compared_custom_range"),
    ("created compared relative with datetime cohort", _with(type="created-cohort", report_datetime_range=..., cohort_datetime_range=RANGE, compared_relative_range="last-year"), "compared_relative_range"),
    ("query not an object", _with(query="save_x"), "query"),
    ("query wrong type", _with(query={"type": "lead_query", "saved_search_id": "save_x"}), "query"),
    ("query missing id", _with(query={"type": "saved_search"}), "query"),
    ("query extra key", _with(query={"type": "saved_search", "saved_search_id": "save_x", "q": 1}), "query"),
    ("users not a list", _with(users="user_x"), "users"),
    ("users with a number", _with(users=["user_x", 3]), "users"),
    ("users with an empty id", _with(users=[""]), "users"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "field"), [pytest.param(b, f, id=name) for name, b, f in BAD_BODIES]
)
async def test_invalid_body_is_400_with_field_errors(
    session: aiohttp.ClientSession, docs_emu: Emulator, body: dict[str, Any], field: str
) -> None:
    """Each broken rule gets 400 with Close's error shape naming the field."""
    status, _, raw = await post_totals(session, docs_emu, body)
    assert status == 400, raw
    data = json.loads(raw)
    assert set(data) == {"errors", "field-errors"}
    assert field in data["field-errors"], data
    assert all(isinstance(m, str) and m for m in data["field-errors"].values())


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"99999999999999999999999",
        b"[1, 2]",
        b'"text"',
        b"null",
        b"{",
        b"[" * 5000 + b"]" * 5000,
        b"\xff\xfe",
    ],
    ids=["empty", "text", "bigint", "list", "string", "null", "open", "deep", "binary"],
)
async def test_not_a_json_object_is_400(
    session: aiohttp.ClientSession, docs_emu: Emulator, raw: bytes
) -> None:
    """A body that is not a JSON object gets 400 with a general error."""
    status, _, body = await post_totals(session, docs_emu, None, raw=raw)
    assert status == 400
    data = json.loads(body)
    assert data["errors"]
    assert data["field-errors"] == {}


async def test_null_optional_fields_mean_absent(
    session: aiohttp.ClientSession, docs_emu: Emulator
) -> None:
    """Optional fields sent as null are ignored rather than refused."""
    body = _with(query=None, users=None, compared_custom_range=None, cohort_relative_range=None)
    status, _, _ = await post_totals(session, docs_emu, body)
    assert status == 200


@pytest.mark.parametrize("offset", ["abc", "nan", "24", "-30", "1e400"])
async def test_bad_tz_offset_is_400(
    session: aiohttp.ClientSession, docs_emu: Emulator, offset: str
) -> None:
    """An X-TZ-Offset that is not decimal hours within a day is refused."""
    status, _, body = await post_totals(
        session, docs_emu, DOCS_REQUEST, headers={"X-TZ-Offset": offset}
    )
    assert status == 400
    assert "X-TZ-Offset" in json.loads(body)["errors"][0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pipeline": "pipe_doesNotExist"}, "Pipeline"),
        ({"query": {"type": "saved_search", "saved_search_id": "save_nope"}}, "SavedSearch"),
    ],
)
async def test_unknown_pipeline_or_saved_search_is_404(
    session: aiohttp.ClientSession, docs_emu: Emulator, change: dict[str, Any], message: str
) -> None:
    """Unknown pipeline and saved search ids get 404 with an error message."""
    status, _, body = await post_totals(session, docs_emu, {**DOCS_REQUEST, **change})
    assert status == 404
    assert message in json.loads(body)["error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "lead/", 404),
        ("GET", "report/funnel/opportunity/stages/", 404),
        ("GET", "report/funnel/opportunity/totals/", 405),
        ("DELETE", "pipeline/", 405),
        ("GET", "../../etc/passwd", 404),
    ],
)
async def test_unknown_paths(
    session: aiohttp.ClientSession, docs_emu: Emulator, method: str, path: str, status: int
) -> None:
    """Unknown paths are 404 and known paths with the wrong method 405, both with an error."""
    async with session.request(
        method, docs_emu.base_url + path, headers=basic(docs_emu.api_key)
    ) as resp:
        assert resp.status == status
        assert "error" in await resp.json()


async def test_body_too_large_is_413(session: aiohttp.ClientSession) -> None:
    """A body over max_body gets 413, and the emulator keeps serving."""
    from closefunnel.emulator import EmulatorConfig

    async with Emulator(EmulatorConfig(dataset="docs-example", max_body=1000)) as emu:
        big = {**DOCS_REQUEST, "users": ["user_" + "x" * 50] * 100}
        status, _, body = await post_totals(session, emu, big)
        assert status == 413
        assert "error" in json.loads(body)
        status, _, _ = await post_totals(session, emu, DOCS_REQUEST)
        assert status == 200


async def test_auth_failures_are_401(session: aiohttp.ClientSession, docs_emu: Emulator) -> None:
    """No auth, an unknown key, a non-empty password, or a bad token each get 401."""
    url = docs_emu.base_url + TOTALS
    bad = [
        {},
        basic("api_unknown.secret"),
        basic(docs_emu.api_key, "password"),
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": f"Basic {docs_emu.api_key}"},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": docs_emu.token},
    ]
    for headers in bad:
        async with session.post(url, json=DOCS_REQUEST, headers=headers) as resp:
            assert resp.status == 401, headers
            assert "could not verify" in (await resp.json())["error"]
    assert [e.key_id for e in docs_emu.log] == [None] * len(bad)


async def test_bearer_token_and_all_keys_work(session: aiohttp.ClientSession) -> None:
    """The OAuth token and every API key authenticate; the log never holds a secret."""
    from closefunnel.emulator import EmulatorConfig

    async with Emulator(EmulatorConfig(dataset="docs-example", keys=3)) as emu:
        assert len(set(emu.api_keys)) == 3
        assert emu.api_key == emu.api_keys[0]
        for key in emu.api_keys:
            assert key.startswith("api_")
            assert "." in key
            async with session.get(emu.base_url + "me/", headers=basic(key)) as resp:
                assert resp.status == 200
        auth = {"Authorization": f"Bearer {emu.token}"}
        async with session.post(emu.base_url + TOTALS, json=DOCS_REQUEST, headers=auth) as resp:
            assert resp.status == 200
        ids = [e.key_id for e in emu.log]
        assert ids == [k.split(".")[0] for k in emu.api_keys] + [emu.oauth_key_id]
        logged = repr(emu.log) + repr(emu) + repr(emu.dataset)
        for secret in [*emu.api_keys, emu.token]:
            assert secret not in logged
            assert secret.split(".")[-1] not in logged


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "pipeline",
        "type",
        "report_relative_range",
        "report_datetime_range",
        "cohort_relative_range",
        "cohort_datetime_range",
        "compared_relative_range",
        "compared_datetime_range",
        "compared_custom_range",
        "query",
        "users",
    ]
)
good_values = st.sampled_from(
    [
        DOCS_REQUEST["pipeline"],
        "active-stage-cohort",
        "created-cohort",
        "this-month",
        "last-year",
        "all-time",
        "same-days-last-month",
        RANGE,
        {"start": "2024-03-31T00:00:00+05:30", "end": "2024-05-31T23:00:00-02:00"},
        DOCS_REQUEST["query"],
        DOCS_REQUEST["users"],
        ["group_docsFounders"],
        [],
    ]
)
bodies = st.dictionaries(field_names, good_values | json_values, max_size=8) | json_values


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies, tz=st.sampled_from([None, "0", "-2.5", "13", "x"]))
async def test_fuzzed_bodies_never_get_500(
    session: aiohttp.ClientSession, docs_emu: Emulator, body: object, tz: str | None
) -> None:
    """Random bodies get 200/400/404, never a 5xx, and the emulator records no internal error."""
    headers = {} if tz is None else {"X-TZ-Offset": tz}
    status, _, raw = await post_totals(session, docs_emu, body, headers=headers)
    assert status in (200, 400, 404), raw
    assert not docs_emu.internal_errors
    if status == 400:
        data = json.loads(raw)
        assert data["errors"] or data["field-errors"]
