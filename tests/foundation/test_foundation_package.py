"""Package-level rules: a pure protocol core, secret-free credentials, a tidy public API."""

from __future__ import annotations

import ast
import base64
import re
from importlib.metadata import version
from pathlib import Path

import pytest

import closefunnel
from closefunnel import Credentials, InvalidQueryError

PACKAGE = Path(closefunnel.__file__).resolve().parent
PURE_MODULES = [
    "_sansio.py",
    "_ratelimit.py",
    "_query.py",
    "_models.py",
    "_convert.py",
    "_compare.py",
    "_errors.py",
    "_auth.py",
]
IO_PACKAGES = {"aiohttp", "asyncio", "tenacity"}


def _imported_roots(source: str) -> set[str]:
    """The top-level package of every import in *source*, however deeply nested."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and getattr(node.func, "id", getattr(node.func, "attr", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            roots.add(node.args[0].value.split(".")[0])
    return roots


@pytest.mark.parametrize("module", PURE_MODULES)
def test_protocol_core_is_pure(module: str) -> None:
    """The protocol core imports no aiohttp, asyncio or tenacity, directly or via from."""
    assert not _imported_roots((PACKAGE / module).read_text()) & IO_PACKAGES


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import aiohttp.web",
        "from tenacity import retry",
        "if x:\n import asyncio",
    ],
)
def test_purity_check_catches_imports(source: str) -> None:
    """The purity check itself notices each form of forbidden import."""
    assert _imported_roots(source) & IO_PACKAGES


# -- credentials -----------------------------------------------------------------------------


def test_api_key_is_never_shown() -> None:
    """An API key's repr and str show the api_<id> part only, never the secret."""
    credentials = Credentials.api_key("api_X.secretpart")
    for text in (repr(credentials), str(credentials), f"{credentials}", f"{credentials!r}"):
        assert "api_X" in text
        assert "secretpart" not in text
    assert credentials.key_id == "api_X"
    assert credentials.scheme == "Basic"
    assert credentials.authorization() == "Basic " + base64.b64encode(b"api_X.secretpart:").decode()


def test_token_is_never_shown() -> None:
    """A token's repr and str show a short hash id, never the token."""
    credentials = Credentials.token("tok-supersecretvalue")
    assert re.fullmatch(r"key_[0-9a-f]{10}", credentials.key_id)
    for text in (repr(credentials), str(credentials)):
        assert "supersecretvalue" not in text
        assert credentials.key_id in text
    assert credentials.authorization() == "Bearer tok-supersecretvalue"
    assert Credentials.token("tok-supersecretvalue").key_id == credentials.key_id
    assert Credentials.token("other").key_id != credentials.key_id


@pytest.mark.parametrize("secret", ["plainsecretkey", "headsecret.tailsecret", "x.api_y"])
def test_key_without_api_prefix_is_hashed(secret: str) -> None:
    """A key that does not look like api_<id>.<secret> is named by a hash, not by its text."""
    for credentials in (Credentials.api_key(secret), Credentials.token(secret)):
        assert re.fullmatch(r"key_[0-9a-f]{10}", credentials.key_id)
        for part in secret.split("."):
            assert part not in repr(credentials)


def test_redact() -> None:
    """redact replaces the secret and its Basic encoding, and leaves other text alone."""
    credentials = Credentials.api_key("api_X.secretpart")
    encoded = credentials.authorization().split(" ", 1)[1]
    text = f"key api_X.secretpart sent as Basic {encoded} by api_X"
    assert credentials.redact(text) == "key *** sent as Basic *** by api_X"
    assert credentials.redact("nothing secret") == "nothing secret"


@pytest.mark.parametrize("secret", ["", "   "])
def test_empty_secret_is_refused(secret: str) -> None:
    """An empty key or token is an InvalidQueryError (it would make redact() mangle text)."""
    with pytest.raises(InvalidQueryError) as info:
        Credentials.api_key(secret)
    assert info.value.field == "api_key"
    with pytest.raises(InvalidQueryError) as info:
        Credentials.token(secret)
    assert info.value.field == "token"


# -- public API ------------------------------------------------------------------------------


def test_all_names_exist() -> None:
    """Every name in closefunnel.__all__ is an attribute of the package."""
    missing = [name for name in closefunnel.__all__ if not hasattr(closefunnel, name)]
    assert not missing
    assert len(set(closefunnel.__all__)) == len(closefunnel.__all__)


def test_version_matches_metadata() -> None:
    """closefunnel.__version__ is the installed distribution's version."""
    assert closefunnel.__version__ == version("closefunnel")
