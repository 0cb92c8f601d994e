"""Home Assistant MQTT discovery (opt-in with ``BRIDGE_HA_DISCOVERY=true``).

Each NVR becomes a device (identity from ``getSystemInfo``) with, per channel (named after
its camera from ``cameraList``), binary sensors for motion and input alarm (the retained
``event/{type}/state`` topics), connectivity and recording (from ``status``), a switch for
the manual alarm; a switch per digital output pin and a buzzer button. Every entity is
available only while both ``{base}/bridge/state`` and the NVR's availability are
``online``.

Removing an NVR from the configuration must remove its entities: the bridge keeps, per
NVR, a retained list of the discovery topics it published (``{base}/bridge/discovery/
{nvr}``). At start-up it reads those lists back and clears (empty retained payload) every
topic that no longer belongs to a configured NVR with discovery on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bridge.limits import MAX_CHANNELS, is_channel_number
from bridge.publishing import Publication
from bridge.topics import NvrTopics, sanitize_level

MANUFACTURER = "EverFocus"
DEFAULT_OUTPUT_PINS = 4
BUZZER_SECONDS = 5


@dataclass(frozen=True, slots=True)
class Camera:
    """A channel as Home Assistant names it."""

    channel: int
    name: str


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
                name = entry.get("DeviceName")
                label = name.strip()[:100] if isinstance(name, str) and name.strip() else ""
                found[channel] = Camera(channel, label or f"Channel {channel}")
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


def _device(nvr: str, info: dict[str, Any]) -> dict[str, Any]:
    system = info.get("system") if isinstance(info.get("system"), dict) else {}
    assert isinstance(system, dict)  # noqa: S101 - narrowed just above
    device: dict[str, Any] = {
        "identifiers": [f"nvr_bridge_{nvr}"],
        "manufacturer": MANUFACTURER,
        "name": str(system.get("device_name") or f"NVR {nvr}"),
    }
    for key, source in (
        ("model", "model"),
        ("sw_version", "software_version"),
        ("serial_number", "serial"),
    ):
        if system.get(source):
            device[key] = str(system[source])
    return device


def discovery_configs(
    topics: NvrTopics, info: dict[str, Any], *, prefix: str, output_pins: int = DEFAULT_OUTPUT_PINS
) -> dict[str, dict[str, Any]]:
    """Every discovery topic of one NVR and its config payload (pure)."""
    nvr = topics.nvr
    node = sanitize_level(f"nvr_bridge_{topics.base}_{nvr}")
    device = _device(nvr, info)
    availability = {
        "availability": [
            {"topic": topics.bridge_state},
            {"topic": topics.availability},
        ],
        "availability_mode": "all",
    }
    base = f"{topics.base}/{nvr}"

    def entity(
        component: str, object_id: str, name: str, **fields: Any
    ) -> tuple[str, dict[str, Any]]:
        topic = f"{prefix}/{component}/{node}/{object_id}/config"
        config = {
            "name": name,
            "unique_id": f"{node}_{object_id}",
            "object_id": f"{nvr}_{object_id}",
            "device": device,
            **availability,
            **fields,
        }
        return topic, config

    entries: list[tuple[str, dict[str, Any]]] = []
    for camera in cameras_from_info(info):
        ch = camera.channel
        channel_topic = topics.channel(ch)
        entries += [
            entity(
                "binary_sensor",
                f"ch{ch}_motion",
                f"{camera.name} motion",
                state_topic=f"{channel_topic}/event/Motion/state",
                payload_on="active",
                payload_off="inactive",
                device_class="motion",
            ),
            entity(
                "binary_sensor",
                f"ch{ch}_input_alarm",
                f"{camera.name} input alarm",
                state_topic=f"{channel_topic}/event/InputAlarm/state",
                payload_on="active",
                payload_off="inactive",
                device_class="safety",
            ),
            entity(
                "binary_sensor",
                f"ch{ch}_online",
                f"{camera.name} connected",
                state_topic=f"{channel_topic}/status",
                value_template="{{ 'ON' if value_json.online else 'OFF' }}",
                device_class="connectivity",
                entity_category="diagnostic",
            ),
            entity(
                "binary_sensor",
                f"ch{ch}_recording",
                f"{camera.name} recording",
                state_topic=f"{channel_topic}/status",
                value_template="{{ 'ON' if value_json.recording else 'OFF' }}",
                device_class="running",
                icon="mdi:record-rec",
            ),
            entity(
                "switch",
                f"ch{ch}_manual_alarm",
                f"{camera.name} manual alarm",
                command_topic=f"{channel_topic}/alarm/set",
                payload_on="ON",
                payload_off="OFF",
                optimistic=True,
                icon="mdi:alarm-light",
            ),
        ]
    for pin in range(1, output_pins + 1):
        entries.append(
            entity(
                "switch",
                f"output_pin_{pin}",
                f"Output {pin}",
                command_topic=f"{base}/pin/{pin}/set",
                payload_on="ON",
                payload_off="OFF",
                optimistic=True,
                icon="mdi:electric-switch",
            )
        )
    entries.append(
        entity(
            "button",
            "buzzer",
            "Buzzer",
            command_topic=topics.request("buzzer"),
            payload_press=orjson.dumps({"timeout": BUZZER_SECONDS}).decode(),
            icon="mdi:bullhorn",
        )
    )
    return dict(entries)


@dataclass
class DiscoveryRegistry:
    """Publishes each NVR's discovery and clears what no longer belongs (module doc)."""

    base: str
    prefix: str
    enabled_nvrs: frozenset[str]
    publish: Callable[[Publication], None]
    _current: dict[str, set[str]] = field(default_factory=dict)
    _previous: dict[str, set[str]] = field(default_factory=dict)

    @property
    def registry_filter(self) -> str:
        """The subscription that reads back the lists of earlier runs."""
        return f"{self.base}/bridge/discovery/+"

    def _registry_topic(self, nvr: str) -> str:
        return f"{self.base}/bridge/discovery/{nvr}"

    def _clear(self, nvr: str, topics: set[str]) -> None:
        for topic in sorted(topics):
            self.publish(Publication(topic, b"", True, nvr))

    def announce(self, topics: NvrTopics, info: dict[str, Any]) -> None:
        """Publish one NVR's discovery configs (after each login) and record them."""
        nvr = topics.nvr
        configs = discovery_configs(topics, info, prefix=self.prefix)
        for topic, config in configs.items():
            self.publish(Publication(topic, orjson.dumps(config), True, nvr))
        current = set(configs)
        self._clear(nvr, self._previous.pop(nvr, set()) - current)
        self._current[nvr] = current
        self.publish(
            Publication(self._registry_topic(nvr), orjson.dumps(sorted(current)), True, nvr)
        )

    def recall(self, topic: str, payload: bytes) -> None:
        """Handle a registry list of an earlier run (a retained message)."""
        nvr = topic.rsplit("/", 1)[-1]
        if not payload:
            return
        try:
            listed = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(listed, list):
            return
        earlier = {t for t in listed if isinstance(t, str) and t.startswith(self.prefix + "/")}
        if nvr not in self.enabled_nvrs:
            self._clear(nvr, earlier)
            self.publish(Publication(self._registry_topic(nvr), b"", True, nvr))
            return
        current = self._current.get(nvr)
        if current is None:
            self._previous[nvr] = earlier
        else:
            self._clear(nvr, earlier - current)
