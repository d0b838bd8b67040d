"""The converter's fast path for reports gives exactly what the cattrs hooks give."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closefunnel import METRIC_NAMES, FunnelTotals, ResponseDecodeError, make_converter
from closefunnel._convert import CONVERTER, STRICT_CONVERTER, decode

_SLOW = {False: make_converter(detailed=True), True: make_converter(strict=True, detailed=True)}
_value = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3)
)


def _row(values: st.SearchStrategy[Any], *, user: bool) -> st.SearchStrategy[dict[str, Any]]:
    names = [*METRIC_NAMES, "user_id"] if user else list(METRIC_NAMES)
    fixed = st.fixed_dictionaries(dict.fromkeys(names, values))
    extra = st.dictionaries(st.sampled_from(["extra", *names]), values, max_size=1)
    return st.builds(lambda a, b: {**a, **b}, fixed, extra)


_good = st.integers(0, 10**9) | st.floats(0, 1e9)
_reports = st.fixed_dictionaries(
    {
        "aggregations": st.none() | _row(_good | _value, user=False),
        "data": st.lists(_row(_good | _value, user=True), max_size=3),
    }
)


def _outcome(conv: Any, data: Any) -> Any:
    try:
        return conv.structure(data, FunnelTotals)
    except Exception:
        return "error"


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(data=_reports)
def test_fast_path_matches_cattrs(data: dict[str, Any]) -> None:
    """Same value (types included) or an error on both paths, lenient and strict."""
    for strict, fast in ((False, CONVERTER), (True, STRICT_CONVERTER)):
        got, want = _outcome(fast, data), _outcome(_SLOW[strict], data)
        assert got == want
        if got != "error":
            pairs = zip(got.data, want.data, strict=True)
            for a, b in pairs:
                assert [type(getattr(a, n)) for n in METRIC_NAMES] == [
                    type(getattr(b, n)) for n in METRIC_NAMES
                ]


def test_errors_still_name_the_field() -> None:
    """A bad row value still raises ResponseDecodeError naming its path."""
    row = dict.fromkeys(METRIC_NAMES, 1) | {"user_id": "u", "count": "x"}
    with pytest.raises(ResponseDecodeError, match=r"data\[0\]\.count"):
        decode({"aggregations": None, "data": [row]}, FunnelTotals)
