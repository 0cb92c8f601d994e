"""The NVR's REST endpoints that the bridge uses, as a dispatch table of small handlers.

Each handler takes the recorded call and returns an ``Answer``; side effects go to the
device state and, through ``emit``, to the websocket streams. Refusals follow the guide:
HTTP 200 with ``{"Result": "Error", "Description": ...}``. An unknown path is a 404.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bridge.sim.calls import RecordedCall
from bridge.sim.device import DeviceIdentity, DeviceState, ManualKind
from bridge.sim.history import History, SearchError
from bridge.sim.ptz import PtzCameras, PtzError
from bridge.sim.traffic import Emit

EVENT_STATES = frozenset({"active", "inactive", "once"})
MANUAL_COMMANDS = frozenset({"start", "stop"})
BUZZER_MAX_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: a status and a JSON body, or no body (plain reason text)."""

    status: int
    body: Any = None


OK = Answer(200, {"Result": "OK"})
NOT_FOUND = Answer(404)
METHOD_NOT_ALLOWED = Answer(405)


def refused(description: str) -> Answer:
    """The NVR's refusal: HTTP 200 with ``Result: Error``."""
    return Answer(200, {"Result": "Error", "Description": description})


class RequestRefused(ValueError):
    """A request body the NVR refuses; the message is the answer's Description."""


Handler = Callable[[RecordedCall], Awaitable[Answer]]


def _body_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestRefused("the body must be a JSON object")
    return body


def _channel(device: DeviceState, value: Any, field: str = "ChannelID") -> int:
    if not device.has_channel(value):
        raise RequestRefused(
            f"{field} must be a channel number 1..{device.channels}, not {value!r}"
        )
    channel: int = value
    return channel


def _query_int(query: dict[str, str], key: str) -> int:
    value = query.get(key, "")
    if not value.isdigit():
        raise RequestRefused(f"query parameter {key} must be a number, not {value!r}")
    return int(value)


def event_item(device: DeviceState, body: Any) -> dict[str, Any]:
    """The eventHook item of an addEvent body (guide 4.1); RequestRefused when invalid."""
    body = _body_object(body)
    channel = _channel(device, body.get("ChannelID"))
    kind, state = body.get("Type"), body.get("State")
    if not isinstance(kind, str) or not kind:
        raise RequestRefused("Type must be a non-empty string")
    if state not in EVENT_STATES:
        raise RequestRefused(f"State must be active, inactive or once, not {state!r}")
    return {"ChannelID": channel, "Type": kind, "State": state}


def meta_item(device: DeviceState, body: Any) -> dict[str, Any]:
    """The metaHook item of an addMeta body (guide 4.3); RequestRefused when invalid."""
    body = _body_object(body)
    channel = _channel(device, body.get("ChannelID"))
    kind, data = body.get("Type"), body.get("Data")
    if not isinstance(kind, str) or not kind:
        raise RequestRefused("Type must be a non-empty string")
    if not isinstance(data, str):
        raise RequestRefused("Data must be a string")
    return {"ChannelID": channel, "Type": kind, "Data": data}


class NvrRestApi:
    """The REST endpoints: ``answer(call)`` routes a call to its handler."""

    def __init__(
        self,
        *,
        identity: DeviceIdentity,
        device: DeviceState,
        history: History,
        emit: Emit,
    ) -> None:
        self.identity, self.device, self.history, self._emit = identity, device, history, emit
        self.ptz = PtzCameras()
        self.buzzer_until = 0.0
        self.routes: dict[str, dict[str, Handler]] = {
            "/device/cameraStatus": {"GET": self._camera_status},
            "/device/cameraList": {"GET": self._camera_list},
            "/device/ptzControl": {"POST": self._ptz_control},
            "/device/getSnapshot": {"GET": self._snapshot},
            "/meta/addEvent": {"POST": self._add_event},
            "/meta/addMeta": {"POST": self._add_meta},
            "/record/manualRecord": {"POST": self._manual_record},
            "/record/manualAlarm": {"POST": self._manual_alarm},
            "/record/eventSearch": {"POST": self._event_search},
            "/record/metaSearch": {"POST": self._meta_search},
            "/dio/pinManualSetting": {"POST": self._pin_setting},
            "/dio/GetPinStatus": {"GET": self._pin_status},
            "/dio/GetGPIOInfo": {"GET": self._gpio_info},
            "/system/callBuzzer": {"GET": self._buzzer},
            "/system/getSystemInfo": {"GET": self._system_info},
        }

    async def answer(self, call: RecordedCall) -> Answer:
        """The NVR's answer to ``call``: 404 for an unknown path, 405 for a wrong method."""
        methods = self.routes.get(call.path)
        if methods is None:
            return NOT_FOUND
        handler = methods.get(call.method)
        if handler is None:
            return METHOD_NOT_ALLOWED
        try:
            return await handler(call)
        except RequestRefused as exc:
            return refused(str(exc))

    async def _camera_status(self, call: RecordedCall) -> Answer:
        return Answer(200, self.device.status())

    async def _camera_list(self, call: RecordedCall) -> Answer:
        channels = range(1, self.device.channels + 1)
        return Answer(200, [self.identity.camera(ch) for ch in channels])

    async def _ptz_control(self, call: RecordedCall) -> Answer:
        channel = _channel(self.device, _query_int(call.query, "ChannelID"))
        try:
            return Answer(200, self.ptz.command(channel, call.body))
        except PtzError as exc:
            raise RequestRefused(str(exc)) from exc

    async def _snapshot(self, call: RecordedCall) -> Answer:
        channel = _channel(self.device, _query_int(call.query, "ChannelID"))
        return Answer(200, {"snapshotPath": f"/snapshot/ch{channel}_{int(time.time())}.jpg"})

    async def _add_event(self, call: RecordedCall) -> Answer:
        await self._emit("event", event_item(self.device, call.body))
        return OK

    async def _add_meta(self, call: RecordedCall) -> Answer:
        await self._emit("meta", meta_item(self.device, call.body))
        return OK

    async def _manual(self, kind: ManualKind, call: RecordedCall) -> Answer:
        body = _body_object(call.body)
        channel = _channel(self.device, body.get("channel"), "channel")
        command = body.get("command")
        if command not in MANUAL_COMMANDS:
            raise RequestRefused(f"command must be start or stop, not {command!r}")
        await self._emit("meta", self.device.manual(kind, channel, command))
        return OK

    async def _manual_record(self, call: RecordedCall) -> Answer:
        return await self._manual("record", call)

    async def _manual_alarm(self, call: RecordedCall) -> Answer:
        return await self._manual("alarm", call)

    async def _event_search(self, call: RecordedCall) -> Answer:
        try:
            return Answer(200, self.history.search_events(call.body))
        except SearchError as exc:
            raise RequestRefused(str(exc)) from exc

    async def _meta_search(self, call: RecordedCall) -> Answer:
        try:
            return Answer(200, self.history.search_metas(call.body))
        except SearchError as exc:
            raise RequestRefused(str(exc)) from exc

    async def _pin_setting(self, call: RecordedCall) -> Answer:
        body = _body_object(call.body)
        pin, value = body.get("pinID"), body.get("pinValue")
        if not isinstance(pin, int) or isinstance(pin, bool) or pin not in self.device.pins:
            raise RequestRefused(f"pinID must be a pin number 1..{len(self.device.pins)}")
        if not isinstance(value, int) or isinstance(value, bool) or value not in (0, 1):
            raise RequestRefused("pinValue must be 0 or 1")
        self.device.pins[pin] = value
        return OK

    async def _pin_status(self, call: RecordedCall) -> Answer:
        return Answer(200, self.device.pin_status())

    async def _gpio_info(self, call: RecordedCall) -> Answer:
        return Answer(200, self.device.gpio_info())

    async def _buzzer(self, call: RecordedCall) -> Answer:
        seconds = _query_int(call.query, "timeout")
        if not 1 <= seconds <= BUZZER_MAX_SECONDS:
            raise RequestRefused(f"timeout must be 1..{BUZZER_MAX_SECONDS} seconds")
        self.buzzer_until = time.time() + seconds
        return OK

    async def _system_info(self, call: RecordedCall) -> Answer:
        return Answer(200, self.identity.system_info())
