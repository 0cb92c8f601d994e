"""The NVR's REST endpoints that the bridge uses, as a dispatch table of small handlers.

Each handler takes the recorded call and returns an ``Answer``; side effects go to the
device state, the log and, through ``emit``, to the websocket streams. Refusals follow
the guide: HTTP 200 with ``{"Result": "Error", "Description": ...}``. An unknown path is
a 404, a known one asked with the wrong method a 405.

Endpoints, by guide section: cameraList 2.3, cameraStatus 2.8, ptzControl 2.9 to 2.16,
getSnapshot 3.6, searchSnapshotPath 3.7, deleteSnapshot 3.8, ``/device/download/`` 3.9,
addEvent 4.1, addMeta 4.3, eventSearch 4.5, metaSearch 4.6, getMapByDay/Minute/Second
5.1 to 5.3, getStorages 9.4, searchLogs 9.25, addLogs 9.26, manualRecord 9.27,
manualAlarm 9.28, getSystemInfo 10.17, GetGPIOInfo 10.19, GetPinStatus 10.20,
pinManualSetting 10.21 and callBuzzer 10.33.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from bridge.sim.calls import RecordedCall
from bridge.sim.device import ALARM_IN_PINS, ALARM_OUT_PINS, DeviceIdentity, DeviceState, ManualKind
from bridge.sim.history import History, SearchError
from bridge.sim.logs import InvalidLog, LogType, SystemLog
from bridge.sim.ptz import DEFAULT_PTZ_CHANNELS, PtzCameras, PtzError
from bridge.sim.record_map import (
    SHAPES,
    MapError,
    MapQuery,
    Resolution,
    record_map,
    recording_spans,
)
from bridge.sim.snapshots import SnapshotStore
from bridge.sim.storage import Storage
from bridge.sim.traffic import Emit, now_ms

EVENT_STATES = frozenset({"active", "inactive", "once"})
DOWNLOAD_PATH = "/device/download/"
JPEG = "image/jpeg"
MANUAL_COMMANDS = frozenset({"start", "stop"})
PRESET_CHANGES = frozenset({"set_preset", "remove_preset"})
MANUAL_LOGS: dict[ManualKind, tuple[LogType, str]] = {
    "record": ("Record", "Manual Record"),
    "alarm": ("Alarm", "Manual Alarm"),
}
BUZZER_MAX_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: a status and a JSON ``body``, raw ``data``, or neither (the reason)."""

    status: int
    body: Any = None
    data: bytes | None = None
    content_type: str = "application/json"

    def to_response(self) -> web.Response:
        """The aiohttp response: raw data, JSON, or the plain reason when there is no body."""
        if self.data is not None:
            return web.Response(status=self.status, body=self.data, content_type=self.content_type)
        if self.body is None:
            reason = HTTPStatus(self.status).phrase
            return web.Response(status=self.status, text=f"{self.status}: {reason}")
        return web.Response(
            status=self.status, body=orjson.dumps(self.body), content_type=self.content_type
        )


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
        log: SystemLog | None = None,
        snapshots: SnapshotStore | None = None,
        storage: Storage | None = None,
        ptz_channels: Iterable[int] = DEFAULT_PTZ_CHANNELS,
        user: str | None = None,
    ) -> None:
        self.identity, self.device, self.history, self._emit = identity, device, history, emit
        self.log = SystemLog() if log is None else log
        self.snapshots = SnapshotStore() if snapshots is None else snapshots
        self.storage = Storage(identity.serial, device.channels) if storage is None else storage
        self.ptz = PtzCameras(ch for ch in ptz_channels if device.has_channel(ch))
        self.user = user
        self.buzzer_until = 0.0
        self.routes: dict[str, dict[str, Handler]] = {
            "/device/cameraStatus": {"GET": self._camera_status},
            "/device/cameraList": {"GET": self._camera_list},
            "/device/ptzControl": {"POST": self._ptz_control},
            "/device/getSnapshot": {"GET": self._snapshot},
            "/device/searchSnapshotPath": {"POST": self._snapshot_search},
            "/device/deleteSnapshot": {"POST": self._snapshot_delete},
            DOWNLOAD_PATH: {"GET": self._download},
            "/meta/addEvent": {"POST": self._add_event},
            "/meta/addMeta": {"POST": self._add_meta},
            "/record/manualRecord": {"POST": self._manual_record},
            "/record/manualAlarm": {"POST": self._manual_alarm},
            "/record/eventSearch": {"POST": self._event_search},
            "/record/metaSearch": {"POST": self._meta_search},
            "/record/getMapByDay": {"POST": self._map_by_day},
            "/record/getMapByMinute": {"POST": self._map_by_minute},
            "/record/getMapBySecond": {"POST": self._map_by_second},
            "/dio/pinManualSetting": {"POST": self._pin_setting},
            "/dio/GetPinStatus": {"GET": self._pin_status},
            "/dio/GetGPIOInfo": {"GET": self._gpio_info},
            "/storage/getStorages": {"GET": self._storages},
            "/system/callBuzzer": {"GET": self._buzzer},
            "/system/getSystemInfo": {"GET": self._system_info},
            "/system/searchLogs": {"POST": self._search_logs},
            "/system/addLogs": {"POST": self._add_logs},
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

    def _log_command(self, kind: LogType, description: str, channel: int | None = None) -> None:
        """Log a command carried out for the (only) user."""
        recording = channel is not None and self.device.channel_status(channel)["Recording"]
        self.log.add(kind, description, channel=channel, user=self.user, has_record=recording)

    async def _camera_status(self, call: RecordedCall) -> Answer:
        return Answer(200, self.device.status())

    async def _camera_list(self, call: RecordedCall) -> Answer:
        names = self.device.camera_names
        return Answer(200, [self.identity.camera(ch, names[ch]) for ch in sorted(names)])

    async def _ptz_control(self, call: RecordedCall) -> Answer:
        channel = _channel(self.device, _query_int(call.query, "ChannelID"))
        try:
            answer = self.ptz.command(channel, call.body)
        except PtzError as exc:
            raise RequestRefused(str(exc)) from exc
        if isinstance(call.body, dict) and call.body.get("command") in PRESET_CHANGES:
            self._log_command("Configuration", "PTZ Preset Settings", channel)
        return Answer(200, answer)

    async def _snapshot(self, call: RecordedCall) -> Answer:
        channel = _channel(self.device, _query_int(call.query, "ChannelID"))
        if not self.device.online[channel]:
            raise RequestRefused(f"the camera on channel {channel} is offline")
        record = self.snapshots.take(channel, "Manual", now_ms())
        self._log_command("Record", "Snapshot", channel)
        return Answer(200, {"snapshotPath": record.path})

    async def _snapshot_search(self, call: RecordedCall) -> Answer:
        try:
            found = self.snapshots.search(call.body)
        except SearchError as exc:
            raise RequestRefused(str(exc)) from exc
        self._log_command("Record", "Snapshot Search")
        return Answer(200, found)

    async def _snapshot_delete(self, call: RecordedCall) -> Answer:
        path = _body_object(call.body).get("snapshotPath")
        if not isinstance(path, str) or not self.snapshots.delete(path):
            raise RequestRefused(f"no snapshot at snapshotPath {path!r}")
        self._log_command("Record", "Delete Snapshot")
        return OK

    async def _download(self, call: RecordedCall) -> Answer:
        path = call.query.get("snapshot", "")
        image = self.snapshots.image(path) if path else None
        if image is None:
            raise RequestRefused(f"no snapshot at {path!r}: take one with getSnapshot")
        return Answer(200, data=image, content_type=JPEG)

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
        log_kind, name = MANUAL_LOGS[kind]
        self._log_command(log_kind, f"{name} {command.capitalize()}", channel)
        return OK

    async def _manual_record(self, call: RecordedCall) -> Answer:
        return await self._manual("record", call)

    async def _manual_alarm(self, call: RecordedCall) -> Answer:
        return await self._manual("alarm", call)

    async def _event_search(self, call: RecordedCall) -> Answer:
        try:
            found = self.history.search_events(call.body)
        except SearchError as exc:
            raise RequestRefused(str(exc)) from exc
        self._log_command("Record", "Record Search")
        return Answer(200, found)

    async def _meta_search(self, call: RecordedCall) -> Answer:
        try:
            found = self.history.search_metas(call.body)
        except SearchError as exc:
            raise RequestRefused(str(exc)) from exc
        self._log_command("Record", "Record Search")
        return Answer(200, found)

    async def _record_map(self, resolution: Resolution, call: RecordedCall) -> Answer:
        try:
            query = MapQuery.parse(call.body, SHAPES[resolution], self.device.channels)
        except MapError as exc:
            raise RequestRefused(str(exc)) from exc
        now_s = now_ms() // 1000
        spans = {
            ch: recording_spans(self.history.events, self.history.metas, ch, now_s)
            for ch in query.channels
        }
        return Answer(200, record_map(resolution, query, spans))

    async def _map_by_day(self, call: RecordedCall) -> Answer:
        return await self._record_map("day", call)

    async def _map_by_minute(self, call: RecordedCall) -> Answer:
        return await self._record_map("minute", call)

    async def _map_by_second(self, call: RecordedCall) -> Answer:
        return await self._record_map("second", call)

    async def _pin_setting(self, call: RecordedCall) -> Answer:
        body = _body_object(call.body)
        pin, value = body.get("pinID"), body.get("pinValue")
        if not isinstance(pin, int) or isinstance(pin, bool) or pin not in self.device.pins:
            raise RequestRefused(f"pinID must be a pin number 1..{len(self.device.pins)}")
        if pin in ALARM_IN_PINS:
            # pinManualSetting sets a DO pin (guide 10.21); inputs follow the world.
            raise RequestRefused(
                f"pin {pin} is an alarm input; only the output pins "
                f"{ALARM_OUT_PINS[0]}..{ALARM_OUT_PINS[-1]} can be set"
            )
        if not isinstance(value, int) or isinstance(value, bool) or value not in (0, 1):
            raise RequestRefused("pinValue must be 0 or 1")
        self.device.set_pin(pin, value)
        self.log.pin(pin, value, user=self.user)
        return OK

    async def _pin_status(self, call: RecordedCall) -> Answer:
        return Answer(200, self.device.pin_status())

    async def _gpio_info(self, call: RecordedCall) -> Answer:
        return Answer(200, self.device.gpio_info())

    async def _storages(self, call: RecordedCall) -> Answer:
        return Answer(200, self.storage.disks())

    async def _buzzer(self, call: RecordedCall) -> Answer:
        seconds = _query_int(call.query, "timeout")
        if not 1 <= seconds <= BUZZER_MAX_SECONDS:
            raise RequestRefused(f"timeout must be 1..{BUZZER_MAX_SECONDS} seconds")
        self.buzzer_until = time.time() + seconds
        self._log_command("System", "Call Buzzer")
        return OK

    async def _system_info(self, call: RecordedCall) -> Answer:
        return Answer(200, self.identity.system_info())

    async def _search_logs(self, call: RecordedCall) -> Answer:
        try:
            return Answer(200, self.log.search(call.body))
        except SearchError as exc:
            raise RequestRefused(str(exc)) from exc

    async def _add_logs(self, call: RecordedCall) -> Answer:
        try:
            self.log.add_json(call.body)
        except InvalidLog as exc:
            raise RequestRefused(str(exc)) from exc
        return OK
