"""The bridge's MQTT contract as an AsyncAPI 3.0 document: a development tool.

Everything comes from the tables the service itself runs on: the channels from
``bridge.topics.TOPICS``, the JSON payload schemas from the TypedDicts of
``bridge.payloads``, the requests from the models of ``bridge.commands.COMMANDS``, the
defaults from ``bridge.config``, and the examples from the bridge's own code
(``Normalizer``, ``CommandRunner``, ``bridge.nvr.readings``). Written here is only what
no table holds: the topic parameters' descriptions, the plain-text payloads and the
inputs of the examples. ``tests/test_asyncapi.py`` fails when the committed file is stale.

    python -m tools.asyncapi > docs/asyncapi.yaml          # regenerate (from the repository)
    python -m tools.asyncapi --check docs/asyncapi.yaml    # exit 1 with a diff when stale

Building the document runs an event loop (the command runner's examples): call
``build_document`` from synchronous code.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import orjson
import structlog
import yaml
from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema

from bridge import __version__
from bridge.command_runner import REPEAT_WINDOW, CommandRunner
from bridge.commands import _ON_OFF, _START_STOP, COMMANDS
from bridge.config import MAX_MQTT_PACKET, BridgeConfig, MqttConfig
from bridge.limits import DEFAULT_RESPONSE_MAX_BYTES, INT32_MAX, MAX_LEVEL_CHARS
from bridge.normalize import STATE_VALUES, Normalizer, format_timestamp, validate_item
from bridge.nvr import readings
from bridge.nvr.client import NvrAnswer, NvrClient, NvrError, NvrHttpError, NvrRejected
from bridge.nvr.models import StreamName
from bridge.observability import Metrics
from bridge.payloads import (
    PAYLOADS,
    BridgeInfoPayload,
    DiscoveryConfigPayload,
    GapPayload,
    InfoPayload,
    PinsPayload,
    Preset,
    PresetsPayload,
    SnapshotTakenPayload,
    StoragePayload,
)
from bridge.publishing import InboundMessage, Publication
from bridge.topics import TOPICS, BridgeTopics, NvrTopics, TopicSpec, sanitize_level
from tools import generated

ASYNCAPI_VERSION = "3.0.0"
MQTT_BINDING_VERSION = "0.2.0"
SCHEMA_REF = "#/components/schemas/{model}"
REGENERATE = "python -m tools.asyncapi > docs/asyncapi.yaml"
HEADER = (
    "# The bridge's MQTT contract, generated from its topic, payload and request tables.\n"
    f"# Do not edit: regenerate with `{REGENERATE}`.\n"
)

_BRIDGE = BridgeConfig.model_fields
_MQTT = MqttConfig.model_fields
DEFAULT_BASE: str = _BRIDGE["base_topic"].default
DEFAULT_HA_PREFIX: str = _BRIDGE["ha_prefix"].default
DEFAULT_COMMANDS: tuple[str, ...] = _BRIDGE["commands"].default
DEFAULT_QOS: int = _MQTT["qos"].default
SUBSCRIBE_QOS = 1  # bridge/mqtt/link.py subscribes to every filter with QoS 1

EXAMPLE_NVR = "nvr"
EXAMPLE_NOW = 1_714_564_800.0
EXAMPLE_TIMESTAMP = format_timestamp(EXAMPLE_NOW)  # 2024-05-01T12:00:00.000Z
EXAMPLE_NVR_TIME = 1_714_564_799_250
EXAMPLE_TOPICS = NvrTopics(DEFAULT_BASE, EXAMPLE_NVR)
EXAMPLE_BRIDGE = BridgeTopics(DEFAULT_BASE, DEFAULT_HA_PREFIX)

_SAFE_LEVEL = (
    "made a safe topic level: `/`, `+`, `#`, NUL, whitespace, C0/C1 controls, Unicode "
    "noncharacters, bidi controls and zero-width characters each become one `_`, an empty "
    f"level is `_` and a level is cut at {MAX_LEVEL_CHARS:,} characters; the payload keeps "
    "the original (secrets masked)."
)

DESCRIPTION = f"""\
The MQTT interface of nvr-bridge, which bridges the websocket streams and REST commands of \
EverFocus NVRs to MQTT. docs/mqtt.md is the user's reference. This document is generated from \
the tables the bridge runs on (its topics, payload types and request models) by \
`{REGENERATE}`, and its tests check real payloads against it.

- Operations are from the bridge's point of view: `send` is what the bridge publishes, \
`receive` what it subscribes to.
- JSON payloads may carry more fields than listed: **clients must ignore unknown fields**. \
An empty retained payload clears a retained topic (an NVR removed from the configuration, \
an entity or a preset list that no longer belongs).
- `timestamp` is the bridge's time when it received the item (or read the NVR's answer), \
UTC ISO 8601 with milliseconds and `Z`.
- Topic levels taken from NVR data (`{{type}}`, `{{exception}}`, `{{message}}`) are \
{_SAFE_LEVEL} A missing or null channel is the level `system`, and `null` in the payload; \
a channel outside 1..{INT32_MAX} makes the item invalid. Optional fields the NVR left out \
(`target`, `content`, `manual`) are `null`.
- Events and metadata published from the NVR's history after a stream outage carry \
`"replayed": true` and `time` (when they happened), and set no retained state; then \
`{{base}}/{{nvr}}/gap` reports the outage.
- Secrets never reach a payload: values under keys matching `pass|pwd|secret|credential` \
(any case, any depth; not `preset_token`), the userinfo of URLs (`scheme://user:pass@host`) \
and the configured passwords wherever they occur are replaced by `***`.
- The bridge publishes with QoS `BRIDGE_MQTT_QOS` (default {DEFAULT_QOS}, which the bindings \
show) and subscribes with QoS {SUBSCRIBE_QOS}. After each connect to the broker it publishes \
`{{base}}/bridge/info` and every retained topic it owns again.
- After a crash only `{{base}}/bridge/state` turns `offline` (the bridge's Last Will): \
consumers should require both it and `{{base}}/{{nvr}}/availability` to be `online` (Home \
Assistant: `availability_mode: all`).
- Every request is answered on `{{base}}/{{nvr}}/response/{{command}}`, and also on the \
request's MQTT 5 Response Topic with its Correlation Data (a Response Topic starting with \
`$`, or under `{{base}}/` or the Home Assistant prefix, is refused). Requests are validated \
strictly (JSON types; unknown fields are an error). A retained request is never executed; \
one whose `timestamp` is older than `BRIDGE_COMMAND_MAX_AGE` (default \
{_BRIDGE["command_max_age"].default:g} s) is refused with an `error` starting `expired`; a \
command not in `BRIDGE_COMMANDS` is refused. A QoS 1 redelivery, or a request repeating the \
non-null `transaction` of one answered in the last {REPEAT_WINDOW / 60:g} minutes, is not \
executed again: the first response is sent again. A result larger than \
`BRIDGE_RESPONSE_MAX_BYTES` (default {DEFAULT_RESPONSE_MAX_BYTES}) is an error starting \
`result too large`.
"""

PARAMETERS: dict[str, dict[str, Any]] = {
    "base": {
        "description": "The first level of every topic (BRIDGE_BASE_TOPIC).",
        "default": DEFAULT_BASE,
    },
    "nvr": {
        "description": "The NVR's id (BRIDGE_NVR_ID, [A-Za-z0-9_-]+).",
        "default": EXAMPLE_NVR,
        "examples": [EXAMPLE_NVR, "lobby"],
    },
    "ch": {
        "description": "The channel number (1-based), or 'system' for an event or metadata "
        "item the NVR gave without a channel.",
        "examples": ["1", "system"],
    },
    "pin": {"description": "A pin number of the NVR (1-based).", "examples": ["1"]},
    "type": {
        "description": f"The event or metadata type from the NVR, {_SAFE_LEVEL}",
        "examples": ["Motion", "VideoLoss", "LPR"],
    },
    "exception": {
        "description": f"The exception name from the NVR, {_SAFE_LEVEL}",
        "examples": ["diskFull", "diskError"],
    },
    "message": {
        "description": f"The message name from the NVR, {_SAFE_LEVEL}",
        "examples": ["cameraDetail"],
    },
    "command": {
        "description": "The command as requested (also an unknown one, which is answered "
        f"with an error), {_SAFE_LEVEL}",
        "examples": list(COMMANDS),
    },
    "haPrefix": {
        "description": "Home Assistant's discovery prefix (BRIDGE_HA_PREFIX).",
        "default": DEFAULT_HA_PREFIX,
    },
    "component": {
        "description": "The Home Assistant entity platform (binary_sensor, switch, ...).",
        "examples": ["binary_sensor", "switch"],
    },
    "node": {"description": "The bridge's node id of one NVR, derived from {base} and {nvr}."},
    "objectId": {"description": "The entity within the NVR's device."},
}


@dataclass(frozen=True, slots=True)
class PlainText:
    """A payload that is not JSON: its schema, its examples and its content type."""

    title: str
    summary: str
    schema: dict[str, Any]
    examples: tuple[str, ...] = ()
    content_type: str = "text/plain"


def _any_case(values: Iterable[str]) -> dict[str, Any]:
    """A string schema for any of ``values`` in any case, surrounding blanks allowed."""
    names = sorted(values)
    alternatives = (
        "".join(f"[{c}{c.upper()}]" if c.isalpha() else re.escape(c) for c in value)
        for value in names
    )
    pattern = rf"^\s*(?:{'|'.join(alternatives)})\s*$"
    return {"type": "string", "pattern": pattern, "description": f"{', '.join(names)}, any case."}


def _one_of(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


ONLINE_OFFLINE = _one_of("online", "offline")

# The plain-text payloads, by the ``message`` names of bridge.topics.TOPICS.
PLAIN_TEXT: dict[str, PlainText] = {
    "bridgeState": PlainText(
        "Bridge state",
        "online once connected to the broker; offline on shutdown and as the Last Will.",
        ONLINE_OFFLINE,
        ("online", "offline"),
    ),
    "availability": PlainText(
        "NVR availability",
        "online while the bridge is logged in to the NVR with its five streams up.",
        ONLINE_OFFLINE,
        ("online", "offline"),
    ),
    "activeInactive": PlainText(
        "Active or inactive",
        "The state of an event type, a manual alarm or manual recording.",
        _one_of(*sorted(STATE_VALUES)),
        ("active",),
    ),
    "zeroOne": PlainText("Pin value", "A pin's value: 1 on, 0 off.", _one_of("0", "1"), ("1",)),
    "onOff": PlainText("Pin value to set", "Runs set_pin.", _any_case(_ON_OFF), ("ON", "0")),
    "startStop": PlainText(
        "Start or stop", "Runs the channel's command.", _any_case(_START_STOP), ("start", "OFF")
    ),
    "presetName": PlainText(
        "PTZ preset",
        "A preset's name or token as ptz/presets lists it; runs ptz goto_preset.",
        {"type": "string", "pattern": r"\S"},
        ("door",),
    ),
    "onlineOffline": PlainText(
        "Home Assistant status",
        "Home Assistant's birth (online) and will.",
        ONLINE_OFFLINE,
        ("online",),
    ),
    "jpeg": PlainText(
        "JPEG image",
        "The snapshot as the NVR sent it (it starts FF D8).",
        {"type": "string", "format": "binary"},
        content_type="image/jpeg",
    ),
}

# --- examples: what the bridge's own code makes of these inputs ----------------------------

# NVR stream items, run through Normalizer: (stream, item, replayed at, example name).
STREAM_SAMPLES: list[tuple[StreamName, dict[str, Any], int | None, str]] = [
    ("event", {"ChannelID": 3, "Type": "Motion", "State": "active"}, None, "motion"),
    ("event", {"Type": "VideoLoss", "State": "once"}, None, "no-channel"),
    (
        "event",
        {"ChannelID": 3, "Type": "Motion", "State": "inactive"},
        EXAMPLE_NVR_TIME,
        "replayed",
    ),
    ("meta", {"ChannelID": 2, "Type": "LPR", "Data": "ABC-123"}, None, "plate"),
    ("meta", {"ChannelID": 2, "Type": "manualAlarmStart", "Data": ""}, None, "manual-alarm"),
    ("exception", {"exception": "diskFull", "target": 1, "time": EXAMPLE_NVR_TIME}, None, "disk"),
    ("exception", {"exception": "networkDown", "time": EXAMPLE_NVR_TIME}, None, "no-target"),
    (
        "status",
        {"ChannelID": 1, "Online": True, "Recording": True, "Event": False, "Manual": False},
        None,
        "recording",
    ),
    ("status", {"ChannelID": 2, "Online": False, "Recording": False, "Event": False}, None, "off"),
    (
        "message",
        {
            "message": "cameraDetail",
            "target": 2,
            "time": EXAMPLE_NVR_TIME,
            "content": {"ChannelID": 2, "UserName": "admin", "Password": "secret"},
        },
        None,
        "masked",
    ),
]

_WINDOW = {"start": 1_714_560_000, "end": 1_714_564_800}
REQUEST_EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "add_event": [{"channel": 1, "type": "Motion", "state": "active", "transaction": "e1"}],
    "add_meta": [{"channel": 1, "type": "LPR", "data": "ABC-123", "transaction": "m1"}],
    "manual_alarm": [{"channel": 2, "command": "start", "transaction": "a1"}],
    "manual_record": [
        {"channel": 2, "command": "stop", "transaction": "r1", "timestamp": 1_714_564_800_000}
    ],
    "set_pin": [{"pin": 1, "value": 1, "transaction": "p1"}],
    "ptz": [
        {"channel": 1, "command": "pan_left", "speed": 0.5, "transaction": "z1"},
        {"channel": 1, "command": "set_preset", "parameters": {"preset_name": "door"}},
        {"channel": 1, "command": "goto_preset", "parameters": {"preset_token": "1"}},
    ],
    "buzzer": [{"timeout": 5, "transaction": "b1", "timestamp": "2024-05-01T12:00:00+00:00"}],
    "snapshot": [{"channel": 3, "transaction": "s1"}],
    "event_search": [{"channels": [1, 2], **_WINDOW, "types": ["Motion"], "stream": "Main"}],
    "meta_search": [{"channel": 1, **_WINDOW, "types": ["LPR"]}],
    "snapshot_search": [{"channels": [1], **_WINDOW, "types": ["Motion"]}],
    "record_map": [
        {"channels": [1, 2], **_WINDOW, "resolution": resolution}
        for resolution in ("day", "minute", "second")
    ],
    "logs": [{"type": "Alarm", "start_ms": 1_714_560_000_000, "end_ms": 1_714_564_800_000}],
    "pin_status": [{"transaction": "q1"}],
    "system_info": [{}],
    "camera_list": [{"transaction": "c1"}],
    "storage": [{}],
}

# Requests run through a real CommandRunner against these NVR answers (by REST path).
RESPONSE_REQUESTS: list[tuple[str, dict[str, Any] | bytes]] = [
    ("snapshot", {"channel": 3, "transaction": "s1"}),
    ("manual_record", {"channel": 9, "command": "start", "transaction": "r2"}),
    ("set_pin", {"pin": "1", "value": 1, "transaction": "p2"}),
    ("buzzer", {"timeout": 5, "timestamp": 1_714_564_700_000}),
    ("reboot", {"transaction": "x1"}),
]
NVR_ANSWERS: dict[str, NvrAnswer | NvrError] = {
    "/device/getSnapshot": NvrAnswer(200, {"snapshotPath": "/snapshot/ch3_20240501.jpg"}),
    "/record/manualRecord": NvrRejected(
        "the NVR answered Result: Error (no such channel)", {"Result": "Error"}
    ),
}

GPIO_ANSWER = [{"ch": 0, "alarmIn": [1, 2], "alarmOut": [1]}, {"ch": 1, "alarmIn": [1]}]
STORAGE_ANSWER = [
    {"device": "/dev/sda", "slot": "HDD-1", "active": True, "size": "3.6T", "free": "2199.3G"}
]
PRESETS_ANSWER = {"presets": [{"name": "door", "preset_token": "1"}, {"preset_token": "2"}]}

_SYSTEM_INFO = {
    "device_name": "Lobby NVR",
    "model": "NVR-EXAMPLE",
    "software_version": "1.0.0",
    "serial": "EF0123456789",
    "ipcam_channels": 2,
    "analog_channels": 0,
}
_CAMERAS = [
    {"ChannelID": 1, "DeviceName": "Door", "IPAddress": "192.168.1.101"},
    {"ChannelID": 2, "DeviceName": "Yard", "IPAddress": "192.168.1.102"},
]


def _literal_examples() -> dict[str, list[Any]]:
    """Payloads built inside I/O code, written out here (their types check the keys)."""
    ts, nvr = EXAMPLE_TIMESTAMP, EXAMPLE_NVR
    inputs, outputs = readings.gpio_pins(GPIO_ANSWER) or ([], [])
    info: InfoPayload = {"nvr": nvr, "system": _SYSTEM_INFO, "cameras": _CAMERAS, "timestamp": ts}
    old: InfoPayload = {"nvr": nvr, "system": None, "cameras": None, "timestamp": ts}
    bridge: BridgeInfoPayload = {
        "version": __version__,
        "nvrs": sorted([nvr, "lobby"]),
        "commands": sorted(DEFAULT_COMMANDS),
        "protocol": "5",
        "shard": None,
        "timestamp": ts,
    }
    taken: SnapshotTakenPayload = {
        "nvr": nvr,
        "channel": 3,
        "path": "/snapshot/ch3_20240501.jpg",
        "bytes": 48_213,
        "trigger": "Motion",
        "timestamp": ts,
    }
    pins: PinsPayload = {
        "nvr": nvr,
        "inputs": inputs,
        "outputs": outputs,
        "gpio": GPIO_ANSWER,
        "timestamp": ts,
    }
    storage: StoragePayload = {
        "nvr": nvr,
        "disks": readings.disks(STORAGE_ANSWER) or [],
        "timestamp": ts,
    }
    found: list[Preset] = [
        {"name": entry["name"], "preset_token": entry["preset_token"]}
        for entry in readings.presets(PRESETS_ANSWER) or []
    ]
    presets: PresetsPayload = {"nvr": nvr, "channel": 1, "presets": found, "timestamp": ts}
    gap: GapPayload = {
        "nvr": nvr,
        "stream": "event",
        "from": format_timestamp(EXAMPLE_NOW - 95),
        "to": format_timestamp(EXAMPLE_NOW - 5),
        "replayed": 3,
        "complete": True,
        "timestamp": ts,
    }
    node = sanitize_level(f"nvr_bridge_{DEFAULT_BASE}_{nvr}")
    config: DiscoveryConfigPayload = {
        "unique_id": f"{node}_ch1_motion",
        "device": {"identifiers": [f"nvr_bridge_{nvr}"], "manufacturer": "EverFocus"},
        "availability": [
            {"topic": EXAMPLE_BRIDGE.state},
            {"topic": EXAMPLE_TOPICS.availability},
        ],
        "availability_mode": "all",
    }
    config_topic = EXAMPLE_BRIDGE.discovery_config("binary_sensor", node, "ch1_motion")
    motion = {
        **config,
        "name": "Motion",
        "has_entity_name": True,
        "device_class": "motion",
        "state_topic": EXAMPLE_TOPICS.event_state(1, "Motion"),
        "payload_on": "active",
        "payload_off": "inactive",
    }
    registry = {
        "topics": sorted(
            EXAMPLE_BRIDGE.discovery_config(component, node, object_id)
            for component, object_id in (
                ("binary_sensor", "ch1_motion"),
                ("button", "buzzer"),
                ("device_automation", "ch1_motion_active"),
            )
        ),
        "triggers": [[1, "Motion", "active"], [None, "diskFull", ""]],
    }
    return {
        "info": [
            _example("info", info, EXAMPLE_TOPICS.info),
            _example("not-served", old, EXAMPLE_TOPICS.info),
        ],
        "bridgeInfo": [_example("bridge-info", bridge, EXAMPLE_BRIDGE.info)],
        "snapshotTaken": [_example("motion", taken, EXAMPLE_TOPICS.snapshot_taken(3))],
        "pins": [_example("pins", pins, EXAMPLE_TOPICS.pins)],
        "storage": [_example("storage", storage, EXAMPLE_TOPICS.storage)],
        "presets": [_example("presets", presets, EXAMPLE_TOPICS.presets(1))],
        "gap": [_example("event-outage", gap, EXAMPLE_TOPICS.gap)],
        "discoveryConfig": [_example("motion", motion, config_topic)],
        "discoveryRegistry": [
            _example("registry", registry, EXAMPLE_BRIDGE.discovery_registry(nvr))
        ],
    }


def _example(name: str, payload: Any, summary: str | None = None) -> dict[str, Any]:
    example: dict[str, Any] = {"name": name}
    if summary is not None:
        example["summary"] = summary
    example["payload"] = payload
    return example


@functools.cache
def _address_patterns() -> list[tuple[re.Pattern[str], int, TopicSpec]]:
    """A regex per entry of TOPICS (a parameter is one level), most literal first."""
    patterns = []
    for spec in TOPICS.values():
        parts = re.split(r"\{\w+\}", spec.address)
        regex = "[^/]+".join(re.escape(part) for part in parts)
        patterns.append((re.compile(regex), len("".join(parts)), spec))
    return sorted(patterns, key=lambda entry: -entry[1])


def topic_spec(topic: str) -> TopicSpec | None:
    """The entry of TOPICS a concrete topic belongs to (the most specific), or None."""
    for pattern, _, spec in _address_patterns():
        if pattern.fullmatch(topic):
            return spec
    return None


def _stream_examples() -> dict[str, list[Any]]:
    """The JSON payloads ``Normalizer`` makes of ``STREAM_SAMPLES``, by message name."""
    normalizer = Normalizer(EXAMPLE_TOPICS)
    examples: dict[str, list[Any]] = {}
    for stream, item, history_ms, name in STREAM_SAMPLES:
        message = validate_item(stream, item)
        for publication in normalizer.normalize(
            stream, message, EXAMPLE_TIMESTAMP, history_ms=history_ms
        ):
            spec = topic_spec(publication.topic)
            if spec is not None and spec.message in PAYLOADS:
                payload = orjson.loads(publication.payload)
                examples.setdefault(spec.message, []).append(
                    _example(f"{stream}-{name}", payload, publication.topic)
                )
    return examples


class CapturingPublisher:
    """A ``Publisher`` that keeps what it is given, for the examples and the tests."""

    def __init__(self, expected: int = 0) -> None:
        self.publications: list[Publication] = []
        self.expected = expected
        self.complete = asyncio.Event()  # set once ``expected`` publications came

    def publish(self, publication: Publication) -> None:
        """Keep the publication."""
        self.publications.append(publication)
        if len(self.publications) >= self.expected:
            self.complete.set()

    async def wait_for_room(self) -> None:
        """There is always room."""

    @property
    def max_payload(self) -> int:
        """MQTT's own limit."""
        return MAX_MQTT_PACKET


class ScriptedNvr:
    """Stands in for ``NvrClient``: each REST path answers (or fails) as scripted."""

    nvr = EXAMPLE_NVR

    def __init__(self, answers: dict[str, NvrAnswer | NvrError]) -> None:
        self.answers = answers

    async def call(self, method: str, path: str, **_: Any) -> NvrAnswer:
        """The scripted answer of ``path``; a 404 for any other."""
        answer = self.answers.get(path, NvrHttpError(f"HTTP 404 for {method} {path}", 404))
        if isinstance(answer, NvrError):
            raise answer
        return answer


async def run_requests(
    requests: Sequence[InboundMessage],
    answers: dict[str, NvrAnswer | NvrError],
    *,
    expected: int | None = None,
) -> list[Publication]:
    """What a real ``CommandRunner`` publishes for ``requests``.

    It waits for ``expected`` publications: by default one response per request.
    """
    link = CapturingPublisher(expected=len(requests) if expected is None else expected)
    runner = CommandRunner(
        topics=EXAMPLE_TOPICS,
        client=cast(NvrClient, ScriptedNvr(answers)),
        link=link,
        metrics=Metrics(),
        allowed=frozenset(DEFAULT_COMMANDS),
        max_age=_BRIDGE["command_max_age"].default,
        max_inflight=1,
        clock=lambda: EXAMPLE_NOW,
    )
    with structlog.testing.capture_logs():
        async with asyncio.TaskGroup() as group:
            workers = group.create_task(runner.run())
            for message in requests:
                runner.handle(message, message.topic.split("/")[2:])
            async with asyncio.timeout(5):
                await link.complete.wait()
            workers.cancel()
    return link.publications


def request_message(command: str, payload: dict[str, Any] | bytes) -> InboundMessage:
    """A request as the broker delivers it to the example NVR."""
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return InboundMessage(EXAMPLE_TOPICS.request(command), raw, False)


def _response_examples() -> list[Any]:
    requests = [request_message(command, payload) for command, payload in RESPONSE_REQUESTS]
    # A loop of its own, leaving the thread's current event loop alone (for the tests).
    loop = asyncio.new_event_loop()
    try:
        publications = loop.run_until_complete(run_requests(requests, NVR_ANSWERS))
    finally:
        loop.close()
    examples = []
    for publication in publications:
        payload = orjson.loads(publication.payload)
        name = f"{payload['command']}-{payload['status']}"
        examples.append(_example(name, payload, publication.topic))
    return examples


def _request_calls(command: str) -> str:
    """The NVR calls of ``command``'s examples, from its own mapping."""
    spec = COMMANDS[command]
    calls: list[str] = []
    for example in REQUEST_EXAMPLES[command]:
        call = spec.to_call(spec.model.model_validate(example))
        query = ""
        if call.params:
            # Name the request field each query value comes from, not the example's value.
            fields = {str(value): name for name, value in example.items()}
            query = "?" + "&".join(
                f"{key}={{{fields.get(value, value)}}}" for key, value in call.params.items()
            )
        body = " with a JSON body" if call.body is not None else ""
        text = f"`{call.method} {call.path}{query}`{body}"
        if text not in calls:
            calls.append(text)
    return " or ".join(calls)


# --- schemas ------------------------------------------------------------------------------


class _SchemaGenerator(GenerateJsonSchema):
    """pydantic's JSON Schema, without a title on every property."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        """No property titles: the names say it."""
        return False


# pydantic writes the bounds of a constrained union (commands.Speed) as "ge", "le"...,
# which JSON Schema ignores; these are their standard names.
_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs"})
_DATA = frozenset({"default", "const", "enum", "examples", "required"})


def _standard(schema: Any) -> Any:
    """``schema`` with pydantic's bound keywords renamed to JSON Schema's."""
    if isinstance(schema, list):
        return [_standard(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    keywords: dict[str, Any] = schema
    for key, value in keywords.items():
        if key in _SCHEMA_MAPS:
            out[key] = {name: _standard(item) for name, item in value.items()}
        elif key in _DATA:
            out[key] = value
        else:
            out[_BOUNDS.get(key, key)] = _standard(value)
    return out


class _Schemas:
    """components/schemas: each payload's JSON schema, its nested definitions hoisted."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, name: str, schema: dict[str, Any]) -> dict[str, str]:
        """Add ``schema`` (and what it nests) as ``name``; a reference to it."""
        for nested, definition in schema.pop("$defs", {}).items():
            self._add(nested, definition)
        self._add(name, schema)
        return {"$ref": SCHEMA_REF.format(model=name)}

    def _add(self, name: str, schema: dict[str, Any]) -> None:
        schema = _standard(schema)
        if self.schemas.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas are named {name!r}; rename one")

    def sorted(self) -> dict[str, Any]:
        """The schemas by name, for a stable document."""
        return {name: self.schemas[name] for name in sorted(self.schemas)}


def _camel(snake: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in snake.split("_"))


def request_message_name(command: str) -> str:
    """The message of a command's request channel: ``add_event`` -> ``addEventRequest``."""
    camel = _camel(command)
    return f"{camel[:1].lower()}{camel[1:]}Request"


def request_channel_id(command: str) -> str:
    """The channel of a command's requests: ``add_event`` -> ``requestAddEvent``."""
    return f"request{_camel(command)}"


def _payload_schema(schemas: _Schemas, message: str) -> dict[str, Any]:
    payload = PAYLOADS[message]
    schema = TypeAdapter(payload).json_schema(
        ref_template=SCHEMA_REF, schema_generator=_SchemaGenerator, mode="serialization"
    )
    name = payload.__name__ if isinstance(payload, type) else f"{_camel(message)}Payload"
    return schemas.ref(name, schema)


def _messages(schemas: _Schemas) -> dict[str, dict[str, Any]]:
    """components/messages: every message of TOPICS, and one request message per command."""
    examples = _stream_examples() | _literal_examples() | {"response": _response_examples()}
    titles = {spec.message: spec.title for spec in reversed(TOPICS.values())}
    messages: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(spec.message for spec in TOPICS.values()):
        if name in PAYLOADS:
            payload = _payload_schema(schemas, name)
            summary = schemas.schemas[payload["$ref"].rsplit("/", 1)[-1]]["description"]
            messages[name] = {
                "name": name,
                "title": titles[name],
                "summary": summary.splitlines()[0],
                "contentType": "application/json",
                "payload": payload,
                "examples": examples[name],
            }
        elif name in PLAIN_TEXT:
            text = PLAIN_TEXT[name]
            messages[name] = {
                "name": name,
                "title": text.title,
                "summary": text.summary,
                "contentType": text.content_type,
                "payload": text.schema,
            }
            if text.examples:
                messages[name]["examples"] = [_example(value, value) for value in text.examples]
        elif name != "request":
            raise ValueError(f"TOPICS names the message {name!r}, which no table describes")
    for command, spec in COMMANDS.items():
        name = request_message_name(command)
        schema = spec.model.model_json_schema(
            ref_template=SCHEMA_REF, schema_generator=_SchemaGenerator
        )
        messages[name] = {
            "name": name,
            "title": f"{command} request",
            "summary": (spec.model.__doc__ or command).strip().splitlines()[0],
            "description": f"The bridge validates it, then calls the NVR: "
            f"{_request_calls(command)}. `transaction` and `timestamp` are never passed to it.",
            "contentType": "application/json",
            "payload": schemas.ref(spec.model.__name__, schema),
            "bindings": {
                "mqtt": {
                    "responseTopic": {
                        "type": "string",
                        "description": "MQTT 5: the response is also published here.",
                    },
                    "correlationData": {
                        "type": "string",
                        "format": "binary",
                        "description": "MQTT 5: returned with the response on the Response Topic.",
                    },
                    "bindingVersion": MQTT_BINDING_VERSION,
                }
            },
            "examples": [
                _example(f"{command}-{index}", example)
                for index, example in enumerate(REQUEST_EXAMPLES[command], start=1)
            ],
        }
    return messages


# --- channels, operations, server ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Channel:
    id: str
    spec: TopicSpec
    address: str
    title: str
    description: str
    message: str


def _channels() -> list[_Channel]:
    """A channel per entry of TOPICS; the request topic becomes one per command."""
    channels = []
    for spec in TOPICS.values():
        if spec.message != "request":
            channel = _Channel(
                spec.id, spec, spec.address, spec.title, spec.description, spec.message
            )
            channels.append(channel)
            continue
        channels += [
            _Channel(
                request_channel_id(command),
                spec,
                spec.address.replace("{command}", command),
                f"{command} request",
                spec.description.replace("{command}", command),
                request_message_name(command),
            )
            for command in COMMANDS
        ]
    return channels


def _actions(spec: TopicSpec) -> tuple[str, ...]:
    return ("send", "receive") if spec.direction == "both" else (spec.direction,)


def _operation(channel: _Channel, action: str) -> dict[str, Any]:
    spec = channel.spec
    if action == "send":
        verb = "Publish"
    else:
        verb = "Run" if spec.answered else "Read back" if spec.direction == "both" else "Read"
    operation: dict[str, Any] = {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel.id}"},
        "title": f"{verb}: {channel.title}",
        "messages": [{"$ref": f"#/channels/{channel.id}/messages/{channel.message}"}],
        "bindings": {
            "mqtt": {
                "qos": DEFAULT_QOS if action == "send" else SUBSCRIBE_QOS,
                "retain": spec.retained,
                "bindingVersion": MQTT_BINDING_VERSION,
            }
        },
    }
    if spec.answered:
        operation["reply"] = {
            "channel": {"$ref": "#/channels/response"},
            "messages": [{"$ref": "#/channels/response/messages/response"}],
        }
    return operation


def _server() -> dict[str, Any]:
    url = urlsplit(_MQTT["url"].default)
    return {
        "host": "{host}:{port}",
        "protocol": "mqtt",
        "title": "MQTT broker",
        "description": "The broker the bridge connects to (BRIDGE_MQTT_URL; mqtts:// for "
        "TLS). MQTT 5, or 3.1.1 when the broker refuses 5 (BRIDGE_MQTT_PROTOCOL=auto).",
        "variables": {
            "host": {"default": url.hostname or "localhost", "description": "Broker host."},
            "port": {
                "default": str(url.port or 1883),
                "description": "Broker port (8883 by default for mqtts://).",
            },
        },
        "bindings": {
            "mqtt": {
                "cleanSession": False,
                "lastWill": {
                    "topic": EXAMPLE_BRIDGE.state,
                    "qos": DEFAULT_QOS,
                    "message": "offline",
                    "retain": True,
                },
                "keepAlive": _MQTT["keepalive"].default,
                "sessionExpiryInterval": _MQTT["session_expiry"].default,
                "bindingVersion": MQTT_BINDING_VERSION,
            }
        },
    }


def build_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the bridge's MQTT interface (deterministic)."""
    schemas = _Schemas()
    messages = _messages(schemas)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    used: set[str] = set()
    for channel in _channels():
        names = re.findall(r"\{(\w+)\}", channel.address)
        missing = [name for name in names if name not in PARAMETERS]
        if missing:
            raise ValueError(f"{channel.address}: no description of the parameters {missing}")
        used.update(names)
        channels[channel.id] = {
            "address": channel.address,
            "title": channel.title,
            "description": channel.description,
            "parameters": {name: {"$ref": f"#/components/parameters/{name}"} for name in names},
            "messages": {channel.message: {"$ref": f"#/components/messages/{channel.message}"}},
        }
        for action in _actions(channel.spec):
            operation_id = f"{action}{channel.id[:1].upper()}{channel.id[1:]}"
            operations[operation_id] = _operation(channel, action)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "nvr-bridge",
            "version": __version__,
            "description": DESCRIPTION,
            "license": {"name": "MIT"},
        },
        "defaultContentType": "application/json",
        "servers": {"broker": _server()},
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas.sorted(),
            "messages": messages,
            "parameters": {name: value for name, value in PARAMETERS.items() if name in used},
        },
    }


# --- YAML ---------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """safe_dump's dumper: multi-line strings as literal blocks, no anchors or aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        """Write a shared object in full each time: the document reads without anchors."""
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def render_yaml(document: dict[str, Any]) -> str:
    """The document as the text of docs/asyncapi.yaml (keys in the document's order)."""
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return HEADER + body


def stale(path: Path, text: str) -> str | None:
    """Why the file at ``path`` is not ``text`` (None when it is): a diff and the remedy."""
    return generated.stale(path, text, REGENERATE)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the document as YAML, or with ``--check FILE`` say whether FILE is current."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.asyncapi",
        description="Print the bridge's AsyncAPI document, generated from its tables.",
    )
    parser.add_argument(
        "--check",
        metavar="FILE",
        type=Path,
        help="exit 1 with a diff when FILE differs from the generated document",
    )
    args = parser.parse_args(argv)
    text = render_yaml(build_document())
    if args.check is None:
        sys.stdout.write(text)
        return 0
    problem = stale(args.check, text)
    if problem is not None:
        sys.stderr.write(problem + "\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
