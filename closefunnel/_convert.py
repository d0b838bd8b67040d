"""
The one cattrs converter, and the decode boundary for everything Close sends.

``make_converter(strict=False)`` is lenient toward keys Close may add later (APIs
grow); ``strict=True`` forbids unknown keys, for the emulator's request checks and the
golden tests. Numbers are type-checked rather than coerced: ``"12"`` is not a count.

Decoding goes fast first and only on failure is the input structured again with detailed
validation, so the error can name every bad field without the happy path paying for it.
A report's JSON (and a clean CSV report, turned into JSON) is read by msgspec straight
into the frozen row classes; where msgspec steps aside, orjson and the converter's own
generated row functions decide, exactly as they did before msgspec was used.
"""

from __future__ import annotations

import csv
import io
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar, get_args, get_origin

import attrs
import cattrs
import msgspec
import msgspec.structs
import orjson
from cattrs.cols import homogenous_tuple_structure_factory, list_structure_factory
from cattrs.preconf.orjson import OrjsonConverter
from cattrs.preconf.orjson import make_converter as _make_orjson_converter

from closefunnel._errors import ResponseDecodeError
from closefunnel._query import DateRange, FunnelQuery

__all__ = [
    "CONVERTER",
    "STRICT_CONVERTER",
    "csv_as_json",
    "csv_records",
    "csv_text_as_json",
    "csv_text_rows",
    "csv_value",
    "decode",
    "decode_fast",
    "decode_json",
    "fast_structure",
    "make_converter",
    "read_csv_records",
    "read_csv_table",
    "structure_fast",
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


def _structure_optional_float(value: Any, _: type) -> float | None:
    return None if value is None else _structure_float(value, float)


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
    int | float: "type(v) not in _NUMBER_TYPES",
    float | None: "v is not None and type(v) not in _NUMBER_TYPES",
    int | float | None: "v is not None and type(v) not in _NUMBER_TYPES",
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
    ``tuple[Row, ...]`` of flat rows, plus optional fields of any type) on the fast paths
    (msgspec for JSON bodies, generated row functions in the converter). The mark is read
    lazily, when a report is first decoded, so this module needs no model imported.
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
    # ``int | float`` says what a rate field holds (Close sends ``0`` and ``0.25`` alike);
    # cattrs' own union passthrough would take a bool for it, so these are predicate hooks
    # (checked before the passthrough, which ``register_structure_hook`` does not override).
    conv.register_structure_hook_func(lambda t: t == int | float, _structure_float)
    conv.register_structure_hook_func(lambda t: t == int | float | None, _structure_optional_float)
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


# -- the fast JSON path for reports --------------------------------------------------------
#
# msgspec parses a report's bytes straight into the frozen row classes, in C, without the
# intermediate dicts: less than ``json.loads`` alone costs. It only ever *accepts*
# what the converter accepts, with identical values, because it runs only where its rules
# and ours are the same: rows whose fields are all ``int``, ``str``, ``int | float`` or
# ``int | float | None`` (msgspec, like our hooks, takes no bool for a number, no "12" for
# an int, keeps 1 an int under ``int | float``, and parses floats correctly rounded), in
# the lenient mode (unknown keys skipped). Where the rules could differ it steps aside and
# the classic path (orjson, then the converter, then the explaining pass on failure)
# decides, so every error and every edge value is exactly as before:
# - anything msgspec refuses (a wrong type, a missing key, ``2.0`` for a count, a syntax
#   error): the classic path then converts, or explains the failure;
# - a number of 19 or more digits: orjson turns integers past 64 bits into floats and
#   msgspec keeps them exact, so such a body (rare: Python never writes floats that long)
#   is left to the classic path, which refuses it for a count as before;
# - text that is not UTF-8, anywhere (msgspec does not check keys it skips).
# One difference is kept on purpose: inside a key closefunnel ignores, a number too large
# for a double (``1e400``) no longer fails the report (orjson refuses it, msgspec skips
# it); in a field closefunnel reads it is refused exactly as before.

_FAST_ROW_TYPES: Final = frozenset({int, str, int | float, int | float | None})
# A JSON number starts after one of ``:,[``, whitespace or ``-``. Mapping those to ``:``
# and digits to ``0`` turns "is there a number of 19+ digits" into one bytes.find.
_NUMBER_MARKS: Final = bytes.maketrans(b"0123456789:,[ \t\r\n-", b"0" * 10 + b":" * 8)
_LONG_NUMBER: Final = b":" + b"0" * 19


def _fast_row(type_: Any) -> bool:
    """Whether msgspec decodes *type_* (a row class) exactly as the converter does."""
    if not (isinstance(type_, type) and attrs.has(type_)) or hasattr(type_, "__attrs_post_init__"):
        return False
    return all(
        field.type in _FAST_ROW_TYPES and field.validator is None and field.converter is None
        for field in attrs.fields(attrs.resolve_types(type_))
    )


@attrs.frozen
class _WirePlan:
    """How one report class is read by msgspec: the decoder and, per field, its treatment."""

    decoder: msgspec.json.Decoder[Any]
    #: (name, type, generic): a generic field is decoded to plain JSON values by msgspec
    #: and structured by the converter; a row field arrives as the finished value.
    fields: tuple[tuple[str, Any, bool], ...]
    #: Every field a required row field: msgspec's value is the keyword arguments as is.
    rows_only: bool = False


_WIRE_PLANS: dict[tuple[type, frozenset[str]], _WirePlan | None] = {}
_NOTHING_GIVEN: Final[frozenset[str]] = frozenset()


def _wire_plan(cls: type[Any], given: frozenset[str] = _NOTHING_GIVEN) -> _WirePlan | None:
    """
    The msgspec plan for report class *cls*, or None when it has no row fields. Fields
    named in *given* are not read from the body (a key of that name is skipped like any
    unknown one): the caller supplies them.
    """
    try:
        return _WIRE_PLANS[cls, given]
    except KeyError:
        pass
    plan: _WirePlan | None = None
    if _is_fast(cls):
        wire: list[tuple[str, Any, Any]] = []
        fields: list[tuple[str, Any, bool]] = []
        for field in attrs.fields(attrs.resolve_types(cls)):
            if field.name in given:
                continue
            args = get_args(field.type)
            if get_origin(field.type) is tuple and len(args) == 2 and args[1] is Ellipsis:
                row = _fast_row(args[0])
            else:
                rows = [arg for arg in args if arg is not type(None)]
                row = len(args) == 2 and len(rows) == 1 and _fast_row(rows[0])
            default = msgspec.NODEFAULT if field.default is attrs.NOTHING else msgspec.UNSET
            wire.append((field.name, field.type if row else Any, default))
            fields.append((field.name, field.type, not row))
        if not all(generic for _, _, generic in fields):
            struct = msgspec.defstruct(f"{cls.__name__}Wire", wire, kw_only=True)
            rows_only = all(
                not generic and default is msgspec.NODEFAULT
                for (_, _, generic), (_, _, default) in zip(fields, wire, strict=True)
            )
            plan = _WirePlan(msgspec.json.Decoder(struct), tuple(fields), rows_only)
    _WIRE_PLANS[cls, given] = plan
    return plan


def decode_fast(
    body: bytes | str, cls: type[T], *, given: Mapping[str, Any] | None = None
) -> T | None:
    """
    *body* as *cls* on the msgspec path, or None where the classic path must decide.
    *given* fields are set as given, never read from the body.
    """
    plan = _wire_plan(cls, frozenset(given) if given else _NOTHING_GIVEN)
    if plan is None:
        return None
    try:
        raw = body.encode() if type(body) is str else body
        if type(raw) is not bytes or _LONG_NUMBER in raw.translate(_NUMBER_MARKS):
            return None
        if not raw.isascii():  # msgspec skips unknown keys without checking their UTF-8
            raw.decode()
        return _finish(plan, plan.decoder.decode(raw), cls, given)
    except Exception:  # msgspec refused, or a generic field did not fit: ask the classic path
        return None


def _finish(plan: _WirePlan, wire: Any, cls: type[T], given: Mapping[str, Any] | None = None) -> T:
    """The report *cls* of msgspec's *wire* value: generic fields through the converter."""
    if plan.rows_only:
        kwargs = msgspec.structs.asdict(wire)
        if given:
            kwargs.update(given)
        return cls(**kwargs)
    kwargs = dict(given) if given else {}
    for name, type_, generic in plan.fields:
        value = getattr(wire, name)
        if value is not msgspec.UNSET:
            kwargs[name] = CONVERTER.structure(value, type_) if generic else value
    return cls(**kwargs)


def structure_fast(data: dict[str, Any], cls: type[T]) -> T | None:
    """
    *data* (a report's plain values that closefunnel built itself, such as CSV records)
    as *cls* through msgspec, or None where the converter must decide (see above).
    """
    plan = _wire_plan(cls)
    if plan is None:
        return None
    try:
        return _finish(plan, msgspec.convert(data, plan.decoder.type), cls)
    except Exception:  # msgspec refused, or a generic field did not fit
        return None


def decode_json(
    body: bytes | str,
    cls: type[T],
    *,
    strict: bool = False,
    given: Mapping[str, Any] | None = None,
) -> T:
    """
    Parse JSON *body* and structure it into *cls*; see :func:`decode`. Fields named in
    *given* take its values, and keys of those names in the body are ignored (as
    unknown keys are).
    """
    if not strict and (fast := decode_fast(body, cls, given=given)) is not None:
        return fast
    try:
        data = orjson.loads(body)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise ResponseDecodeError(f"response is not valid JSON: {exc}") from exc
    if not given:
        return decode(data, cls, strict=strict)
    if isinstance(data, dict):
        data = {key: value for key, value in data.items() if key not in given}
    return attrs.evolve(decode(data, cls, strict=strict), **given)  # type: ignore[misc]


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


def read_csv_table(
    text: str | bytes, columns: tuple[str, ...]
) -> tuple[list[str], list[list[str]]]:
    """
    A CSV report's header and rows, checked: each of *columns* is there, no column name
    repeats, every row has a cell per column (blank lines are skipped).

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
    body = rows[1:]
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ResponseDecodeError(
                f"CSV row {number} has {len(row)} cells, the header has {len(header)}"
            )
    return header, body


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
    return csv_records(*read_csv_table(text, columns), text_columns=text_columns)


def csv_records(
    header: list[str], body: list[list[str]], *, text_columns: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """The checked rows of :func:`read_csv_table` as records (see :func:`read_csv_records`)."""
    # Column by column: one regex over a whole column decides whether every cell is a
    # plain number, so the cells are converted by int()/float() in one pass instead of a
    # regex and a branch per cell; any column that is not that clean goes cell by cell.
    if not body:
        return []
    texts = frozenset(text_columns)
    converted = [
        [cell.strip() for cell in cells] if name in texts else _csv_column(cells)
        for name, cells in zip(header, zip(*body, strict=True), strict=True)
    ]
    return [dict(zip(header, values, strict=True)) for values in zip(*converted, strict=True)]


_INT_COLUMN: Final = re.compile(r"-?[0-9]{1,18}(?:\n-?[0-9]{1,18})*")
# Cells that are empty, ints or plain decimals, one per line (no spaces, which strip()
# would remove, so the cell-by-cell path takes those).
_NUMBER_COLUMN: Final = re.compile(
    r"(?:-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)?"
    r"(?:\n(?:-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)?)*"
)
_INFINITIES: Final = (math.inf, -math.inf)


def _number_cell(cell: str) -> int | float | None:
    # Only for cells of a column _NUMBER_COLUMN matched: the int test of _csv_cell, cheaper.
    if not cell:
        return None
    digits = cell[1:] if cell[0] == "-" else cell
    return int(cell) if len(digits) <= 18 and digits.isdigit() else float(cell)


def _csv_column(column: tuple[str, ...]) -> list[Any]:
    """The cells of one numeric CSV column as :func:`_csv_cell` reads them, faster."""
    joined = "\n".join(column)
    if joined.count("\n") == len(column) - 1:  # no cell holds a line break of its own
        if _INT_COLUMN.fullmatch(joined):
            return list(map(int, column))
        if _NUMBER_COLUMN.fullmatch(joined):
            values = list(map(_number_cell, column))
            if not any(value in _INFINITIES for value in values if type(value) is float):
                return values
    return list(map(_csv_cell, column))


# -- CSV as JSON, for the fast path ----------------------------------------------------------
#
# A clean CSV report is turned into the JSON array of its rows by string formatting, a
# column at a time, and msgspec then reads it like any JSON report (decode_fast): no
# per-cell Python. A number column qualifies when its cells are made of number characters
# only (``0-9 . e E + -``), so no cell can add JSON structure; JSON's strict grammar and
# decode_fast then keep the meaning _csv_cell gives: an empty cell is null; an int of at
# most 18 digits is that int; a decimal is the correctly rounded float; "007", "1.", ".5",
# "+5" are not JSON, and a 19+ digit number or an infinite float is refused by
# decode_fast, so such a report (like one with spaces or a line break in a cell) goes to
# the cell-by-cell records instead.

_JSON_NUMBER_CHARS: Final = re.compile(r"[0-9.eE+\-\n]*")
# Text that can sit between JSON quotes as it is (line breaks are the join's own).
_JSON_UNSAFE_TEXT: Final = re.compile(r'["\\\x00-\x09\x0b-\x1f]')


def csv_as_json(
    header: list[str],
    body: list[list[str]],
    columns: tuple[str, ...],
    *,
    text_columns: tuple[str, ...] = (),
) -> bytes | None:
    """
    The JSON array of *body*'s rows (the *columns* only, text columns stripped, as
    :func:`csv_records` reads them), or None where the cell-by-cell reading must decide.
    """
    if not body:
        return b"[]"
    by_name = dict(zip(header, zip(*body, strict=True), strict=True))
    return _rows_json(by_name, columns, text_columns)


def csv_text_as_json(
    text: str, columns: tuple[str, ...], *, text_columns: tuple[str, ...] = ()
) -> bytes | None:
    """
    :func:`csv_as_json` of a CSV text with no quoting at all, read without csv.reader:
    one split into a flat list of cells and a slice per column, so no list per row is
    made (50,000 of them cost more in GC passes than the parse). None for any other text,
    or anything :func:`read_csv_table` would refuse, so that it decides (and explains).
    """
    unquoted = _unquoted(text)
    if unquoted is None:
        return None
    lines = [line for line in unquoted.split("\n") if line]
    if not lines:
        return None
    header = [name.strip().lstrip("\ufeff") for name in lines[0].split(",")]
    width = len(header)
    if len(set(header)) != width or not set(columns) <= set(header):
        return None
    body = lines[1:]
    if not body:
        return b"[]"
    if set(map(_COMMAS, body)) != {width - 1}:  # a ragged row
        return None
    cells = ",".join(body).split(",")
    by_name = {name: cells[index::width] for index, name in enumerate(header)}
    return _rows_json(by_name, columns, text_columns)


def _unquoted(text: str) -> str | None:
    """
    *text* with its CRLF line ends made LF, when it has no quote character (so that
    csv.reader's cells are exactly the text between commas, and its rows the lines),
    or None: quoted text, a lone CR (a line end to csv.reader too) or a NUL (an error to
    it) is left to csv.reader.
    """
    if '"' in text or "\x00" in text:
        return None
    text = text.replace("\r\n", "\n")
    return None if "\r" in text else text


_COMMAS: Final = operator.methodcaller("count", ",")
_QUOTE_FIRST_CELL: Final = operator.methodcaller("replace", ",", '",', 1)
_ROW_PLANS: dict[tuple[type, tuple[str, ...]], msgspec.json.Decoder[Any] | None] = {}


def csv_text_rows(text: str, row_type: type[T], *, text_column: str) -> tuple[T, ...] | None:
    """
    The rows of a clean CSV report as *row_type* instances, or None where the other
    readings must decide: the fastest path, for the CSV Close (and closefunnel) writes.

    *text_column* comes first and the header names exactly *row_type*'s fields. Every
    line becomes a JSON array by a few whole-text replacements (an empty cell is
    ``null``, the first cell quoted), msgspec reads the arrays into a row struct of the
    same field types in C, and converts them into *row_type*: no Python per cell, no
    string formatting per row. It steps aside (None) wherever JSON could read a line
    differently from :func:`_csv_cell`: quotes, backslashes, spaces or tabs (padding the
    text cell would keep it), text that is not ASCII, a literal ``null`` (JSON's, not an
    empty cell), a blank or ragged line; the JSON grammar and msgspec's types refuse the
    rest (``007``, ``1.``, ``+5``, ``nan``, a float for a count), as does the scan for
    19+ digit numbers that :func:`decode_fast` makes.
    """
    unquoted = _unquoted(text)
    if unquoted is None or "\\" in unquoted or "null" in unquoted or not unquoted.isascii():
        return None
    head, _, body = unquoted.partition("\n")
    header = tuple(name.strip().lstrip("\ufeff") for name in head.split(","))
    decoder = _row_plan(row_type, header, text_column)
    body = body.rstrip("\n")
    if decoder is None or " " in body or "\t" in body or "\n\n" in body:
        return None
    if not body:
        return ()
    lines = body.replace(",,", ",null,").replace(",,", ",null,").replace(",\n", ",null\n")
    lines = lines + "null" if lines.endswith(",") else lines
    rows = lines.split("\n")
    if set(map(_COMMAS, rows)) != {len(header) - 1}:  # a ragged line
        return None
    raw = ('[["' + '],["'.join(map(_QUOTE_FIRST_CELL, rows)) + "]]").encode()
    if _LONG_NUMBER in raw.translate(_NUMBER_MARKS):
        return None
    try:
        structs = decoder.decode(raw)
        return msgspec.convert(structs, tuple[row_type, ...], from_attributes=True)  # type: ignore[valid-type]
    except Exception:  # msgspec refused a cell: the other readings decide (and explain)
        return None


def _row_plan(
    row_type: type[Any], header: tuple[str, ...], text_column: str
) -> msgspec.json.Decoder[Any] | None:
    """The decoder of one CSV line per array for *header*, or None if it does not fit."""
    key = (row_type, header)
    try:
        return _ROW_PLANS[key]
    except KeyError:
        pass
    decoder = None
    fields = {field.name: field.type for field in attrs.fields(attrs.resolve_types(row_type))}
    if (
        _fast_row(row_type)
        and header[:1] == (text_column,)
        and len(set(header)) == len(header)
        and set(header) == set(fields)
    ):
        struct = msgspec.defstruct(
            f"{row_type.__name__}CsvLine",
            [(name, fields[name]) for name in header],
            array_like=True,
            gc=False,
        )
        decoder = msgspec.json.Decoder(list[struct])  # type: ignore[valid-type]
    if len(_ROW_PLANS) < 64:  # a header order is chosen upstream: keep a few
        _ROW_PLANS[key] = decoder
    return decoder


def _rows_json(
    by_name: Mapping[str, Sequence[str]], columns: tuple[str, ...], text_columns: tuple[str, ...]
) -> bytes | None:
    parts: list[str] = []
    cells: list[Any] = []
    for name in columns:
        column = by_name[name]
        if name in text_columns:
            stripped = [cell.strip() for cell in column]
            joined = "\n".join(stripped)
            if joined.count("\n") == len(stripped) - 1 and not _JSON_UNSAFE_TEXT.search(joined):
                parts.append(f'"{name}":"%s"')
                cells.append(stripped)
            else:
                parts.append(f'"{name}":%s')
                try:
                    cells.append([orjson.dumps(cell).decode() for cell in stripped])
                except orjson.JSONEncodeError:  # a lone surrogate: not UTF-8
                    return None
            continue
        joined = "\n".join(column)
        if joined.count("\n") != len(column) - 1 or not _JSON_NUMBER_CHARS.fullmatch(joined):
            return None
        parts.append(f'"{name}":%s')
        cells.append([cell or "null" for cell in column] if "" in column else column)
    template = "{" + ",".join(parts) + "}"
    try:
        return ("[" + ",".join([template % row for row in zip(*cells, strict=True)]) + "]").encode()
    except UnicodeEncodeError:
        return None


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
