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
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Final, TypeVar, get_args, get_origin

import attrs
import cattrs
import orjson
from cattrs.cols import homogenous_tuple_structure_factory, list_structure_factory
from cattrs.preconf.orjson import OrjsonConverter
from cattrs.preconf.orjson import make_converter as _make_orjson_converter

from closefunnel._errors import ResponseDecodeError
from closefunnel._query import DateRange, FunnelQuery

__all__ = [
    "CONVERTER",
    "STRICT_CONVERTER",
    "csv_value",
    "decode",
    "decode_json",
    "fast_structure",
    "make_converter",
    "read_csv_records",
    "write_csv_records",
]

T = TypeVar("T")
C = TypeVar("C", bound=type)


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


_FAST_MARK: Final = "__closefunnel_fast__"


def fast_structure(cls: C) -> C:
    """
    Class decorator: decode *cls* (a report: fields that are ``Row | None`` or
    ``tuple[Row, ...]`` of flat rows) on the fast path. The mark is read lazily, when a
    converter first structures the class, so this module needs no model imported.
    """
    setattr(cls, _FAST_MARK, True)
    return cls


def _is_fast(cls: Any) -> bool:
    return isinstance(cls, type) and bool(cls.__dict__.get(_FAST_MARK, False))


def _fast_report_factory(*, strict: bool) -> Callable[[Any, Any], Callable[[Any, Any], Any]]:
    def factory(cls: Any, conv: Any) -> Callable[[Any, Any], Any]:
        slow: Callable[[Any, Any], Any] = conv.gen_structure_attrs_fromdict(cls)
        plan: list[tuple[str, bool, Callable[[Any], Any]]] = []
        extras: list[tuple[str, Any]] = []
        for field in attrs.fields(attrs.resolve_types(cls)):
            args = get_args(field.type)
            if field.default is not attrs.NOTHING:  # optional, not a row (a report's range)
                extras.append((field.name, field.type))
            elif get_origin(field.type) is tuple and len(args) == 2 and args[1] is Ellipsis:
                plan.append((field.name, True, _fast_row_structure(args[0], strict=strict)))
            elif len(args) == 2 and type(None) in args:
                row = args[0] if args[1] is type(None) else args[1]
                plan.append((field.name, False, _fast_row_structure(row, strict=strict)))
            else:  # not a report's shape: no fast path for it
                return slow
        names = frozenset(name for name, _, _ in plan) | {name for name, _ in extras}

        def structure(value: Any, cl: Any) -> Any:
            if type(value) is dict and (not strict or value.keys() <= names):
                try:
                    kwargs: dict[str, Any] = {}
                    for name, many, row in plan:
                        item = value[name]
                        if many:
                            if type(item) is not list:
                                raise _Mismatch
                            kwargs[name] = tuple([row(entry) for entry in item])
                        else:
                            kwargs[name] = None if item is None else row(item)
                    for name, type_ in extras:
                        item = value.get(name)
                        if item is not None:
                            kwargs[name] = conv.structure(item, type_)
                    return cls(**kwargs)
                except (_Mismatch, KeyError):
                    pass
            return slow(value, cl)

        return structure

    return factory


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
        conv.register_structure_hook_factory(_is_fast, _fast_report_factory(strict=strict))
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


def read_csv_records(
    text: str | bytes, columns: tuple[str, ...], *, text_columns: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """
    The rows of a CSV report as records, for the converter to structure.

    A header row, then one row per record. Columns are matched by name, in any order,
    and each of *columns* must be there; an empty cell is null, a number a number, and a
    cell of *text_columns* stays the text it is.

    Raises:
        ResponseDecodeError: not decodable text, a missing column or a ragged row.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ResponseDecodeError(f"CSV report is not UTF-8: {exc}") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        raise ResponseDecodeError(f"response is not valid CSV: {exc}") from None
    rows = [row for row in rows if row]
    if not rows:
        raise ResponseDecodeError("CSV report is empty: expected a header row")
    header = [name.strip().lstrip("\ufeff") for name in rows[0]]
    missing = [name for name in columns if name not in header]
    if missing:
        raise ResponseDecodeError(f"CSV report lacks column(s): {', '.join(missing)}")
    if len(set(header)) != len(header):
        raise ResponseDecodeError("CSV report repeats a column name")
    kept = [(name, header.index(name)) for name in text_columns]
    records = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ResponseDecodeError(
                f"CSV row {number} has {len(row)} cells, the header has {len(header)}"
            )
        item: dict[str, Any] = dict(zip(header, map(_csv_cell, row), strict=True))
        for name, position in kept:
            item[name] = row[position].strip()
        records.append(item)
    return records


def csv_value(value: object) -> str:
    """A CSV cell for *value*: empty for null, floats exactly (``repr``), else ``str``."""
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def write_csv_records(columns: tuple[str, ...], records: Iterable[object]) -> str:
    """*records*' attributes named by *columns*, as CSV with a header row (null: empty)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for record in records:
        writer.writerow([csv_value(getattr(record, name)) for name in columns])
    return out.getvalue()
