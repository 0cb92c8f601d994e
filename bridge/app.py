"""The bridge as one supervised program: every long-lived task under one task group.

``Bridge.run`` starts the health/metrics server, the MQTT link and one supervisor per NVR
(each with its five named stream tasks and its command workers), then waits for
``stop()``. Shutdown is ordered: NVR tasks are cancelled (websockets closed, each NVR's
``offline`` queued), the link flushes what waits, publishes ``bridge/state`` ``offline``
and disconnects, then the HTTP server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog

from bridge.backoff import Backoff
from bridge.config import BridgeConfig
from bridge.homeassistant import DiscoveryRegistry
from bridge.mqtt import InboundMessage, MqttLink
from bridge.observability import HealthServer, Metrics
from bridge.supervisor import NvrSupervisor

if TYPE_CHECKING:
    from bridge.spool import Spool

log = structlog.get_logger("bridge")

SHUTDOWN_FLUSH_SECONDS = 3.0


class Bridge:
    """The whole service for one configuration (see module doc)."""

    def __init__(self, config: BridgeConfig, *, serve_http: bool = True) -> None:
        self.config = config
        self.metrics = Metrics()
        self.spool: Spool | None = None
        if config.spool_dir:
            from bridge.spool import Spool  # noqa: PLC0415 - sqlite3 only when a spool is set

            self.spool = Spool(config.spool_dir)
        self.link = MqttLink(
            config.mqtt,
            bridge_state_topic=f"{config.base_topic}/bridge/state",
            metrics=self.metrics,
            buffer_size=config.buffer_size,
            backoff=Backoff(config.backoff_initial, config.backoff_max),
            spool=self.spool,
        )
        self._login_gate = asyncio.Semaphore(config.login_concurrency)
        self.discovery = DiscoveryRegistry(
            base=config.base_topic,
            prefix=config.ha_prefix,
            enabled_nvrs=frozenset(n.id for n in config.nvrs)
            if config.ha_discovery
            else frozenset(),
            publish=self.link.publish,
        )
        # Always read back earlier discovery lists, so turning discovery off clears it.
        self.link.subscribe(self.discovery.registry_filter)
        self._discovery_prefix = f"{config.base_topic}/bridge/discovery/"
        self.nvrs: dict[str, NvrSupervisor] = {}
        for nvr in config.assigned_nvrs():
            supervisor = NvrSupervisor(
                config,
                nvr,
                link=self.link,
                metrics=self.metrics,
                login_gate=self._login_gate,
                on_info=self.discovery.announce if config.ha_discovery else None,
            )
            self.nvrs[nvr.id] = supervisor
            self.metrics.register_nvr(nvr.id, sorted(config.commands_for(nvr)))
            for topic_filter in supervisor.commands.subscriptions():
                self.link.subscribe(topic_filter)
        self.link.on_message(self._route)
        self.http = (
            HealthServer(
                self.metrics,
                alive=self._dead_loops,
                not_ready=self.not_ready,
                host=config.http_host,
                port=config.http_port,
            )
            if serve_http
            else None
        )
        self._stop = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._base_prefix = config.base_topic + "/"

    def stop(self) -> None:
        """Ask the bridge to shut down cleanly (signal handlers call this)."""
        self._stop.set()

    def not_ready(self) -> list[str]:
        """Why the bridge is not ready: broker down or NVRs offline (empty when ready)."""
        reasons = []
        if not self.link.connected:
            reasons.append(f"mqtt broker {self.config.mqtt.url} not connected")
        for nvr in self.nvrs.values():
            if not nvr.online:
                down = ", ".join(nvr.streams_down())
                reasons.append(f"nvr {nvr.id} offline (streams down: {down})")
        return reasons

    def _dead_loops(self) -> list[str]:
        return [name for name, task in self._tasks.items() if task.done()]

    def _route(self, message: InboundMessage) -> None:
        if message.topic.startswith(self._discovery_prefix):
            self.discovery.recall(message.topic, message.payload)
            return
        if not message.topic.startswith(self._base_prefix):
            return
        levels = message.topic[len(self._base_prefix) :].split("/")
        supervisor = self.nvrs.get(levels[0])
        if supervisor is not None:
            supervisor.commands.handle(message, levels[1:])

    def _warn_insecure(self) -> None:
        mqtt = self.config.mqtt
        if mqtt.is_tls and not mqtt.verify_tls:
            log.warning(
                "tls verification disabled",
                peer="mqtt broker",
                url=mqtt.url,
                hint="BRIDGE_MQTT_VERIFY_TLS=false accepts any certificate",
            )
        for nvr in self.config.assigned_nvrs():
            if nvr.is_tls and not nvr.verify_tls:
                log.warning(
                    "tls verification disabled",
                    peer="nvr",
                    nvr=nvr.id,
                    url=nvr.url,
                    hint="BRIDGE_NVR_VERIFY_TLS=false accepts any certificate",
                )

    async def run(self) -> None:
        """Run until ``stop()``; then shut down in order (see module doc)."""
        self._warn_insecure()
        if self.http is not None:
            await self.http.start()
            log.info("http server listening", port=self.http.port)
        log.info(
            "bridge starting",
            shard=self.config.shard,
            nvrs=list(self.nvrs) if len(self.nvrs) <= 20 else len(self.nvrs),
            broker=self.config.mqtt.url,
            base_topic=self.config.base_topic,
        )
        try:
            async with asyncio.TaskGroup() as group:
                self._tasks["mqtt"] = group.create_task(self.link.run(), name="mqtt")
                spool_task = (
                    group.create_task(self.spool.run(), name="spool") if self.spool else None
                )
                for nvr in self.nvrs.values():
                    name = f"nvr[{nvr.id}]"
                    self._tasks[name] = group.create_task(nvr.run(), name=name)
                await self._stop.wait()
                log.info("bridge stopping")
                nvr_tasks = [t for n, t in self._tasks.items() if n.startswith("nvr[")]
                for task in nvr_tasks:
                    task.cancel()
                await asyncio.wait(nvr_tasks)
                await self.link.close(timeout=SHUTDOWN_FLUSH_SECONDS)
                # A connect attempt in progress would hold the exit for its whole timeout.
                mqtt_task = self._tasks["mqtt"]
                await asyncio.wait({mqtt_task}, timeout=1.0)
                mqtt_task.cancel()
                if spool_task is not None:
                    spool_task.cancel()
        finally:
            if self.spool is not None:
                self.spool.close()
            if self.http is not None:
                with contextlib.suppress(Exception):
                    await self.http.stop()
            log.info("bridge stopped")
