"""The OpenAPI response models mirror the library's attrs values, field for field, by type."""

from __future__ import annotations

import types
import typing
from datetime import datetime
from typing import Any

import attrs
import pydantic
import pytest

import closefunnel as cf
from closefunnel import fastapi as cf_fastapi

PAIRS = [
    (cf.FunnelMetrics, cf_fastapi.FunnelMetricsModel),
    (cf.UserFunnelMetrics, cf_fastapi.UserFunnelMetricsModel),
    (cf.FunnelTotals, cf_fastapi.FunnelTotalsModel),
    (cf.Delta, cf_fastapi.DeltaModel),
    (cf.MetricDeltas, cf_fastapi.MetricDeltasModel),
    (cf.UserDeltas, cf_fastapi.UserDeltasModel),
    (cf.ComparedPeriod, cf_fastapi.ComparedPeriodModel),
    (cf.FunnelComparison, cf_fastapi.FunnelComparisonModel),
    (cf.DateRange, cf_fastapi.DateRangeModel),
    (cf.PipelineStatus, cf_fastapi.PipelineStatusModel),
    (cf.Pipeline, cf_fastapi.PipelineModel),
    (cf.User, cf_fastapi.UserModel),
]

#: Properties the web JSON carries next to the fields (the resolved ranges, the name to show).
PROPERTIES: dict[type, tuple[str, ...]] = {
    cf.ComparedPeriod: ("compared_range",),
    cf.FunnelComparison: ("base_range",),
    cf.User: ("name",),
}


#: Fields the web JSON leaves out on purpose: /users gives the dashboard names to show,
#: not the organization's email addresses.
OMITTED: dict[type, tuple[str, ...]] = {cf.User: ("email",)}


def _members(value: type) -> dict[str, Any]:
    """The fields of *value* and the properties the JSON adds, with their types."""
    hints = typing.get_type_hints(value)
    members = {
        field.name: hints[field.name]
        for field in attrs.fields(value)
        if field.name not in OMITTED.get(value, ())
    }
    for name in PROPERTIES.get(value, ()):
        prop = getattr(value, name)
        assert isinstance(prop, property), name
        members[name] = typing.get_type_hints(prop.fget)["return"]
    return members


@pytest.mark.parametrize(("value", "model"), PAIRS, ids=[value.__name__ for value, _ in PAIRS])
def test_schema_model_has_the_same_fields(value: type, model: type[pydantic.BaseModel]) -> None:
    """A field added to or dropped from a value shows in the OpenAPI schema too."""
    assert set(model.model_fields) == set(_members(value))


#: What each attrs value becomes in JSON, where the types differ in Python.
WIRE_MODELS: dict[type, type] = dict(PAIRS)


def _wire(annotation: Any) -> Any:
    """*annotation* of an attrs field as the JSON response carries it, in pydantic terms."""
    if annotation in WIRE_MODELS:
        return WIRE_MODELS[annotation]
    if annotation is datetime:
        return str  # ISO 8601 text
    origin = typing.get_origin(annotation)
    if origin is tuple:
        item, ellipsis = typing.get_args(annotation)
        assert ellipsis is Ellipsis
        return list[_wire(item)]  # type: ignore[misc]
    if origin in (types.UnionType, typing.Union):
        return frozenset(_wire(arg) for arg in typing.get_args(annotation))
    return annotation


def _pydantic(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        return frozenset(_pydantic(arg) for arg in typing.get_args(annotation))
    if origin is list:
        (item,) = typing.get_args(annotation)
        return list[_pydantic(item)]  # type: ignore[misc]
    return annotation


@pytest.mark.parametrize(("value", "model"), PAIRS, ids=[value.__name__ for value, _ in PAIRS])
def test_schema_model_has_the_same_field_types(
    value: type, model: type[pydantic.BaseModel]
) -> None:
    """A field whose type changes (int to float, optional, a nested value) changes both."""
    expected = {name: _wire(annotation) for name, annotation in _members(value).items()}
    actual = {name: _pydantic(info.annotation) for name, info in model.model_fields.items()}
    assert actual == expected


def test_the_type_check_sees_a_difference() -> None:
    """The mapping is not so loose that everything matches."""
    assert _wire(int | None) != _pydantic(float | None)
    assert _wire(tuple[cf.Pipeline, ...]) == _pydantic(list[cf_fastapi.PipelineModel])
    assert _wire(tuple[cf.Pipeline, ...]) != _pydantic(list[cf_fastapi.PipelineStatusModel])
