"""The topic grammar: every topic the bridge publishes or subscribes to, in one module.

``TOPICS`` is the table of the contract's topics (CONTRACT.md sections 4, 5, 7, 8, 10):
for each, its address template, whether it is retained, who publishes it, the message it
carries and what it means. ``NvrTopics`` (one NVR's concrete topics) and
``BridgeTopics`` (the bridge's own and the subscriptions) build topics from exactly
those templates, ``route`` reads an inbound topic back, and the AsyncAPI document
(``tools/asyncapi.py``), the Home Assistant discovery and the tests all take their topics
from here. Template parameters: ``{base}`` (BRIDGE_BASE_TOPIC), ``{nvr}`` (the NVR's id),
``{ch}`` (a channel number), ``{pin}``, ``{type}``, ``{exception}``, ``{message}``,
``{command}``, ``{haPrefix}``, ``{component}``, ``{node}``, ``{objectId}``.

Builders are plain f-strings (they run for every message); a test checks each one
against its template.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from bridge.limits import MAX_LEVEL_CHARS, UNSAFE_LEVEL_CHARS

Direction = Literal["send", "receive", "both"]
SYSTEM_LEVEL = "system"  # the channel level of an item without a channel


def sanitize_level(value: str) -> str:
    """Make peer text safe as one topic level (CONTRACT sections 4 and 9).

    Separators, wildcards, whitespace, controls, noncharacters, bidi and invisible
    characters each become one ``_``; an empty level is ``_``; at most 1,000 characters.
    """
    if len(value) > MAX_LEVEL_CHARS:
        value = value[:MAX_LEVEL_CHARS]
    return UNSAFE_LEVEL_CHARS.sub("_", value) or "_"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic of the contract.

    ``direction``: ``send`` the bridge publishes it, ``receive`` clients publish it to
    the bridge, ``both`` the bridge publishes and reads it back. ``message`` names the
    payload: a TypedDict of ``bridge.payloads.PAYLOADS``, or a plain-text message. ``answered``: a
    request whose outcome goes to the response topic.
    """

    id: str
    address: str
    title: str
    description: str
    message: str
    direction: Direction
    retained: bool
    answered: bool = False


_NVR = "{base}/{nvr}"
_CH = "{base}/{nvr}/channel/{ch}"

TOPICS: dict[str, TopicSpec] = {
    spec.id: spec
    for spec in (
        TopicSpec(
            "bridgeState",
            "{base}/bridge/state",
            "Bridge state",
            "online once connected to the broker; offline on shutdown, and as the bridge's "
            "Last Will after a crash.",
            "bridgeState",
            "send",
            retained=True,
        ),
        TopicSpec(
            "bridgeInfo",
            "{base}/bridge/info",
            "Bridge info",
            "The bridge's version, the NVRs it bridges, the commands it obeys and the MQTT "
            "protocol in use; after each connect to the broker.",
            "bridgeInfo",
            "send",
            retained=True,
        ),
        TopicSpec(
            "availability",
            f"{_NVR}/availability",
            "NVR availability",
            "online while the bridge is logged in to the NVR with all five websocket streams "
            "up, else offline (also on shutdown). Not covered by the Last Will: require "
            "bridge/state too.",
            "availability",
            "both",
            retained=True,
        ),
        TopicSpec(
            "event",
            f"{_CH}/event/{{type}}",
            "Events",
            "Every event of the NVR's eventHook stream, also those replayed from its "
            "history after an outage ('replayed': true).",
            "event",
            "send",
            retained=False,
        ),
        TopicSpec(
            "eventState",
            f"{_CH}/event/{{type}}/state",
            "Event state",
            "The state of the last live event of this type on this channel, for 'active' "
            "and 'inactive' only (not 'once', not replayed events).",
            "activeInactive",
            "send",
            retained=True,
        ),
        TopicSpec(
            "meta",
            f"{_CH}/meta/{{type}}",
            "Metadata",
            "Every item of the NVR's metaHook stream, also those replayed from its history.",
            "meta",
            "send",
            retained=False,
        ),
        TopicSpec(
            "exception",
            f"{_NVR}/exception/{{exception}}",
            "Exceptions",
            "Every item of the NVR's exceptionListen stream.",
            "exception",
            "send",
            retained=False,
        ),
        TopicSpec(
            "status",
            f"{_CH}/status",
            "Channel status",
            "A channel's status from cameraStatus: when the channel is first seen (again "
            "after each reconnect of the stream) and when one of online, recording, event, "
            "manual changes; never for an unchanged repeat.",
            "status",
            "send",
            retained=True,
        ),
        TopicSpec(
            "message",
            f"{_NVR}/message/{{message}}",
            "System messages",
            "Every item of the NVR's messageListen stream, with every secret in its content "
            "masked.",
            "message",
            "send",
            retained=False,
        ),
        TopicSpec(
            "info",
            f"{_NVR}/info",
            "NVR info",
            "The NVR's getSystemInfo and cameraList answers, after each login and when its "
            "cameras change; a part the NVR does not serve (older firmware answers 404) is "
            "null.",
            "info",
            "send",
            retained=True,
        ),
        TopicSpec(
            "snapshot",
            f"{_CH}/snapshot",
            "Snapshot image",
            "The latest snapshot of the channel: the JPEG bytes as the NVR sent them (not "
            "JSON), after an event of BRIDGE_SNAPSHOT_EVENTS or a snapshot request.",
            "jpeg",
            "send",
            retained=True,
        ),
        TopicSpec(
            "snapshotTaken",
            f"{_CH}/snapshot/taken",
            "Snapshot taken",
            "Published after each new snapshot image: its path on the NVR, its size and "
            "what triggered it.",
            "snapshotTaken",
            "send",
            retained=False,
        ),
        TopicSpec(
            "pins",
            f"{_NVR}/pins",
            "Digital inputs and outputs",
            "The NVR's own alarm input and output pins (GetGPIOInfo), after each login.",
            "pins",
            "send",
            retained=True,
        ),
        TopicSpec(
            "pinState",
            f"{_NVR}/pin/{{pin}}/state",
            "Pin state",
            "A pin's value (GetPinStatus, polled): on first sight after a login and on change.",
            "zeroOne",
            "send",
            retained=True,
        ),
        TopicSpec(
            "storage",
            f"{_NVR}/storage",
            "Storage",
            "The NVR's disks (getStorages, polled): after each login and on change.",
            "storage",
            "send",
            retained=True,
        ),
        TopicSpec(
            "alarmState",
            f"{_CH}/alarm/state",
            "Manual alarm state",
            "Whether the channel's manual alarm is on (metaHook manualAlarmStart / "
            "manualAlarmStop); on change.",
            "activeInactive",
            "send",
            retained=True,
        ),
        TopicSpec(
            "recordState",
            f"{_CH}/record/state",
            "Manual recording state",
            "Whether the channel records manually (cameraStatus Manual, else metaHook "
            "manualStart / manualStop); on change.",
            "activeInactive",
            "send",
            retained=True,
        ),
        TopicSpec(
            "presets",
            f"{_CH}/ptz/presets",
            "PTZ presets",
            "The presets of a PTZ channel, after each login and after a preset is set or "
            "removed; channels without PTZ get nothing.",
            "presets",
            "send",
            retained=True,
        ),
        TopicSpec(
            "gap",
            f"{_NVR}/gap",
            "Outage report",
            "After an outage of the event or meta stream and its replay: which time range "
            "was missing and how much of it the NVR's history filled.",
            "gap",
            "send",
            retained=False,
        ),
        TopicSpec(
            "response",
            f"{_NVR}/response/{{command}}",
            "Command responses",
            "The outcome of every request, also of a refused, invalid or unknown one.",
            "response",
            "send",
            retained=False,
        ),
        TopicSpec(
            "request",
            f"{_NVR}/request/{{command}}",
            "Requests",
            "Runs a command on the NVR when it is in BRIDGE_COMMANDS. Publish without "
            "retain; the outcome goes to response/{command}.",
            "request",
            "receive",
            retained=False,
            answered=True,
        ),
        TopicSpec(
            "pinSet",
            f"{_NVR}/pin/{{pin}}/set",
            "Output pin (plain value)",
            "For plain MQTT clients: 1/0/ON/OFF runs set_pin {pin, value}; the response "
            "goes to response/set_pin.",
            "onOff",
            "receive",
            retained=False,
            answered=True,
        ),
        TopicSpec(
            "alarmSet",
            f"{_CH}/alarm/set",
            "Manual alarm (plain value)",
            "For plain MQTT clients: start/stop/ON/OFF runs manual_alarm {channel, command}; "
            "the response goes to response/manual_alarm.",
            "startStop",
            "receive",
            retained=False,
            answered=True,
        ),
        TopicSpec(
            "recordSet",
            f"{_CH}/record/set",
            "Manual recording (plain value)",
            "For plain MQTT clients: start/stop/ON/OFF runs manual_record {channel, "
            "command}; the response goes to response/manual_record.",
            "startStop",
            "receive",
            retained=False,
            answered=True,
        ),
        TopicSpec(
            "presetSet",
            f"{_CH}/ptz/preset/set",
            "PTZ preset (plain value)",
            "For plain MQTT clients: a preset's name or token runs ptz goto_preset; the "
            "response goes to response/ptz.",
            "presetName",
            "receive",
            retained=False,
            answered=True,
        ),
        TopicSpec(
            "discoveryConfig",
            "{haPrefix}/{component}/{node}/{objectId}/config",
            "Home Assistant discovery",
            "With BRIDGE_HA_DISCOVERY=true: one config per entity, again when Home "
            "Assistant comes online and after each connect. An empty retained payload "
            "removes an entity that no longer belongs.",
            "discoveryConfig",
            "send",
            retained=True,
        ),
        TopicSpec(
            "discoveryRegistry",
            "{base}/bridge/discovery/{nvr}",
            "Home Assistant discovery registry",
            "The discovery topics published for an NVR; the bridge reads these lists back "
            "at start-up (also with discovery off) to clear what no longer belongs. An "
            "empty retained payload removes the list of an NVR without discovery.",
            "discoveryRegistry",
            "both",
            retained=True,
        ),
        TopicSpec(
            "haStatus",
            "{haPrefix}/status",
            "Home Assistant status",
            "Home Assistant's birth message: on 'online' the bridge publishes every "
            "discovery config again.",
            "onlineOffline",
            "receive",
            retained=False,
        ),
    )
}


class Route(NamedTuple):
    """What an inbound topic asks for: ``kind`` and its levels (``None`` when absent)."""

    kind: Literal["request", "pinSet", "alarmSet", "recordSet", "presetSet"]
    nvr: str
    name: str  # the command, the pin or the channel level


class NvrTopics:
    """The topics of one NVR (templates of ``TOPICS`` with ``{base}`` and ``{nvr}`` set)."""

    __slots__ = ("availability", "base", "gap", "info", "nvr", "pins", "prefix", "storage")

    def __init__(self, base: str, nvr: str) -> None:
        self.base = base
        self.nvr = nvr
        self.prefix = f"{base}/{nvr}"
        self.availability = f"{self.prefix}/availability"
        self.info = f"{self.prefix}/info"
        self.pins = f"{self.prefix}/pins"
        self.storage = f"{self.prefix}/storage"
        self.gap = f"{self.prefix}/gap"

    @property
    def bridge_state(self) -> str:
        """The bridge's own online/offline topic (also its Last Will)."""
        return f"{self.base}/bridge/state"

    def channel(self, channel: int | None) -> str:
        """The channel's topic prefix; ``system`` when the NVR gave no channel."""
        level = SYSTEM_LEVEL if channel is None else str(channel)
        return f"{self.prefix}/channel/{level}"

    def event(self, channel: int | None, type_level: str) -> str:
        """``.../channel/{ch}/event/{type}`` (``type_level`` already sanitized)."""
        return f"{self.channel(channel)}/event/{type_level}"

    def event_state(self, channel: int | None, type_level: str) -> str:
        """``.../channel/{ch}/event/{type}/state``."""
        return f"{self.channel(channel)}/event/{type_level}/state"

    def meta(self, channel: int | None, type_level: str) -> str:
        """``.../channel/{ch}/meta/{type}``."""
        return f"{self.channel(channel)}/meta/{type_level}"

    def exception(self, name: str) -> str:
        """``{base}/{nvr}/exception/{exception}`` (sanitized here)."""
        return f"{self.prefix}/exception/{sanitize_level(name)}"

    def message(self, name: str) -> str:
        """``{base}/{nvr}/message/{message}`` (sanitized here)."""
        return f"{self.prefix}/message/{sanitize_level(name)}"

    def status(self, channel: int) -> str:
        """``.../channel/{ch}/status``."""
        return f"{self.channel(channel)}/status"

    def snapshot(self, channel: int) -> str:
        """``.../channel/{ch}/snapshot`` (the JPEG)."""
        return f"{self.channel(channel)}/snapshot"

    def snapshot_taken(self, channel: int) -> str:
        """``.../channel/{ch}/snapshot/taken``."""
        return f"{self.channel(channel)}/snapshot/taken"

    def pin_state(self, pin: int) -> str:
        """``{base}/{nvr}/pin/{pin}/state``."""
        return f"{self.prefix}/pin/{pin}/state"

    def pin_set(self, pin: int) -> str:
        """``{base}/{nvr}/pin/{pin}/set``."""
        return f"{self.prefix}/pin/{pin}/set"

    def alarm_state(self, channel: int) -> str:
        """``.../channel/{ch}/alarm/state``."""
        return f"{self.channel(channel)}/alarm/state"

    def alarm_set(self, channel: int) -> str:
        """``.../channel/{ch}/alarm/set``."""
        return f"{self.channel(channel)}/alarm/set"

    def record_state(self, channel: int) -> str:
        """``.../channel/{ch}/record/state``."""
        return f"{self.channel(channel)}/record/state"

    def record_set(self, channel: int) -> str:
        """``.../channel/{ch}/record/set``."""
        return f"{self.channel(channel)}/record/set"

    def presets(self, channel: int) -> str:
        """``.../channel/{ch}/ptz/presets``."""
        return f"{self.channel(channel)}/ptz/presets"

    def preset_set(self, channel: int) -> str:
        """``.../channel/{ch}/ptz/preset/set``."""
        return f"{self.channel(channel)}/ptz/preset/set"

    def request(self, command: str) -> str:
        """The request topic of one command."""
        return f"{self.prefix}/request/{command}"

    def response(self, command: str) -> str:
        """Where the outcome of a command is published (the name sanitized)."""
        return f"{self.prefix}/response/{sanitize_level(command)}"

    def subscriptions(self) -> list[str]:
        """The filters this NVR's requests arrive on."""
        prefix = self.prefix
        return [
            f"{prefix}/request/+",
            f"{prefix}/pin/+/set",
            f"{prefix}/channel/+/alarm/set",
            f"{prefix}/channel/+/record/set",
            f"{prefix}/channel/+/ptz/preset/set",
        ]

    def route(self, levels: list[str]) -> Route | None:
        """What the levels after ``{base}/{nvr}/`` ask for; None when nothing known."""
        count = len(levels)
        if count == 2 and levels[0] == "request":
            return Route("request", self.nvr, levels[1])
        if count == 3 and levels[0] == "pin" and levels[2] == "set":
            return Route("pinSet", self.nvr, levels[1])
        if levels[:1] != ["channel"]:
            return None
        if count == 4 and levels[3] == "set" and levels[2] in ("alarm", "record"):
            return Route("alarmSet" if levels[2] == "alarm" else "recordSet", self.nvr, levels[1])
        if count == 5 and levels[2:] == ["ptz", "preset", "set"]:
            return Route("presetSet", self.nvr, levels[1])
        return None


class BridgeTopics:
    """The bridge's own topics and the filters it reads at the bridge level."""

    __slots__ = ("base", "discovery_prefix", "ha_prefix", "info", "state")

    def __init__(self, base: str, ha_prefix: str) -> None:
        self.base = base
        self.ha_prefix = ha_prefix
        self.state = f"{base}/bridge/state"
        self.info = f"{base}/bridge/info"
        self.discovery_prefix = f"{base}/bridge/discovery/"

    def nvr(self, nvr: str) -> NvrTopics:
        """The topics of one NVR."""
        return NvrTopics(self.base, nvr)

    def discovery_registry(self, nvr: str) -> str:
        """The retained list of an NVR's Home Assistant discovery topics."""
        return f"{self.discovery_prefix}{nvr}"

    @property
    def discovery_registry_filter(self) -> str:
        """The subscription that reads back the lists of earlier runs."""
        return f"{self.discovery_prefix}+"

    @property
    def availability_filter(self) -> str:
        """Every NVR's availability, to find NVRs that left the configuration."""
        return f"{self.base}/+/availability"

    @property
    def kept_filters(self) -> list[str]:
        """Retained topics published only on change, read back at start-up (see ``kept``)."""
        return [f"{self.base}/+/channel/+/alarm/state", f"{self.base}/+/channel/+/snapshot"]

    @staticmethod
    def kept(levels: list[str]) -> bool:
        """Whether the levels after ``{base}/{nvr}/`` name one of ``kept_filters``' topics.

        A manual alarm's state and a snapshot are published when they change, not after
        each login, so a new bridge process knows them only from the broker: it reads
        them back once to republish them should the broker lose its retained messages.
        """
        if len(levels) < 3 or levels[0] != "channel":
            return False
        return levels[2:] == ["alarm", "state"] or levels[2:] == ["snapshot"]

    def everything_of(self, nvr: str) -> str:
        """Every topic of one NVR (to clear the retained ones of a removed NVR)."""
        return f"{self.base}/{nvr}/#"

    @property
    def ha_status(self) -> str:
        """Home Assistant's birth and will topic."""
        return f"{self.ha_prefix}/status"

    def discovery_config(self, component: str, node: str, object_id: str) -> str:
        """One Home Assistant discovery config topic."""
        return f"{self.ha_prefix}/{component}/{node}/{object_id}/config"

    def nvr_of(self, topic: str) -> tuple[str, list[str]] | None:
        """(NVR id, the levels after it) of a topic under the base, else None."""
        if not topic.startswith(self.base + "/"):
            return None
        levels = topic[len(self.base) + 1 :].split("/")
        return levels[0], levels[1:]
