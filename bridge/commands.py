"""Command requests: strict models and the mapping to the NVR's REST calls. Pure, no I/O.

A request arrives as a JSON object on ``{base}/{nvr}/request/{command}`` (CONTRACT.md
section 5) or as a plain value on a convenience topic (``pin/{n}/set``,
``channel/{ch}/alarm/set``, ``channel/{ch}/record/set``). ``parse_request`` turns it
into a ``RestCall`` or a ``Refusal`` whose ``error`` is the sentence sent back.

Errors::

    Refusal                a request that must not be executed (a value, not raised):
                           outcome "invalid" (bad JSON or fields) or "refused"
                           (unknown, not allowed, retained, expired)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple, Self

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from bridge.config import COMMAND_NAMES
from bridge.limits import (
    DEFAULT_JSON_MAX_DEPTH,
    INT32_MAX,
    MAX_CHANNELS,
    MAX_EPOCH_MS,
    json_depth_exceeds,
)
from bridge.normalize import compact_json
from bridge.topics import Route

# A request is a small JSON object; a larger payload is refused unread (CONTRACT section 9).
MAX_REQUEST_BYTES = 64 * 1024
# The transaction is echoed in every response: it may not make responses large.
MAX_TRANSACTION_BYTES = 4096
Channel = Annotated[StrictInt, Field(ge=1, le=INT32_MAX, description="1-based channel number.")]
Speed = Annotated[StrictInt | StrictFloat, Field(ge=0, le=1)]

PtzCommand = Literal[
    "tilt_up",
    "tilt_down",
    "pan_left",
    "pan_right",
    "zoom_in",
    "zoom_out",
    "stop",
    "set_preset",
    "remove_preset",
    "goto_preset",
    "get_presets",
    "start_tour",
    "stop_tour",
    "get_tour_presets",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Request(_Strict):
    """Fields every request may carry; neither is passed to the NVR."""

    transaction: Any = Field(default=None, description="Echoed in the response.")
    timestamp: StrictInt | StrictFloat | StrictStr | None = Field(
        default=None,
        description="Client send time: epoch milliseconds or ISO 8601 with a zone.",
    )


class AddEventRequest(Request):
    """Throw an event into the NVR (section 4.1)."""

    channel: Channel
    type: StrictStr = Field(min_length=1, description="Event type, e.g. Motion.")
    state: Literal["active", "inactive", "once"]


class AddMetaRequest(Request):
    """Throw a metadata item into the NVR (section 4.3)."""

    channel: Channel
    type: StrictStr = Field(min_length=1, description="Metadata type.")
    data: StrictStr = Field(description="Metadata text, passed as is.")


class ManualAlarmRequest(Request):
    """Start or stop a channel's manual alarm (section 9.28)."""

    channel: Channel
    command: Literal["start", "stop"]


class ManualRecordRequest(Request):
    """Start or stop a channel's manual recording (section 9.27)."""

    channel: Channel
    command: Literal["start", "stop"]


class SetPinRequest(Request):
    """Set a digital output pin (section 10.21)."""

    pin: StrictInt = Field(ge=1, le=INT32_MAX, description="Output pin number, 1-based.")
    value: StrictInt = Field(ge=0, le=1, description="0 off, 1 on.")


class PickedPreset(_Strict):
    """One stop of a PTZ tour (section 2.14)."""

    name: StrictStr
    preset_token: StrictStr
    time: StrictInt | StrictFloat = Field(ge=0, description="Seconds before the next preset.")


class PtzParameters(_Strict):
    """The ``parameters`` object of the preset and tour commands (sections 2.10-2.14)."""

    preset_name: StrictStr | None = None
    preset_token: StrictStr | None = None
    speed: Speed | None = None
    picked_presets: list[PickedPreset] | None = None


_PTZ_REQUIRED: dict[str, tuple[str, ...]] = {
    "set_preset": ("preset_name",),
    "remove_preset": ("preset_token",),
    "goto_preset": ("preset_token",),
}
_PTZ_ALLOWED: dict[str, frozenset[str]] = {
    "set_preset": frozenset({"preset_name", "preset_token"}),
    "remove_preset": frozenset({"preset_token"}),
    "goto_preset": frozenset({"preset_token", "speed"}),
    "start_tour": frozenset({"speed", "picked_presets"}),
}


class PtzRequest(Request):
    """Move a PTZ camera, manage its presets or tours (sections 2.9-2.16)."""

    channel: Channel
    command: PtzCommand
    speed: Speed | None = Field(default=None, description="Move speed for move commands.")
    number: StrictInt | None = Field(default=None, ge=0, le=INT32_MAX, description="Preset number.")
    parameters: PtzParameters | None = None

    @model_validator(mode="after")
    def _parameters_fit_command(self) -> PtzRequest:
        given = set() if self.parameters is None else self.parameters.model_dump(exclude_none=True)
        for name in _PTZ_REQUIRED.get(self.command, ()):
            if name not in given:
                raise ValueError(f"command {self.command!r} needs parameters.{name}")
        allowed = _PTZ_ALLOWED.get(self.command, frozenset())
        extra = sorted(set(given) - allowed)
        if extra:
            raise ValueError(
                f"command {self.command!r} takes no parameters.{', parameters.'.join(extra)}"
            )
        return self


class BuzzerRequest(Request):
    """Sound the NVR's buzzer (section 10.33)."""

    timeout: StrictInt = Field(ge=1, le=60, description="Seconds, 1 to 60.")


class SnapshotRequest(Request):
    """Take a snapshot of a channel (section 3.6)."""

    channel: Channel


# --- history and state queries (CONTRACT section 7.6) -----------------------------------

EpochSeconds = Annotated[
    StrictInt, Field(ge=0, le=MAX_EPOCH_MS // 1000, description="UTC epoch seconds.")
]
EpochMillis = Annotated[
    StrictInt, Field(ge=0, le=MAX_EPOCH_MS, description="UTC epoch milliseconds.")
]
Name = Annotated[StrictStr, Field(min_length=1, max_length=100)]
SnapshotType = Literal["Manual", "Normal", "Motion", "InputAlarm"]
SNAPSHOT_TYPES: tuple[SnapshotType, ...] = ("Manual", "Normal", "Motion", "InputAlarm")


class _TimeRange(Request):
    """A search window: ``start`` no later than ``end`` (epoch seconds)."""

    start: EpochSeconds
    end: EpochSeconds

    @model_validator(mode="after")
    def _start_before_end(self) -> Self:
        if self.start > self.end:
            raise ValueError(f"start ({self.start}) must not be after end ({self.end})")
        return self


class EventSearchRequest(_TimeRange):
    """Search the NVR's recorded events (section 4.5)."""

    channels: list[Channel] = Field(min_length=1, max_length=MAX_CHANNELS)
    types: list[Name] | None = Field(default=None, min_length=1, max_length=64)
    stream: Literal["Main", "Sub"] | None = None


class MetaSearchRequest(_TimeRange):
    """Search the NVR's recorded metadata (section 4.6)."""

    channel: Channel
    types: list[Name] | None = Field(default=None, min_length=1, max_length=64)


class SnapshotSearchRequest(_TimeRange):
    """Search the NVR's snapshots (section 3.7)."""

    channels: list[Channel] = Field(min_length=1, max_length=MAX_CHANNELS)
    types: list[SnapshotType] | None = Field(default=None, min_length=1, max_length=4)


class RecordMapRequest(_TimeRange):
    """Which days, minutes or seconds have recordings (sections 5.1 to 5.3)."""

    channels: list[Channel] = Field(min_length=1, max_length=4)
    resolution: Literal["day", "minute", "second"]
    stream: Literal["main", "sub"] | None = None


class LogsRequest(Request):
    """Search the NVR's logs (section 9.25); times in epoch milliseconds."""

    type: Literal["All", "System", "Configuration", "Account", "Alarm", "Record", "Storage"]
    start_ms: EpochMillis
    end_ms: EpochMillis

    @model_validator(mode="after")
    def _start_before_end(self) -> Self:
        if self.start_ms > self.end_ms:
            raise ValueError(f"start_ms ({self.start_ms}) must not be after end_ms ({self.end_ms})")
        return self


class StateRequest(Request):
    """A question about the NVR's current state: no fields besides the common two."""


class RestCall(NamedTuple):
    """The NVR call a valid request maps to."""

    method: Literal["GET", "POST"]
    path: str
    params: dict[str, str] | None = None
    body: dict[str, Any] | None = None


def _add_event(r: AddEventRequest) -> RestCall:
    return RestCall(
        "POST", "/meta/addEvent", body={"ChannelID": r.channel, "Type": r.type, "State": r.state}
    )


def _add_meta(r: AddMetaRequest) -> RestCall:
    return RestCall(
        "POST", "/meta/addMeta", body={"ChannelID": r.channel, "Type": r.type, "Data": r.data}
    )


def _manual_alarm(r: ManualAlarmRequest) -> RestCall:
    return RestCall(
        "POST", "/record/manualAlarm", body={"channel": r.channel, "command": r.command}
    )


def _manual_record(r: ManualRecordRequest) -> RestCall:
    return RestCall(
        "POST", "/record/manualRecord", body={"channel": r.channel, "command": r.command}
    )


def _set_pin(r: SetPinRequest) -> RestCall:
    return RestCall("POST", "/dio/pinManualSetting", body={"pinID": r.pin, "pinValue": r.value})


def _ptz(r: PtzRequest) -> RestCall:
    body = r.model_dump(exclude={"channel", "transaction", "timestamp"}, exclude_none=True)
    return RestCall("POST", "/device/ptzControl", params={"ChannelID": str(r.channel)}, body=body)


def _buzzer(r: BuzzerRequest) -> RestCall:
    return RestCall("GET", "/system/callBuzzer", params={"timeout": str(r.timeout)})


def _snapshot(r: SnapshotRequest) -> RestCall:
    return RestCall("GET", "/device/getSnapshot", params={"ChannelID": str(r.channel)})


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A command's request model and its mapping to a REST call."""

    model: type[Request]
    to_call: Callable[[Any], RestCall]


def _event_search(r: EventSearchRequest) -> RestCall:
    body: dict[str, Any] = {"ChannelID": r.channels, "StartTime": r.start, "EndTime": r.end}
    if r.types is not None:
        body["Type"] = r.types
    if r.stream is not None:
        body["Stream"] = r.stream
    return RestCall("POST", "/record/eventSearch", body=body)


def _meta_search(r: MetaSearchRequest) -> RestCall:
    body: dict[str, Any] = {"ChannelID": r.channel, "StartTime": r.start, "EndTime": r.end}
    if r.types is not None:
        body["Type"] = r.types
    return RestCall("POST", "/record/metaSearch", body=body)


def _snapshot_search(r: SnapshotSearchRequest) -> RestCall:
    # The guide asks for the types to search: all of them unless the request narrows it.
    body = {
        "channels": r.channels,
        "startTime": r.start,
        "endTime": r.end,
        "types": list(r.types or SNAPSHOT_TYPES),
    }
    return RestCall("POST", "/device/searchSnapshotPath", body=body)


_RECORD_MAP_PATHS = {
    "day": "/record/getMapByDay",
    "minute": "/record/getMapByMinute",
    "second": "/record/getMapBySecond",
}


def _record_map(r: RecordMapRequest) -> RestCall:
    body = {
        "ChannelIDs": r.channels,
        "StartTime": r.start,
        "EndTime": r.end,
        "mainsub": 2 if r.stream == "sub" else 1,
    }
    return RestCall("POST", _RECORD_MAP_PATHS[r.resolution], body=body)


def _logs(r: LogsRequest) -> RestCall:
    return RestCall(
        "POST",
        "/system/searchLogs",
        body={"type": r.type, "startTime": r.start_ms, "endTime": r.end_ms},
    )


def _get(path: str) -> Callable[[StateRequest], RestCall]:
    def to_call(_: StateRequest) -> RestCall:
        return RestCall("GET", path)

    return to_call


COMMANDS: dict[str, CommandSpec] = {
    "add_event": CommandSpec(AddEventRequest, _add_event),
    "add_meta": CommandSpec(AddMetaRequest, _add_meta),
    "manual_alarm": CommandSpec(ManualAlarmRequest, _manual_alarm),
    "manual_record": CommandSpec(ManualRecordRequest, _manual_record),
    "set_pin": CommandSpec(SetPinRequest, _set_pin),
    "ptz": CommandSpec(PtzRequest, _ptz),
    "buzzer": CommandSpec(BuzzerRequest, _buzzer),
    "snapshot": CommandSpec(SnapshotRequest, _snapshot),
    "event_search": CommandSpec(EventSearchRequest, _event_search),
    "meta_search": CommandSpec(MetaSearchRequest, _meta_search),
    "snapshot_search": CommandSpec(SnapshotSearchRequest, _snapshot_search),
    "record_map": CommandSpec(RecordMapRequest, _record_map),
    "logs": CommandSpec(LogsRequest, _logs),
    "pin_status": CommandSpec(StateRequest, _get("/dio/GetPinStatus")),
    "system_info": CommandSpec(StateRequest, _get("/system/getSystemInfo")),
    "camera_list": CommandSpec(StateRequest, _get("/device/cameraList")),
    "storage": CommandSpec(StateRequest, _get("/storage/getStorages")),
}
assert tuple(COMMANDS) == COMMAND_NAMES  # noqa: S101 - the two lists must stay one


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is not executed: ``outcome`` is ``invalid`` or ``refused``."""

    outcome: Literal["invalid", "refused"]
    error: str


class ParsedRequest(NamedTuple):
    """A request ready to run (``call``) or to refuse (``refusal``), with its echo fields."""

    command: str
    transaction: Any
    call: RestCall | None = None
    refusal: Refusal | None = None


def _describe(error: ValidationError) -> str:
    problems = []
    for detail in error.errors(include_url=False):
        where = ".".join(str(p) for p in detail["loc"] if not str(p).startswith("function-"))
        kind = detail["type"]
        if kind == "missing":
            problems.append(f"field {where!r} is required")
        elif kind == "extra_forbidden":
            problems.append(f"field {where!r} is not allowed (unknown field)")
        elif kind == "value_error":
            problems.append(str(detail["msg"]).removeprefix("Value error, "))
        else:
            got = repr(detail.get("input"))
            got = got if len(got) <= 60 else got[:57] + "..."
            problems.append(f"field {where!r}: {detail['msg'].lower()} (got {got})")
    return "invalid request: " + "; ".join(problems)


def parse_timestamp(value: int | float | str) -> float:
    """A request's ``timestamp`` in epoch seconds: epoch ms, or ISO 8601 with a zone."""
    if isinstance(value, int | float):
        return float(value) / 1000.0
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"field 'timestamp' must be epoch milliseconds or ISO 8601 with a zone; got {value!r}"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"field 'timestamp' has no time zone; got {value!r}")
    return moment.timestamp()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def load_request(payload: bytes, max_depth: int = DEFAULT_JSON_MAX_DEPTH) -> Any:
    """The JSON value of a request payload; ValueError says why it is not one.

    The standard library's parser keeps integers of any size exact (a transaction of
    2**70 comes back as 2**70, not as a float); the size and depth are bounded.
    """
    if len(payload) > MAX_REQUEST_BYTES:
        raise ValueError(
            f"the payload of {len(payload)} bytes is larger than {MAX_REQUEST_BYTES} bytes"
        )
    try:
        document = json.loads(payload, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"the payload nests JSON deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"the payload is not valid JSON ({exc})") from None
    if json_depth_exceeds(document, max_depth):
        raise ValueError(f"the payload nests JSON deeper than {max_depth} levels")
    return document


def transaction_json(value: Any) -> bytes:
    """The transaction as compact, canonical JSON (sorted keys; exact big integers)."""
    if type(value) is str or (type(value) is int and -(2**63) <= value < 2**64):
        try:
            # The usual transactions, without the stdlib's cost (sized copy: it is kept).
            return compact_json(value)
        except orjson.JSONEncodeError:
            pass  # a lone surrogate: the stdlib's error below
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def _read_document(payload: Any, decoded: bool, max_depth: int) -> tuple[Any, Any, str | None]:
    """The request's JSON value, its echoable transaction, and what is wrong with it."""
    transaction: Any = None
    document: Any = payload
    error: str | None = None
    if not decoded:
        try:
            document = load_request(payload, max_depth)
        except ValueError as exc:
            error = f"invalid request: {exc}"
    if isinstance(document, dict):
        transaction = document.get("transaction")
        if transaction is not None and len(transaction_json(transaction)) > MAX_TRANSACTION_BYTES:
            transaction = None
            error = (
                "invalid request: field 'transaction' is larger than "
                f"{MAX_TRANSACTION_BYTES} bytes as JSON (it is echoed in every response)"
            )
    return document, transaction, error


def parse_request(
    command: str,
    payload: bytes | Any,
    *,
    allowed: frozenset[str],
    retained: bool,
    now: float,
    max_age: float,
    decoded: bool = False,
    max_depth: int = DEFAULT_JSON_MAX_DEPTH,
    allowed_by: str = "BRIDGE_COMMANDS",
) -> ParsedRequest:
    """Validate a request and map it to its REST call, or say why it is refused.

    Order: unknown command, retained, not allowed, JSON, fields, then expiry.
    ``decoded`` means ``payload`` is already a JSON value (convenience topics);
    ``allowed_by`` names the setting that lists the allowed commands, for the refusal.
    """
    document, transaction, json_error = _read_document(payload, decoded, max_depth)

    def refuse(outcome: Literal["invalid", "refused"], error: str) -> ParsedRequest:
        return ParsedRequest(command, transaction, refusal=Refusal(outcome, error))

    spec = COMMANDS.get(command)
    if spec is None:
        known = ", ".join(COMMAND_NAMES)
        return refuse("refused", f"unknown command {command!r}; known commands: {known}")
    if retained:
        return refuse(
            "refused",
            "refused: the request was retained by the broker, and retained requests are "
            "never executed (they would run again at every restart); publish without retain",
        )
    if command not in allowed:
        return refuse(
            "refused",
            f"refused: command {command!r} is not allowed for this NVR ({allowed_by})",
        )
    if json_error is not None:
        return refuse("invalid", json_error)
    if not isinstance(document, dict):
        return refuse(
            "invalid",
            f"invalid request: the payload must be a JSON object, not {type(document).__name__}",
        )
    try:
        request = spec.model.model_validate(document)
    except ValidationError as exc:
        return refuse("invalid", _describe(exc))
    if request.timestamp is not None:
        try:
            sent = parse_timestamp(request.timestamp)
        except ValueError as exc:
            return refuse("invalid", f"invalid request: {exc}")
        age = now - sent
        if age > max_age:
            return refuse(
                "refused",
                f"expired: the request is {age:.1f} s old, older than the limit of "
                f"{max_age:g} s (BRIDGE_COMMAND_MAX_AGE); it was not executed",
            )
    return ParsedRequest(command, transaction, call=spec.to_call(request))


# --- convenience topics ----------------------------------------------------------------

_ON_OFF: dict[str, int] = {"1": 1, "on": 1, "true": 1, "0": 0, "off": 0, "false": 0}
_START_STOP: dict[str, str] = {
    "start": "start",
    "on": "start",
    "1": "start",
    "true": "start",
    "stop": "stop",
    "off": "stop",
    "0": "stop",
    "false": "stop",
}


@dataclass(frozen=True, slots=True)
class Convenience:
    """A plain-valued convenience request mapped onto a command's JSON request."""

    command: str
    request: dict[str, Any] | None
    error: str | None = None


def convenience_request(
    route: Route,
    payload: bytes,
    *,
    preset_token: Callable[[int, str], str | None] = lambda _channel, _name: None,
) -> Convenience:
    """Map a plain-valued topic's payload onto its command's JSON request.

    The topics: ``pin/{n}/set``, ``channel/{ch}/alarm|record/set`` and
    ``channel/{ch}/ptz/preset/set``; ``preset_token`` finds a channel's preset token by
    the preset's name or token.
    """
    text = payload.decode("utf-8", "replace").strip()
    lowered = text.lower()
    if route.kind == "pinSet":
        number = _positive(route.name)
        if number is None:
            return Convenience(
                "set_pin", None, f"invalid request: pin {route.name[:40]!r} is not a number >= 1"
            )
        value = _ON_OFF.get(lowered)
        if value is None:
            return Convenience(
                "set_pin",
                None,
                f"invalid request: payload must be 1, 0, ON or OFF; got {text[:40]!r}",
            )
        return Convenience("set_pin", {"pin": number, "value": value})
    command = _CONVENIENCE_COMMANDS[route.kind]
    channel = _positive(route.name)
    if channel is None:
        return Convenience(
            command, None, f"invalid request: channel {route.name[:40]!r} is not a number >= 1"
        )
    if route.kind == "presetSet":
        token = preset_token(channel, text) if text else None
        if token is None:
            return Convenience(
                command,
                None,
                f"invalid request: channel {channel} has no PTZ preset named {text[:60]!r} "
                "(see its ptz/presets topic)",
            )
        return Convenience(
            command,
            {"channel": channel, "command": "goto_preset", "parameters": {"preset_token": token}},
        )
    action = _START_STOP.get(lowered)
    if action is None:
        return Convenience(
            command,
            None,
            f"invalid request: payload must be start, stop, ON or OFF; got {text[:40]!r}",
        )
    return Convenience(command, {"channel": channel, "command": action})


_CONVENIENCE_COMMANDS: dict[str, str] = {
    "alarmSet": "manual_alarm",
    "recordSet": "manual_record",
    "presetSet": "ptz",
}


def _positive(level: str) -> int | None:
    # isascii: "²".isdigit() is True, but int("²") fails.
    if not (level.isascii() and level.isdigit()):
        return None
    number = int(level)
    return number if 1 <= number <= INT32_MAX else None
