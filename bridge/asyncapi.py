"""The bridge's MQTT contract as an AsyncAPI 3.0 document, built from the bridge's own code.

Payload schemas come from the pydantic models (``bridge.payloads`` for what the bridge
publishes, ``bridge.commands`` for the requests), defaults from ``bridge.config``, and the
examples from the code that builds the real payloads, so ``docs/asyncapi.yaml`` (this
module's output) cannot drift silently: ``tests/test_asyncapi.py`` fails when they differ.

    python -m bridge.asyncapi > docs/asyncapi.yaml          # regenerate
    python -m bridge.asyncapi --check docs/asyncapi.yaml    # exit 1 when it is stale
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
import yaml
from pydantic import BaseModel

from bridge import __version__
from bridge.commands import _ON_OFF, _START_STOP, COMMANDS
from bridge.config import BridgeConfig, MqttConfig
from bridge.homeassistant import discovery_configs
from bridge.normalize import (
    MAX_LEVEL_CHARS,
    STATE_VALUES,
    Normalizer,
    format_timestamp,
    validate_item,
)
from bridge.nvr.models import StreamName
from bridge.payloads import (
    DiscoveryConfigPayload,
    DiscoveryRegistryPayload,
    EventPayload,
    ExceptionPayload,
    InfoPayload,
    MessagePayload,
    MetaPayload,
    ResponsePayload,
    StatusPayload,
)
from bridge.publishing import Publication
from bridge.topics import NvrTopics

ASYNCAPI_VERSION = "3.0.0"
MQTT_BINDING_VERSION = "0.2.0"
SCHEMA_REF = "#/components/schemas/{model}"
REGENERATE = "python -m bridge.asyncapi > docs/asyncapi.yaml"
HEADER = (
    "# The bridge's MQTT contract, generated from its models by `python -m bridge.asyncapi`.\n"
    f"# Do not edit: regenerate with `{REGENERATE}`.\n"
)

Action = Literal["send", "receive"]

_MQTT_DEFAULTS = MqttConfig.model_fields
_BRIDGE_DEFAULTS = BridgeConfig.model_fields
DEFAULT_BASE: str = _BRIDGE_DEFAULTS["base_topic"].default
DEFAULT_HA_PREFIX: str = _BRIDGE_DEFAULTS["ha_prefix"].default
DEFAULT_QOS: int = _MQTT_DEFAULTS["qos"].default
# bridge/mqtt.py subscribes to every request filter with QoS 1.
SUBSCRIBE_QOS = 1

EXAMPLE_NVR = "nvr"
EXAMPLE_TIMESTAMP = format_timestamp(1_714_564_800.0)  # 2024-05-01T12:00:00.000Z
EXAMPLE_NVR_TIME = 1_714_564_799_250

_SAFE_LEVEL = (
    "made a safe topic level: '/', '+', '#', NUL, whitespace and the other characters MQTT "
    f"forbids become '_' (one each), it is cut at {MAX_LEVEL_CHARS:,} characters and an "
    "empty value is '_'. The payload keeps the original."
)

DESCRIPTION = f"""\
The MQTT interface of nvr-bridge, which bridges the websocket streams and REST commands of \
EverFocus NVRs to MQTT. CONTRACT.md (sections 4 and 5) is the normative text; this document \
is generated from the bridge's own models and checked against the code by its tests.

- Operations are from the bridge's point of view: `send` is what the bridge publishes, \
`receive` what it subscribes to.
- JSON payloads may carry more fields than listed: **clients must ignore unknown fields**. \
The schemas forbid unknown fields only so that the bridge's own tests catch drift.
- `timestamp` is the bridge's receive time, UTC ISO 8601 with milliseconds and `Z`.
- Topic levels taken from NVR data (`{{type}}`, `{{exception}}`, `{{message}}`) are {_SAFE_LEVEL} \
A missing channel is the level `system`, and `null` in the payload. Optional fields the NVR \
left out (`target`, `content`, `manual`) are `null`.
- The bridge publishes with QoS `BRIDGE_MQTT_QOS` (default {DEFAULT_QOS}, which the bindings \
show) and subscribes with QoS {SUBSCRIBE_QOS}.
- After a crash only `{{base}}/bridge/state` turns `offline` (the bridge's Last Will): \
consumers should require both it and `{{base}}/{{nvr}}/availability` to be `online` (Home \
Assistant: `availability_mode: all`).
- Every request is answered on `{{base}}/{{nvr}}/response/{{command}}`, and also on the \
request's MQTT 5 Response Topic with its Correlation Data. Requests are validated strictly \
(JSON types, unknown fields are an error); a retained request is never executed; a request \
whose `timestamp` is older than `BRIDGE_COMMAND_MAX_AGE` (default \
{_BRIDGE_DEFAULTS["command_max_age"].default:g} s) is refused with an `error` starting \
`expired`; a command not in `BRIDGE_COMMANDS` is refused.
"""

PARAMETERS: dict[str, dict[str, Any]] = {
    "base": {
        "description": "The first level of every topic (BRIDGE_BASE_TOPIC).",
        "default": DEFAULT_BASE,
    },
    "nvr": {
        "description": "The NVR's id (BRIDGE_NVR_ID, [A-Za-z0-9_-]+).",
        "default": "nvr",
        "examples": ["nvr", "lobby"],
    },
    "ch": {
        "description": "The channel number (1-based), or 'system' for an item the NVR gave "
        "without a channel.",
        "examples": ["1", "system"],
    },
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
    "pin": {
        "description": "A digital output pin number, 1-based.",
        "examples": ["1"],
    },
    "haPrefix": {
        "description": "Home Assistant's discovery prefix (BRIDGE_HA_PREFIX).",
        "default": DEFAULT_HA_PREFIX,
    },
    "component": {
        "description": "The Home Assistant entity platform.",
        "enum": ["binary_sensor", "button", "switch"],
    },
    "node": {
        "description": "nvr_bridge_{base}_{nvr}, made a safe topic level.",
        "examples": [f"nvr_bridge_{DEFAULT_BASE}_nvr"],
    },
    "objectId": {
        "description": "The entity: ch{n}_motion, ch{n}_input_alarm, ch{n}_online, "
        "ch{n}_recording, ch{n}_manual_alarm, output_pin_{n} or buzzer.",
        "examples": ["ch1_motion", "output_pin_1", "buzzer"],
    },
}

REQUEST_EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "add_event": [{"channel": 1, "type": "Motion", "state": "active", "transaction": "e1"}],
    "add_meta": [{"channel": 1, "type": "LPR", "data": "ABC-123", "transaction": "m1"}],
    "manual_alarm": [{"channel": 2, "command": "start", "transaction": "a1"}],
    "manual_record": [
        {"channel": 2, "command": "stop", "transaction": "r1", "timestamp": 1714564800000}
    ],
    "set_pin": [{"pin": 1, "value": 1, "transaction": "p1"}],
    "ptz": [
        {"channel": 1, "command": "pan_left", "speed": 0.5, "transaction": "z1"},
        {
            "channel": 1,
            "command": "set_preset",
            "parameters": {"preset_name": "door"},
            "transaction": "z2",
        },
    ],
    "buzzer": [{"timeout": 5, "transaction": "b1", "timestamp": "2024-05-01T12:00:00+00:00"}],
    "snapshot": [{"channel": 3, "transaction": "s1"}],
}

RESPONSE_EXAMPLES: list[dict[str, Any]] = [
    {
        "status": "ok",
        "command": "snapshot",
        "transaction": "s1",
        "result": {"snapshotPath": "/snapshot/ch3_20240501120000.jpg"},
        "error": None,
    },
    {
        "status": "error",
        "command": "set_pin",
        "transaction": None,
        "result": None,
        "error": "invalid request: field 'pin': input should be a valid integer (got '1')",
    },
]

INFO_EXAMPLE: dict[str, Any] = {
    "nvr": EXAMPLE_NVR,
    "system": {
        "device_name": "Lobby NVR",
        "model": "NVR-EXAMPLE",
        "software_version": "1.0.0",
        "serial": "EF0123456789",
        "ipcam_channels": 2,
        "analog_channels": 0,
    },
    "cameras": [
        {"ChannelID": 1, "DeviceName": "Door", "IPAddress": "192.168.1.101"},
        {"ChannelID": 2, "DeviceName": "Yard", "IPAddress": "192.168.1.102"},
    ],
    "timestamp": EXAMPLE_TIMESTAMP,
}

# NVR stream items whose real publications (through Normalizer) are the examples.
_STREAM_SAMPLES: list[tuple[StreamName, dict[str, Any], int | None, str]] = [
    ("event", {"ChannelID": 3, "Type": "Motion", "State": "active"}, None, "motion"),
    ("event", {"Type": "VideoLoss", "State": "once"}, None, "no channel"),
    (
        "event",
        {"ChannelID": 3, "Type": "Motion", "State": "inactive"},
        EXAMPLE_NVR_TIME,
        "replayed",
    ),
    ("meta", {"ChannelID": 2, "Type": "LPR", "Data": "ABC-123"}, None, "plate"),
    ("exception", {"exception": "diskFull", "target": 1, "time": EXAMPLE_NVR_TIME}, None, "disk"),
    ("exception", {"exception": "networkDown", "time": EXAMPLE_NVR_TIME}, None, "no target"),
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


@dataclass(frozen=True, slots=True)
class _Channel:
    """One topic of the contract: its address, its one message, and who publishes it."""

    id: str
    address: str
    title: str
    description: str
    message: str
    actions: tuple[Action, ...]
    retain: bool
    answered: bool = False  # a request: the outcome goes to the response channel


def _camel(snake: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in snake.split("_"))


def _lower_camel(snake: str) -> str:
    camel = _camel(snake)
    return camel[:1].lower() + camel[1:]


def _case_insensitive(values: Iterable[str]) -> str:
    """A JSON Schema pattern for any of ``values`` in any case, surrounding blanks allowed."""
    alternatives = (
        "".join(f"[{c}{c.upper()}]" if c.isalpha() else re.escape(c) for c in value)
        for value in sorted(values)
    )
    return rf"^\s*(?:{'|'.join(alternatives)})\s*$"


# pydantic writes the bounds of a constrained union (commands.Speed) as its own keywords
# ("ge", "le"), which JSON Schema ignores; these are their standard names.
_BOUND_KEYWORDS = {
    "ge": "minimum",
    "le": "maximum",
    "gt": "exclusiveMinimum",
    "lt": "exclusiveMaximum",
}
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
_DATA_KEYWORDS = frozenset({"default", "const", "enum", "examples", "dependencies", "required"})


def _standard_keywords(schema: Any) -> Any:
    """``schema`` with pydantic's bound keywords renamed to JSON Schema's."""
    if isinstance(schema, list):
        return [_standard_keywords(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    fields: dict[str, Any] = schema
    for key, value in fields.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _standard_keywords(item) for name, item in value.items()}
        elif key in _DATA_KEYWORDS:
            out[key] = value
        else:
            out[_BOUND_KEYWORDS.get(key, key)] = _standard_keywords(value)
    return out


class _Schemas:
    """components/schemas: each model's JSON schema, its nested definitions hoisted."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, model: type[BaseModel]) -> dict[str, str]:
        """Add ``model`` (and what it nests) and return a reference to it."""
        schema = model.model_json_schema(ref_template=SCHEMA_REF)
        for name, definition in schema.pop("$defs", {}).items():
            self._add(name, definition)
        self._add(model.__name__, schema)
        return {"$ref": SCHEMA_REF.format(model=model.__name__)}

    def _add(self, name: str, schema: dict[str, Any]) -> None:
        schema = _standard_keywords(schema)
        known = self.schemas.get(name)
        if known is not None and known != schema:
            raise ValueError(f"two different schemas are named {name!r}; rename one of the models")
        self.schemas[name] = schema

    def sorted(self) -> dict[str, Any]:
        """The schemas by name, for a stable document."""
        return {name: self.schemas[name] for name in sorted(self.schemas)}


def _text(values: Iterable[str], description: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values), "description": description}


def _example(name: str, payload: Any, summary: str | None = None) -> dict[str, Any]:
    example: dict[str, Any] = {"name": name}
    if summary is not None:
        example["summary"] = summary
    example["payload"] = payload
    return example


def _stream_examples() -> dict[str, list[dict[str, Any]]]:
    """Examples of the stream messages, produced by the bridge's own Normalizer."""
    normalizer = Normalizer(NvrTopics(DEFAULT_BASE, EXAMPLE_NVR))
    examples: dict[str, list[dict[str, Any]]] = {}
    for stream, item, history_ms, name in _STREAM_SAMPLES:
        message = validate_item(stream, item)
        publications = normalizer.normalize(
            stream, message, EXAMPLE_TIMESTAMP, history_ms=history_ms
        )
        for publication in publications:
            key, payload = _example_payload(stream, publication)
            examples.setdefault(key, []).append(
                _example(f"{stream}-{name}".replace(" ", "-"), payload, publication.topic)
            )
    return examples


def _example_payload(stream: StreamName, publication: Publication) -> tuple[str, Any]:
    if stream == "event" and publication.topic.endswith("/state"):
        return "eventState", publication.payload.decode()
    return stream, orjson.loads(publication.payload)


def _discovery_examples() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Two discovery configs and a registry list, from ``homeassistant.discovery_configs``."""
    configs = discovery_configs(
        NvrTopics(DEFAULT_BASE, EXAMPLE_NVR), INFO_EXAMPLE, prefix=DEFAULT_HA_PREFIX
    )
    picked = [t for t in configs if t.endswith(("/ch1_motion/config", "/buzzer/config"))]
    config_examples = [
        _example(topic.split("/")[-2].replace("_", "-"), configs[topic], topic) for topic in picked
    ]
    registry = [
        _example("registry", sorted(configs), f"{DEFAULT_BASE}/bridge/discovery/{EXAMPLE_NVR}")
    ]
    return config_examples, registry


def _request_call(command: str) -> str:
    """The NVR call of ``command``, from its own mapping applied to its first example."""
    spec = COMMANDS[command]
    example = REQUEST_EXAMPLES[command][0]
    call = spec.to_call(spec.model.model_validate(example))
    query = ""
    if call.params:
        # Name the request field each query value comes from, not the example's value.
        fields = {str(value): name for name, value in example.items()}
        query = "?" + "&".join(
            f"{key}={{{fields.get(value, value)}}}" for key, value in call.params.items()
        )
    body = " with a JSON body" if call.body is not None else ""
    return f"`{call.method} {call.path}{query}`{body}"


def _messages(schemas: _Schemas) -> dict[str, dict[str, Any]]:
    """components/messages: one message per kind of payload."""
    streams = _stream_examples()
    ha_configs, ha_registry = _discovery_examples()
    state_values = sorted(STATE_VALUES)
    on_off = {
        "type": "string",
        "pattern": _case_insensitive(_ON_OFF),
        "description": f"One of {', '.join(sorted(_ON_OFF))}, in any case.",
    }
    start_stop = {
        "type": "string",
        "pattern": _case_insensitive(_START_STOP),
        "description": f"One of {', '.join(sorted(_START_STOP))}, in any case.",
    }

    def text(name: str, title: str, summary: str, payload: Any, examples: list[Any]) -> Any:
        return {
            "name": name,
            "title": title,
            "summary": summary,
            "contentType": "text/plain",
            "payload": payload,
            "examples": [_example(str(value), value) for value in examples],
        }

    def json(
        name: str, title: str, summary: str, model: type[BaseModel], examples: list[Any]
    ) -> Any:
        return {
            "name": name,
            "title": title,
            "summary": summary,
            "contentType": "application/json",
            "payload": schemas.ref(model),
            "examples": examples,
        }

    messages: dict[str, dict[str, Any]] = {
        "bridgeState": text(
            "bridgeState",
            "Bridge state",
            "Whether the bridge is connected to the broker.",
            _text(["online", "offline"], "offline also as the bridge's MQTT Last Will."),
            ["online", "offline"],
        ),
        "availability": text(
            "availability",
            "NVR availability",
            "Whether the bridge is logged in to the NVR with its five streams up.",
            _text(["online", "offline"], "offline also when the bridge shuts down."),
            ["online", "offline"],
        ),
        "event": json(
            "event", "Event", "An event from the NVR's eventHook.", EventPayload, streams["event"]
        ),
        "eventState": text(
            "eventState",
            "Event state",
            "The current state of an event type on a channel.",
            _text(state_values, "The state of the last live event of this type."),
            state_values,
        ),
        "meta": json(
            "meta",
            "Metadata",
            "A metadata item from the NVR's metaHook.",
            MetaPayload,
            streams["meta"],
        ),
        "exception": json(
            "exception",
            "Exception",
            "A disk or system exception from the NVR's exceptionListen.",
            ExceptionPayload,
            streams["exception"],
        ),
        "status": json(
            "status",
            "Channel status",
            "A channel's status from the NVR's cameraStatus, on first sight and on change.",
            StatusPayload,
            streams["status"],
        ),
        "message": json(
            "message",
            "System message",
            "A notification from the NVR's messageListen, passwords masked.",
            MessagePayload,
            streams["message"],
        ),
        "info": json(
            "info",
            "NVR info",
            "The NVR's system information and camera list, after each login.",
            InfoPayload,
            [_example("info", INFO_EXAMPLE)],
        ),
        "response": json(
            "response",
            "Command response",
            "The outcome of a command request.",
            ResponsePayload,
            [_example(f"{r['command']}-{r['status']}", r) for r in RESPONSE_EXAMPLES],
        ),
    }
    for command, spec in COMMANDS.items():
        name = f"{_lower_camel(command)}Request"
        messages[name] = {
            "name": name,
            "title": f"{command} request",
            "summary": (spec.model.__doc__ or command).strip().splitlines()[0],
            "description": f"The bridge validates it, then calls the NVR: "
            f"{_request_call(command)}. `transaction` and `timestamp` are never passed to it.",
            "contentType": "application/json",
            "payload": schemas.ref(spec.model),
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
    messages |= {
        "pinSet": text(
            "pinSet",
            "Set an output pin",
            "Runs set_pin with the pin from the topic: value 1 or 0.",
            on_off,
            ["ON", "0"],
        ),
        "channelAlarmSet": text(
            "channelAlarmSet",
            "Start or stop a manual alarm",
            "Runs manual_alarm with the channel from the topic.",
            start_stop,
            ["start", "OFF"],
        ),
        "channelRecordSet": text(
            "channelRecordSet",
            "Start or stop manual recording",
            "Runs manual_record with the channel from the topic.",
            start_stop,
            ["stop", "ON"],
        ),
        "discoveryConfig": json(
            "discoveryConfig",
            "Home Assistant discovery config",
            "One entity of an NVR's Home Assistant device.",
            DiscoveryConfigPayload,
            ha_configs,
        ),
        "discoveryRegistry": json(
            "discoveryRegistry",
            "Discovery registry",
            "The discovery topics the bridge published for an NVR.",
            DiscoveryRegistryPayload,
            ha_registry,
        ),
    }
    return messages


def _channels() -> list[_Channel]:
    """Every topic of CONTRACT.md section 4, the request topics and the convenience ones."""
    nvr = "{base}/{nvr}"
    channel = f"{nvr}/channel/{{ch}}"
    send: tuple[Action, ...] = ("send",)
    receive: tuple[Action, ...] = ("receive",)
    channels = [
        _Channel(
            "bridgeState",
            "{base}/bridge/state",
            "Bridge state",
            "online once connected to the broker; offline on shutdown, and as the bridge's "
            "Last Will after a crash.",
            "bridgeState",
            send,
            retain=True,
        ),
        _Channel(
            "availability",
            f"{nvr}/availability",
            "NVR availability",
            "online while the bridge is logged in to the NVR with all five websocket streams "
            "up, else offline (also on shutdown). Not covered by the Last Will: require "
            "bridge/state too.",
            "availability",
            send,
            retain=True,
        ),
        _Channel(
            "event",
            f"{channel}/event/{{type}}",
            "Events",
            "Every event of the NVR's eventHook stream, also those replayed from its "
            "history after an outage ('replayed': true).",
            "event",
            send,
            retain=False,
        ),
        _Channel(
            "eventState",
            f"{channel}/event/{{type}}/state",
            "Event state",
            "The state of the last live event of this type on this channel, for 'active' "
            "and 'inactive' only (not 'once', not replayed events).",
            "eventState",
            send,
            retain=True,
        ),
        _Channel(
            "meta",
            f"{channel}/meta/{{type}}",
            "Metadata",
            "Every item of the NVR's metaHook stream, also those replayed from its history.",
            "meta",
            send,
            retain=False,
        ),
        _Channel(
            "exception",
            f"{nvr}/exception/{{exception}}",
            "Exceptions",
            "Every item of the NVR's exceptionListen stream.",
            "exception",
            send,
            retain=False,
        ),
        _Channel(
            "status",
            f"{channel}/status",
            "Channel status",
            "A channel's status from cameraStatus: when the channel is first seen (again "
            "after each reconnect of the stream) and when one of online, recording, event, "
            "manual changes; never for an unchanged repeat.",
            "status",
            send,
            retain=True,
        ),
        _Channel(
            "message",
            f"{nvr}/message/{{message}}",
            "System messages",
            "Every item of the NVR's messageListen stream, with every password in its "
            "content masked.",
            "message",
            send,
            retain=False,
        ),
        _Channel(
            "response",
            f"{nvr}/response/{{command}}",
            "Command responses",
            "The outcome of every request, also of a refused, invalid or unknown one.",
            "response",
            send,
            retain=False,
        ),
        _Channel(
            "info",
            f"{nvr}/info",
            "NVR info",
            "The NVR's getSystemInfo and cameraList answers, after each login; a part the "
            "NVR does not serve (older firmware answers 404) is null.",
            "info",
            send,
            retain=True,
        ),
    ]
    channels += [
        _Channel(
            f"request{_camel(command)}",
            f"{nvr}/request/{command}",
            f"{command} request",
            f"Runs {command} on the NVR when it is in BRIDGE_COMMANDS. Publish without retain.",
            f"{_lower_camel(command)}Request",
            receive,
            retain=False,
            answered=True,
        )
        for command in COMMANDS
    ]
    channels += [
        _Channel(
            "pinSet",
            f"{nvr}/pin/{{pin}}/set",
            "Output pin (plain value)",
            "A convenience topic for plain MQTT clients: set_pin {pin, value}; the response "
            "goes to response/set_pin.",
            "pinSet",
            receive,
            retain=False,
            answered=True,
        ),
        _Channel(
            "channelAlarmSet",
            f"{channel}/alarm/set",
            "Manual alarm (plain value)",
            "A convenience topic for plain MQTT clients: manual_alarm {channel, command}; "
            "the response goes to response/manual_alarm.",
            "channelAlarmSet",
            receive,
            retain=False,
            answered=True,
        ),
        _Channel(
            "channelRecordSet",
            f"{channel}/record/set",
            "Manual recording (plain value)",
            "A convenience topic for plain MQTT clients: manual_record {channel, command}; "
            "the response goes to response/manual_record.",
            "channelRecordSet",
            receive,
            retain=False,
            answered=True,
        ),
        _Channel(
            "discoveryConfig",
            "{haPrefix}/{component}/{node}/{objectId}/config",
            "Home Assistant discovery",
            "With BRIDGE_HA_DISCOVERY=true, after each login: one config per entity. An "
            "empty retained payload removes an entity that no longer belongs.",
            "discoveryConfig",
            send,
            retain=True,
        ),
        _Channel(
            "discoveryRegistry",
            "{base}/bridge/discovery/{nvr}",
            "Home Assistant discovery registry",
            "The discovery topics published for an NVR; the bridge reads these lists back "
            "at start-up (also with discovery off) to clear what no longer belongs. An "
            "empty retained payload removes the list of an NVR without discovery.",
            "discoveryRegistry",
            ("send", "receive"),
            retain=True,
        ),
    ]
    return channels


def _parameters(address: str) -> list[str]:
    return re.findall(r"\{(\w+)\}", address)


def _operation_title(spec: _Channel, action: Action) -> str:
    if action == "send":
        return f"Publish: {spec.title}"
    return f"Run: {spec.title}" if spec.answered else f"Read back: {spec.title}"


def _operation(spec: _Channel, action: Action) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "action": action,
        "channel": {"$ref": f"#/channels/{spec.id}"},
        "title": _operation_title(spec, action),
        "messages": [{"$ref": f"#/channels/{spec.id}/messages/{spec.message}"}],
        "bindings": {
            "mqtt": {
                "qos": DEFAULT_QOS if action == "send" else SUBSCRIBE_QOS,
                "retain": spec.retain,
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
    url = urlsplit(_MQTT_DEFAULTS["url"].default)
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
                    "topic": f"{DEFAULT_BASE}/bridge/state",
                    "qos": DEFAULT_QOS,
                    "message": "offline",
                    "retain": True,
                },
                "keepAlive": _MQTT_DEFAULTS["keepalive"].default,
                "sessionExpiryInterval": _MQTT_DEFAULTS["session_expiry"].default,
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
    used_parameters: set[str] = set()
    for spec in _channels():
        names = _parameters(spec.address)
        used_parameters.update(names)
        channels[spec.id] = {
            "address": spec.address,
            "title": spec.title,
            "description": spec.description,
            "parameters": {name: {"$ref": f"#/components/parameters/{name}"} for name in names},
            "messages": {spec.message: {"$ref": f"#/components/messages/{spec.message}"}},
        }
        for action in spec.actions:
            operations[f"{action}{spec.id[:1].upper()}{spec.id[1:]}"] = _operation(spec, action)
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
            "parameters": {
                name: PARAMETERS[name] for name in PARAMETERS if name in used_parameters
            },
        },
    }


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
    """The document as the YAML of docs/asyncapi.yaml (keys in the document's order)."""
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return HEADER + body


def check_file(path: Path, document: dict[str, Any]) -> str | None:
    """Why ``path`` is not ``document`` (None when it is): a short diff and the remedy."""
    try:
        written = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return f"{path}: cannot read it ({exc.strerror}); generate it with: {REGENERATE}"
    except yaml.YAMLError as exc:
        return f"{path}: not valid YAML ({exc}); regenerate it with: {REGENERATE}"
    if written == document:
        return None
    old = render_yaml(written).splitlines() if isinstance(written, dict) else [repr(written)]
    diff = list(
        difflib.unified_diff(
            old, render_yaml(document).splitlines(), str(path), "generated", lineterm=""
        )
    )
    shown = "\n".join(diff[:60]) + ("\n..." if len(diff) > 60 else "")
    return (
        f"{path} differs from the document the code generates; regenerate it with: "
        f"{REGENERATE}\n{shown}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Print the document as YAML, or with ``--check FILE`` say whether FILE is current."""
    parser = argparse.ArgumentParser(
        prog="python -m bridge.asyncapi",
        description="Print the bridge's AsyncAPI document, generated from its models.",
    )
    parser.add_argument(
        "--check",
        metavar="FILE",
        type=Path,
        help="exit 1 with a diff when FILE differs from the generated document",
    )
    args = parser.parse_args(argv)
    document = build_document()
    if args.check is None:
        sys.stdout.write(render_yaml(document))
        return 0
    problem = check_file(args.check, document)
    if problem is not None:
        sys.stderr.write(problem + "\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
