"""The NVR's digest login (SDK guide sections 10.1 and 10.2), as pure functions.

The NVR hands out ``realm``, ``qop``, ``nonce`` and ``opaque`` on ``GET /admin/login``
and expects an RFC 2617 style answer on ``POST /admin/login``. The HTTP exchange lives in
``client.py``; here is only the arithmetic, shared with the simulated NVR.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

LOGIN_PATH = "/admin/login"


def _md5(text: str) -> str:
    # MD5 is what the NVR's digest scheme prescribes, not our choice of hash.
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class LoginChallenge:
    """The parameters ``GET /admin/login`` returns."""

    realm: str
    qop: str
    nonce: str
    opaque: str = ""

    @classmethod
    def from_json(cls, data: Any) -> LoginChallenge:
        """Read the challenge; ValueError names what the NVR left out or got wrong."""
        # ValueError, not TypeError: a malformed answer from the NVR is bad data.
        if not isinstance(data, dict):
            raise ValueError("login parameters are not a JSON object")  # noqa: TRY004
        missing = [k for k in ("realm", "nonce") if not isinstance(data.get(k), str)]
        if missing:
            raise ValueError(f"login parameters lack {', '.join(missing)}")
        return cls(
            realm=data["realm"],
            qop=str(data.get("qop") or "auth"),
            nonce=data["nonce"],
            opaque=str(data.get("opaque") or ""),
        )


def digest_response(
    *,
    username: str,
    password: str,
    challenge: LoginChallenge,
    nc: str,
    cnonce: str,
    method: str = "POST",
    uri: str = LOGIN_PATH,
) -> str:
    """``MD5(HA1:nonce:nc:cnonce:qop:HA2)`` with ``HA1 = MD5(user:realm:password)``."""
    ha1 = _md5(f"{username}:{challenge.realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    return _md5(f"{ha1}:{challenge.nonce}:{nc}:{cnonce}:{challenge.qop}:{ha2}")


def login_body(
    username: str, password: str, challenge: LoginChallenge, count: int
) -> dict[str, str]:
    """The JSON body of ``POST /admin/login`` for the ``count``-th use of this nonce."""
    nc = f"{count:08x}"
    cnonce = secrets.token_hex(8)
    response = digest_response(
        username=username, password=password, challenge=challenge, nc=nc, cnonce=cnonce
    )
    return {"username": username, "nc": nc, "cnonce": cnonce, "response": response}
