"""Home Assistant MQTT discovery (``BRIDGE_HA_DISCOVERY=true``; CONTRACT.md section 8).

Each NVR is a device (identity from ``getSystemInfo``, its URL as configuration_url) and
each of its cameras a device of its own under it (``via_device``). Entities, all with
names that do not repeat their device's name:

- per camera: motion and input alarm (binary sensors from the retained event states),
  connected and recording (diagnostic binary sensors from the status), manual alarm and
  manual recording (switches whose state is the NVR's, not a guess), with snapshots on
  a camera and a "take snapshot" button, with PTZ presets a preset select, and a device
  trigger for every event type and state the camera has shown (so an automation "when
  camera 3 sees motion" is built in the UI; replayed history never fires one);
- per NVR: one binary sensor per input pin and one switch per output pin (exactly those
  GetGPIOInfo reports), one sensor per disk, the buzzer button, the firmware version,
  a connection sensor that stays available while the NVR is down, and a device trigger
  per exception type seen.

Every entity but the connection sensor is available only while both
``{base}/bridge/state`` and the NVR's availability are ``online``. The configs follow the
current Home Assistant schema: no deprecated key (``default_entity_id``, not
``object_id``), an ``origin`` block, unknown keys nowhere.

Removing an NVR from the configuration removes its entities: the bridge keeps, per NVR,
a retained registry of the discovery topics it published and the triggers it learned
(``{base}/bridge/discovery/{nvr}``). At start-up it reads those back, keeps the triggers,
and clears (empty retained payload) every topic that no longer belongs. When Home
Assistant announces itself (``online`` on ``{prefix}/status``), every config is published
again.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bridge import __version__
from bridge.limits import MAX_CHANNELS, is_channel_number
from bridge.normalize import compact_json
from bridge.nvr.pollers import NvrState
from bridge.nvr.readings import preset_options
from bridge.publishing import Publication
from bridge.topics import BridgeTopics, NvrTopics, sanitize_level

MANUFACTURER = "EverFocus"
BUZZER_SECONDS = 5
ORIGIN = {
    "name": "nvr-bridge",
    "sw_version": __version__,
    "support_url": "https://github.com/nvr-bridge/nvr-bridge",
}
# Event types every camera has entities for, whether or not it has shown them yet.
BASELINE_EVENTS = ("Motion", "InputAlarm")
# Bounds on what discovery describes: a hostile NVR cannot make Home Assistant drown.
MAX_CAMERAS = 256
MAX_TRIGGERS = 1024  # device triggers per NVR
MAX_TRIGGER_TYPES = 32  # event types per camera
_SLUG = re.compile(r"[^a-z0-9_]+")


@dataclass(frozen=True, slots=True)
class Camera:
    """A channel as Home Assistant shows it: its number, name and camera details."""

    channel: int
    name: str
    model: str | None = None
    manufacturer: str | None = None
    firmware: str | None = None


def _text(value: Any, limit: int = 100) -> str | None:
    return value.strip()[:limit] if isinstance(value, str) and value.strip() else None


def cameras_from_info(info: dict[str, Any]) -> list[Camera]:
    """The channels to expose: the camera list when served, else the channel counts.

    At most ``MAX_CHANNELS`` (an NVR claiming 2,000,000 channels gets the first 4,096).
    """
    cameras = info.get("cameras")
    found: dict[int, Camera] = {}
    if isinstance(cameras, list):
        for entry in cameras:
            if len(found) >= MAX_CHANNELS:
                break
            if not isinstance(entry, dict):
                continue
            channel = entry.get("ChannelID")
            if is_channel_number(channel):
                found[channel] = Camera(
                    channel,
                    _text(entry.get("DeviceName")) or f"Channel {channel}",
                    _text(entry.get("Model")),
                    _text(entry.get("Manufacturer")),
                    _text(entry.get("FirmwareVersion")),
                )
    if not found:
        system = info.get("system") if isinstance(info.get("system"), dict) else {}
        assert isinstance(system, dict)  # noqa: S101 - narrowed just above
        count = 0
        for key in ("ipcam_channels", "analog_channels"):
            value = system.get(key)
            if type(value) is int and value > 0:
                count += value
        count = min(count, MAX_CHANNELS)
        found = {c: Camera(c, f"Channel {c}") for c in range(1, count + 1)}
    return [found[c] for c in sorted(found)]


def slug(text: str) -> str:
    """A lower-case id part of ``[a-z0-9_]`` (Home Assistant's object ids and node ids)."""
    return _SLUG.sub("_", text.lower()).strip("_") or "x"


def _tagged_slug(text: str) -> str:
    """A slug that stays unique for texts that slug alike ("Motion!" and "Motion?")."""
    digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:6]
    return f"{slug(text)[:40]}_{digest}"


@dataclass(frozen=True, slots=True)
class Trigger:
    """An automation trigger learned from traffic: a camera's event type and state.

    ``channel`` None is the NVR itself (an exception type; ``state`` empty).
    """

    channel: int | None
    kind: str
    state: str

    def as_json(self) -> list[Any]:
        """The registry's form."""
        return [self.channel, self.kind, self.state]

    @classmethod
    def from_json(cls, value: Any) -> Trigger | None:
        """A trigger from the registry, or None when the entry is not one."""
        if not isinstance(value, list) or len(value) != 3:
            return None
        channel, kind, state = value
        if not (channel is None or is_channel_number(channel)):
            return None
        if not isinstance(kind, str) or not kind or len(kind) > 200 or not isinstance(state, str):
            return None
        if state not in ("", "active", "inactive", "once"):
            return None
        return cls(channel, kind, state)


class _Builder:
    """Builds the discovery configs of one NVR (pure; see ``discovery_configs``)."""

    def __init__(
        self,
        topics: NvrTopics,
        bridge: BridgeTopics,
        info: dict[str, Any],
        *,
        url: str | None,
    ) -> None:
        self.t = topics
        self.bridge = bridge
        nvr = topics.nvr
        self.node = slug(f"nvr_bridge_{topics.base}_{nvr}")
        self.entity_prefix = slug(nvr)
        system = info.get("system") if isinstance(info.get("system"), dict) else {}
        assert isinstance(system, dict)  # noqa: S101 - narrowed just above
        self.nvr_id = f"nvr_bridge_{nvr}"
        self.nvr_device: dict[str, Any] = {
            "identifiers": [self.nvr_id],
            "manufacturer": MANUFACTURER,
            "name": _text(system.get("device_name")) or f"NVR {nvr}",
        }
        for key, source in (
            ("model", "model"),
            ("sw_version", "software_version"),
            ("serial_number", "serial"),
        ):
            value = _text(system.get(source))
            if value:
                self.nvr_device[key] = value
        if url:
            self.nvr_device["configuration_url"] = url
        self.software = _text(system.get("software_version"))
        self.available = {
            "availability": [{"topic": bridge.state}, {"topic": topics.availability}],
            "availability_mode": "all",
        }
        self.configs: dict[str, dict[str, Any]] = {}

    def camera_device(self, camera: Camera) -> dict[str, Any]:
        device: dict[str, Any] = {
            "identifiers": [f"{self.nvr_id}_ch{camera.channel}"],
            "name": camera.name,
            "manufacturer": camera.manufacturer or MANUFACTURER,
            "via_device": self.nvr_id,
        }
        if camera.model:
            device["model"] = camera.model
        if camera.firmware:
            device["sw_version"] = camera.firmware
        return device

    def add(
        self,
        component: str,
        object_id: str,
        device: dict[str, Any],
        name: str | None,
        **fields: Any,
    ) -> None:
        """One entity config (every key one Home Assistant knows)."""
        config: dict[str, Any] = {
            "name": name,
            "unique_id": f"{self.node}_{object_id}",
            "default_entity_id": f"{component}.{self.entity_prefix}_{object_id}",
            "device": device,
            "origin": ORIGIN,
            **self.available,
            **fields,
        }
        topic = self.bridge.discovery_config(component, self.node, object_id)
        self.configs[topic] = config

    def add_trigger(self, trigger: Trigger, device: dict[str, Any]) -> None:
        """A device trigger on the event (or exception) topic; replayed items never match."""
        if trigger.channel is None:
            object_id = f"exception_{_tagged_slug(trigger.kind)}"
            topic = self.t.exception(trigger.kind)
            config: dict[str, Any] = {
                "automation_type": "trigger",
                "type": "exception",
                "subtype": trigger.kind,
                "topic": topic,
                "device": device,
            }
        else:
            object_id = f"ch{trigger.channel}_{_tagged_slug(trigger.kind)}_{trigger.state}"
            config = {
                "automation_type": "trigger",
                "type": trigger.kind,
                "subtype": trigger.state,
                "topic": self.t.event(trigger.channel, sanitize_level(trigger.kind)),
                # An event replayed from the NVR's history is not news: it fires nothing.
                "value_template": "{{ '' if value_json.get('replayed') else value_json.state }}",
                "payload": trigger.state,
                "device": device,
            }
        topic = self.bridge.discovery_config("device_automation", self.node, object_id)
        self.configs[topic] = config


def discovery_configs(
    topics: NvrTopics,
    info: dict[str, Any],
    *,
    prefix: str,
    state: NvrState | None = None,
    triggers: frozenset[Trigger] = frozenset(),
    snapshots: bool = False,
    commands: frozenset[str] | None = None,
    url: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Every discovery topic of one NVR and its config payload (pure).

    ``state`` is what the readers learned (pins, presets, disks), ``triggers`` the event
    types seen, ``snapshots`` whether events take snapshots, ``commands`` the commands
    the NVR obeys (an entity for a command it does not obey is left out).
    """
    state = state or NvrState()
    allowed = commands if commands is not None else frozenset({"snapshot", "buzzer"})
    build = _Builder(topics, BridgeTopics(topics.base, prefix), info, url=url)
    cameras = cameras_from_info(info)[:MAX_CAMERAS]
    devices = {camera.channel: build.camera_device(camera) for camera in cameras}
    for camera in cameras:
        _camera_entities(
            build, camera, devices[camera.channel], state, snapshots=snapshots, allowed=allowed
        )
    _nvr_entities(build, state, allowed)
    for trigger in sorted(triggers, key=lambda t: (t.channel or 0, t.kind, t.state)):
        if trigger.channel is None:
            build.add_trigger(trigger, build.nvr_device)
        elif trigger.channel in devices:
            build.add_trigger(trigger, devices[trigger.channel])
    return build.configs


def _camera_entities(
    build: _Builder,
    camera: Camera,
    device: dict[str, Any],
    state: NvrState,
    *,
    snapshots: bool,
    allowed: frozenset[str],
) -> None:
    t = build.t
    ch = camera.channel
    on_off = {"payload_on": "active", "payload_off": "inactive"}
    build.add(
        "binary_sensor",
        f"ch{ch}_motion",
        device,
        "Motion",
        state_topic=t.event_state(ch, "Motion"),
        device_class="motion",
        **on_off,
    )
    build.add(
        "binary_sensor",
        f"ch{ch}_input_alarm",
        device,
        "Input alarm",
        state_topic=t.event_state(ch, "InputAlarm"),
        icon="mdi:alarm-light",
        **on_off,
    )
    build.add(
        "binary_sensor",
        f"ch{ch}_online",
        device,
        "Connected",
        state_topic=t.status(ch),
        value_template="{{ 'ON' if value_json.online else 'OFF' }}",
        device_class="connectivity",
        entity_category="diagnostic",
    )
    build.add(
        "binary_sensor",
        f"ch{ch}_recording",
        device,
        "Recording",
        state_topic=t.status(ch),
        value_template="{{ 'ON' if value_json.recording else 'OFF' }}",
        icon="mdi:record-rec",
        entity_category="diagnostic",
    )
    states = {
        "payload_on": "ON",
        "payload_off": "OFF",
        "state_on": "active",
        "state_off": "inactive",
    }
    if "manual_alarm" in allowed:
        build.add(
            "switch",
            f"ch{ch}_manual_alarm",
            device,
            "Manual alarm",
            command_topic=t.alarm_set(ch),
            state_topic=t.alarm_state(ch),
            icon="mdi:alarm-light-outline",
            **states,
        )
    if "manual_record" in allowed:
        build.add(
            "switch",
            f"ch{ch}_manual_record",
            device,
            "Manual recording",
            command_topic=t.record_set(ch),
            state_topic=t.record_state(ch),
            icon="mdi:record-circle-outline",
            **states,
        )
    if snapshots:
        build.add("camera", f"ch{ch}_camera", device, None, topic=t.snapshot(ch))
        if "snapshot" in allowed:
            build.add(
                "button",
                f"ch{ch}_take_snapshot",
                device,
                "Take snapshot",
                command_topic=t.request("snapshot"),
                payload_press=orjson.dumps({"channel": ch}).decode(),
                icon="mdi:camera-iris",
            )
    presets = state.presets.get(ch)
    if presets and "ptz" in allowed:
        build.add(
            "select",
            f"ch{ch}_ptz_preset",
            device,
            "PTZ preset",
            command_topic=t.preset_set(ch),
            options=preset_options(presets),
            icon="mdi:cctv",
        )


def _nvr_entities(build: _Builder, state: NvrState, allowed: frozenset[str]) -> None:
    t = build.t
    device = build.nvr_device
    for pin in state.inputs:
        build.add(
            "binary_sensor",
            f"input_{pin}",
            device,
            f"Input {pin}",
            state_topic=t.pin_state(pin),
            payload_on="1",
            payload_off="0",
            icon="mdi:electric-switch",
        )
    if "set_pin" in allowed:
        for pin in state.outputs:
            build.add(
                "switch",
                f"output_{pin}",
                device,
                f"Output {pin}",
                command_topic=t.pin_set(pin),
                state_topic=t.pin_state(pin),
                payload_on="ON",
                payload_off="OFF",
                state_on="1",
                state_off="0",
                icon="mdi:electric-switch",
            )
    for index, disk in enumerate(state.disks or []):
        _disk_sensor(build, index, disk)
    if "buzzer" in allowed:
        build.add(
            "button",
            "buzzer",
            device,
            "Buzzer",
            command_topic=t.request("buzzer"),
            payload_press=orjson.dumps({"timeout": BUZZER_SECONDS}).decode(),
            icon="mdi:bullhorn",
        )
    build.add(
        "sensor",
        "firmware",
        device,
        "Firmware",
        state_topic=t.info,
        value_template="{{ value_json.system.software_version if value_json.system else '' }}",
        icon="mdi:chip",
        entity_category="diagnostic",
    )
    # Available while the bridge is: it says whether the NVR is reachable.
    build.add(
        "binary_sensor",
        "connection",
        device,
        "Connection",
        state_topic=t.availability,
        payload_on="online",
        payload_off="offline",
        device_class="connectivity",
        entity_category="diagnostic",
        availability=[{"topic": build.bridge.state}],
        availability_mode="all",
    )


def _disk_sensor(build: _Builder, index: int, disk: Any) -> None:
    """A disk's state (active or not) with its details as attributes."""
    if not isinstance(disk, dict):
        return
    key, value = next(
        ((k, disk[k]) for k in ("serial", "device", "slot") if isinstance(disk.get(k), str)),
        (None, None),
    )
    label = _text(disk.get("slot")) or _text(disk.get("device")) or f"{index + 1}"
    if key is None:
        select = f"value_json.disks[{index}]"
        template = f"{{{{ 'active' if {select}.active else 'inactive' }}}}"
        attributes = f"{{{{ {select} | tojson }}}}"
    else:
        # Found by its serial (or device) rather than its place: the list may reorder.
        quoted = orjson.dumps(value).decode().replace("'", "\\'")
        find = f"value_json.disks | selectattr('{key}', 'eq', {quoted}) | list"
        template = (
            f"{{% set d = {find} %}}{{{{ ('active' if d[0].active else 'inactive') "
            "if d else 'missing' }}"
        )
        attributes = f"{{% set d = {find} %}}{{{{ (d[0] if d else {{}}) | tojson }}}}"
    build.add(
        "sensor",
        f"disk_{slug(str(value) if value is not None else str(index))[:40]}",
        build.nvr_device,
        f"Disk {label}",
        state_topic=build.t.storage,
        value_template=template,
        device_class="enum",
        options=["active", "inactive", "missing"],
        json_attributes_topic=build.t.storage,
        json_attributes_template=attributes,
        icon="mdi:harddisk",
        entity_category="diagnostic",
    )


@dataclass
class DiscoveryRegistry:
    """Publishes each NVR's discovery and clears what no longer belongs (module doc)."""

    base: str
    prefix: str
    enabled_nvrs: frozenset[str]
    publish: Callable[[Publication], None]
    _current: dict[str, set[str]] = field(default_factory=dict)
    _previous: dict[str, set[str]] = field(default_factory=dict)
    _configs: dict[str, dict[str, bytes]] = field(default_factory=dict)
    triggers: dict[str, set[Trigger]] = field(default_factory=dict)
    _announced: dict[str, Callable[[], None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._topics = BridgeTopics(self.base, self.prefix)

    @property
    def registry_filter(self) -> str:
        """The subscription that reads back the lists of earlier runs."""
        return self._topics.discovery_registry_filter

    def _clear(self, nvr: str, topics: set[str]) -> None:
        for topic in sorted(topics):
            self.publish(Publication(topic, b"", True, nvr))

    def learn(self, nvr: str, trigger: Trigger) -> bool:
        """Remember a trigger seen in traffic; True when it is new (announce again)."""
        known = self.triggers.setdefault(nvr, set())
        if trigger in known or len(known) >= MAX_TRIGGERS:
            return False
        per_channel = sum(1 for t in known if t.channel == trigger.channel)
        if per_channel >= MAX_TRIGGER_TYPES * 3:
            return False
        known.add(trigger)
        return True

    def announce(self, nvr: str, configs: dict[str, dict[str, Any]]) -> None:
        """Publish one NVR's discovery configs and record them (changed ones only)."""
        encoded = {topic: compact_json(config) for topic, config in configs.items()}
        published = self._configs.get(nvr, {})
        for topic, payload in encoded.items():
            if published.get(topic) != payload:
                self.publish(Publication(topic, payload, True, nvr))
        self._configs[nvr] = encoded
        current = set(encoded)
        self._clear(nvr, self._previous.pop(nvr, set()) - current)
        self._clear(nvr, self._current.get(nvr, set()) - current)
        self._current[nvr] = current
        registry = {
            "topics": sorted(current),
            "triggers": [t.as_json() for t in sorted(self.triggers.get(nvr, set()), key=_order)],
        }
        self.publish(
            Publication(self._topics.discovery_registry(nvr), compact_json(registry), True, nvr)
        )

    def republish(self) -> None:
        """Publish every config again (Home Assistant came online: its birth message)."""
        for nvr, configs in self._configs.items():
            for topic, payload in configs.items():
                self.publish(Publication(topic, payload, True, nvr))

    def recall(self, topic: str, payload: bytes) -> bool:
        """Handle a registry of an earlier run (a retained message).

        True when it taught this run triggers it did not know: the NVR should announce
        again.
        """
        nvr = topic.rsplit("/", 1)[-1]
        if not payload or len(payload) > 16 * 1024 * 1024:
            return False
        try:
            listed = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return False
        topics: Any = listed.get("topics") if isinstance(listed, dict) else listed
        if not isinstance(topics, list):
            return False
        earlier = {t for t in topics if isinstance(t, str) and t.startswith(self.prefix + "/")}
        if nvr not in self.enabled_nvrs:
            self._clear(nvr, earlier)
            self.publish(Publication(self._topics.discovery_registry(nvr), b"", True, nvr))
            return False
        learned = False
        if isinstance(listed, dict) and isinstance(listed.get("triggers"), list):
            for entry in listed["triggers"][:MAX_TRIGGERS]:
                trigger = Trigger.from_json(entry)
                if trigger is not None:
                    learned = self.learn(nvr, trigger) or learned
        current = self._current.get(nvr)
        if current is None or learned:
            # Cleared by the next announce (which also carries what was just learned).
            self._previous[nvr] = earlier | self._previous.get(nvr, set())
        else:
            self._clear(nvr, earlier - current)
        return learned


def _order(trigger: Trigger) -> tuple[int, str, str]:
    return (trigger.channel or 0, trigger.kind, trigger.state)
