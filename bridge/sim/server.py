"""The simulated EverFocus NVR: the SDK's login, REST endpoints and websocket streams.

One aiohttp application serves everything through a single dispatcher, so that every
REST call is recorded and fault injection applies per path whatever the route:

- ``/admin/login``, ``/admin/logout``: the digest login (guide 10.1 to 10.3);
- the five stream websockets (``bridge.nvr.models.STREAM_PATHS``) and the inbound
  ``/meta/addEvent`` and ``/meta/addMeta`` websockets (guide 4.1, 4.3);
- the REST endpoints of ``rest.py``; ``/_sim/`` the control API of ``control.py``.

A fault (``set_fault``, see ``faults.py`` for the modes) replaces the answer of any REST
path, served or not. Besides its streams, the NVR keeps what a client may ask about
later: the history of events and metadata, the snapshots taken, a system log and its
disks; traffic (``traffic=True``) feeds all of them.

Silence (``silent = True``) is simulated without touching aiohttp's internals: every
websocket is opened with ``autoping=False``, so the server's reader hands pings to this
module, which answers them with a pong unless silent; and the writers send nothing while
silent. The reader keeps reading, so a client that gives up and closes is still noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Collection
from types import TracebackType
from typing import Any, Literal, Self

import orjson
import structlog
from aiohttp import WSMsgType, web

from bridge.nvr.auth import LOGIN_PATH
from bridge.nvr.models import STREAM_NAMES, STREAM_PATHS, StreamName
from bridge.sim.calls import RecordedCall
from bridge.sim.control import CONTROL_PREFIX, SimControlApi
from bridge.sim.device import ALARM_IN_PINS, DEFAULT_MAC, DeviceIdentity, DeviceState
from bridge.sim.discovery import DISCOVERY_PORT, start_responder
from bridge.sim.faults import (
    DEFAULT_DELAY,
    DEFAULT_DEPTH,
    DEFAULT_LOCATION,
    DEFAULT_OVERSIZE_BYTES,
    DEFAULT_REDIRECT_STATUS,
    LOGIN_ANSWERS,
    Fault,
    FaultMode,
    LoginMode,
    serve_fault,
)
from bridge.sim.history import History
from bridge.sim.hub import CLOSE_TIMEOUT, StreamHub, WebsocketClient
from bridge.sim.logs import SystemLog
from bridge.sim.ptz import DEFAULT_PTZ_CHANNELS
from bridge.sim.rest import Answer, NvrRestApi, RequestRefused, event_item, meta_item
from bridge.sim.sessions import LoginDesk
from bridge.sim.snapshots import SNAPSHOT_TYPES, SnapshotRecord, SnapshotStore
from bridge.sim.storage import Storage
from bridge.sim.traffic import BurstItems, TrafficGenerator, message, now_ms

log = structlog.get_logger("bridge.sim")

__all__ = ["FaultMode", "LoginMode", "RecordedCall", "SimulatedNvr"]

LOGOUT_PATH = "/admin/logout"
SESSION_COOKIE = "session"
STATUS_PATH = STREAM_PATHS["status"]
# Websockets clients send items to, as they would POST them (guide 4.1, 4.3).
INBOUND_PATHS: dict[str, Literal["event", "meta"]] = {
    "/meta/addEvent": "event",
    "/meta/addMeta": "meta",
}
STATUS_INTERVAL = 1.0
MAX_CALLS = 100_000
MAX_BODY_BYTES = 1024 * 1024
UNAUTHORIZED = Answer(401, {"Result": "Error", "Description": "Unauthorized"})
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - names, not a bind


async def _read_json(request: web.Request) -> Any:
    """The request's JSON body, or None when it has none or it is not JSON."""
    if not request.can_read_body:
        return None
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None


class SimulatedNvr:
    """An NVR on loopback that speaks the SDK, records calls and takes injected faults.

    Drive it in-process through its methods, or from another process through the
    ``/_sim/`` control API. ``username=None`` makes every endpoint open. ``ptz_channels``
    are the channels whose camera has PTZ (the others refuse every PTZ command).
    """

    def __init__(
        self,
        *,
        username: str | None = "admin",
        password: str = "admin",  # noqa: S107 - the SDK's factory default, for a simulator
        channels: int = 4,
        traffic: bool = False,
        traffic_rate: float = 2.0,
        seed: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        name: str = "Simulated NVR",
        mac: str = DEFAULT_MAC,
        control_api: bool = True,
        ptz_channels: Collection[int] = DEFAULT_PTZ_CHANNELS,
    ) -> None:
        if channels < 1:
            raise ValueError(f"an NVR needs at least one channel, not {channels}")
        self.username, self.password = username, password
        self.traffic, self.traffic_rate = traffic, traffic_rate
        self.control_api = control_api
        self.identity = DeviceIdentity(name=name, channels=channels, mac=mac)
        self._rng = random.Random(seed)
        self.device = DeviceState(channels, rng=self._rng)
        self.history = History()
        self.log = SystemLog()
        self.snapshots = SnapshotStore()
        self.storage = Storage(self.identity.serial, channels)
        self.rest = NvrRestApi(
            identity=self.identity,
            device=self.device,
            history=self.history,
            emit=self.emit,
            log=self.log,
            snapshots=self.snapshots,
            storage=self.storage,
            ptz_channels=ptz_channels,
            user=username,
        )
        self.calls: list[RecordedCall] = []
        self.logins = 0
        self.login_attempts = 0
        # REST calls being answered right now, and the most at once (for in-flight bounds).
        self.inflight = 0
        self.peak_inflight = 0
        self.login_mode: LoginMode = "ok"
        self.login_delay = 5.0
        self.host = "127.0.0.1"
        self.port = 0
        self._ssl = ssl_context
        self._desk = LoginDesk(username, password)
        self._hub = StreamHub()
        self._burst = BurstItems(self._rng, self.identity, self.device)
        self._control = SimControlApi(self)
        self._faults: dict[str, Fault] = {}
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._discovery: asyncio.DatagramTransport | None = None
        self._stopping = asyncio.Event()

    # -- life cycle --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://host:port`` (``https://`` with TLS); a wildcard host shows as 127.0.0.1."""
        scheme = "https" if self._ssl is not None else "http"
        host = "127.0.0.1" if self.host in WILDCARD_HOSTS else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0 = ephemeral) and start the status ticker and traffic."""
        if self._runner is not None:
            raise RuntimeError("the simulated NVR is already running")
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, ssl_context=self._ssl).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.host, self.port = host, int(runner.addresses[0][1])
        label = f"{self.identity.name}@{self.port}"
        self._tasks = [asyncio.create_task(self._tick_status(), name=f"sim-status[{label}]")]
        if self.traffic:
            traffic = TrafficGenerator(
                rng=self._rng,
                identity=self.identity,
                device=self.device,
                emit=self.emit,
                rate=self.traffic_rate,
                log=self.log,
                snapshots=self.snapshots,
            )
            self._tasks.append(asyncio.create_task(traffic.run(), name=f"sim-traffic[{label}]"))
        self.log.add("System", "System Startup")
        log.info("simulator started", url=self.url, nvr=self.identity.name, traffic=self.traffic)

    async def stop(self) -> None:
        """Close every websocket, the discovery socket and the server; safe to call twice."""
        if self._discovery is not None:
            self._discovery.close()
            self._discovery = None
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping.set()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                log.error("simulator task failed", task=task.get_name(), exc_info=task.exception())
        await self._hub.close()
        await runner.cleanup()
        log.info("simulator stopped", nvr=self.identity.name)

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

    async def start_discovery(self, host: str = "127.0.0.1", port: int = DISCOVERY_PORT) -> int:
        """Answer UDP discovery inquiries on ``host:port`` (0 = ephemeral); returns the port.

        Bind ``0.0.0.0`` to hear real broadcasts; stopped by ``stop()``.
        """
        if self._discovery is not None:
            self._discovery.close()
        address = host if host not in WILDCARD_HOSTS else "127.0.0.1"
        self._discovery, bound = await start_responder(
            lambda: [self.identity.device_info_xml(self.port, address)], host, port
        )
        return bound

    # -- test hooks --------------------------------------------------------------------

    @property
    def silent(self) -> bool:
        """When True, websockets get nothing, not even pongs (a hung NVR)."""
        return self._hub.silent

    @silent.setter
    def silent(self, value: bool) -> None:
        self._hub.silent = value

    @property
    def faults(self) -> dict[str, dict[str, Any]]:
        """The faults in force, by path, with their parameters."""
        return {p: f.to_json() for p, f in self._faults.items()}

    def set_fault(
        self,
        path: str,
        mode: FaultMode | None,
        delay: float = DEFAULT_DELAY,
        *,
        size: int = DEFAULT_OVERSIZE_BYTES,
        depth: int = DEFAULT_DEPTH,
        location: str = DEFAULT_LOCATION,
        status: int = DEFAULT_REDIRECT_STATUS,
    ) -> None:
        """Make REST calls to ``path`` misbehave; ``mode`` None clears the fault.

        ``slow`` answers normally after ``delay`` seconds; every other mode answers at once
        with its fault (``faults.py``): ``size`` is the ``oversize`` body's length, ``depth``
        the ``deep`` body's nesting, ``location`` and ``status`` the ``redirect``. Faulted
        calls are still recorded. ValueError for an unknown mode or a bad parameter.
        """
        if mode is None:
            self._faults.pop(path, None)
            return
        self._faults[path] = Fault(
            mode, delay, size=size, depth=depth, location=location, status=status
        )

    def calls_to(self, path: str) -> list[RecordedCall]:
        """The recorded REST calls to ``path``, oldest first."""
        return [call for call in self.calls if call.path == path]

    def clients(self, stream: str) -> int:
        """How many websockets are connected on ``stream``."""
        return self._hub.count(_stream_path(stream))

    def expire_sessions(self) -> None:
        """Forget every session: the next request or handshake with a cookie gets 401."""
        self._desk.expire_all()

    async def drop_websockets(self, stream: str | None = None) -> None:
        """Close every websocket (of one stream, when given) and wait until they are gone."""
        await self._hub.close(None if stream is None else [_stream_path(stream)])

    async def push(self, stream: str, payload: Any) -> None:
        """Send ``payload`` to every client of ``stream``.

        ``str`` and ``bytes`` are sent as they are, as a text frame (garbage is welcome);
        anything else is JSON-encoded. Valid event and meta objects also enter the history.
        """
        path = _stream_path(stream)
        if isinstance(payload, str):
            frame = payload.encode("utf-8")
        elif isinstance(payload, bytes):
            frame = payload
        else:
            frame = orjson.dumps(payload)
            time_ms = now_ms()
            for item in payload if isinstance(payload, list) else [payload]:
                self._observe(stream, item, time_ms)
        await self._hub.broadcast(path, frame)

    async def emit(self, stream: StreamName, item: dict[str, Any]) -> None:
        """Send one item the NVR produced itself, updating state and history."""
        await self.push(stream, item)

    async def burst(self, stream: str, count: int, per_frame: int = 1) -> None:
        """Send ``count`` valid random items of ``stream`` at once, ``per_frame`` per frame.

        With ``per_frame`` 1 each frame is one object; otherwise frames are arrays.
        """
        name = _stream_name(stream)
        if count < 0 or per_frame < 1:
            raise ValueError("count must be >= 0 and per_frame >= 1")
        sent = 0
        while sent < count:
            items = [self._burst.item(name) for _ in range(min(per_frame, count - sent))]
            await self.push(stream, items[0] if per_frame == 1 else items)
            sent += len(items)

    async def rename_camera(self, channel: int, name: str) -> None:
        """Rename a camera: cameraList shows the new DeviceName and a cameraDetail is sent."""
        if not self.device.has_channel(channel):
            raise ValueError(f"channel must be 1..{self.device.channels}, not {channel!r}")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a camera name must be a non-empty string, not {name!r}")
        self.device.camera_names[channel] = name
        await self.emit(
            "message", message("cameraDetail", self._rng, self.identity, self.device, channel)
        )

    def take_snapshot(
        self, channel: int, kind: str = "Manual", time_ms: int | None = None
    ) -> SnapshotRecord:
        """Take a snapshot (``kind`` one of the guide's types) as of ``time_ms`` (default now).

        It is then found by searchSnapshotPath and downloaded at its ``path``.
        """
        if not self.device.has_channel(channel):
            raise ValueError(f"channel must be 1..{self.device.channels}, not {channel!r}")
        if kind not in SNAPSHOT_TYPES:
            raise ValueError(f"kind must be one of {', '.join(SNAPSHOT_TYPES)}, not {kind!r}")
        return self.snapshots.take(channel, kind, now_ms() if time_ms is None else time_ms)

    def set_input_pin(self, pin: int, value: int) -> None:
        """Drive an alarm input pin (1 to 4) as the world would; pinManualSetting cannot."""
        if pin not in ALARM_IN_PINS:
            raise ValueError(f"pin must be an alarm input {ALARM_IN_PINS}, not {pin!r}")
        if value not in (0, 1) or isinstance(value, bool):
            raise ValueError(f"value must be 0 or 1, not {value!r}")
        if self.device.set_pin(pin, value):
            self.log.pin(pin, value)

    def record_history(self, stream: str, item: Any, time_ms: int | None = None) -> None:
        """Add an event or meta item to the searchable history without sending it.

        ``time_ms`` defaults to now; ValueError when the item is not a valid one.
        """
        when = now_ms() if time_ms is None else time_ms
        if not self.history.record(stream, item, when):
            raise ValueError(f"not a valid {stream} item: {item!r}")

    # -- internals ---------------------------------------------------------------------

    def _observe(self, stream: str, item: Any, time_ms: int) -> None:
        """Let a sent item change the device state and enter the history and the log."""
        if stream == "event" and isinstance(item, dict):
            self.device.observe_event(item)
        if stream in ("event", "meta"):
            self.history.record(stream, item, time_ms)
        if stream == "exception":
            self.storage.observe_exception(item)
        self.log.observe(stream, item, self._recording)

    def _recording(self, channel: int) -> bool:
        """Whether ``channel`` records now (False for a channel the NVR does not have)."""
        return self.device.has_channel(channel) and bool(
            self.device.channel_status(channel)["Recording"]
        )

    def _status_frame(self) -> bytes:
        return orjson.dumps(self.device.status())

    async def _tick_status(self) -> None:
        """Send the camera status array to cameraStatus clients every second."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            next_tick = max(next_tick + STATUS_INTERVAL, loop.time())
            await asyncio.sleep(next_tick - loop.time())
            if self._hub.count(STATUS_PATH):
                await self._hub.broadcast(STATUS_PATH, self._status_frame())

    async def _pause(self, seconds: float, request: web.Request | None = None) -> None:
        """Sleep ``seconds``; end early when the NVR stops, or the ``request``'s client leaves.

        So stop() never waits for a slow answer, nor is a departed client's login completed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        # aiohttp does not tell a handler that its client left: poll for it.
        step = seconds if request is None else 0.05
        while not self._stopping.is_set() and (left := deadline - loop.time()) > 0:
            if request is not None and _client_gone(request):
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, step)):
                    await self._stopping.wait()

    def _record(self, call: RecordedCall) -> None:
        self.calls.append(call)
        if len(self.calls) > MAX_CALLS + MAX_CALLS // 10:
            del self.calls[:-MAX_CALLS]

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        """Every request: control API, login, websockets, then the REST endpoints."""
        path = request.path
        if path.startswith(CONTROL_PREFIX) and self.control_api:
            return await self._control.handle(request)
        if path == LOGIN_PATH:
            return await self._login(request)
        if path == LOGOUT_PATH:
            self._desk.close_session(request.cookies.get(SESSION_COOKIE))
            self.log.add("System", "Logout", user=self.username)
            return Answer(200, {"Result": "OK"}).to_response()
        authorized = self._desk.valid(request.cookies.get(SESSION_COOKIE))
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if upgrade and request.method == "GET" and _is_websocket_path(path):
            if not authorized:
                return UNAUTHORIZED.to_response()
            return await self._serve_websocket(request)
        call = RecordedCall(
            method=request.method,
            path=path,
            query=dict(request.query),
            body=await _read_json(request),
            time=time.time(),
            authorized=authorized,
        )
        self._record(call)
        if not authorized:
            return UNAUTHORIZED.to_response()
        self.inflight += 1
        self.peak_inflight = max(self.peak_inflight, self.inflight)
        try:
            fault = self._faults.get(path)
            if fault is not None and fault.mode != "slow":
                return await serve_fault(fault, request)
            if fault is not None:
                await self._pause(fault.delay)
            return (await self.rest.answer(call)).to_response()
        finally:
            self.inflight -= 1

    async def _login(self, request: web.Request) -> web.Response:
        """``GET`` hands out a challenge; ``POST`` checks the answer and opens a session."""
        if request.method == "GET":
            return Answer(200, self._desk.challenge()).to_response()
        if request.method != "POST":
            return Answer(405).to_response()
        self.login_attempts += 1
        body = await _read_json(request)
        mode = self.login_mode
        if mode in LOGIN_ANSWERS:
            log.debug("login refused by fault", mode=mode)
            return LOGIN_ANSWERS[mode].to_response()
        if mode == "slow":
            await self._pause(self.login_delay, request)
            if _client_gone(request):
                # The client timed out: no session, and it does not count as a login.
                log.info("login abandoned", nvr=self.identity.name)
                return Answer(503).to_response()
        if not self._desk.check(body):
            log.info("login refused", nvr=self.identity.name)
            user = body.get("username") if isinstance(body, dict) else None
            self.log.add(
                "System", "Login Failed", user=user[:64] if isinstance(user, str) else None
            )
            return LOGIN_ANSWERS["refuse"].to_response()
        self.logins += 1
        self.log.add("System", "Login", user=self.username)
        response = Answer(200, {"Result": "OK", "Description": "userID=1"}).to_response()
        response.set_cookie(SESSION_COOKIE, self._desk.open_session(), path="/", httponly=True)
        return response

    async def _serve_websocket(self, request: web.Request) -> web.WebSocketResponse:
        """One websocket, from handshake to close (the reader; a task writes)."""
        # No permessage-deflate: the guide names none, and a client offering it (Node-RED's
        # ws does) must not get compressed frames that the bridge would never see.
        ws = web.WebSocketResponse(autoping=False, timeout=CLOSE_TIMEOUT, compress=False)
        await ws.prepare(request)
        client = WebsocketClient(request.path, ws, request.transport)
        self._hub.add(client)
        writer = asyncio.create_task(client.write(self._hub), name=f"sim-ws{request.path}")
        log.debug("client connected", path=request.path)
        try:
            if request.path == STATUS_PATH:
                client.offer(self._status_frame())
            async for message in ws:
                if message.type is WSMsgType.PING and not self._hub.silent:
                    await ws.pong(message.data)
                elif message.type is WSMsgType.TEXT and request.path in INBOUND_PATHS:
                    await self._inbound(INBOUND_PATHS[request.path], message.data)
                elif message.type is WSMsgType.ERROR:
                    break
        except ConnectionError:
            log.debug("client gone", path=request.path)
        finally:
            self._hub.remove(client)
            await _finish_writer(client, writer)
            log.debug("client disconnected", path=request.path)
        return ws

    async def _inbound(self, kind: Literal["event", "meta"], text: str) -> None:
        """An item (or array of items) a client threw over a websocket (guide 4.1, 4.3)."""
        try:
            payload = orjson.loads(text)
        except orjson.JSONDecodeError:
            log.debug("inbound frame not json", kind=kind)
            return
        make = event_item if kind == "event" else meta_item
        for body in payload if isinstance(payload, list) else [payload]:
            try:
                item = make(self.device, body)
            except RequestRefused as exc:
                log.debug("inbound item refused", kind=kind, reason=str(exc))
                continue
            await self.emit(kind, item)


def _stream_name(stream: str) -> StreamName:
    """``stream`` checked to be a stream name; ValueError for an unknown name."""
    for name in STREAM_NAMES:
        if stream == name:
            return name
    raise ValueError(f"stream must be one of {', '.join(STREAM_NAMES)}, not {stream!r}")


def _stream_path(stream: str) -> str:
    """The websocket path of a stream name; ValueError for an unknown name."""
    return STREAM_PATHS[_stream_name(stream)]


def _client_gone(request: web.Request) -> bool:
    """Whether the client closed its connection while the request was being served."""
    return request.transport is None or request.transport.is_closing()


def _is_websocket_path(path: str) -> bool:
    return path in INBOUND_PATHS or path in STREAM_PATHS.values()


async def _finish_writer(client: WebsocketClient, writer: asyncio.Task[None]) -> None:
    """End a client's writer: at once when the peer left, after the close frame when we closed."""
    if not client.closing:
        writer.cancel()
    try:
        _, pending = await asyncio.wait([writer], timeout=CLOSE_TIMEOUT + 1.0)
        if pending:
            client.abort()
            writer.cancel()
    finally:
        client.finished.set()
    if writer.done() and not writer.cancelled() and writer.exception() is not None:
        log.error("websocket writer failed", path=client.path, exc_info=writer.exception())
