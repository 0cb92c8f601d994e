"""The HTTP and websocket client of one NVR: login, session cookie, REST calls.

One ``NvrClient`` per NVR for the life of the process: one ``aiohttp.ClientSession``
shared by the five stream listeners and every command. The session talks to this one NVR
only, so its cookies (the login's session cookie) are kept by ``SessionCookies`` and sent
as one prepared header: aiohttp's general cookie jar re-filters and re-serializes them on
every request, about a tenth of a command's CPU. The client logs in once; a 401 anywhere means
"log in again, then retry once", and concurrent 401s cause a single new login.

Everything the NVR sends is bounded (CONTRACT section 9): an answer larger than
``nvr_max_answer_bytes`` is refused without being read whole, JSON deeper than the depth
limit is refused, and redirects are followed only within the NVR's own origin (scheme,
host and port), a few hops at most, so the session cookie and the login digest never
leave it. A 401 right after a fresh login counts as a failed login and backs off like
one; at most one login is in flight.

Errors::

    NvrError                 base of everything below; ``reason`` is a readable sentence
     +-- LoginError          a login did not succeed (the streams wait and retry)
     |    +-- LoginRefused       the NVR rejected the credentials (or the session)
     |    +-- CredentialsRequired the NVR wants a login and no username is configured
     |    +-- LoginUnavailable   the NVR could not be reached or failed (transient)
     +-- NvrUnavailable      the request never reached the NVR (connection refused...)
     +-- NvrTimeout          no answer in time; the call may have reached the NVR
     +-- NvrHttpError        a non-2xx answer (``status``)
     +-- NvrRejected         a 2xx answer of ``{"Result": "Error", ...}``
     +-- NvrBadAnswer        an answer too large or too deep to accept
     +-- NvrRedirected       a redirect not followed (another origin, too many hops)
     +-- HandshakeFailed     a websocket handshake that failed for another reason
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
from urllib.parse import urljoin, urlsplit

import aiohttp
import orjson
import structlog
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as websocket_connect
from websockets.exceptions import InvalidStatus, WebSocketException
from yarl import URL

from bridge.backoff import Backoff
from bridge.config import NvrConfig
from bridge.limits import InputLimits, json_depth_exceeds
from bridge.nvr.auth import LOGIN_PATH, LoginChallenge, login_body
from bridge.observability import Metrics

log = structlog.get_logger("bridge.nvr")

REQUEST_TIMEOUT = 10.0
# The library closes the connection above this; the contract's own 1 MiB limit is
# enforced per frame in normalize.parse_frame, so a frame up to this size is skipped,
# a larger one ends the connection (and the stream reconnects).
WS_MAX_FRAME = 2 * 1024 * 1024
# Frames the library buffers before the reader takes them: with the size above, what one
# stream can hold in memory at most.
WS_MAX_QUEUE = 8
CONNECT_RETRY_DELAY = 0.25
# Redirects followed within the NVR's origin, at most.
MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# A login answer is a few hundred bytes; more is not a login answer.
MAX_LOGIN_ANSWER = 64 * 1024


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


class NvrBadAnswer(NvrError):
    """An answer the bridge does not accept: larger or deeper than the limits."""


class NvrRedirected(NvrError):
    """A redirect that was not followed; ``location`` is where it pointed."""

    def __init__(self, reason: str, location: str) -> None:
        super().__init__(reason)
        self.location = location


class HandshakeFailed(NvrError):
    """A websocket handshake failed (bad answer, invalid URI, protocol error)."""


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


def parse_answer(raw: bytes, max_depth: int) -> Any:
    """A REST answer's body: its JSON, or its text when it is not JSON; bounded in depth."""
    if not raw:
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")
    if json_depth_exceeds(body, max_depth):
        raise NvrBadAnswer(f"answer too deep: the NVR's JSON nests more than {max_depth} levels")
    return body


def _is_error_result(body: Any) -> bool:
    return isinstance(body, dict) and str(body.get("Result", "")).lower() == "error"


def _description(body: Any) -> str:
    if isinstance(body, dict):
        text = body.get("Description") or body.get("description") or body.get("error")
        if text:
            return str(text)[:200]
    if isinstance(body, str) and body.strip():
        return body.strip()[:200]
    return "no description"


async def read_bounded(response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """The whole body of ``response``, refused (never read whole) beyond ``limit`` bytes."""
    length = response.content_length
    if length is not None and length > limit:
        raise NvrBadAnswer(_too_large(what, limit, f"{length} bytes announced"))
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise NvrBadAnswer(_too_large(what, limit, f"more than {limit} bytes sent"))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(what: str, limit: int, seen: str) -> str:
    return (
        f"answer too large: the NVR's answer to {what} exceeds {limit} bytes ({seen}); "
        "it was not read (BRIDGE_NVR_MAX_ANSWER_BYTES)"
    )


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the port made explicit; ValueError when invalid."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "ws": 80, "https": 443, "wss": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


class SessionCookies:
    """The cookies one NVR set (its session cookie), ready to send as a ``Cookie`` header.

    Every cookie the NVR sets is sent back to it, whatever its domain or path (NVRs are
    addressed by IP and serve one application); one whose ``Max-Age`` or ``Expires`` lies
    in the past is removed, as a browser would. At most ``MAX_COOKIES`` are kept.
    """

    MAX_COOKIES = 32
    __slots__ = ("_values", "header")

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self.header: dict[str, str] = {}

    def update(self, cookies: BaseCookie[str]) -> None:
        """Take the cookies of a response's ``Set-Cookie`` headers."""
        for name, morsel in cookies.items():
            if _expired(morsel):
                self._values.pop(name, None)
            elif name in self._values or len(self._values) < self.MAX_COOKIES:
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
        with contextlib.suppress(TypeError, ValueError, OverflowError):
            return parsedate_to_datetime(expires).timestamp() <= time.time()
    return False


class _SameOriginConnect(websocket_connect):
    """websockets' ``connect``, following redirects only within the NVR's origin.

    The library follows any redirect (another host gets the session cookie); this one
    follows at most ``MAX_REDIRECTS`` to the same scheme, host and port and refuses the
    rest with an ``NvrRedirected`` naming the Location.
    """

    def __init__(self, uri: str, **kwargs: Any) -> None:
        super().__init__(uri, **kwargs)
        self._first_uri = uri
        self._hops = 0

    def process_redirect(self, exc: Exception) -> Exception | str:
        """The URI to follow, or the exception to raise (websockets calls this)."""
        if not (
            isinstance(exc, InvalidStatus)
            and exc.response.status_code in REDIRECT_STATUSES | {300}
            and "Location" in exc.response.headers
        ):
            return exc
        location = exc.response.headers["Location"][:500]
        try:
            target = urljoin(self.uri, location)
            same = _origin(target) == _origin(self._first_uri)
        except ValueError:
            return NvrRedirected(
                f"the NVR redirected the websocket to an invalid Location {location!r}",
                location,
            )
        if not same:
            return NvrRedirected(
                f"the NVR redirected the websocket to another origin ({location}); "
                "not followed, so the session cookie stays with the NVR",
                location,
            )
        self._hops += 1
        if self._hops > MAX_REDIRECTS:
            return NvrRedirected(
                f"the NVR redirected the websocket more than {MAX_REDIRECTS} times", location
            )
        return target


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
        limits: InputLimits | None = None,
    ) -> None:
        self.config = config
        self.nvr = config.id
        self._metrics = metrics
        self._login_gate = login_gate or asyncio.Semaphore(1)
        self._login_backoff = backoff or Backoff()
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._on_login = on_login
        self.limits = limits or InputLimits()
        self._ssl = ssl_context_for(config)
        self._base = URL(config.url)
        self._origin = _origin(config.url)
        parts = urlsplit(config.url)
        ws_scheme = "wss" if parts.scheme == "https" else "ws"
        self._ws_base = f"{ws_scheme}://{parts.netloc}"
        self._session: aiohttp.ClientSession | None = None
        self.cookies = SessionCookies()
        # Every REST request to this NVR (commands, polls, snapshots, history searches,
        # logins) takes a slot: the NVR never sees more than the configured bound at once.
        self._rest_slots = asyncio.Semaphore(config.max_inflight_commands)
        self._lock = asyncio.Lock()
        self._logged_in = False
        self._generation = 0
        self._retry_at = 0.0
        self._working_generation = -1  # the last session a request succeeded on
        self._refused_generation = -1
        self._last_failure: str | None = None
        self.login_problem: str | None = None

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
                # Headers and lines are bounded by aiohttp (8 KiB); bodies by read_bounded.
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
                self._login_failed(exc)
                raise
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

    def _session_refused(self, generation: int, what: str) -> LoginRefused | None:
        """A 401 on ``what``: a failed login when no request ever worked on this session.

        A session that served requests and then got a 401 has expired: log in again at
        once (returns None). One that never served any (an NVR accepting the login and
        refusing everything after it) is a failed login: returns the error to raise,
        and the login backoff applies to the next attempt (counted once per session).
        """
        if self.config.username is None:
            return None
        if generation != self._generation or generation == self._working_generation:
            return None
        error = LoginRefused(
            "the NVR accepted the login but answered 401 on the new session "
            f"(first to {what}); backing off as after a refused login"
        )
        if self._refused_generation == generation - 1 and self._last_failure is not None:
            # The same refusal again: word it as before, so it is logged once.
            error = LoginRefused(self._last_failure)
        self.invalidate(generation)
        if self._refused_generation != generation:
            self._refused_generation = generation
            self._login_failed(error)
        return error

    def _login_failed(self, exc: LoginError) -> None:
        delay = self._login_backoff.next_delay()
        self._retry_at = time.monotonic() + delay
        self.login_problem = exc.reason
        fields = {"url": self.config.url, "reason": exc.reason, "retry_in": round(delay, 2)}
        if "CERTIFICATE" in exc.reason.upper() or "SSL" in exc.reason.upper():
            fields["hint"] = "check BRIDGE_NVR_CA_FILE (or BRIDGE_NVR_VERIFY_TLS) for this NVR"
        refused = isinstance(exc, LoginRefused | CredentialsRequired)
        self._metrics.logins.labels(self.nvr, "refused" if refused else "failed").inc()
        # One line per distinct failure until a login succeeds; the retries are debug.
        repeated = exc.reason == self._last_failure
        self._last_failure = exc.reason
        if refused:
            report = log.debug if repeated else log.error
            report("login refused", username=self.config.username, **fields)
        else:
            report = log.debug if repeated else log.warning
            report("login failed", **fields)

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
        # The backoff and the failure line are reset once a request works on the session
        # (``_session_worked``): an NVR that accepts the login and refuses the session
        # must keep backing off, and say so once.
        report = log.debug if self._last_failure is not None else log.info
        report("logged in", url=self.config.url, username=username)

    def _session_worked(self, generation: int) -> None:
        """A request succeeded on the session of ``generation``: the login really works."""
        if generation == self._working_generation:
            return
        self._working_generation = generation
        self._login_backoff.reset()
        if self._last_failure is not None:
            log.info("logged in again", url=self.config.url, username=self.config.username)
        self._last_failure = None
        self.login_problem = None

    async def _login_request(self, method: str, body: Any) -> Any:
        try:
            async with self._rest_slots:
                status, raw = await self._exchange(
                    method, LOGIN_PATH, None, body, timeout=REQUEST_TIMEOUT, limit=MAX_LOGIN_ANSWER
                )
        except TimeoutError:
            raise LoginUnavailable("login timed out") from None
        except aiohttp.ClientError as exc:
            raise LoginUnavailable(f"cannot reach the NVR: {_client_error(exc)}") from None
        except NvrError as exc:
            raise LoginUnavailable(exc.reason) from None
        if status == 401:
            raise LoginRefused("the NVR answered 401 to the login")
        if status >= 400:
            raise LoginUnavailable(f"login answered HTTP {status}")
        try:
            return parse_answer(raw, self.limits.json_max_depth)
        except NvrBadAnswer as exc:
            raise LoginUnavailable(exc.reason) from None

    # --- HTTP --------------------------------------------------------------------------------

    async def _exchange(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None,
        body: Any,
        *,
        timeout: float,
        limit: int,
    ) -> tuple[int, bytes]:
        """One request and its bounded body, following same-origin redirects only.

        aiohttp's own redirect handling is off: it would follow another origin, taking
        the session cookie along. 303 (and 301/302 of a POST) continue as a GET.
        """
        target: str | URL = path
        current = str(self._base.join(URL(path)))
        for _hop in range(MAX_REDIRECTS + 1):
            async with self.session.request(
                method,
                target,
                params=params,
                json=body,
                headers=self.cookies.header,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                if response.cookies:
                    self.cookies.update(response.cookies)
                if response.status not in REDIRECT_STATUSES:
                    return response.status, await read_bounded(response, limit, path)
                location = response.headers.get("Location", "")[:500]
            current = self._redirect_target(path, current, location)
            target = URL(URL(current).raw_path_qs, encoded=True)
            params = None
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method, body = "GET", None
        raise NvrRedirected(f"the NVR redirected {path} more than {MAX_REDIRECTS} times", path)

    def _redirect_target(self, path: str, current: str, location: str) -> str:
        """The same-origin URL a redirect from ``current`` points to; else NvrRedirected."""
        if not location:
            raise NvrRedirected(f"the NVR redirected {path} without a Location", location)
        try:
            resolved = urljoin(current, location)
            same = _origin(resolved) == self._origin
        except ValueError:
            raise NvrRedirected(
                f"the NVR redirected {path} to an invalid Location {location!r}", location
            ) from None
        if not same:
            raise NvrRedirected(
                f"the NVR redirected {path} to another origin ({location}); not followed, "
                "so the session cookie and the login stay with the NVR",
                location,
            )
        return resolved

    # --- REST ------------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        timeout: float = REQUEST_TIMEOUT,
        max_bytes: int | None = None,
        raw: bool = False,
    ) -> NvrAnswer:
        """One REST call: logs in first, re-logs in and retries once on 401.

        A request that failed to connect is retried once (it never reached the NVR); a
        timeout is not (it may have). ``max_bytes`` bounds the answer (default: the
        configured answer limit); ``raw`` returns the body as bytes, unparsed.
        """
        generation = await self.ensure_login()
        answer = await self._send(
            method, path, params, body, timeout=timeout, max_bytes=max_bytes, raw=raw
        )
        if answer.status == 401:
            if self.config.username is None:
                raise CredentialsRequired(_CREDENTIALS_HINT)
            refused = self._session_refused(generation, path)
            if refused is not None:
                raise refused
            self.invalidate(generation)
            generation = await self.ensure_login()
            answer = await self._send(
                method, path, params, body, timeout=timeout, max_bytes=max_bytes, raw=raw
            )
            if answer.status == 401:
                raise self._session_refused(generation, path) or NvrHttpError(
                    "the NVR answered 401 even after a fresh login", 401
                )
        self._session_worked(generation)
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
        *,
        timeout: float,
        max_bytes: int | None,
        raw: bool,
    ) -> NvrAnswer:
        histogram = self._metrics.child(self._metrics.request_seconds, self.nvr, path)
        limit = max_bytes if max_bytes is not None else self.limits.nvr_max_answer_bytes
        for attempt in (1, 2):
            try:
                async with self._rest_slots:
                    started = time.perf_counter()
                    status, data = await self._exchange(
                        method, path, params, body, timeout=timeout, limit=limit
                    )
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
            if raw and 200 <= status < 300:
                return NvrAnswer(status, data)
            return NvrAnswer(status, parse_answer(data, self.limits.json_max_depth))
        raise AssertionError("unreachable")  # pragma: no cover

    # --- websockets ------------------------------------------------------------------------

    async def open_websocket(self, path: str) -> ClientConnection:
        """Open a stream's websocket with the session cookie; re-login once on a 401.

        Every failure comes out as an ``NvrError`` (``LoginError`` for the login,
        ``NvrRedirected``, ``HandshakeFailed``) or ``OSError``/``TimeoutError``.
        """
        for attempt in (1, 2):
            generation = await self.ensure_login()
            try:
                connection = await _SameOriginConnect(
                    self._ws_base + path,
                    additional_headers=self.cookies.header,
                    ssl=self._ssl,
                    ping_interval=self._ping_interval,
                    ping_timeout=self._ping_timeout,
                    max_size=WS_MAX_FRAME,
                    max_queue=WS_MAX_QUEUE,
                    open_timeout=REQUEST_TIMEOUT,
                    close_timeout=2,
                    proxy=None,
                    user_agent_header="nvr-bridge",
                    compression=None,
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status != 401:
                    raise HandshakeFailed(f"handshake answered HTTP {status}") from None
                if self.config.username is None:
                    raise CredentialsRequired(_CREDENTIALS_HINT) from None
                refused = self._session_refused(generation, f"the {path} handshake")
                if refused is not None:
                    raise refused from None
                if attempt == 2:
                    raise HandshakeFailed("handshake answered HTTP 401 after a new login") from None
                self.invalidate(generation)
            except WebSocketException as exc:
                raise HandshakeFailed(f"handshake failed: {_short(exc)}") from None
            except ValueError as exc:
                # An invalid URI or port the library could not use.
                raise HandshakeFailed(f"handshake failed: {_short(exc)}") from None
            else:
                self._session_worked(generation)
                return connection
        raise AssertionError("unreachable")  # pragma: no cover


_CREDENTIALS_HINT = (
    "the NVR asks for a login but no username is configured: "
    "set BRIDGE_NVR_USERNAME and BRIDGE_NVR_PASSWORD"
)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _client_error(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return str(exc.os_error) or type(exc).__name__
    return _short(exc)
