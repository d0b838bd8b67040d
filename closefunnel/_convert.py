"""
The one cattrs converter, and the decode boundary for everything Close sends.

``make_converter(strict=False)`` is lenient toward keys Close may add later (APIs
grow); ``strict=True`` forbids unknown keys, for the emulator's request checks and the
golden tests. Numbers are type-checked rather than coerced: ``"12"`` is not a count.

Decoding goes fast first (no detailed validation, orjson) and only on failure is the
input structured again with detailed validation, so the error can name every bad field
without the happy path paying for it.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, TypeVar, get_args, get_origin

import attrs
import cattrs
import orjson
from cattrs.cols import homogenous_tuple_structure_factory, list_structure_factory
from cattrs.preconf.orjson import OrjsonConverter
from cattrs.preconf.orjson import make_converter as _make_orjson_converter

from closefunnel._errors import ResponseDecodeError
from closefunnel._models import METRIC_NAMES, FunnelMetrics, FunnelTotals, UserFunnelMetrics
from closefunnel._query import DateRange, FunnelQuery

__all__ = [
    "CONVERTER",
    "CSV_COLUMNS",
    "STRICT_CONVERTER",
    "decode",
    "decode_json",
    "decode_totals_csv",
    "decode_totals_json",
    "encode_totals_csv",
    "make_converter",
]

T = TypeVar("T")

#: The columns of a per-user CSV report, in the order closefunnel writes them.
CSV_COLUMNS: Final = ("user_id", *METRIC_NAMES)


_INT64: Final = 2**63


def _structure_int(value: Any, _: type) -> int:
    # bool is an int subclass, and a JSON true is never a count.
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer() and abs(value) < _INT64:
        return int(value)
    raise TypeError(f"expected an integer, got {value!r}")


def _structure_float(value: Any, _: type) -> float:
    # Keep ints as ints so that a decoded report encodes back to the same JSON.
    if type(value) is float or type(value) is int:
        return value
    raise TypeError(f"expected a number, got {value!r}")


def _structure_str(value: Any, _: type) -> str:
    if type(value) is str:
        return value
    raise TypeError(f"expected a string, got {value!r}")


def _structure_datetime(value: Any, _: type) -> datetime:
    if type(value) is not str:
        raise TypeError(f"expected an ISO 8601 string, got {value!r}")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"datetime {value!r} has no time zone")
    return parsed


def _structure_range(value: Any, _: type) -> str | DateRange:
    if type(value) is str:
        return value
    if isinstance(value, dict):
        return DateRange(
            start=_structure_datetime(value.get("start"), datetime),
            end=_structure_datetime(value.get("end"), datetime),
        )
    raise TypeError(f"expected a range name or a {{start, end}} object, got {value!r}")


def _is_array(type_: Any) -> bool:
    origin = get_origin(type_)
    if origin is list:
        return True
    args = get_args(type_)
    return origin is tuple and len(args) == 2 and args[1] is Ellipsis


def _array_factory(type_: Any, conv: cattrs.BaseConverter) -> Callable[[Any, Any], Any]:
    # cattrs turns any iterable into a sequence, so a JSON object (its keys) or a string
    # (its characters) would pass for a list: ``"data": {}`` would be a report with no rows.
    factory = (
        list_structure_factory if get_origin(type_) is list else homogenous_tuple_structure_factory
    )
    inner = factory(type_, conv)

    def structure(value: Any, cl: Any) -> Any:
        if type(value) is not list and type(value) is not tuple:
            raise TypeError(f"expected a JSON array, got {type(value).__name__}")
        return inner(value, cl)

    return structure


# -- the fast path for reports -------------------------------------------------------------
#
# A report is a few metric rows per user, and a 10,000-user report is 110,000 numbers, so
# the generic cattrs hooks (one call per field, dispatch per type) cost more than parsing
# the JSON. The rows get a structure function generated from the models' fields that does
# the same checks inline. It only ever *accepts* what cattrs accepts, with identical
# values; anything else (a wrong type, a missing or, when strict, an unknown key, a value
# that needs converting) falls back to the cattrs hook, which then succeeds or raises
# exactly as before, so errors and the ResponseDecodeError messages are unchanged.

_NUMBER_TYPES: Final = frozenset({int, float})
# The inline check per field type: a value passes as is or the row leaves the fast path
# (an int sent as 2.0, for one, is left to the cattrs hook, which converts it).
_FIELD_CHECKS: Final[dict[Any, str]] = {
    int: "type(v) is not int",
    float: "type(v) not in _NUMBER_TYPES",
    float | None: "v is not None and type(v) not in _NUMBER_TYPES",
    str: "type(v) is not str",
}


class _Mismatch(Exception):
    """The fast path does not take this value; the cattrs hook decides."""


def _miss() -> Any:
    raise _Mismatch


def _fast_row_structure(cls: type[Any], *, strict: bool) -> Callable[[Any], Any]:
    """
    A function turning one JSON object into *cls*, or raising on anything unusual.

    A frozen attrs class without validators, converters or post-init hooks is filled
    slot by slot (``object.__setattr__``, as attrs' own ``__init__`` does for frozen
    classes, minus the per-field call overhead); any other class goes through
    ``__init__``.
    """
    fields = attrs.fields(attrs.resolve_types(cls))
    plain = not hasattr(cls, "__attrs_post_init__") and all(
        field.validator is None and field.converter is None and field.init for field in fields
    )
    lines = ["def structure(o):", "    if type(o) is not dict: _miss()"]
    if strict:
        lines.append("    if not o.keys() <= _names: _miss()")
    if plain:
        lines.append("    s = _new(_cls)")
    for field in fields:
        lines.append(f"    v = o[{field.name!r}]")
        lines.append(f"    if {_FIELD_CHECKS[field.type]}: _miss()")
        lines.append(f"    _set(s, {field.name!r}, v)" if plain else f"    {field.name} = v")
    if plain:
        lines.append("    return s")
    else:
        arguments = ", ".join(f"{field.name}={field.name}" for field in fields)
        lines.append(f"    return _cls({arguments})")
    namespace: dict[str, Any] = {
        "_cls": cls,
        "_miss": _miss,
        "_names": frozenset(field.name for field in fields),
        "_new": object.__new__,
        "_set": object.__setattr__,
        "_NUMBER_TYPES": _NUMBER_TYPES,
    }
    exec(compile("\n".join(lines), f"<closefunnel: structure {cls.__name__}>", "exec"), namespace)
    function: Callable[[Any], Any] = namespace["structure"]
    return function


def _register_fast_totals(conv: OrjsonConverter, *, strict: bool) -> None:
    slow = conv.get_structure_hook(FunnelTotals)
    metrics = _fast_row_structure(FunnelMetrics, strict=strict)
    row = _fast_row_structure(UserFunnelMetrics, strict=strict)
    top = frozenset({"aggregations", "data"})

    def structure(value: Any, cl: Any) -> FunnelTotals:
        if type(value) is dict and (not strict or value.keys() <= top):
            try:
                aggregations = value["aggregations"]
                data = value["data"]
                if type(data) is list:
                    return FunnelTotals(
                        aggregations=None if aggregations is None else metrics(aggregations),
                        data=tuple([row(item) for item in data]),
                    )
            except (_Mismatch, KeyError):
                pass
        result: FunnelTotals = slow(value, cl)
        return result

    conv.register_structure_hook(FunnelTotals, structure)


def make_converter(*, strict: bool = False, detailed: bool = False) -> OrjsonConverter:
    """
    Build closefunnel's converter.

    Args:
        strict: Forbid keys the models do not know (emulator and golden tests).
        detailed: Collect every error with its path (slower; used to explain failures).
    """
    conv = _make_orjson_converter(forbid_extra_keys=strict, detailed_validation=detailed)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(datetime, _structure_datetime)
    conv.register_structure_hook(str | DateRange, _structure_range)
    conv.register_structure_hook_factory(_is_array, _array_factory)
    conv.register_unstructure_hook(datetime, lambda value: value.isoformat())
    conv.register_unstructure_hook(DateRange, DateRange.to_body)
    conv.register_unstructure_hook(FunnelQuery, FunnelQuery.to_body)
    if not detailed:  # the detailed converters explain failures: keep cattrs' own paths
        _register_fast_totals(conv, strict=strict)
    return conv


#: The converter every decode and encode goes through.
CONVERTER: Final = make_converter()
#: The same rules, forbidding unknown keys.
STRICT_CONVERTER: Final = make_converter(strict=True)
_EXPLAIN: Final = {
    False: make_converter(detailed=True),
    True: make_converter(strict=True, detailed=True),
}


def _explain(data: Any, cls: type[Any], strict: bool, exc: Exception) -> ResponseDecodeError:
    try:
        _EXPLAIN[strict].structure(data, cls)
    except cattrs.BaseValidationError as detailed:
        messages = cattrs.transform_error(detailed, path=cls.__name__)
    except Exception as other:  # the detailed pass failed outside cattrs' own checks
        messages = [f"{cls.__name__}: {other}"]
    else:  # pragma: no cover - both converters share hooks, so both fail or neither does
        messages = [f"{cls.__name__}: {exc}"]
    summary = "; ".join(messages[:5]) + (
        f" (+{len(messages) - 5} more)" if len(messages) > 5 else ""
    )
    return ResponseDecodeError(
        f"response is not a valid {cls.__name__}: {summary}", messages=messages
    )


def decode(data: Any, cls: type[T], *, strict: bool = False) -> T:
    """
    Structure already-parsed JSON *data* into *cls*.

    Raises:
        ResponseDecodeError: naming every field that does not fit.
    """
    try:
        return (STRICT_CONVERTER if strict else CONVERTER).structure(data, cls)
    except Exception as exc:
        raise _explain(data, cls, strict, exc) from exc


def decode_json(body: bytes | str, cls: type[T], *, strict: bool = False) -> T:
    """Parse JSON *body* and structure it into *cls*; see :func:`decode`."""
    try:
        data = orjson.loads(body)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise ResponseDecodeError(f"response is not valid JSON: {exc}") from exc
    return decode(data, cls, strict=strict)


def _unique_users(totals: FunnelTotals) -> FunnelTotals:
    """
    *totals*, after checking no ``user_id`` is listed twice: the merge joins rows by
    user, and a second row would silently replace the first.
    """
    rows = totals.data
    ids = {row.user_id for row in rows}
    if len(ids) != len(rows):
        counts = Counter(row.user_id for row in rows)
        repeated = sorted(user_id for user_id, count in counts.items() if count > 1)
        shown = ", ".join(repr(user_id) for user_id in repeated[:5])
        more = f" (+{len(repeated) - 5} more)" if len(repeated) > 5 else ""
        raise ResponseDecodeError(
            f"the report lists user_id {shown}{more} more than once",
            messages=[f"FunnelTotals.data: user_id {user_id!r} repeated" for user_id in repeated],
        )
    return totals


def decode_totals_json(body: bytes | str, *, strict: bool = False) -> FunnelTotals:
    """Decode a JSON funnel totals report (each ``user_id`` at most once)."""
    return _unique_users(decode_json(body, FunnelTotals, strict=strict))


# Up to 18 digits: every such int fits in 64 bits (a longer one is left to the converter
# to reject, rather than int() refusing past 4,300 digits or orjson past 64 bits).
_INT: Final = re.compile(r"-?[0-9]{1,18}\Z")
# Plain decimal numbers: ``float()`` alone would also take "nan", "inf", "1_000", "\u0661".
_FLOAT: Final = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")


def _csv_cell(cell: str) -> int | float | str | None:
    cell = cell.strip()
    if not cell:
        return None
    if _INT.match(cell):
        return int(cell)
    if _FLOAT.match(cell) and math.isfinite(number := float(cell)):
        return number
    return cell  # left for the converter to reject (or accept, for user_id)


def decode_totals_csv(text: str | bytes, *, strict: bool = False) -> FunnelTotals:
    """
    Decode a per-user CSV report: a header row, then one row per user.

    Columns are matched by name, in any order; an empty cell is null. The result has
    ``aggregations=None`` because Close's CSV carries per-user rows only.

    Raises:
        ResponseDecodeError: not decodable text, a missing column, a ragged row, a bad
            value or a ``user_id`` listed twice.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ResponseDecodeError(f"CSV report is not UTF-8: {exc}") from exc
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        raise ResponseDecodeError(f"response is not valid CSV: {exc}") from exc
    rows = [row for row in rows if row]
    if not rows:
        raise ResponseDecodeError("CSV report is empty: expected a header row")
    header = [name.strip().lstrip("\ufeff") for name in rows[0]]
    missing = [name for name in CSV_COLUMNS if name not in header]
    if missing:
        raise ResponseDecodeError(f"CSV report lacks column(s): {', '.join(missing)}")
    if len(set(header)) != len(header):
        raise ResponseDecodeError("CSV report repeats a column name")
    data = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ResponseDecodeError(
                f"CSV row {number} has {len(row)} cells, the header has {len(header)}"
            )
        item: dict[str, Any] = dict(zip(header, map(_csv_cell, row), strict=True))
        user_id = row[header.index("user_id")].strip()
        item["user_id"] = user_id
        data.append(item)
    return _unique_users(decode({"aggregations": None, "data": data}, FunnelTotals, strict=strict))


def _csv_value(value: object) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def encode_totals_csv(totals: FunnelTotals) -> str:
    """Write *totals*' per-user rows as CSV with :data:`CSV_COLUMNS`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in totals.data:
        writer.writerow([_csv_value(getattr(row, name)) for name in CSV_COLUMNS])
    return out.getvalue()
