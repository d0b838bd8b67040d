"""The OpenAPI response models mirror the library's attrs values, field for field."""

from __future__ import annotations

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
]


@pytest.mark.parametrize(("value", "model"), PAIRS, ids=[value.__name__ for value, _ in PAIRS])
def test_schema_model_has_the_same_fields(value: type, model: type[pydantic.BaseModel]) -> None:
    """A field added to or dropped from a value shows in the OpenAPI schema too."""
    assert set(model.model_fields) == {field.name for field in attrs.fields(value)}
