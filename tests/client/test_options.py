"""The client's options: one attrs value validates them all, with the same field/rule errors."""

from __future__ import annotations

import inspect

import aiohttp
import attrs
import pytest

import closefunnel as cf
from closefunnel._options import DEFAULT_MAX_RESPONSE_BYTES, ClientOptions


def test_every_client_keyword_is_an_option_and_back() -> None:
    """Adding an option is one field of ClientOptions plus its keyword, nothing else."""
    keywords = set(inspect.signature(cf.Client).parameters)
    assert keywords == {field.name for field in attrs.fields(ClientOptions)}
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(cf.Client).parameters.items()
    }
    # Not given, the base URL is CLOSE_BASE_URL's, else Close's (closefunnel._environment).
    assert defaults["base_url"] is None
    defaults["base_url"] = cf.DEFAULT_BASE_URL
    assert defaults == {field.name: field.default for field in attrs.fields(ClientOptions)}
    assert defaults["max_response_bytes"] == DEFAULT_MAX_RESPONSE_BYTES == 32 * 2**20


@pytest.mark.parametrize(
    ("options", "field", "rule"),
    [
        ({}, "api_key", "credentials"),
        ({"api_key": "k", "token": "t"}, "api_key", "credentials"),
        ({"api_key": "  "}, "api_key", "non-empty"),
        ({"token": ""}, "token", "non-empty"),
        ({"api_key": "k", "max_concurrency": 0}, "max_concurrency", "positive"),
        ({"api_key": "k", "max_concurrency": 2.0}, "max_concurrency", "type"),
        ({"api_key": "k", "timeout": 0}, "timeout", "positive"),
        ({"api_key": "k", "timeout": "3"}, "timeout", "positive"),
        ({"api_key": "k", "base_url": b"https://x/"}, "base_url", "type"),
        ({"api_key": "k", "base_url": "ftp://x/"}, "base_url", "url"),
        ({"api_key": "k", "tz_offset": 15}, "tz_offset", "range"),
        ({"api_key": "k", "retry": {}}, "retry", "type"),
        ({"api_key": "k", "session": object()}, "session", "type"),
        ({"api_key": "k", "max_response_bytes": 0}, "max_response_bytes", "positive"),
    ],
)
def test_each_bad_option_names_its_field_and_rule(
    options: dict[str, object], field: str, rule: str
) -> None:
    with pytest.raises(cf.InvalidQueryError) as caught:
        ClientOptions(**options)  # type: ignore[arg-type]
    assert (caught.value.field, caught.value.rule) == (field, rule)
    with pytest.raises(cf.InvalidQueryError) as through_client:
        cf.Client(**options)  # type: ignore[arg-type]
    assert (through_client.value.field, through_client.value.rule) == (field, rule)
    if options:  # no credential at all: the Client's message names CLOSE_API_KEY too
        assert str(through_client.value) == str(caught.value)


def test_the_options_repr_hides_the_secret() -> None:
    options = ClientOptions(api_key="api_abc.topsecretvalue")
    assert "topsecret" not in repr(options)
    assert options.credentials().key_id == "api_abc"


async def test_a_given_session_is_accepted() -> None:
    async with aiohttp.ClientSession() as session:
        assert ClientOptions(api_key="k", session=session).session is session
