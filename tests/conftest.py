"""Shared fixtures: a real MQTT broker, the simulated NVR, an in-process bridge, a watcher.

The broker is mosquitto on a free loopback port when it is installed, else the demo's
embedded broker (``bridge.demo.broker``, MQTT 3.1.1 and 5) in a subprocess
(``NVR_BRIDGE_TEST_BROKER=embedded`` forces it). Every test gets its own base
topic, so tests never see each other's messages even on the shared broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import structlog
from pydantic import SecretStr

from bridge.app import Bridge
from bridge.config import BridgeConfig, MqttConfig, NvrConfig
from bridge.sim import SimulatedNvr

HERE = Path(__file__).parent
DEFAULT_WAIT = 10.0
# How often a deadline-bounded wait re-checks its condition.
POLL_INTERVAL = 0.01


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)  # a sync fixture polling a subprocess's port, bounded by the deadline
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class BrokerProcess:
    """A broker subprocess on 127.0.0.1:port that tests can stop and restart."""

    kind: str
    port: int
    workdir: Path
    extra_conf: str = ""
    persistent: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def speaks_v5(self) -> bool:
        return self.kind != "embedded-3.1.1"

    def start(self) -> None:
        if self.kind == "mosquitto":
            conf = self.workdir / "mosquitto.conf"
            if self.persistent:
                # mosquitto started as root drops to its own user, which must write here.
                self.workdir.chmod(0o777)
            persistence = (
                f"persistence true\npersistence_location {self.workdir}/\n"
                if self.persistent
                else "persistence false\n"
            )
            conf.write_text(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{persistence}"
                f"max_queued_messages 1000000\nmax_inflight_messages 0\n{self.extra_conf}"
            )
            command = ["mosquitto", "-c", str(conf)]
        else:
            command = [sys.executable, str(HERE / "embedded_broker.py"), str(self.port)]
            if self.kind == "embedded-3.1.1":
                command.append("--only-3.1.1")
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _broker_kind() -> str:
    forced = os.environ.get("NVR_BRIDGE_TEST_BROKER")
    if forced:
        return forced
    return "mosquitto" if shutil.which("mosquitto") else "embedded"


@pytest.fixture(scope="session")
def broker() -> Iterator[BrokerProcess]:
    """One broker for the whole session (tests isolate by base topic)."""
    with tempfile.TemporaryDirectory() as workdir:
        process = BrokerProcess(_broker_kind(), free_port(), Path(workdir))
        process.start()
        try:
            yield process
        finally:
            process.stop()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A broker of this test alone, for tests that stop or restart it."""
    process = BrokerProcess(_broker_kind(), free_port(), tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def base_topic() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture
async def sim() -> AsyncIterator[SimulatedNvr]:
    """A quiet simulated NVR (no generated traffic) with admin/admin."""
    async with SimulatedNvr(channels=4, traffic=False) as nvr:
        yield nvr


def make_config(
    broker: BrokerProcess,
    base_topic: str,
    nvrs: list[NvrConfig],
    **overrides: Any,
) -> BridgeConfig:
    """A bridge configuration for tests: fast backoff, ephemeral HTTP port."""
    mqtt = overrides.pop("mqtt", None) or MqttConfig(
        url=broker.url,
        client_id=f"bridge-{uuid.uuid4().hex[:8]}",
        protocol="auto",
    )
    settings: dict[str, Any] = {
        "nvrs": tuple(nvrs),
        "mqtt": mqtt,
        "base_topic": base_topic,
        "http_port": 0,
        "http_host": "127.0.0.1",
        "backoff_initial": 0.05,
        "backoff_max": 0.5,
        "log_format": "console",
        "log_level": "warning",
        # The readers of pins, storage and presets add REST calls of their own: off unless
        # a test is about them (tests/test_nvr_state.py turns them on).
        "pin_poll_interval": 0,
        "storage_poll_interval": 0,
        "ptz_presets": False,
    }
    settings.update(overrides)
    return BridgeConfig(**settings)


def nvr_config(sim: SimulatedNvr, nvr_id: str = "nvr1", **overrides: Any) -> NvrConfig:
    settings: dict[str, Any] = {
        "id": nvr_id,
        "url": sim.url,
        "username": "admin",
        "password": SecretStr("admin"),
    }
    settings.update(overrides)
    return NvrConfig(**settings)


class RunningBridge:
    """A Bridge running in a task of the test's loop."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> RunningBridge:
        self.task = asyncio.create_task(self.bridge.run(), name="bridge-under-test")
        async with asyncio.timeout(DEFAULT_WAIT):
            while self.bridge.http is not None and self.bridge.http.port is None:
                await asyncio.sleep(POLL_INTERVAL)  # inside a deadline
        return self

    async def wait_online(self, timeout: float = DEFAULT_WAIT) -> None:
        async with asyncio.timeout(timeout):
            while self.bridge.not_ready():
                await asyncio.sleep(POLL_INTERVAL)  # inside a deadline

    async def stop(self, timeout: float = 10.0) -> None:
        if self.task is None:
            return
        self.bridge.stop()
        async with asyncio.timeout(timeout):
            await self.task
        self.task = None


@pytest.fixture
async def start_bridge() -> AsyncIterator[Callable[[BridgeConfig], Any]]:
    """Start bridges from configs; every one is stopped at the end of the test."""
    running: list[RunningBridge] = []

    async def start(config: BridgeConfig) -> RunningBridge:
        handle = RunningBridge(Bridge(config))
        running.append(handle)
        return await handle.start()

    yield start
    for handle in running:
        with contextlib.suppress(Exception):
            await handle.stop()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    correlation_data: bytes | None = None

    @property
    def text(self) -> str:
        return self.payload.decode()

    def json(self) -> Any:
        import orjson

        return orjson.loads(self.payload)


@dataclass
class Watcher:
    """Collects every message under a topic filter; tests wait on conditions over them."""

    client: aiomqtt.Client
    messages: list[Received] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on(self, topic: str) -> list[Received]:
        return [m for m in self.messages if m.topic == topic]

    def matching(self, prefix: str) -> list[Received]:
        return [m for m in self.messages if m.topic.startswith(prefix)]

    async def wait_for(
        self, predicate: Callable[[], Any], timeout: float = DEFAULT_WAIT, what: str = ""
    ) -> Any:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    result = predicate()
                    if result:
                        return result
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            topics = [m.topic for m in self.messages[-20:]]
            raise AssertionError(
                f"timed out after {timeout} s waiting for {(what() if callable(what) else what) or predicate}; "
                f"last topics: {topics}"
            ) from None

    async def wait_topic(
        self, topic: str, count: int = 1, timeout: float = DEFAULT_WAIT
    ) -> list[Received]:
        await self.wait_for(lambda: len(self.on(topic)) >= count, timeout, f"{count} on {topic}")
        return self.on(topic)

    async def publish(self, topic: str, payload: Any, **kwargs: Any) -> None:
        await self.client.publish(topic, payload, **kwargs)

    def _add(self, message: aiomqtt.Message) -> None:
        payload = (
            message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        )
        correlation = None
        if message.properties is not None:
            correlation = getattr(message.properties, "CorrelationData", None)
        self.messages.append(
            Received(message.topic.value, payload, bool(message.retain), correlation)
        )
        self._changed.set()


@contextlib.asynccontextmanager
async def watch(
    broker: BrokerProcess, topic_filter: str, *, v5: bool | None = None
) -> AsyncIterator[Watcher]:
    """Subscribe to ``topic_filter`` and collect messages while the block runs."""
    use_v5 = broker.speaks_v5 if v5 is None else v5
    async with watch_port(broker.port, topic_filter, v5=use_v5) as watcher:
        yield watcher


@contextlib.asynccontextmanager
async def watch_port(
    port: int,
    topic_filter: str,
    *,
    v5: bool = True,
    tls_context: Any = None,
    **credentials: Any,
) -> AsyncIterator[Watcher]:
    """``watch`` for any broker on 127.0.0.1:port, optionally over TLS or with a login."""
    client = aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=f"watch-{uuid.uuid4().hex[:8]}",
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        tls_context=tls_context,
        **credentials,
    )
    async with client:
        watcher = Watcher(client)

        async def collect() -> None:
            async for message in client.messages:
                watcher._add(message)

        await client.subscribe(topic_filter, qos=1)
        task = asyncio.create_task(collect(), name="watcher")
        try:
            yield watcher
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


async def eventually(
    predicate: Callable[[], Any], timeout: float = DEFAULT_WAIT, what: str = ""
) -> Any:
    """Poll ``predicate`` until it is truthy, failing after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = predicate()
                if result:
                    return result
                await asyncio.sleep(POLL_INTERVAL)  # inside a deadline
    except TimeoutError:
        raise AssertionError(
            f"timed out after {timeout} s waiting for {what or predicate}"
        ) from None


async def all_streams_connected(sim: SimulatedNvr, count: int = 1) -> None:
    """Wait until every stream of ``sim`` has ``count`` websocket clients."""
    streams = ("event", "meta", "exception", "status", "message")
    await eventually(
        lambda: all(sim.clients(s) == count for s in streams), what=f"{count} client(s) per stream"
    )


def metric_value(bridge: Bridge, name: str, **labels: str) -> float:
    """The current value of one metric sample of a bridge's registry (0 when absent)."""
    value = bridge.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value
