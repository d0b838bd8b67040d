"""``cf.Client()`` reads CLOSE_API_KEY and CLOSE_BASE_URL, as the CLI does; arguments win."""

from __future__ import annotations

from typing import Any

import pytest

import closefunnel as cf
from closefunnel.emulator import Emulator
from tests.redis_server import free_port


async def test_no_arguments_reads_the_key_and_root_from_the_environment(
    demo_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both variables set (with the stray whitespace of a pasted value): a working client."""
    monkeypatch.setenv("CLOSE_API_KEY", f"  {demo_emulator.api_key}\n")
    monkeypatch.setenv("CLOSE_BASE_URL", f"{demo_emulator.base_url} ")
    async with cf.Client() as client:
        assert client.base_url == demo_emulator.base_url
        pipelines = await client.pipelines()
    assert [p.id for p in pipelines] == [p.id for p in demo_emulator.dataset.pipelines]
    assert demo_emulator.log[-1].status == 200


async def test_explicit_arguments_win_over_the_environment(
    demo_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong key and a dead root in the environment change nothing for a client that was
    told its key, token and base URL."""
    monkeypatch.setenv("CLOSE_API_KEY", demo_emulator.api_key.partition(".")[0] + ".wrongwrong")
    dead = f"http://127.0.0.1:{free_port()}/api/v1/"
    monkeypatch.setenv("CLOSE_BASE_URL", dead)
    credentials: list[dict[str, Any]] = [
        {"api_key": demo_emulator.api_key},
        {"token": demo_emulator.token},
    ]
    for credential in credentials:
        async with cf.Client(base_url=demo_emulator.base_url, **credential) as client:
            await client.users()
    assert [entry.status for entry in demo_emulator.log] == [200, 200]
    # Only the key was given: the root still comes from the environment (here: nobody).
    async with cf.Client(api_key=demo_emulator.api_key, retry=cf.RetryPolicy(attempts=1)) as client:
        assert client.base_url == dead
        with pytest.raises(cf.TransportError):
            await client.users()


@pytest.mark.parametrize("value", [None, "", "   \n"])
def test_no_credential_anywhere_says_how_to_give_one(
    value: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unset or blank: an InvalidQueryError naming both arguments and the variable."""
    if value is not None:
        monkeypatch.setenv("CLOSE_API_KEY", value)
    with pytest.raises(cf.InvalidQueryError) as caught:
        cf.Client()
    assert str(caught.value) == "no credential: pass api_key= or token=, or set CLOSE_API_KEY"
    assert (caught.value.field, caught.value.rule) == ("api_key", "credentials")


def test_an_explicit_empty_key_is_refused_not_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """api_key="" is a mistake to report, not a request to read the environment."""
    monkeypatch.setenv("CLOSE_API_KEY", "api_fromenv.secretsecret")
    with pytest.raises(cf.InvalidQueryError) as caught:
        cf.Client(api_key="")
    assert caught.value.rule == "non-empty"


def test_the_environment_base_url_is_checked_like_an_argument(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CLOSE_BASE_URL=http://elsewhere would send the key in clear text: refused the same."""
    monkeypatch.setenv("CLOSE_API_KEY", "api_fromenv.secretsecret")
    monkeypatch.setenv("CLOSE_BASE_URL", "http://close.invalid/api/v1/")
    with pytest.raises(cf.InvalidQueryError) as caught:
        cf.Client()
    assert caught.value.field == "base_url"
    monkeypatch.setenv("CLOSE_BASE_URL", "")  # blank: Close's own root
    assert cf.Client(api_key="api_x.secretsecret").base_url == cf.DEFAULT_BASE_URL


def test_a_key_from_the_environment_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's repr names the key id only, wherever the key came from."""
    monkeypatch.setenv("CLOSE_API_KEY", "api_fromenv.secretsecret")
    client = cf.Client()
    assert "api_fromenv" in repr(client)
    assert "secretsecret" not in repr(client)
