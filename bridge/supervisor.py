"""Everything the bridge runs for one NVR, under one task group.

An ``NvrSupervisor`` owns the NVR's client (one HTTP session and login), its five stream
listeners, its command runner, its readers of pins, storage and presets, its snapshotter,
and the task that publishes ``{base}/{nvr}/info`` after each login (and again when a
messageListen ``cameraDetail`` says the cameras changed). It derives the NVR's
availability from its streams: ``online`` while all five are connected (which implies a
valid login), else ``offline``; the readers run only while it is online.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from bridge.backoff import Backoff
from bridge.command_runner import CommandRunner
from bridge.commands import ParsedRequest
from bridge.config import BridgeConfig, NvrConfig
from bridge.homeassistant import BASELINE_EVENTS, cameras_from_info
from bridge.limits import MAX_CHANNELS, InputLimits
from bridge.normalize import Normalizer, compact_json, format_timestamp
from bridge.nvr import readings
from bridge.nvr.client import NvrAnswer, NvrClient, NvrError, NvrHttpError
from bridge.nvr.models import (
    STREAM_NAMES,
    EventHookMessage,
    ExceptionMessage,
    NvrMessage,
    StreamName,
    SystemMessage,
)
from bridge.nvr.pollers import Availability, NvrState, PinPoller, PresetReader, StoragePoller
from bridge.nvr.snapshots import Snapshotter
from bridge.nvr.streams import StreamListener
from bridge.observability import Metrics
from bridge.publishing import Publication, Publisher
from bridge.redaction import NO_SECRETS, Redactor
from bridge.topics import NvrTopics

log = structlog.get_logger("bridge.nvr")

INFO_ENDPOINTS = {"system": "/system/getSystemInfo", "cameras": "/device/cameraList"}
# cameraDetail messages that come in a burst refresh the info once per this many seconds.
INFO_REFRESH_SECONDS = 2.0
# The JSON shape each info part must have (an object, a list); anything else is null.
INFO_SHAPES: dict[str, type] = {"system": dict, "cameras": list}


class NvrSupervisor:
    """Runs one NVR's streams, commands and info publishing (see module doc)."""

    def __init__(
        self,
        config: BridgeConfig,
        nvr: NvrConfig,
        *,
        link: Publisher,
        metrics: Metrics,
        login_gate: asyncio.Semaphore,
        on_info: Callable[[], None] | None = None,
        on_seen: Callable[[int | None, str, str], None] | None = None,
        redactor: Redactor = NO_SECRETS,
        limits: InputLimits | None = None,
    ) -> None:
        limits = limits or InputLimits()
        self.config = nvr
        self._redactor = redactor
        self._on_info = on_info
        self._on_seen = on_seen
        self.id = nvr.id
        self.topics = NvrTopics(config.base_topic, nvr.id)
        self._link = link
        self._metrics = metrics
        self._login_seen = asyncio.Event()
        self._stream_up = asyncio.Event()
        self._refresh_info = asyncio.Event()
        self.availability = Availability()
        self.state = NvrState()
        self.client = NvrClient(
            nvr,
            metrics=metrics,
            login_gate=login_gate,
            backoff=Backoff(config.backoff_initial, config.backoff_max),
            ping_interval=config.ws_ping_interval,
            ping_timeout=config.ws_ping_timeout,
            on_login=self._logged_in,
            limits=limits,
        )
        self.normalizer = Normalizer(
            self.topics,
            redactor=redactor,
            max_depth=limits.json_max_depth,
            baseline_events=BASELINE_EVENTS if config.ha_discovery else (),
        )
        self.listeners = [
            StreamListener(
                stream,
                client=self.client,
                normalizer=self.normalizer,
                link=link,
                metrics=metrics,
                backoff=Backoff(config.backoff_initial, config.backoff_max),
                on_state=self._stream_state,
                channels=self.known_channels,
                on_messages=self._observe,
                stale_after=config.status_stale_after,
                topics=self.topics,
            )
            for stream in STREAM_NAMES
        ]
        readers: dict[str, Any] = {
            "client": self.client,
            "topics": self.topics,
            "publisher": link,
            "metrics": metrics,
            "redactor": redactor,
            "availability": self.availability,
            "state": self.state,
            "on_change": self._state_changed,
        }
        self.pins = (
            PinPoller(interval=config.pin_poll_interval, **readers)
            if config.pin_poll_interval > 0
            else None
        )
        self.storage = (
            StoragePoller(interval=config.storage_poll_interval, **readers)
            if config.storage_poll_interval > 0
            else None
        )
        self.presets = (
            PresetReader(channels=self.known_channels, **readers) if config.ptz_presets else None
        )
        self.snapshots = Snapshotter(
            client=self.client,
            topics=self.topics,
            publisher=link,
            metrics=metrics,
            redactor=redactor,
            events=config.snapshot_events,
            min_interval=config.snapshot_min_interval,
            max_bytes=config.snapshot_max_bytes,
        )
        self.commands = CommandRunner(
            topics=self.topics,
            client=self.client,
            link=link,
            metrics=metrics,
            allowed=config.commands_for(nvr),
            max_age=config.command_max_age,
            max_inflight=nvr.max_inflight_commands,
            timeout=config.command_timeout,
            redactor=redactor,
            limits=limits,
            reserved_prefixes=(f"{config.ha_prefix}/",),
            response_topic_prefix=config.response_topic_prefix,
            allowed_by="BRIDGE_COMMANDS"
            if nvr.commands is None
            else f"the 'commands' list of NVR {nvr.id!r} in the configuration file",
            after=self._after_command,
        )
        if self.presets is not None:
            self.commands.preset_token = self.presets.token
        self._up: set[StreamName] = set()
        self._online: bool | None = None
        self._missing_info: set[str] = set()
        self._info: dict[str, Any] = {}

    @property
    def online(self) -> bool:
        """Whether all five streams are connected."""
        return bool(self._online)

    def known_channels(self) -> list[int]:
        """The NVR's channels: its camera list (else its channel counts) and its status.

        At most ``MAX_CHANNELS``.
        """
        channels = {camera.channel for camera in cameras_from_info(self._info)}
        return sorted(channels | self.normalizer.channels_seen)[:MAX_CHANNELS]

    @property
    def info(self) -> dict[str, Any]:
        """The last info published (identity and cameras)."""
        return self._info

    def streams_down(self) -> list[str]:
        """The streams not connected right now."""
        return [s for s in STREAM_NAMES if s not in self._up]

    async def run(self) -> None:
        """Run until cancelled; on the way out publish ``offline`` and close the session."""
        self._set_online(online=False)
        try:
            async with asyncio.TaskGroup() as group:
                for listener in self.listeners:
                    group.create_task(listener.run(), name=listener.task_name)
                group.create_task(self.commands.run(), name=f"commands[{self.id}]")
                group.create_task(self._publish_info(), name=f"info[{self.id}]")
                group.create_task(self.snapshots.run(), name=f"snapshots[{self.id}]")
                for name, reader in (
                    ("pins", self.pins),
                    ("storage", self.storage),
                    ("presets", self.presets),
                ):
                    if reader is not None:
                        group.create_task(reader.run(), name=f"{name}[{self.id}]")
        finally:
            self._up.clear()
            self._stream_up.clear()
            self._set_online(online=False)
            await self.client.close()

    def _logged_in(self) -> None:
        """A login succeeded: the info task and the readers start afresh."""
        self._login_seen.set()
        self.availability.login()

    def not_ready(self) -> str | None:
        """Why this NVR is not online (None when it is), naming a refused login."""
        if self.online:
            return None
        down = ", ".join(self.streams_down())
        problem = self.client.login_problem
        if problem:
            return f"nvr {self.id} offline: {problem} (streams down: {down})"
        return f"nvr {self.id} offline (streams down: {down})"

    def _stream_state(self, stream: StreamName, connected: bool) -> None:
        if connected:
            self._up.add(stream)
            self._stream_up.set()
        else:
            self._up.discard(stream)
            if not self._up:
                self._stream_up.clear()
        self._set_online(online=len(self._up) == len(STREAM_NAMES))

    def _set_online(self, *, online: bool) -> None:
        if online == self._online:
            return
        self._online = online
        self.availability.set(online=online)
        self._metrics.nvr_online.labels(self.id).set(1 if online else 0)
        state = b"online" if online else b"offline"
        self._link.publish(Publication(self.topics.availability, state, True, self.id))
        log.info("nvr availability", nvr=self.id, availability=state.decode())

    async def _publish_info(self) -> None:
        """After each login (and when the cameras change), publish identity and cameras."""
        while True:
            login = asyncio.ensure_future(self._login_seen.wait())
            refresh = asyncio.ensure_future(self._refresh_info.wait())
            try:
                await asyncio.wait({login, refresh}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                login.cancel()
                refresh.cancel()
            self._login_seen.clear()
            self._refresh_info.clear()
            # Without credentials "logged in" is a formality: wait until the NVR answers.
            await self._stream_up.wait()
            info: dict[str, Any] = {"nvr": self.id}
            for key, path in INFO_ENDPOINTS.items():
                info[key] = await self._fetch_info(key, path)
            info["timestamp"] = format_timestamp(time.time())
            self._info = info
            payload = compact_json(info)
            self._link.publish(Publication(self.topics.info, payload, True, self.id))
            if self.presets is not None:
                self.presets.refresh()
            self._announce()
            await asyncio.sleep(INFO_REFRESH_SECONDS)

    def _announce(self) -> None:
        """Tell Home Assistant discovery what the NVR is now (info and readers' state)."""
        if self._on_info is not None and self._info:
            self._on_info()

    def _state_changed(self) -> None:
        """A reader learned something that changes the NVR's entities (pins, presets...)."""
        self._announce()

    def _observe(self, stream: StreamName, messages: list[NvrMessage]) -> None:
        """Live items after they were published: snapshots, camera changes, triggers."""
        if stream == "event":
            for message in messages:
                if not isinstance(message, EventHookMessage):
                    continue
                if self.snapshots.enabled:
                    self.snapshots.on_event(message.channel, message.type, message.state)
                if self._on_seen is not None and message.channel is not None:
                    kind = self._redactor.text(message.type)
                    self._on_seen(message.channel, kind, message.state)
        elif stream == "exception" and self._on_seen is not None:
            for message in messages:
                if isinstance(message, ExceptionMessage):
                    self._on_seen(None, self._redactor.text(message.exception), "")
        elif stream == "message" and any(
            isinstance(m, SystemMessage) and m.message == "cameraDetail" for m in messages
        ):
            self._refresh_info.set()

    async def _after_command(self, parsed: ParsedRequest, answer: NvrAnswer) -> None:
        """What a successful command changes: a snapshot to publish, pins, presets."""
        call = parsed.call
        if call is None:
            return
        params = call.params or {}
        if parsed.command == "snapshot":
            path = readings.snapshot_path(answer.body)
            channel = int(params.get("ChannelID", "0"))
            if path is not None:
                await self.snapshots.download(channel, path, "request")
        elif parsed.command == "set_pin" and self.pins is not None:
            self.pins.poll_now()
        elif parsed.command == "ptz" and self.presets is not None:
            body = call.body or {}
            if body.get("command") in ("set_preset", "remove_preset"):
                self.presets.refresh(int(params.get("ChannelID", "0")))

    async def _fetch_info(self, key: str, path: str) -> Any:
        try:
            answer = await self.client.call("GET", path)
        except NvrHttpError as exc:
            if exc.status == 404:
                if key not in self._missing_info:
                    self._missing_info.add(key)
                    log.info("nvr does not serve", nvr=self.id, endpoint=path, status=404)
                return None
            log.warning("nvr info failed", nvr=self.id, endpoint=path, error=exc.reason)
            return None
        except NvrError as exc:
            log.warning("nvr info failed", nvr=self.id, endpoint=path, error=exc.reason)
            return None
        self._missing_info.discard(key)
        if not isinstance(answer.body, INFO_SHAPES[key]):
            log.warning(
                "nvr info unexpected", nvr=self.id, endpoint=path, got=type(answer.body).__name__
            )
            return None
        return self._redactor.value(answer.body)
