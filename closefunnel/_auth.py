"""
Credentials: an API key (HTTP Basic) or an OAuth access token (Bearer).

The secret lives in one attribute that no repr, str, log record or exception shows.
For ``api_<id>.<secret>`` keys the ``api_<id>`` part is a safe identifier (Close's help
center calls it the "API key ID"), used to name the key in logs and in the gate.
"""

from __future__ import annotations

import base64
import hashlib

import attrs

from closefunnel._errors import InvalidQueryError

__all__ = ["Credentials"]

# The secret part of an ``api_<id>.<secret>`` key is redacted on its own only when it is
# long enough not to match ordinary text ("a.b" would redact every "b").
_MIN_SECRET_PART = 8


@attrs.frozen(repr=False)
class Credentials:
    """
    How requests authenticate; build it with :meth:`api_key` or :meth:`token`.

    ``key_id`` is what may be shown: the ``api_<id>`` part of a key, else a short hash.
    """

    scheme: str
    key_id: str
    _secret: str = attrs.field(alias="secret")
    # Made once: every request sends it, and base64 per request added up.
    _authorization: str = attrs.field(
        init=False,
        eq=False,
        default=attrs.Factory(lambda self: self._header_value(), takes_self=True),
    )

    @classmethod
    def api_key(cls, key: str) -> Credentials:
        """Basic auth with *key* as the username and an empty password."""
        _check_secret("api_key", key)
        return cls(scheme="Basic", key_id=_key_id(key), secret=key)

    @classmethod
    def token(cls, token: str) -> Credentials:
        """Bearer auth with an OAuth access token."""
        _check_secret("token", token)
        return cls(scheme="Bearer", key_id=_key_id(token), secret=token)

    def authorization(self) -> str:
        """The ``Authorization`` header value."""
        return self._authorization

    def _header_value(self) -> str:
        if self.scheme == "Basic":
            return "Basic " + base64.b64encode(f"{self._secret}:".encode()).decode("ascii")
        return f"Bearer {self._secret}"

    def forms(self) -> tuple[str, ...]:
        """
        Every form the secret travels in, longest first: the header value's credential
        (the Basic base64 of ``key:``, or the Bearer token), the raw key, and the secret
        part after ``api_<id>.`` (the id alone is safe to show).
        """
        forms = {self._secret, self.authorization().split(" ", 1)[1]}
        _, dot, tail = self._secret.partition(".")
        if dot and len(tail) >= _MIN_SECRET_PART:
            forms.add(tail)
        return tuple(sorted(forms, key=len, reverse=True))

    def redact(self, text: str) -> str:
        """*text* with every form of the secret (see :meth:`forms`) replaced by ``***``."""
        for secret in self.forms():
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def redact_bytes(self, body: bytes) -> bytes:
        """:meth:`redact` for a raw response body."""
        for secret in self.forms():
            encoded = secret.encode()
            if encoded in body:
                body = body.replace(encoded, b"***")
        return body

    def __repr__(self) -> str:
        return f"Credentials(scheme={self.scheme!r}, key_id={self.key_id!r})"

    __str__ = __repr__


def _check_secret(field: str, secret: object) -> None:
    # An empty secret authenticates nobody, and redact() would splice "***" between
    # every character of the text it is given.
    if not isinstance(secret, str) or not secret.strip():
        raise InvalidQueryError(
            f"{field} must be a non-empty string", field=field, rule="non-empty"
        )


def _key_id(secret: str) -> str:
    head, dot, _ = secret.partition(".")
    if dot and head.startswith("api_"):
        return head
    return "key_" + hashlib.sha256(secret.encode()).hexdigest()[:10]
