"""What the simulated NVR is and what state it is in: identity, cameras, channels, pins.

Pure state with no I/O. The camera status of SDK guide 2.8 is derived from it: a channel
records while manual recording is on or an event is active on it, and shows ``Event``
while any event on it is active. Pins 1 to 4 are the NVR's alarm inputs (read only: the
world sets them; input n is wired to channel n), pins 5 to 8 its outputs (guide 10.19).
"""

from __future__ import annotations

import hashlib
import json
import random
import string
import time
from dataclasses import dataclass, field
from typing import Any, Literal
from xml.sax.saxutils import escape

MODEL = "EPN4208-SIM"
SOFTWARE_VERSION = "1.0.25-sim"
DEFAULT_MAC = "00:04:4b:53:49:01"
PIN_COUNT = 8
ALARM_IN_PINS = (1, 2, 3, 4)
ALARM_OUT_PINS = (5, 6, 7, 8)

ManualKind = Literal["record", "alarm"]
# Meta types the NVR adds for manual record and alarm (guide 9.27 and 9.28).
MANUAL_META_TYPES: dict[tuple[ManualKind, str], str] = {
    ("record", "start"): "manualStart",
    ("record", "stop"): "manualStop",
    ("alarm", "start"): "manualAlarmStart",
    ("alarm", "stop"): "manualAlarmStop",
}


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """The NVR's name, model and numbers, as getSystemInfo and discovery report them."""

    name: str
    channels: int
    mac: str = DEFAULT_MAC
    model: str = MODEL
    software_version: str = SOFTWARE_VERSION

    @property
    def serial(self) -> str:
        """A serial number stable for a given name and MAC address."""
        digest = hashlib.sha256(f"{self.name}|{self.mac}".encode()).hexdigest()
        return "EF" + digest[:10].upper()

    @property
    def device_id(self) -> str:
        """The device id: the MAC address without separators, as the NVR uses it."""
        return self.mac.replace(":", "").upper()

    def system_info(self) -> dict[str, Any]:
        """The ``/system/getSystemInfo`` answer (guide 10.17)."""
        return {
            "analog_channels": 0,
            "ipcam_channels": self.channels,
            "device_name": self.name,
            "device_id": self.device_id,
            "software_version": self.software_version,
            "model": self.model,
            "serial": self.serial,
        }

    def camera(self, channel: int, name: str | None = None) -> dict[str, Any]:
        """One ``/device/cameraList`` entry (guide 2.3): no credentials."""
        return {
            "ChannelID": channel,
            "Enable": True,
            "DeviceName": default_camera_name(channel) if name is None else name,
            "IPAddress": f"192.168.1.{100 + channel}",
            "Port": 80,
            "Manufacturer": "EverFocus",
            "FirmwareVersion": "2.1.0",
            "Model": "EZN1360",
            "MacAddress": f"00:04:4b:10:00:{channel:02x}",
            "protocol": "ONVIF",
            "SubnetMask": "255.255.255.0",
            "ODSPosition": "",
        }

    def camera_detail(self, channel: int, password: str, name: str | None = None) -> dict[str, Any]:
        """A ``cameraDetail`` answer (guide 2.4): the camera's entry plus its credentials."""
        return {
            **self.camera(channel, name),
            "UserName": "admin",
            "Password": password,
            "Schedule": {"mode": "always"},
            "TimeSync": True,
        }

    def device_info_xml(self, http_port: int, address: str) -> str:
        """The UDP discovery answer (guide section 1)."""
        return (
            "<DeviceInfo version='1.0'>\n"
            f"  <HttpPort>{http_port}</HttpPort>\n"
            f"  <DeviceName>{escape(self.name)}</DeviceName>\n"
            f"  <ModelName>{escape(self.model)}</ModelName>\n"
            f"  <FwVer>{escape(self.software_version)}</FwVer>\n"
            "  <Category>NVR</Category>\n"
            "  <Ipv4>\n"
            f"    <Addr>{escape(address)}</Addr>\n"
            "    <Mask>255.255.255.0</Mask>\n"
            "  </Ipv4>\n"
            f"  <MacAddr>{escape(self.mac)}</MacAddr>\n"
            f"  <IPChannels>{self.channels}</IPChannels>\n"
            "  <AnalogChannels>0</AnalogChannels>\n"
            "</DeviceInfo>\n"
        )


def default_camera_name(channel: int) -> str:
    """The name a camera has until it is renamed."""
    return f"Camera {channel}"


def _password(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=12))


@dataclass
class DeviceState:
    """The channels' live state and the alarm pins; changed by commands and traffic."""

    channels: int
    rng: random.Random = field(default_factory=random.Random)
    online: dict[int, bool] = field(init=False)
    manual_record: set[int] = field(default_factory=set)
    manual_alarm: set[int] = field(default_factory=set)
    active_events: set[tuple[int, str]] = field(default_factory=set)
    pins: dict[int, int] = field(init=False)
    camera_passwords: dict[int, str] = field(init=False)
    camera_names: dict[int, str] = field(init=False)
    _manual_ids: dict[tuple[ManualKind, int], int] = field(default_factory=dict)
    _last_manual_id: int = 0

    def __post_init__(self) -> None:
        self.online = dict.fromkeys(range(1, self.channels + 1), True)
        self.pins = dict.fromkeys(range(1, PIN_COUNT + 1), 0)
        self.camera_passwords = {ch: _password(self.rng) for ch in range(1, self.channels + 1)}
        self.camera_names = {ch: default_camera_name(ch) for ch in range(1, self.channels + 1)}

    def has_channel(self, channel: Any) -> bool:
        """Whether ``channel`` is an int naming one of the NVR's channels."""
        return (
            isinstance(channel, int)
            and not isinstance(channel, bool)
            and 1 <= channel <= self.channels
        )

    def channel_status(self, channel: int) -> dict[str, Any]:
        """One channel's entry of the camera status array (guide 2.8)."""
        event = any(ch == channel for ch, _ in self.active_events)
        manual = channel in self.manual_record
        return {
            "ChannelID": channel,
            "Online": self.online[channel],
            "Recording": self.online[channel] and (manual or event),
            "Event": event,
            "Manual": manual,
        }

    def status(self) -> list[dict[str, Any]]:
        """The camera status array: every channel, in order."""
        return [self.channel_status(ch) for ch in range(1, self.channels + 1)]

    def observe_event(self, item: dict[str, Any]) -> None:
        """Track which events are active from an eventHook item."""
        channel, kind, state = item.get("ChannelID"), item.get("Type"), item.get("State")
        if (
            not isinstance(channel, int)
            or not self.has_channel(channel)
            or not isinstance(kind, str)
        ):
            return
        if state == "active":
            self.active_events.add((channel, kind))
        elif state == "inactive":
            self.active_events.discard((channel, kind))

    def manual(self, kind: ManualKind, channel: int, command: str) -> dict[str, Any]:
        """Start or stop manual record/alarm; returns the meta item the NVR adds for it.

        Matching start and stop carry the same id in ``Data`` (guide 9.27, 9.28).
        """
        active = self.manual_record if kind == "record" else self.manual_alarm
        if command == "start":
            active.add(channel)
            manual_id = self._manual_ids[kind, channel] = self._next_manual_id()
        else:
            active.discard(channel)
            # A stop without a start still gets an id, as the NVR logs it anyway.
            manual_id = self._manual_ids.pop((kind, channel), 0) or self._next_manual_id()
        return {
            "ChannelID": channel,
            "Type": MANUAL_META_TYPES[kind, command],
            "Data": json.dumps({"id": manual_id}),
        }

    def _next_manual_id(self) -> int:
        """A fresh id: the epoch second, kept unique when commands come faster."""
        self._last_manual_id = max(int(time.time()), self._last_manual_id + 1)
        return self._last_manual_id

    def set_pin(self, pin: int, value: int) -> bool:
        """Set a pin (input or output) to 0 or 1; whether its value changed."""
        if pin not in self.pins or value not in (0, 1):
            raise ValueError(f"no pin {pin!r}, or {value!r} is not 0 or 1")
        changed = self.pins[pin] != value
        self.pins[pin] = value
        return changed

    def pin_status(self) -> dict[str, Any]:
        """The ``/dio/GetPinStatus`` answer (guide 10.20)."""
        return {"pin_value": [{"pinNum": n, "pinVal": v} for n, v in sorted(self.pins.items())]}

    def gpio_info(self) -> list[dict[str, Any]]:
        """The ``/dio/GetGPIOInfo`` answer (guide 10.19): the NVR's own pins, then each camera's."""
        return [
            {"ch": 0, "alarmIn": list(ALARM_IN_PINS), "alarmOut": list(ALARM_OUT_PINS)},
            *({"ch": ch, "alarmIn": [1], "alarmOut": [1]} for ch in range(1, self.channels + 1)),
        ]
