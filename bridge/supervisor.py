"""Everything the bridge runs for one NVR, under one task group.

An ``NvrSupervisor`` owns the NVR's client (one HTTP session and login), its five stream
listeners, its command runner and the task that publishes ``{base}/{nvr}/info`` after
each login. It derives the NVR's availability from its streams: ``online`` while all five
are connected (which implies a valid login), else ``offline``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import structlog

from bridge.backoff import Backoff
from bridge.command_runner import CommandRunner
from bridge.config import BridgeConfig, NvrConfig
from bridge.homeassistant import cameras_from_info
from bridge.limits import InputLimits
from bridge.normalize import Normalizer, format_timestamp
from bridge.nvr.client import NvrClient, NvrError, NvrHttpError
from bridge.nvr.models import STREAM_NAMES, StreamName
from bridge.nvr.streams import StreamListener
from bridge.observability import Metrics
from bridge.publishing import Publication, Publisher
from bridge.redaction import NO_SECRETS, Redactor
from bridge.topics import NvrTopics

log = structlog.get_logger("bridge.nvr")

INFO_ENDPOINTS = {"system": "/system/getSystemInfo", "cameras": "/device/cameraList"}
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
        on_info: Callable[[NvrTopics, dict[str, Any]], None] | None = None,
        redactor: Redactor = NO_SECRETS,
        limits: InputLimits | None = None,
    ) -> None:
        limits = limits or InputLimits()
        self.config = nvr
        self._redactor = redactor
        self._on_info = on_info
        self.id = nvr.id
        self.topics = NvrTopics(config.base_topic, nvr.id)
        self._link = link
        self._metrics = metrics
        self._login_seen = asyncio.Event()
        self._stream_up = asyncio.Event()
        self.client = NvrClient(
            nvr,
            metrics=metrics,
            login_gate=login_gate,
            backoff=Backoff(config.backoff_initial, config.backoff_max),
            ping_interval=config.ws_ping_interval,
            ping_timeout=config.ws_ping_timeout,
            on_login=self._login_seen.set,
            limits=limits,
        )
        self.normalizer = Normalizer(
            self.topics, redactor=redactor, max_depth=limits.json_max_depth
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
            )
            for stream in STREAM_NAMES
        ]
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
        )
        self._up: set[StreamName] = set()
        self._online: bool | None = None
        self._missing_info: set[str] = set()
        self._info: dict[str, Any] = {}

    @property
    def online(self) -> bool:
        """Whether all five streams are connected."""
        return bool(self._online)

    def known_channels(self) -> list[int]:
        """The NVR's channels: from its camera list, else from the status it reported."""
        channels = {camera.channel for camera in cameras_from_info(self._info)}
        return sorted(channels | self.normalizer.channels_seen)

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
        finally:
            self._up.clear()
            self._stream_up.clear()
            self._set_online(online=False)
            await self.client.close()

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
        self._metrics.nvr_online.labels(self.id).set(1 if online else 0)
        state = b"online" if online else b"offline"
        self._link.publish(Publication(self.topics.availability, state, True, self.id))
        log.info("nvr availability", nvr=self.id, availability=state.decode())

    async def _publish_info(self) -> None:
        """After each login, publish the NVR's identity and cameras (retained)."""
        while True:
            await self._login_seen.wait()
            self._login_seen.clear()
            # Without credentials "logged in" is a formality: wait until the NVR answers.
            await self._stream_up.wait()
            info: dict[str, Any] = {"nvr": self.id}
            for key, path in INFO_ENDPOINTS.items():
                info[key] = await self._fetch_info(key, path)
            info["timestamp"] = format_timestamp(time.time())
            self._info = info
            payload = orjson.dumps(info)
            self._link.publish(Publication(self.topics.info, payload, True, self.id))
            if self._on_info is not None:
                self._on_info(self.topics, info)

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
