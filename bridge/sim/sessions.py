"""The simulated NVR's side of the digest login (SDK guide 10.1 to 10.3), without I/O.

The login body names no nonce, so the desk remembers the last nonces it handed out and
accepts an answer computed from any of them, as the NVR does for clients that fetched a
challenge a moment ago.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict, deque
from typing import Any

from bridge.nvr.auth import LOGIN_PATH, LoginChallenge, digest_response

REALM = "xnvr"
QOP = "auth"
NONCES_KEPT = 100
# Sessions beyond this are forgotten oldest first (a client that logs in in a loop).
SESSIONS_KEPT = 10_000


class LoginDesk:
    """Hands out challenges, checks login answers and keeps the session tokens."""

    def __init__(self, username: str | None, password: str) -> None:
        self.username = username
        self._password = password
        self._nonces: deque[str] = deque(maxlen=NONCES_KEPT)
        self._sessions: OrderedDict[str, None] = OrderedDict()

    @property
    def open(self) -> bool:
        """True when the NVR has no account configured and needs no login."""
        return self.username is None

    def challenge(self) -> dict[str, Any]:
        """The ``GET /admin/login`` answer, with a fresh nonce."""
        nonce = secrets.token_hex(16)
        self._nonces.append(nonce)
        return {"realm": REALM, "qop": QOP, "nonce": nonce, "opaque": "", "change_pwd": "no"}

    def check(self, body: Any) -> bool:
        """Whether a ``POST /admin/login`` body answers one of the recent challenges."""
        if self.open:
            return True
        if not isinstance(body, dict):
            return False
        username, nc = body.get("username"), body.get("nc")
        cnonce, response = body.get("cnonce"), body.get("response")
        if not (
            isinstance(username, str)
            and isinstance(nc, str)
            and isinstance(cnonce, str)
            and isinstance(response, str)
            and self.username is not None
            and hmac.compare_digest(username.encode(), self.username.encode())
        ):
            return False
        return any(
            hmac.compare_digest(
                response.encode(),
                digest_response(
                    username=username,
                    password=self._password,
                    challenge=LoginChallenge(realm=REALM, qop=QOP, nonce=nonce),
                    nc=nc,
                    cnonce=cnonce,
                    method="POST",
                    uri=LOGIN_PATH,
                ).encode(),
            )
            for nonce in self._nonces
        )

    def open_session(self) -> str:
        """A new session token."""
        token = secrets.token_hex(16)
        self._sessions[token] = None
        while len(self._sessions) > SESSIONS_KEPT:
            self._sessions.popitem(last=False)
        return token

    def valid(self, token: str | None) -> bool:
        """Whether a request with this session cookie may proceed."""
        return self.open or (token is not None and token in self._sessions)

    def close_session(self, token: str | None) -> None:
        """Forget one session (logout)."""
        if token is not None:
            self._sessions.pop(token, None)

    def expire_all(self) -> None:
        """Forget every session, as a rebooted NVR does."""
        self._sessions.clear()
