"""A hostile NVR of the tests' own: enough of the SDK to be logged into, then anything.

``HostileNvr`` serves the digest login (it accepts any answer and sets a session cookie),
the five stream websockets and small default REST answers on 127.0.0.1, port 0. A test
replaces any REST answer (``rest``) or websocket handshake (``handshakes``) with a
handler of its own, pushes raw frames, and reads what the bridge sent it (``requests``,
``handshakes_seen``, ``logins``). The builders make what no JSON encoder would: documents
nested a thousand deep, numbers beyond 64 bits, answers of 50 MB streamed in chunks and
never held in memory. ``Recorder`` is a second origin that only records what reaches it.

It does not depend on the project's simulator (``bridge.sim``), so its hostile behaviour
stays fixed while the simulator evolves.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import orjson
from aiohttp import WSMsgType, web

from bridge.nvr.auth import LOGIN_PATH
from bridge.nvr.models import STREAM_PATHS, StreamName

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SESSION_COOKIE = "session"
_STREAM_OF_PATH: dict[str, StreamName] = {path: name for name, path in STREAM_PATHS.items()}


@dataclass(frozen=True)
class Seen:
    """One HTTP request (or websocket handshake) as it reached a server."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def cookie(self) -> str | None:
        """The ``Cookie`` header it carried, if any."""
        return self.headers.get("Cookie")


async def _seen(request: web.Request) -> Seen:
    body = await request.read() if request.can_read_body else b""
    return Seen(request.method, request.path, dict(request.query), dict(request.headers), body)


def _json(body: Any, status: int = 200) -> web.Response:
    data = body.encode() if isinstance(body, str) else body
    if not isinstance(data, bytes):
        data = orjson.dumps(data)
    return web.Response(body=data, status=status, content_type="application/json")


# --- what a hostile NVR sends ----------------------------------------------------------


def nested_list(depth: int, leaf: str = '"x"') -> str:
    """JSON text of ``depth`` nested arrays around ``leaf`` (no encoder would write it)."""
    return "[" * depth + leaf + "]" * depth


def nested_object(depth: int, leaf: str = '"x"', key: str = "a") -> str:
    """JSON text of ``depth`` nested objects ``{"a": {"a": ... leaf}}``."""
    return f'{{"{key}":' * depth + leaf + "}" * depth


def answer(body: Any, status: int = 200) -> Handler:
    """A handler answering ``body`` (JSON text as is, anything else JSON-encoded)."""

    async def handle(_: web.Request) -> web.StreamResponse:
        return _json(body, status)

    return handle


def redirect(location: str, status: int = 302) -> Handler:
    """A handler answering a redirect to ``location``."""

    async def handle(_: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": location})

    return handle


@dataclass
class StreamedAnswer:
    """What a ``streamed`` handler did: bytes written, and whether the client hung up."""

    total: int
    sent: int = 0
    started: bool = False
    finished: bool = False
    closed_early: bool = False


def streamed(
    total: int, *, chunk: int = 64 * 1024, announce: bool = False
) -> tuple[Handler, StreamedAnswer]:
    """A handler streaming a JSON string of ``total`` bytes in chunks, never in memory.

    ``announce`` sends a Content-Length; otherwise the body is chunked. The record says
    how far it got before the client closed the connection.
    """
    record = StreamedAnswer(total)
    block = b"x" * chunk

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if announce:
            response.content_length = total
        else:
            response.enable_chunked_encoding()
        record.started = True
        try:
            await response.prepare(request)
            await response.write(b'"')
            record.sent = 1
            while record.sent < total - 1:
                part = block[: total - 1 - record.sent]
                await response.write(part)
                record.sent += len(part)
            await response.write(b'"')
            record.sent += 1
            await response.write_eof()
        except ConnectionError:
            record.closed_early = True
            return response
        record.finished = True
        return response

    return handle, record


# --- the server ------------------------------------------------------------------------


class HostileNvr:
    """An NVR on loopback whose answers and frames the test decides (see module doc)."""

    def __init__(self) -> None:
        self.rest: dict[str, Handler] = {}
        self.handshakes: dict[StreamName, Handler] = {}
        # Accept the login, then answer 401 to every handshake and REST call.
        self.refuse_after_login = False
        self.system_info: Any = {"device_name": "Hostile NVR", "ipcam_channels": 2}
        self.cameras: Any = []
        self.history: Any = []
        self.requests: list[Seen] = []
        self.handshakes_seen: list[Seen] = []
        self.logins = 0
        self.login_attempts = 0
        self.port = 0
        self._clients: dict[str, set[web.WebSocketResponse]] = {p: set() for p in _STREAM_OF_PATH}
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:port``."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on an ephemeral loopback port."""
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Close every websocket and the server."""
        if self._runner is None:
            return
        for stream in STREAM_PATHS:
            await self.drop(stream)
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- what the test does ------------------------------------------------------------

    def clients(self, stream: StreamName) -> int:
        """How many websockets are open on ``stream``."""
        return len(self._clients[STREAM_PATHS[stream]])

    def all_connected(self) -> bool:
        """Whether every stream has a websocket open."""
        return all(self._clients.values())

    async def push(self, stream: StreamName, frame: Any) -> None:
        """Send one text frame to every client of ``stream``.

        ``str`` and ``bytes`` go as they are (hand-made JSON, garbage); anything else is
        JSON-encoded.
        """
        if isinstance(frame, str):
            data = frame.encode()
        elif isinstance(frame, bytes):
            data = frame
        else:
            data = orjson.dumps(frame)
        for ws in list(self._clients[STREAM_PATHS[stream]]):
            with contextlib.suppress(ConnectionError):
                await ws.send_frame(data, WSMsgType.TEXT)

    async def drop(self, stream: StreamName) -> None:
        """Close every websocket of ``stream`` (going away)."""
        for ws in list(self._clients[STREAM_PATHS[stream]]):
            with contextlib.suppress(ConnectionError):
                await ws.close(code=1001, message=b"hostile nvr closing")

    def calls_to(self, path: str) -> list[Seen]:
        """The REST requests that reached ``path``, oldest first."""
        return [seen for seen in self.requests if seen.path == path]

    def handshakes_to(self, stream: StreamName) -> list[Seen]:
        """The websocket handshakes of ``stream``, oldest first."""
        return [seen for seen in self.handshakes_seen if seen.path == STREAM_PATHS[stream]]

    # -- serving ---------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        seen = await _seen(request)
        stream = _STREAM_OF_PATH.get(request.path)
        if stream is not None and request.headers.get("Upgrade", "").lower() == "websocket":
            self.handshakes_seen.append(seen)
            if self.refuse_after_login:
                return _json({"Result": "Error", "Description": "Unauthorized"}, 401)
            custom = self.handshakes.get(stream)
            if custom is not None:
                return await custom(request)
            return await self._serve_websocket(request)
        self.requests.append(seen)
        custom = self.rest.get(request.path)
        if custom is not None:
            return await custom(request)
        if request.path == LOGIN_PATH:
            return self._login(request)
        if self.refuse_after_login:
            return _json({"Result": "Error", "Description": "Unauthorized"}, 401)
        defaults = {
            "/system/getSystemInfo": self.system_info,
            "/device/cameraList": self.cameras,
            "/record/eventSearch": self.history,
            "/record/metaSearch": [],
        }
        return _json(defaults.get(request.path, {"Result": "OK"}))

    def _login(self, request: web.Request) -> web.Response:
        if request.method == "GET":
            return _json({"realm": "hostile", "qop": "auth", "nonce": secrets.token_hex(8)})
        self.login_attempts += 1
        self.logins += 1
        response = _json({"Result": "OK", "Description": "userID=1"})
        response.set_cookie(SESSION_COOKIE, secrets.token_hex(8), path="/")
        return response

    async def _serve_websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=1024 * 1024)
        await ws.prepare(request)
        clients = self._clients[request.path]
        clients.add(ws)
        try:
            async for message in ws:
                if message.type is WSMsgType.ERROR:
                    break
        finally:
            clients.discard(ws)
        return ws


@dataclass
class Recorder:
    """Another origin on loopback: it records every request and answers 200."""

    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:port``."""
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._record)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _record(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(await _seen(request))
        return _json({"Result": "OK", "Description": "stolen"})
