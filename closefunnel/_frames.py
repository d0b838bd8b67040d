"""
The tidy records as pandas and polars DataFrames, with dtypes chosen rather than guessed.

Neither library is a dependency of closefunnel: each is an extra (``closefunnel[pandas]``,
``closefunnel[polars]``), imported only when a frame is asked for, and a missing one is an
``ImportError`` that names the extra to install.

Dtypes, the same in both libraries:

- ``base_start`` ... ``compared_end``: timezone-aware datetimes in UTC at microsecond
  resolution (``datetime64[us, UTC]``, ``Datetime("us", "UTC")``). UTC, because the periods
  of one frame (or of frames concatenated across pipelines and clients) may have been
  resolved in different zones and a column has one; microseconds, because that is a
  Python datetime's precision and it holds any year (nanoseconds stop in 2262).
  ``.dt.tz_convert(...)`` shows them on a local calendar. Missing bounds are NaT/null.
- ``base``, ``compared``, ``delta``, ``change``: nullable 64-bit floats (pandas
  ``Float64``, polars ``Float64``), null where the value is. One column holds all ten
  metrics of a long table, so it cannot be an integer column for counts and a float one
  for rates at once; every count and cent amount up to 2**53 is exact in it. Pivot by
  ``metric`` and cast (``.astype("Int64")``) for integer columns. The exact Python ints
  are in ``to_records()``.
- ``metric``: categorical with the ten metric names as categories, in Close's order, so
  frames of different reports concatenate without losing it.
- ``period``, ``user_id``, ``user_name``: strings (pandas ``string``, polars ``String``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from closefunnel._vocabulary import METRIC_NAMES

if TYPE_CHECKING:
    import pandas
    import polars

__all__ = ["pandas_frame", "polars_frame"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_DATETIMES: Final = frozenset({"base_start", "base_end", "compared_start", "compared_end"})
_NUMBERS: Final = frozenset({"base", "compared", "delta", "change"})


def _library(name: str, method: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(
            f"{method}() needs {name}, which is not installed: pip install 'closefunnel[{name}]'",
            name=name,
        ) from exc


def _micros(values: Iterable[datetime | None]) -> list[int | None]:
    # Whole microseconds since the epoch: exact, and free of each library's rules for
    # turning aware datetimes of mixed zones into one column (which changed over versions).
    return [None if value is None else (value - _EPOCH) // _MICROSECOND for value in values]


def _floats(values: Iterable[int | float | None]) -> list[float | None]:
    return [None if value is None else float(value) for value in values]


def _columns(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[list[Any]]:
    found = [list(column) for column in zip(*rows, strict=True)]
    return found or [[] for _ in columns]


def pandas_frame(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, method: str
) -> pandas.DataFrame:
    """A pandas DataFrame of *rows* (tuples in *columns* order); *method* names the caller."""
    pd = _library("pandas", method)
    np = importlib.import_module("numpy")  # pandas depends on it
    data: dict[str, Any] = {}
    for name, values in zip(columns, _columns(columns, rows), strict=True):
        if name in _DATETIMES:
            stamps = np.array(_micros(values), dtype="datetime64[us]")
            data[name] = pd.Series(stamps).dt.tz_localize("UTC")
        elif name in _NUMBERS:
            data[name] = pd.array(_floats(values), dtype="Float64")
        elif name == "metric":
            data[name] = pd.Categorical(values, categories=METRIC_NAMES)
        else:
            data[name] = pd.array(values, dtype="string")
    return pd.DataFrame(data, columns=list(columns))


def polars_frame(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, method: str
) -> polars.DataFrame:
    """A polars DataFrame of *rows* (tuples in *columns* order); *method* names the caller."""
    pl = _library("polars", method)
    series = []
    for name, values in zip(columns, _columns(columns, rows), strict=True):
        if name in _DATETIMES:
            micros = pl.Series(name, _micros(values), dtype=pl.Int64)
            series.append(micros.cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
        elif name in _NUMBERS:
            series.append(pl.Series(name, _floats(values), dtype=pl.Float64))
        elif name == "metric":
            series.append(pl.Series(name, values, dtype=pl.Enum(list(METRIC_NAMES))))
        else:
            series.append(pl.Series(name, values, dtype=pl.String))
    frame: polars.DataFrame = pl.DataFrame(series)
    return frame
