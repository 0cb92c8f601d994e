"""The HTTP and websocket client of one NVR: login, session cookie, REST calls.

One ``NvrClient`` per NVR for the life of the process: one ``aiohttp.ClientSession``
shared by the five stream listeners and every command. The session talks to this one NVR
only, so its cookies (the login's session cookie) are kept by ``SessionCookies`` and sent
as one prepared header: aiohttp's general cookie jar re-filters and re-serializes them on
every request, about a tenth of a command's CPU. The client logs in once; a 401 anywhere means
"log in again, then retry once", and concurrent 401s cause a single new login.

Errors::

    NvrError                 base of everything below; ``reason`` is a readable sentence
     +-- LoginError          a login did not succeed (the streams wait and retry)
     |    +-- LoginRefused       the NVR rejected the credentials
     |    +-- CredentialsRequired the NVR wants a login and no username is configured
     |    +-- LoginUnavailable   the NVR could not be reached or failed (transient)
     +-- NvrUnavailable      the request never reached the NVR (connection refused...)
     +-- NvrTimeout          no answer in time; the call may have reached the NVR
     +-- NvrHttpError        a non-2xx answer (``status``)
     +-- NvrRejected         a 2xx answer of ``{"Result": "Error", ...}``
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from http.cookies import BaseCookie, Morsel
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus
from yarl import URL

from bridge.backoff import Backoff
from bridge.config import NvrConfig
from bridge.nvr.auth import LOGIN_PATH, LoginChallenge, login_body
from bridge.observability import Metrics

log = structlog.get_logger("bridge.nvr")

REQUEST_TIMEOUT = 10.0
# The library closes the connection above this; the contract's own 1 MiB limit is
# enforced per frame in normalize.parse_frame, so a bigger frame is skipped, not fatal.
WS_MAX_FRAME = 16 * 1024 * 1024
CONNECT_RETRY_DELAY = 0.25


class NvrError(Exception):
    """Base of the NVR client's errors; ``reason`` is a sentence for logs and responses."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LoginError(NvrError):
    """A login did not succeed."""


class LoginRefused(LoginError):
    """The NVR rejected the username or password."""


class CredentialsRequired(LoginError):
    """The NVR answered 401 and the bridge has no username to log in with."""


class LoginUnavailable(LoginError):
    """The login failed for a transient reason (unreachable, 5xx, timeout)."""


class NvrUnavailable(NvrError):
    """The request never reached the NVR; safe to retry."""


class NvrTimeout(NvrError):
    """No answer within the timeout; the call may have reached the NVR."""


class NvrHttpError(NvrError):
    """The NVR answered with a non-2xx status."""

    def __init__(self, reason: str, status: int, body: Any = None) -> None:
        super().__init__(reason)
        self.status = status
        self.body = body


class NvrRejected(NvrError):
    """The NVR answered ``{"Result": "Error", "Description": ...}``."""

    def __init__(self, reason: str, body: Any) -> None:
        super().__init__(reason)
        self.body = body


class NvrAnswer(NamedTuple):
    """A successful REST answer: status and the parsed JSON (or text) body."""

    status: int
    body: Any


def ssl_context_for(config: NvrConfig) -> ssl.SSLContext | None:
    """TLS for https/wss: verified by default, a private CA if configured."""
    if not config.is_tls:
        return None
    context = ssl.create_default_context(cafile=config.ca_file)
    if not config.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _parse_body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")


def _is_error_result(body: Any) -> bool:
    return isinstance(body, dict) and str(body.get("Result", "")).lower() == "error"


def _description(body: Any) -> str:
    if isinstance(body, dict):
        text = body.get("Description") or body.get("description") or body.get("error")
        if text:
            return str(text)
    if isinstance(body, str) and body.strip():
        return body.strip()[:200]
    return "no description"


class SessionCookies:
    """The cookies one NVR set (its session cookie), ready to send as a ``Cookie`` header.

    Every cookie the NVR sets is sent back to it, whatever its domain or path (NVRs are
    addressed by IP and serve one application); one whose ``Max-Age`` or ``Expires`` lies
    in the past is removed, as a browser would.
    """

    __slots__ = ("_values", "header")

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self.header: dict[str, str] = {}

    def update(self, cookies: BaseCookie[str]) -> None:
        """Take the cookies of a response's ``Set-Cookie`` headers."""
        for name, morsel in cookies.items():
            if _expired(morsel):
                self._values.pop(name, None)
            else:
                self._values[name] = morsel.value
        value = "; ".join(f"{name}={value}" for name, value in self._values.items())
        self.header = {"Cookie": value} if value else {}


def _expired(morsel: Morsel[str]) -> bool:
    max_age = morsel["max-age"]
    if max_age:
        with contextlib.suppress(ValueError):
            return int(max_age) <= 0
    expires = morsel["expires"]
    if expires:
        with contextlib.suppress(TypeError, ValueError):
            return parsedate_to_datetime(expires).timestamp() <= time.time()
    return False


class NvrClient:
    """Session, login and requests of one NVR (see module doc)."""

    def __init__(
        self,
        config: NvrConfig,
        *,
        metrics: Metrics,
        login_gate: asyncio.Semaphore | None = None,
        backoff: Backoff | None = None,
        ping_interval: float = 20.0,
        ping_timeout: float = 20.0,
        on_login: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.nvr = config.id
        self._metrics = metrics
        self._login_gate = login_gate or asyncio.Semaphore(1)
        self._login_backoff = backoff or Backoff()
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._on_login = on_login
        self._ssl = ssl_context_for(config)
        self._base = URL(config.url)
        parts = urlsplit(config.url)
        ws_scheme = "wss" if parts.scheme == "https" else "ws"
        self._ws_base = f"{ws_scheme}://{parts.netloc}"
        self._session: aiohttp.ClientSession | None = None
        self.cookies = SessionCookies()
        self._lock = asyncio.Lock()
        self._logged_in = False
        self._generation = 0
        self._retry_at = 0.0

    # --- session lifecycle ---------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        """The one HTTP session of this NVR, created on first use."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                base_url=self._base,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
                connector=aiohttp.TCPConnector(ssl=self._ssl or True, limit=32),
                headers={"User-Agent": "nvr-bridge"},
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session and its connections."""
        if self._session is not None and not self._session.closed:
            await self._session.close()

    @property
    def logged_in(self) -> bool:
        """Whether the client holds a session it believes valid."""
        return self._logged_in

    # --- login -----------------------------------------------------------------------------

    async def ensure_login(self) -> int:
        """Log in unless already logged in; returns the login's generation number.

        Concurrent callers share one login. After a failure, the next attempt waits for
        the login backoff, so five streams and the commands do not hammer the NVR.
        """
        if self._logged_in:
            return self._generation
        async with self._lock:
            if self._logged_in:
                return self._generation
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                await self._login()
            except LoginError as exc:
                delay = self._login_backoff.next_delay()
                self._retry_at = time.monotonic() + delay
                self._log_login_failure(exc, delay)
                raise
            self._login_backoff.reset()
            self._retry_at = 0.0
            self._logged_in = True
            self._generation += 1
        if self._on_login is not None:
            self._on_login()
        return self._generation

    def invalidate(self, generation: int) -> None:
        """Forget the session of ``generation`` (a 401 was seen); the next call logs in."""
        if generation == self._generation:
            self._logged_in = False

    def _log_login_failure(self, exc: LoginError, delay: float) -> None:
        fields = {"url": self.config.url, "reason": exc.reason, "retry_in": round(delay, 2)}
        if "CERTIFICATE" in exc.reason.upper() or "SSL" in exc.reason.upper():
            fields["hint"] = "check BRIDGE_NVR_CA_FILE (or BRIDGE_NVR_VERIFY_TLS) for this NVR"
        if isinstance(exc, LoginRefused | CredentialsRequired):
            self._metrics.logins.labels(self.nvr, "refused").inc()
            log.error("login refused", username=self.config.username, **fields)
        else:
            self._metrics.logins.labels(self.nvr, "failed").inc()
            log.warning("login failed", **fields)

    async def _login(self) -> None:
        username = self.config.username
        if username is None:
            # Nothing to log in with: the NVR will tell us with a 401 if it wants one.
            return
        password = self.config.password.get_secret_value() if self.config.password else ""
        async with self._login_gate:
            challenge_body = await self._login_request("GET", None)
            try:
                challenge = LoginChallenge.from_json(challenge_body)
            except ValueError as exc:
                raise LoginUnavailable(f"unexpected login parameters: {exc}") from None
            body = login_body(username, password, challenge, 1)
            answer = await self._login_request("POST", body)
        if not isinstance(answer, dict) or str(answer.get("Result", "")).upper() != "OK":
            raise LoginRefused(f"the NVR refused the login: {_description(answer)}")
        if answer.get("option") == "needToChangePasswd":
            log.warning("nvr asks to change the password", url=self.config.url)
        self._metrics.logins.labels(self.nvr, "ok").inc()
        log.info("logged in", url=self.config.url, username=username)

    async def _login_request(self, method: str, body: Any) -> Any:
        try:
            async with self.session.request(
                method, LOGIN_PATH, json=body, headers=self.cookies.header
            ) as response:
                raw = await response.read()
                self.cookies.update(response.cookies)
        except TimeoutError:
            raise LoginUnavailable("login timed out") from None
        except aiohttp.ClientError as exc:
            raise LoginUnavailable(f"cannot reach the NVR: {_client_error(exc)}") from None
        if response.status == 401:
            raise LoginRefused("the NVR answered 401 to the login")
        if response.status >= 400:
            raise LoginUnavailable(f"login answered HTTP {response.status}")
        return _parse_body(raw)

    # --- REST ------------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> NvrAnswer:
        """One REST call: logs in first, re-logs in and retries once on 401.

        A request that failed to connect is retried once (it never reached the NVR); a
        timeout is not (it may have).
        """
        generation = await self.ensure_login()
        answer = await self._send(method, path, params, body, timeout)
        if answer.status == 401:
            if self.config.username is None:
                raise CredentialsRequired(_CREDENTIALS_HINT)
            self.invalidate(generation)
            await self.ensure_login()
            answer = await self._send(method, path, params, body, timeout)
        if answer.status == 401:
            raise NvrHttpError("the NVR answered 401 even after a fresh login", 401)
        if not 200 <= answer.status < 300:
            raise NvrHttpError(
                f"the NVR answered HTTP {answer.status}: {_description(answer.body)}",
                answer.status,
                answer.body,
            )
        if _is_error_result(answer.body):
            raise NvrRejected(f"the NVR refused: {_description(answer.body)}", answer.body)
        return answer

    async def _send(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None,
        body: Any,
        timeout: float,
    ) -> NvrAnswer:
        histogram = self._metrics.child(self._metrics.request_seconds, self.nvr, path)
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                async with self.session.request(
                    method,
                    path,
                    params=params,
                    json=body,
                    headers=self.cookies.header,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as response:
                    raw = await response.read()
                    status = response.status
                    if response.cookies:
                        self.cookies.update(response.cookies)
            except aiohttp.ClientConnectorError as exc:
                if attempt == 1:
                    await asyncio.sleep(CONNECT_RETRY_DELAY)
                    continue
                raise NvrUnavailable(f"cannot reach the NVR: {_client_error(exc)}") from None
            except TimeoutError:
                histogram.observe(time.perf_counter() - started)
                raise NvrTimeout(f"the NVR did not answer within {timeout:g} s") from None
            except aiohttp.ClientError as exc:
                raise NvrUnavailable(f"request failed: {_client_error(exc)}") from None
            histogram.observe(time.perf_counter() - started)
            return NvrAnswer(status, _parse_body(raw))
        raise AssertionError("unreachable")  # pragma: no cover

    # --- websockets ------------------------------------------------------------------------

    async def open_websocket(self, path: str) -> ClientConnection:
        """Open a stream's websocket with the session cookie; re-login once on a 401."""
        for attempt in (1, 2):
            generation = await self.ensure_login()
            try:
                return await websockets.connect(
                    self._ws_base + path,
                    additional_headers=self.cookies.header,
                    ssl=self._ssl,
                    ping_interval=self._ping_interval,
                    ping_timeout=self._ping_timeout,
                    max_size=WS_MAX_FRAME,
                    open_timeout=REQUEST_TIMEOUT,
                    close_timeout=2,
                    proxy=None,
                    user_agent_header="nvr-bridge",
                    compression=None,
                )
            except InvalidStatus as exc:
                if exc.response.status_code != 401 or attempt == 2:
                    raise
                if self.config.username is None:
                    raise CredentialsRequired(_CREDENTIALS_HINT) from None
                self.invalidate(generation)
        raise AssertionError("unreachable")  # pragma: no cover


_CREDENTIALS_HINT = (
    "the NVR asks for a login but no username is configured: "
    "set BRIDGE_NVR_USERNAME and BRIDGE_NVR_PASSWORD"
)


def _client_error(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return str(exc.os_error) or type(exc).__name__
    return str(exc) or type(exc).__name__
