"""The bridge as one supervised program: every long-lived task under one task group.

``Bridge.run`` starts the health/metrics server, the MQTT link and one supervisor per NVR
(each with its five named stream tasks and its command workers), then waits for
``stop()``. Shutdown is ordered: NVR tasks are cancelled (websockets closed, each NVR's
``offline`` queued), the link flushes what waits, publishes ``bridge/state`` ``offline``
and disconnects, then the HTTP server stops.

Faults stay where they happen (CONTRACT section 9): an unexpected exception in any task
of one NVR is logged once with its traceback, counted in
``nvr_bridge_nvr_restarts_total``, and that NVR alone restarts after the backoff; the
other NVRs, the MQTT link and the HTTP server keep running. The process stops only for
what it cannot run without: ``StartError`` (the HTTP port, the spool directory).

Errors::

    StartError             the bridge cannot start (``reason`` says what and the fix)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from typing import TYPE_CHECKING

import structlog

from bridge import __version__
from bridge.backoff import Backoff
from bridge.config import NVR_ID_PATTERN, BridgeConfig, config_warnings, secrets_of
from bridge.homeassistant import DiscoveryRegistry, Trigger, discovery_configs
from bridge.limits import InputLimits
from bridge.mqtt import MqttLink
from bridge.normalize import compact_json, format_timestamp
from bridge.observability import HealthServer, Metrics
from bridge.publishing import InboundMessage, Publication
from bridge.redaction import Redactor
from bridge.supervisor import NvrSupervisor
from bridge.topics import BridgeTopics

if TYPE_CHECKING:
    from bridge.spool import Spool

log = structlog.get_logger("bridge")

SHUTDOWN_FLUSH_SECONDS = 3.0
# How long the bridge looks at the retained topics of an NVR that left the configuration.
REMOVED_LOOK_SECONDS = 30.0
# How long the start-up look at the retained topics published on change only lasts.
KEPT_LOOK_SECONDS = 10.0
# Room beside a snapshot's bytes in one received packet (topic, properties).
TOPIC_ROOM = 64 * 1024
MAX_REMOVED_NVRS = 1000
# An NVR whose tasks ran this long before failing starts its restart backoff afresh.
STABLE_RUN_SECONDS = 60.0


class StartError(Exception):
    """The bridge cannot start; ``reason`` names what failed, with which value, and the fix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Bridge:
    """The whole service for one configuration (see module doc)."""

    def __init__(self, config: BridgeConfig, *, serve_http: bool = True) -> None:
        self.config = config
        self.topics = BridgeTopics(config.base_topic, config.ha_prefix)
        self.metrics = Metrics()
        self.metrics.build_info.labels(__version__).set(1)
        self.redactor = Redactor(secrets_of(config))
        self.spool: Spool | None = None
        if config.spool_dir:
            from bridge.spool import Spool, SpoolUnusable  # noqa: PLC0415 - sqlite3 on use

            try:
                self.spool = Spool(config.spool_dir, metrics=self.metrics)
            except SpoolUnusable as exc:
                raise StartError(exc.reason) from None
        self.link = MqttLink(
            config.mqtt,
            bridge_state_topic=self.topics.state,
            metrics=self.metrics,
            buffer_size=config.buffer_size,
            retained_max=config.retained_max,
            backoff=Backoff(config.backoff_initial, config.backoff_max),
            spool=self.spool,
            max_incoming=config.snapshot_max_bytes + TOPIC_ROOM,
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
        self.link.subscribe(self.topics.discovery_registry_filter)
        if config.ha_discovery:
            # Home Assistant's birth message: publish every config again.
            self.link.subscribe(self.topics.ha_status)
        # Every NVR's availability: one the configuration no longer has is cleared.
        self.link.subscribe(self.topics.availability_filter)
        # What an earlier process published on change only, to republish it if need be.
        for topic_filter in self.topics.kept_filters:
            self.link.subscribe_for(topic_filter, KEPT_LOOK_SECONDS)
        self._configured = frozenset(n.id for n in config.nvrs)
        self._removed: set[str] = set()
        self.link.on_connected(self._publish_bridge_info)
        self.nvrs: dict[str, NvrSupervisor] = {}
        for nvr in config.assigned_nvrs():
            supervisor = NvrSupervisor(
                config,
                nvr,
                link=self.link,
                metrics=self.metrics,
                login_gate=self._login_gate,
                on_info=functools.partial(self._announce, nvr.id) if config.ha_discovery else None,
                on_seen=functools.partial(self._seen, nvr.id) if config.ha_discovery else None,
                redactor=self.redactor,
                limits=InputLimits(
                    json_max_depth=config.json_max_depth,
                    nvr_max_answer_bytes=nvr.max_answer_bytes,
                    response_max_bytes=config.response_max_bytes,
                ),
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

    def stop(self) -> None:
        """Ask the bridge to shut down cleanly (signal handlers call this)."""
        self._stop.set()

    def not_ready(self) -> list[str]:
        """Why the bridge is not ready: broker down, NVRs offline, spool failing."""
        reasons = []
        if not self.link.connected:
            reasons.append(f"mqtt broker {self.config.mqtt.url} not connected")
        for nvr in self.nvrs.values():
            reason = nvr.not_ready()
            if reason is not None:
                reasons.append(reason)
        if self.spool is not None and self.spool.failure is not None:
            reasons.append(f"spool not writing, messages kept in memory: {self.spool.failure}")
        return reasons

    def _dead_loops(self) -> list[str]:
        dead = [name for name, task in self._tasks.items() if task.done()]
        stalled = self.link.stalled_for(self.config.stall_seconds)
        if stalled is not None:
            dead.append(
                f"mqtt link: {self.link.depth} messages waited {stalled:.0f} s on a connected "
                f"broker (BRIDGE_STALL_SECONDS={self.config.stall_seconds:g})"
            )
        return dead

    def _announce(self, nvr_id: str) -> None:
        """Publish one NVR's Home Assistant discovery as it stands now."""
        supervisor = self.nvrs[nvr_id]
        configs = discovery_configs(
            supervisor.topics,
            supervisor.info,
            prefix=self.config.ha_prefix,
            state=supervisor.state,
            triggers=frozenset(self.discovery.triggers.get(nvr_id, ())),
            snapshots=bool(self.config.snapshot_events),
            commands=self.config.commands_for(supervisor.config),
            url=supervisor.config.url,
        )
        self.discovery.announce(nvr_id, configs)

    def _seen(self, nvr_id: str, channel: int | None, kind: str, state: str) -> None:
        """An event (or exception) type seen live: a device trigger for it, once."""
        if self.discovery.learn(nvr_id, Trigger(channel, kind, state)) and self.nvrs[nvr_id].info:
            self._announce(nvr_id)

    def _route(self, message: InboundMessage) -> None:
        topics = self.topics
        if message.topic.startswith(topics.discovery_prefix):
            learned = self.discovery.recall(message.topic, message.payload)
            nvr = message.topic[len(topics.discovery_prefix) :]
            if learned and nvr in self.nvrs and self.nvrs[nvr].info:
                self._announce(nvr)
            return
        if message.topic == topics.ha_status:
            if self.config.ha_discovery and message.payload.strip().lower() == b"online":
                log.info("home assistant is online, publishing discovery again")
                self.discovery.republish()
            return
        found = topics.nvr_of(message.topic)
        if found is None:
            return
        nvr, levels = found
        supervisor = self.nvrs.get(nvr)
        if supervisor is not None:
            if topics.kept(levels):
                if message.retain:
                    self.link.adopt(Publication(message.topic, message.payload, True, nvr))
            elif levels != ["availability"]:
                supervisor.commands.handle(message, levels)
            return
        if nvr not in self._configured and nvr != "bridge":
            self._clear_removed(nvr, message)

    def _clear_removed(self, nvr: str, message: InboundMessage) -> None:
        """A retained topic of an NVR the configuration no longer has: clear it.

        Its availability shows it exists; a look at everything under it finds the rest
        of its retained topics (status, event states, pins...), each cleared with an
        empty retained payload, as the discovery registry does for Home Assistant.
        """
        if not message.retain or not message.payload:
            return
        if nvr not in self._removed:
            if len(self._removed) >= MAX_REMOVED_NVRS or not NVR_ID_PATTERN.fullmatch(nvr):
                return
            self._removed.add(nvr)
            log.info("clearing the retained topics of a removed nvr", nvr=nvr)
            self.link.subscribe_for(self.topics.everything_of(nvr), REMOVED_LOOK_SECONDS)
        self.link.publish(Publication(message.topic, b"", True, ""))

    def _publish_bridge_info(self) -> None:
        """``{base}/bridge/info`` after each connect (CONTRACT section 10)."""
        info = {
            "version": __version__,
            "nvrs": sorted(self.nvrs),
            "commands": sorted(self.config.commands),
            "protocol": self.link.protocol,
            "shard": self.config.shard,
            "timestamp": format_timestamp(time.time()),
        }
        self.link.publish(Publication(self.topics.info, compact_json(info), True, ""))

    def _warn(self) -> None:
        """One line per setting that is valid but probably not meant (TLS off, no password)."""
        self._warn_insecure()
        for warning in config_warnings(self.config, tls=False):
            log.warning("configuration warning", warning=warning)

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

    async def _start_http(self) -> None:
        assert self.http is not None  # noqa: S101 - only called with a server
        try:
            await self.http.start()
        except OSError as exc:
            host, port = self.config.http_host, self.config.http_port
            raise StartError(
                f"cannot serve /metrics, /healthz and /readyz on {host}:{port}: "
                f"{exc.strerror or exc}; set BRIDGE_HTTP_PORT to a free port "
                "(or BRIDGE_HTTP_HOST to an address of this machine)"
            ) from None
        log.info("http server listening", port=self.http.port)

    async def _supervise(self, nvr: NvrSupervisor) -> None:
        """Run one NVR for good: restart it alone, after the backoff, when it fails."""
        backoff = Backoff(self.config.backoff_initial, self.config.backoff_max)
        restarts = self.metrics.nvr_restarts.labels(nvr.id)
        while True:
            started = time.monotonic()
            try:
                await nvr.run()
            except Exception:  # one NVR's fault must not reach the others or the process
                restarts.inc()
                if time.monotonic() - started >= STABLE_RUN_SECONDS:
                    backoff.reset()
                delay = backoff.next_delay()
                log.exception("nvr failed, restarting it", nvr=nvr.id, retry_in=round(delay, 2))
                await asyncio.sleep(delay)
            else:
                return

    async def run(self) -> None:
        """Run until ``stop()``; then shut down in order (see module doc)."""
        self._warn()
        if self.http is not None:
            await self._start_http()
        log.info(
            "bridge starting",
            version=__version__,
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
                    self._tasks[name] = group.create_task(self._supervise(nvr), name=name)
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
