"""What the bridge reads of an NVR besides its streams: pins, storage, PTZ presets.

Each reader runs per NVR under its supervisor (CONTRACT section 7): it waits until the
NVR is online, does its after-login work (GetGPIOInfo, the first storage read, every
channel's presets), then polls at its interval, from a random phase so that a fleet's
polls spread over the interval instead of arriving in lockstep, until the NVR goes
offline; then it waits for the next login. A reader never delays the streams: each is
its own task, and each REST call is bounded like any other (size, depth, time).

An endpoint the NVR answers with 404 is logged once and not asked again until the next
login; any other failure is logged once (again only when the reason changes), counted
in ``nvr_bridge_nvr_polls_total{outcome="error"}`` and retried at the interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from bridge.normalize import compact_json, format_timestamp
from bridge.nvr import readings
from bridge.nvr.client import NvrClient, NvrError, NvrHttpError, NvrTimeout, NvrUnavailable
from bridge.observability import Metrics
from bridge.publishing import Publication, Publisher
from bridge.redaction import Redactor
from bridge.topics import NvrTopics

log = structlog.get_logger("bridge.nvr")

POLL_TIMEOUT = 10.0


@dataclass(slots=True)
class Availability:
    """The NVR's online/offline state and its logins, as events the readers wait on."""

    online: asyncio.Event = field(default_factory=asyncio.Event)
    offline: asyncio.Event = field(default_factory=asyncio.Event)
    logged_in: asyncio.Event = field(default_factory=asyncio.Event)
    logins: int = 0

    def __post_init__(self) -> None:
        self.offline.set()

    def set(self, *, online: bool) -> None:
        """Record a change of availability."""
        (self.online if online else self.offline).set()
        (self.offline if online else self.online).clear()

    def login(self) -> None:
        """A new login (also one while the streams stayed up): readers start afresh."""
        self.logins += 1
        self.logged_in.set()


@dataclass(slots=True)
class NvrState:
    """What the readers learned of the NVR (Home Assistant discovery builds on it)."""

    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    pins_known: bool = False
    presets: dict[int, list[dict[str, str]]] = field(default_factory=dict)
    disks: list[Any] | None = None


class EndpointReader:
    """Reads one endpoint for a poller: 404 means "not served" until the next login."""

    def __init__(self, client: NvrClient, path: str, *, name: str, metrics: Metrics) -> None:
        self._client = client
        self.path = path
        self.name = name
        self._metrics = metrics
        self.unsupported = False
        self._failure: str | None = None

    def login(self) -> None:
        """A new login: ask a 404 endpoint again."""
        self.unsupported = False

    def _count(self, outcome: str) -> None:
        self._metrics.child(self._metrics.polls, self._client.nvr, self.name, outcome).inc()

    async def read(
        self, shape: Callable[[Any], Any], method: str = "GET", body: Any = None
    ) -> Any | None:
        """The answer read through ``shape`` (None when it is not of the expected shape).

        None too when the call failed or the endpoint is unsupported; only an answer of
        the right shape counts as a success.
        """
        answered, answer = await self._call(method, body)
        if not answered:
            return None
        value = shape(answer)
        if value is None:
            self._failed(f"unexpected answer: {type(answer).__name__}")
            return None
        self._count("ok")
        if self._failure is not None:
            log.info("nvr poll works again", nvr=self._client.nvr, endpoint=self.path)
            self._failure = None
        return value

    async def _call(self, method: str, body: Any) -> tuple[bool, Any]:
        if self.unsupported:
            return False, None
        try:
            answer = await self._client.call(method, self.path, body=body, timeout=POLL_TIMEOUT)
        except NvrHttpError as exc:
            if exc.status == 404:
                self.unsupported = True
                self._count("unsupported")
                log.info(
                    "nvr does not serve",
                    nvr=self._client.nvr,
                    endpoint=self.path,
                    status=404,
                    hint="not asked again until the next login",
                )
                return False, None
            self._failed(exc.reason)
            return False, None
        except NvrError as exc:
            self._failed(exc.reason)
            return False, None
        return True, answer.body

    def _failed(self, reason: str) -> None:
        self._count("error")
        if reason != self._failure:
            log.warning("nvr poll failed", nvr=self._client.nvr, endpoint=self.path, error=reason)
        self._failure = reason


class _Reader:
    """The life of one reader: wait for online, after-login work, poll until offline."""

    def __init__(
        self,
        *,
        client: NvrClient,
        topics: NvrTopics,
        publisher: Publisher,
        metrics: Metrics,
        redactor: Redactor,
        availability: Availability,
        state: NvrState,
        interval: float,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = client
        self._topics = topics
        self._publisher = publisher
        self._metrics = metrics
        self._redactor = redactor
        self._availability = availability
        self.state = state
        self._interval = interval
        self._on_change = on_change
        self._poll_now = asyncio.Event()
        self._rng = random.Random()

    def poll_now(self) -> None:
        """Poll at once (a command just changed what this reader reports)."""
        self._poll_now.set()

    def _publish(self, topic: str, payload: bytes, *, retain: bool = True) -> None:
        self._publisher.publish(Publication(topic, payload, retain, self._topics.nvr))

    async def run(self) -> None:
        """Until cancelled: after each login its first read, then polls while online."""
        availability = self._availability
        while True:
            await availability.online.wait()
            login = availability.logins
            await self.after_login()
            delay = self._rng.uniform(0, self._interval)  # spread a fleet's polls
            while availability.online.is_set() and availability.logins == login:
                if await self._sleep(delay if self._interval > 0 else None):
                    break
                if availability.logins == login:
                    await self.poll()
                delay = self._interval

    async def _sleep(self, delay: float | None) -> bool:
        """Sleep ``delay`` (None: until something happens) or until a poll is asked for.

        True when the NVR went offline or logged in again (the reader starts afresh).
        """
        availability = self._availability
        self._poll_now.clear()
        availability.logged_in.clear()
        waits = {
            asyncio.ensure_future(availability.offline.wait()),
            asyncio.ensure_future(availability.logged_in.wait()),
        }
        if delay is not None:
            waits.add(asyncio.ensure_future(self._poll_now.wait()))
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        return not availability.online.is_set() or availability.logged_in.is_set()

    async def after_login(self) -> None:
        """The first read after a login (the default: one poll)."""
        await self.poll()

    async def poll(self) -> None:
        """One periodic read."""


class PinPoller(_Reader):
    """GetGPIOInfo after each login, then GetPinStatus at its interval (CONTRACT 7.2)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._gpio = EndpointReader(
            self._client, "/dio/GetGPIOInfo", name="gpio", metrics=self._metrics
        )
        self._status = EndpointReader(
            self._client, "/dio/GetPinStatus", name="pins", metrics=self._metrics
        )
        self._values: dict[int, int] = {}

    async def after_login(self) -> None:
        """Publish the NVR's pins, then every pin's state afresh."""
        self._gpio.login()
        self._status.login()
        self._values.clear()
        gpio = await self._gpio.read(_gpio_answer)
        if gpio is not None:
            (inputs, outputs), answer = gpio
            self.state.inputs, self.state.outputs = inputs, outputs
            self.state.pins_known = True
            payload = {
                "nvr": self._topics.nvr,
                "inputs": inputs,
                "outputs": outputs,
                "gpio": self._redactor.value(answer),
                "timestamp": format_timestamp(time.time()),
            }
            self._publish(self._topics.pins, compact_json(payload))
            self._on_change()
        await self.poll()

    async def poll(self) -> None:
        """Publish each pin's state on first sight and on change."""
        values = await self._status.read(readings.pin_values)
        if values is None:
            return
        for pin, value in values.items():
            if self._values.get(pin) != value:
                self._values[pin] = value
                self._publish(self._topics.pin_state(pin), b"1" if value else b"0")


class StoragePoller(_Reader):
    """getStorages after each login and at its interval; published on change (7.3)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._storage = EndpointReader(
            self._client, "/storage/getStorages", name="storage", metrics=self._metrics
        )
        self._last: bytes | None = None

    async def after_login(self) -> None:
        """Read the disks and publish them (even when unchanged: a new login)."""
        self._storage.login()
        self._last = None
        await self.poll()

    async def poll(self) -> None:
        """Publish the disk list when it differs from the last one published."""
        disks = await self._storage.read(readings.disks)
        if disks is None:
            return
        disks = self._redactor.value(disks)
        fingerprint = compact_json(disks, option=orjson.OPT_SORT_KEYS)
        if fingerprint == self._last:
            return
        self._last = fingerprint
        known = self.state.disks
        self.state.disks = disks
        payload = {"nvr": self._topics.nvr, "disks": disks, "timestamp": _now()}
        self._publish(self._topics.storage, compact_json(payload))
        if known is None or len(known) != len(disks):
            self._on_change()


class PresetReader(_Reader):
    """Every channel's PTZ presets after each login, one channel's on demand (7.5).

    The supervisor asks for the sweep once the login's camera list is known.
    """

    def __init__(self, *, channels: Callable[[], list[int]], **kwargs: Any) -> None:
        super().__init__(interval=0, **kwargs)
        self._channels = channels
        self._ptz = EndpointReader(
            self._client, "/device/ptzControl", name="presets", metrics=self._metrics
        )
        self._refresh: asyncio.Queue[int | None] = asyncio.Queue(maxsize=256)
        self._sweep_queued = False

    def refresh(self, channel: int | None = None) -> None:
        """Read one channel's presets again (None: every channel, after a login)."""
        if channel is None and self._sweep_queued:
            return
        with contextlib.suppress(asyncio.QueueFull):
            self._refresh.put_nowait(channel)
            self._sweep_queued = self._sweep_queued or channel is None

    def token(self, channel: int, wanted: str) -> str | None:
        """The token of a channel's preset by its name or token."""
        return readings.preset_token(self.state.presets.get(channel, []), wanted)

    async def run(self) -> None:
        """Read what is asked for: every channel after a login, one after a change."""
        while True:
            channel = await self._refresh.get()
            if channel is None:
                self._sweep_queued = False
            if not self._availability.online.is_set():
                continue
            if channel is not None:
                await self._read(channel, quiet=False)
            else:
                self._ptz.login()
                for each in self._channels():
                    if self._ptz.unsupported or not self._availability.online.is_set():
                        break
                    if not await self._read(each, quiet=True):
                        break  # the NVR does not answer: ask again after the next login
            self._on_change()

    async def _read(self, channel: int, *, quiet: bool) -> bool:
        """Read and publish one channel's presets; False when the NVR did not answer."""
        # The NVR's per-channel call: a channel without PTZ answers an error, which is its
        # way of saying "no presets here" rather than a failure worth a log line.
        client = self._client
        try:
            answer = await client.call(
                "POST",
                "/device/ptzControl",
                params={"ChannelID": str(channel)},
                body={"command": "get_presets"},
                timeout=POLL_TIMEOUT,
            )
        except NvrHttpError as exc:
            if exc.status == 404:
                self._ptz.unsupported = True
                log.info("nvr does not serve", nvr=client.nvr, endpoint="/device/ptzControl")
            self._no_presets(channel)
            return True
        except (NvrTimeout, NvrUnavailable) as exc:
            log.warning("ptz presets not read", nvr=client.nvr, channel=channel, error=exc.reason)
            return False
        except NvrError as exc:
            if not quiet:
                log.info("ptz presets not read", nvr=client.nvr, channel=channel, error=exc.reason)
            self._no_presets(channel)
            return True
        found = readings.presets(self._redactor.value(answer.body))
        if found is None:
            self._no_presets(channel)
            return True
        self.state.presets[channel] = found
        payload = {
            "nvr": self._topics.nvr,
            "channel": channel,
            "presets": found,
            "timestamp": _now(),
        }
        self._publish(self._topics.presets(channel), compact_json(payload))
        return True

    def _no_presets(self, channel: int) -> None:
        """A channel without PTZ: nothing published (and an earlier list is cleared)."""
        if self.state.presets.pop(channel, None) is not None:
            self._publish(self._topics.presets(channel), b"")


def _gpio_answer(answer: Any) -> tuple[tuple[list[int], list[int]], Any] | None:
    """GetGPIOInfo's pins with the answer itself (published whole), or None."""
    pins = readings.gpio_pins(answer)
    return None if pins is None else (pins, answer)


def _now() -> str:
    return format_timestamp(time.time())
