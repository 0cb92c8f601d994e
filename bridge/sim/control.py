"""The simulator's control API under ``/_sim/``: drive a simulated NVR from another process.

Each route mirrors a method of ``SimulatedNvr`` (push, drop, expire, faults, silence,
bursts, history, rename_camera, snapshot, input_pin) or reads its state. No login is
needed; the simulator binds 127.0.0.1 unless told otherwise, and ``control_api=False``
turns these routes off. Bad requests get HTTP 400 with ``{"Result": "Error",
"Description": ...}``.

Routes: ``POST push {stream, payload | raw}``, ``POST drop {stream?}``, ``POST expire``,
``POST login_mode {mode, delay?}``, ``POST fault {path, mode, delay?, size?, depth?,
location?, status?}``, ``POST silent {silent}``, ``POST burst {stream, count,
per_frame?}``, ``POST history {stream, item, time_ms?}``, ``POST rename_camera {channel,
name}``, ``POST snapshot {channel, type?, time_ms?}`` (answers the searchSnapshotPath
entry), ``POST input_pin {pin, value}``, ``GET calls?path=``, ``GET state``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from bridge.nvr.models import STREAM_NAMES, StreamName
from bridge.sim.faults import (
    DEFAULT_DEPTH,
    DEFAULT_LOCATION,
    DEFAULT_OVERSIZE_BYTES,
    DEFAULT_REDIRECT_STATUS,
    LOGIN_MODES,
)

if TYPE_CHECKING:
    from bridge.sim.server import SimulatedNvr

CONTROL_PREFIX = "/_sim/"

ControlHandler = Callable[[Any, web.Request], Awaitable[Any]]


class ControlError(ValueError):
    """A control request that cannot be carried out; the message says why."""


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ControlError("the body must be a JSON object")
    return body


def _stream(value: Any) -> StreamName:
    if value not in STREAM_NAMES:
        raise ControlError(f"stream must be one of {', '.join(STREAM_NAMES)}, not {value!r}")
    stream: StreamName = value
    return stream


def _number(body: dict[str, Any], key: str, default: float) -> float:
    value = body.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ControlError(f"{key} must be a non-negative number, not {value!r}")
    return float(value)


def _count(body: dict[str, Any], key: str, default: int | None = None) -> int:
    value = body.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ControlError(f"{key} must be a positive integer, not {value!r}")
    return value


def _integer(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ControlError(f"{key} must be an integer, not {value!r}")
    return value


def _time_ms(body: dict[str, Any]) -> int | None:
    time_ms = body.get("time_ms")
    if time_ms is not None and (not isinstance(time_ms, int) or isinstance(time_ms, bool)):
        raise ControlError("time_ms must be an integer of epoch milliseconds")
    return time_ms


class SimControlApi:
    """Routes ``/_sim/<name>`` requests to the simulated NVR's test hooks."""

    def __init__(self, nvr: SimulatedNvr) -> None:
        self._nvr = nvr
        self.routes: dict[tuple[str, str], ControlHandler] = {
            ("POST", "push"): self._push,
            ("POST", "drop"): self._drop,
            ("POST", "expire"): self._expire,
            ("POST", "login_mode"): self._login_mode,
            ("POST", "fault"): self._fault,
            ("POST", "silent"): self._silent,
            ("POST", "burst"): self._burst,
            ("POST", "history"): self._history,
            ("POST", "rename_camera"): self._rename_camera,
            ("POST", "snapshot"): self._snapshot,
            ("POST", "input_pin"): self._input_pin,
            ("GET", "calls"): self._calls,
            ("GET", "state"): self._state,
        }

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one control request."""
        handler = self.routes.get((request.method, request.path.removeprefix(CONTROL_PREFIX)))
        if handler is None:
            return _json_response({"Result": "Error", "Description": "no such control"}, 404)
        body: Any = None
        if request.can_read_body:
            try:
                body = orjson.loads(await request.read())
            except orjson.JSONDecodeError:
                return _json_response({"Result": "Error", "Description": "body is not JSON"}, 400)
        try:
            answer = await handler(body, request)
        except (ValueError, TypeError) as exc:
            return _json_response({"Result": "Error", "Description": str(exc)}, 400)
        return _json_response({"Result": "OK"} if answer is None else answer)

    async def _push(self, body: Any, request: web.Request) -> None:
        body = _object(body)
        stream = _stream(body.get("stream"))
        if "raw" in body:
            raw = body["raw"]
            if not isinstance(raw, str):
                raise ControlError("raw must be a string, sent as is")
            await self._nvr.push(stream, raw)
        elif "payload" in body:
            if isinstance(body["payload"], str):
                raise ControlError("payload must be a JSON object or array; use raw for text")
            await self._nvr.push(stream, body["payload"])
        else:
            raise ControlError("give payload (JSON) or raw (text)")

    async def _drop(self, body: Any, request: web.Request) -> None:
        stream = _object(body or {}).get("stream")
        await self._nvr.drop_websockets(None if stream is None else _stream(stream))

    async def _expire(self, body: Any, request: web.Request) -> None:
        self._nvr.expire_sessions()

    async def _login_mode(self, body: Any, request: web.Request) -> None:
        body = _object(body)
        mode = body.get("mode")
        if mode not in LOGIN_MODES:
            raise ControlError(f"mode must be one of {', '.join(LOGIN_MODES)}, not {mode!r}")
        self._nvr.login_mode = mode
        self._nvr.login_delay = _number(body, "delay", self._nvr.login_delay)

    async def _fault(self, body: Any, request: web.Request) -> None:
        body = _object(body)
        path = body.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ControlError("path must be an absolute URL path such as /record/manualAlarm")
        location = body.get("location", DEFAULT_LOCATION)
        if not isinstance(location, str):
            raise ControlError("location must be a URL string")
        self._nvr.set_fault(
            path,
            body.get("mode"),
            _number(body, "delay", 15.0),
            size=_count(body, "size", DEFAULT_OVERSIZE_BYTES),
            depth=_count(body, "depth", DEFAULT_DEPTH),
            location=location,
            status=_count(body, "status", DEFAULT_REDIRECT_STATUS),
        )

    async def _silent(self, body: Any, request: web.Request) -> None:
        silent = _object(body).get("silent")
        if not isinstance(silent, bool):
            raise ControlError("silent must be true or false")
        self._nvr.silent = silent

    async def _burst(self, body: Any, request: web.Request) -> None:
        body = _object(body)
        stream = _stream(body.get("stream"))
        await self._nvr.burst(stream, _count(body, "count"), _count(body, "per_frame", 1))

    async def _history(self, body: Any, request: web.Request) -> None:
        body = _object(body)
        self._nvr.record_history(body.get("stream"), body.get("item"), _time_ms(body))

    async def _rename_camera(self, body: Any, request: web.Request) -> None:
        body = _object(body)
        await self._nvr.rename_camera(_integer(body, "channel"), body.get("name"))

    async def _snapshot(self, body: Any, request: web.Request) -> dict[str, Any]:
        body = _object(body)
        kind = body.get("type", "Manual")
        record = self._nvr.take_snapshot(_integer(body, "channel"), kind, _time_ms(body))
        return record.entry()

    async def _input_pin(self, body: Any, request: web.Request) -> None:
        body = _object(body)
        self._nvr.set_input_pin(_integer(body, "pin"), _integer(body, "value"))

    async def _calls(self, body: Any, request: web.Request) -> list[dict[str, Any]]:
        path = request.query.get("path")
        calls = self._nvr.calls if path is None else self._nvr.calls_to(path)
        return [call.to_json() for call in calls]

    async def _state(self, body: Any, request: web.Request) -> dict[str, Any]:
        nvr = self._nvr
        return {
            "clients": {stream: nvr.clients(stream) for stream in STREAM_NAMES},
            "logins": nvr.logins,
            "login_attempts": nvr.login_attempts,
            "login_mode": nvr.login_mode,
            "silent": nvr.silent,
            "faults": nvr.faults,
            "pins": nvr.device.pin_status()["pin_value"],
            "cameras": {str(ch): name for ch, name in nvr.device.camera_names.items()},
            "snapshots": len(nvr.snapshots),
        }
