"""Secrets never leave the bridge: masking in everything it publishes and logs.

The rules of CONTRACT.md section 9, applied to every string that came from a peer (an
NVR's frames and answers, a broker, a client) before it reaches a payload, a topic
level, a log line or an error text:

- a value under a key matching ``pass|pwd|secret|credential`` (any case, any depth) is
  replaced by ``***`` whatever it is (``preset_token`` does not match);
- the userinfo of a URL (``rtsp://user:pw@host``) becomes ``***`` (``rtsp://***@host``);
- each configured password, wherever it occurs in a string (keys included), also in its
  JSON-escaped and percent-encoded spellings, becomes ``***``.

``Redactor`` holds the configured passwords; ``redact_value`` and ``redact_text`` apply
the rules that need none. The walks are bounded: data deeper than the JSON depth limit
never gets here (``bridge.limits``), and anything deeper than ``MAX_WALK_DEPTH`` is
masked whole rather than walked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

import orjson

REDACTED = "***"
SECRET_KEY = re.compile(r"pass|pwd|secret|credential", re.IGNORECASE)
# scheme://userinfo@ : the userinfo runs to the last '@' before the path, query or end.
_URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#\s]*@")
MAX_WALK_DEPTH = 128


def _spellings(secret: str) -> set[str]:
    """The ways a password can appear in text: as is, JSON-escaped, percent-encoded."""
    forms = {secret, orjson.dumps(secret).decode()[1:-1], quote(secret, safe=""), quote(secret)}
    forms.add(quote_plus(secret))
    return {form for form in forms if form}


class Redactor:
    """Masks the configured passwords and the contract's secret patterns (module doc)."""

    __slots__ = ("_forms",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms |= _spellings(secret)
        # Longest first: a spelling that contains another is masked whole.
        self._forms = tuple(sorted(forms, key=len, reverse=True))

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every spelling of every configured password, longest first."""
        return self._forms

    def text(self, value: str) -> str:
        """``value`` with URL userinfo and every configured password masked."""
        if "://" in value and "@" in value:
            value = _URL_USERINFO.sub(r"\1" + REDACTED + "@", value)
        for form in self._forms:
            if form in value:
                value = value.replace(form, REDACTED)
        return value

    def value(self, value: Any, depth: int = 0) -> Any:
        """A JSON value with every rule applied at any depth (keys included); a copy."""
        if isinstance(value, str):
            return self.text(value)
        if depth >= MAX_WALK_DEPTH:
            return REDACTED if isinstance(value, dict | list) else value
        if isinstance(value, dict):
            out: dict[Any, Any] = {}
            for key, item in value.items():
                name = self.text(key) if isinstance(key, str) else key
                if isinstance(key, str) and SECRET_KEY.search(key):
                    out[name] = REDACTED
                else:
                    out[name] = self.value(item, depth + 1)
            return out
        if isinstance(value, list):
            return [self.value(item, depth + 1) for item in value]
        return value

    def contains_secret(self, data: bytes) -> bool:
        """Whether raw bytes (an image, say) carry a configured password as is."""
        return any(form.encode("utf-8", "replace") in data for form in self._forms)

    def leaked_prefix(self, value: str, suffix: str = "...") -> str:
        """``value`` with a cut-off password at its end masked (truncated log text).

        Text cut at a fixed length may end in the first characters of a password; those
        (three or more) are masked as well.
        """
        body = value[: -len(suffix)] if suffix and value.endswith(suffix) else value
        for form in self._forms:
            for size in range(len(form) - 1, 2, -1):
                if body.endswith(form[:size]):
                    return body[:-size] + REDACTED + value[len(body) :]
        return value


NO_SECRETS = Redactor()

# In JSON text (a rejected frame, cut for a log line): "<secret key>": <value>.
_JSON_SECRET_MEMBER = re.compile(
    r'("[^"\\]*(?:pass|pwd|secret|credential)[^"\\]*"\s*:\s*)'
    r'(?:"(?:[^"\\]|\\.)*"?|[^,}\]\s]+)',
    re.IGNORECASE,
)


def redact_value(value: Any) -> Any:
    """The secret-key and URL rules applied to a JSON value (no configured passwords)."""
    return NO_SECRETS.value(value)


def redact_text(value: str) -> str:
    """The URL userinfo rule applied to one string."""
    return NO_SECRETS.text(value)


def redact_json_text(text: str) -> str:
    """Raw JSON text (perhaps cut short) with secret-keyed values and URL userinfo masked.

    For log lines that quote what a peer sent; the configured passwords are masked by the
    log processor itself.
    """
    if ":" not in text:
        return text
    return NO_SECRETS.text(_JSON_SECRET_MEMBER.sub(r'\1"' + REDACTED + '"', text))
