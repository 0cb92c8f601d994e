"""Realistic NVR traffic: random items in each stream's shape, and a scheduler emitting them.

Item factories are pure given a ``random.Random``. ``TrafficGenerator`` runs Poisson
processes on one timeline (a heap of due actions, so there is one task and no task per
event): motion and input alarms that turn active and inactive a few seconds later, input
alarms' ``diEventStart``/``diEventStop`` metadata, analytics metadata, a rare disk
exception, occasional system messages (among them ``cameraDetail``, which carries a
camera's password, guide 2.4) and cameras going offline for a few seconds.

Around them the NVR does what a real one does, at no extra rate of its own: an input
alarm on channel n (1 to 4) raises alarm input pin n while it lasts; some event starts
take a snapshot of their channel (``SNAPSHOT_SHARE``); pin changes and video loss are
logged (the items it sends are logged where they are sent).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.nvr.models import StreamName
from bridge.sim.device import ALARM_IN_PINS, DeviceIdentity, DeviceState
from bridge.sim.logs import SystemLog
from bridge.sim.snapshots import SnapshotStore

Emit = Callable[[StreamName, dict[str, Any]], Awaitable[None]]
Action = Callable[[], Awaitable[None]]

MOTION = "Motion"
INPUT_ALARM = "InputAlarm"
EVENT_TYPES = (MOTION, INPUT_ALARM)
MESSAGE_KINDS = ("network", "cameraSubnetMask", "cameraDetail", "portList", "sysTimeChanged")
# How long an event stays active, in seconds (a person crossing the view), at low rates.
ACTIVE_SECONDS = (2.0, 6.0)
# Share of traffic_rate (eventHook items per second) given to the rarer kinds.
META_SHARE = 1 / 8
MESSAGE_SHARE = 1 / 40
EXCEPTION_SHARE = 1 / 120
# Camera flaps do not depend on the event rate: one every ~45 s per NVR, 3 to 10 s offline.
FLAP_RATE = 1 / 45
OFFLINE_SECONDS = (3.0, 10.0)
# Share of event starts that take a snapshot of their channel (of the event's type).
SNAPSHOT_SHARE = 1 / 6


def now_ms() -> int:
    """The current time in epoch milliseconds, the NVR's unit for item times."""
    return time.time_ns() // 1_000_000


def random_channel(rng: random.Random, channels: int) -> int:
    """A channel number in 1..channels."""
    return rng.randint(1, channels)


def random_meta(rng: random.Random, channels: int) -> dict[str, Any]:
    """An analytics metadata item (metaHook, guide 4.4): people counted on a channel."""
    count = {"class": "person", "count": rng.randint(0, 12)}
    return {
        "ChannelID": random_channel(rng, channels),
        "Type": "ObjectCount",
        "Data": json.dumps(count),
    }


def random_exception(rng: random.Random) -> dict[str, Any]:
    """A disk exception (exceptionListen, guide 10.13); only DiskError names a target."""
    if rng.random() < 0.5:
        return {"exception": "DiskFull", "time": now_ms()}
    return {"exception": "DiskError", "target": rng.choice(("sda", "sdb")), "time": now_ms()}


def network_content(identity: DeviceIdentity) -> dict[str, Any]:
    """The ``network`` message content: the getNetwork answer (guide 7.1), abridged."""
    return {
        "pppoe": {"active": False, "username": "", "password": "", "interface": "enp2s0"},
        "interfaces": [
            {
                "interface": "enp2s0",
                "type": "ethernet",
                "dhcp": False,
                "address": "192.168.1.10",
                "netmask": "255.255.255.0",
                "gateway": "192.168.1.1",
                "mac": identity.mac,
            }
        ],
        "general": {"dnsserver1": "192.168.1.1", "dnsserver2": "", "default_interface": "enp2s0"},
    }


def message(
    kind: str,
    rng: random.Random,
    identity: DeviceIdentity,
    device: DeviceState,
    channel: int | None = None,
) -> dict[str, Any]:
    """A messageListen item (guide 10.14) of the given kind; ``channel`` for camera ones."""
    item: dict[str, Any] = {"message": kind, "time": now_ms()}
    if kind == "cameraDetail":
        channel = channel or random_channel(rng, device.channels)
        item["target"] = channel
        item["content"] = identity.camera_detail(
            channel, device.camera_passwords[channel], device.camera_names[channel]
        )
    elif kind == "cameraSubnetMask":
        item["target"] = random_channel(rng, device.channels)
        item["content"] = {"subnetMask": "255.255.255.0"}
    elif kind == "network":
        item["content"] = network_content(identity)
    elif kind == "portList":
        item["content"] = {"http_port": 80, "rtsp_port": 554, "https_port": 443}
    else:
        item["content"] = {"sysTimeChanged": True}
    return item


def random_status(rng: random.Random, device: DeviceState) -> dict[str, Any]:
    """One channel's cameraStatus entry (guide 2.8), from the device's real state."""
    return device.channel_status(random_channel(rng, device.channels))


class BurstItems:
    """Valid items in quick succession, for load tests.

    Events alternate active and inactive per channel and type, so each is published as
    an event and a state change; the other streams get items of their own shape.
    """

    def __init__(self, rng: random.Random, identity: DeviceIdentity, device: DeviceState) -> None:
        self._rng, self._identity, self._device = rng, identity, device
        self._active: set[tuple[int, str]] = set()

    def item(self, stream: StreamName) -> dict[str, Any]:
        """One random valid item in ``stream``'s shape."""
        rng, channels = self._rng, self._device.channels
        if stream == "event":
            key = (random_channel(rng, channels), rng.choice(EVENT_TYPES))
            state = "inactive" if key in self._active else "active"
            self._active.symmetric_difference_update({key})
            return {"ChannelID": key[0], "Type": key[1], "State": state}
        if stream == "meta":
            return random_meta(rng, channels)
        if stream == "exception":
            return random_exception(rng)
        if stream == "status":
            return random_status(rng, self._device)
        return message(rng.choice(MESSAGE_KINDS), rng, self._identity, self._device)


class TrafficGenerator:
    """Emits realistic traffic at about ``rate`` eventHook items per second, until cancelled."""

    def __init__(
        self,
        *,
        rng: random.Random,
        identity: DeviceIdentity,
        device: DeviceState,
        emit: Emit,
        rate: float,
        log: SystemLog | None = None,
        snapshots: SnapshotStore | None = None,
    ) -> None:
        self._rng, self._identity, self._device, self._emit = rng, identity, device, emit
        self._rate = rate
        self._log = SystemLog() if log is None else log
        self._snapshots = SnapshotStore() if snapshots is None else snapshots
        # At high rates, events end sooner, so that about half the (channel, type) slots
        # stay free and the rate is met instead of being capped by busy channels.
        slots = device.channels * len(EVENT_TYPES)
        mean_active = sum(ACTIVE_SECONDS) / 2
        self._active_scale = min(1.0, 0.5 * slots / (max(rate, 1e-9) / 2 * mean_active))
        self._due: list[tuple[float, int, Action]] = []
        self._order = itertools.count()
        self._alarm_ids: dict[int, int] = {}

    def _at(self, when: float, action: Action) -> None:
        heapq.heappush(self._due, (when, next(self._order), action))

    def _after(self, delay: float, action: Action) -> None:
        self._at(asyncio.get_running_loop().time() + delay, action)

    def _every(self, rate: float, action: Action) -> None:
        """Run ``action`` as a Poisson process of ``rate`` per second (nothing when 0)."""
        if rate <= 0:
            return

        async def tick() -> None:
            await action()
            self._after(self._rng.expovariate(rate), tick)

        self._after(self._rng.expovariate(rate), tick)

    async def run(self) -> None:
        """Emit traffic forever; cancel the task to stop it."""
        loop = asyncio.get_running_loop()
        # Each activity is two eventHook items (active, then inactive).
        self._every(self._rate / 2, self._start_activity)
        self._every(self._rate * META_SHARE, self._analytics)
        self._every(self._rate * MESSAGE_SHARE, self._system_message)
        self._every(self._rate * EXCEPTION_SHARE, self._disk_exception)
        self._every(FLAP_RATE, self._camera_flap)
        while self._due:
            when = self._due[0][0]
            delay = when - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            _, _, action = heapq.heappop(self._due)
            await action()
        # Nothing scheduled (a rate of 0 and no flaps): idle until cancelled.
        await asyncio.Event().wait()

    async def _start_activity(self) -> None:
        """Motion or an input alarm on a channel where it is not already active."""
        free = [
            (ch, kind)
            for ch in range(1, self._device.channels + 1)
            for kind in EVENT_TYPES
            if (ch, kind) not in self._device.active_events and self._device.online[ch]
        ]
        if not free:
            return
        channel, kind = self._rng.choice(free)
        if kind == INPUT_ALARM:
            self._input_pin(channel, 1)
        await self._emit("event", {"ChannelID": channel, "Type": kind, "State": "active"})
        if kind == INPUT_ALARM:
            self._alarm_ids[channel] = int(time.time())
            await self._input_meta(channel, "diEventStart")
        if self._rng.random() < SNAPSHOT_SHARE:
            self._snapshots.take(channel, kind, now_ms())

        async def end() -> None:
            if kind == INPUT_ALARM:
                self._input_pin(channel, 0)
            await self._emit("event", {"ChannelID": channel, "Type": kind, "State": "inactive"})
            if kind == INPUT_ALARM:
                await self._input_meta(channel, "diEventStop")

        self._after(self._rng.uniform(*ACTIVE_SECONDS) * self._active_scale, end)

    def _input_pin(self, channel: int, value: int) -> None:
        """The alarm input wired to ``channel`` (pins 1 to 4 for channels 1 to 4) changes."""
        if channel in ALARM_IN_PINS and self._device.set_pin(channel, value):
            self._log.pin(channel, value)

    async def _input_meta(self, channel: int, kind: str) -> None:
        data = json.dumps({"id": self._alarm_ids.get(channel, 0)})
        await self._emit("meta", {"ChannelID": channel, "Type": kind, "Data": data})

    async def _analytics(self) -> None:
        await self._emit("meta", random_meta(self._rng, self._device.channels))

    async def _system_message(self) -> None:
        kind = self._rng.choice(MESSAGE_KINDS)
        await self._emit("message", message(kind, self._rng, self._identity, self._device))

    async def _disk_exception(self) -> None:
        await self._emit("exception", random_exception(self._rng))

    async def _camera_flap(self) -> None:
        """A camera drops off the network for a few seconds (seen on cameraStatus)."""
        online = [ch for ch, up in self._device.online.items() if up]
        if not online:
            return
        channel = self._rng.choice(online)
        self._device.online[channel] = False
        self._log.add("Alarm", "Video Loss", channel=channel)

        async def back() -> None:
            self._device.online[channel] = True
            self._log.add("Alarm", "Video Recovered", channel=channel)
            item = message("cameraDetail", self._rng, self._identity, self._device, channel)
            await self._emit("message", item)

        self._after(self._rng.uniform(*OFFLINE_SECONDS), back)
