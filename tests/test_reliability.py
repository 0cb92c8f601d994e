"""Nothing accepted is lost: broker restarts, outages, a full buffer, a crash with the spool."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import aiomqtt
import orjson
import pytest

from bridge.sim import SimulatedNvr
from tests.conftest import (
    POLL_INTERVAL,
    BrokerProcess,
    eventually,
    free_port,
    make_config,
    metric_value,
    nvr_config,
)
from tests.test_process import SECRET, bridge_env, start_process, wait_exit

pytestmark = pytest.mark.asyncio


class SessionWatcher:
    """A subscriber with a persistent session that reconnects through broker restarts."""

    def __init__(self, broker: BrokerProcess, topic_filter: str) -> None:
        self.broker = broker
        self.topic_filter = topic_filter
        self.client_id = f"watch-{uuid.uuid4().hex[:8]}"
        self.payloads: list[bytes] = []
        self.connected = asyncio.Event()
        self.errors: list[str] = []

    async def run(self) -> None:
        while True:
            client = aiomqtt.Client(
                "127.0.0.1",
                self.broker.port,
                identifier=self.client_id,
                protocol=aiomqtt.ProtocolVersion.V311,
                clean_session=False,
            )
            try:
                async with client:
                    await client.subscribe(self.topic_filter, qos=1)
                    self.connected.set()
                    async for message in client.messages:
                        self.payloads.append(bytes(message.payload))  # type: ignore[arg-type]
            except (aiomqtt.MqttError, OSError) as exc:
                self.errors.append(repr(exc))
                self.connected.clear()
                await asyncio.sleep(POLL_INTERVAL)  # inside a deadline


@contextlib.asynccontextmanager
async def session_watcher(
    broker: BrokerProcess, topic_filter: str
) -> AsyncIterator[SessionWatcher]:
    watcher = SessionWatcher(broker, topic_filter)
    task = asyncio.create_task(watcher.run())
    try:
        async with asyncio.timeout(10):
            await watcher.connected.wait()
        yield watcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def broker_disconnected(metrics_url: str) -> bool:
    async with aiohttp.ClientSession() as session, session.get(metrics_url) as response:
        return "nvr_bridge_mqtt_connected 0.0" in await response.text()


async def eventually_async(check, timeout: float = 10, what: str = "") -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(POLL_INTERVAL)  # inside a deadline


def meta_items(start: int, count: int) -> list[dict[str, object]]:
    return [{"ChannelID": 1 + i % 4, "Type": "Seq", "Data": str(start + i)} for i in range(count)]


def data_values(payloads: list[bytes]) -> set[int]:
    return {int(orjson.loads(p)["data"]) for p in payloads}


@pytest.fixture
def persistent_broker(tmp_path: Path):
    if BrokerProcess("mosquitto", 0, tmp_path).kind != "mosquitto" or not _has_mosquitto():
        pytest.skip("needs mosquitto (persistence across a broker restart)")
    # mosquitto drops root to its own user, which cannot enter pytest's private tmp_path.
    workdir = Path(tempfile.mkdtemp(prefix="nvr-bridge-broker-"))
    broker = BrokerProcess("mosquitto", free_port(), workdir, persistent=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _has_mosquitto() -> bool:
    return shutil.which("mosquitto") is not None


async def test_broker_restart_during_a_burst_of_10000_loses_nothing(
    persistent_broker, base_topic, sim, start_bridge
):
    """10,000 QoS 1 messages, the broker restarted in the middle: every one arrives."""
    broker = persistent_broker
    total = 10_000
    async with session_watcher(broker, f"{base_topic}/nvr1/channel/+/meta/Seq") as watcher:
        running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        await running.wait_online()
        for start in range(0, total // 2, 100):
            await sim.push("meta", meta_items(start, 100))
        await eventually(lambda: len(watcher.payloads) >= 1000, what="the burst under way")
        broker.restart()
        for start in range(total // 2, total, 100):
            await sim.push("meta", meta_items(start, 100))
        await eventually(
            lambda: len(data_values(watcher.payloads)) >= total, timeout=60, what="all 10,000"
        )
    assert data_values(watcher.payloads) == set(range(total))
    received = metric_value(
        running.bridge, "nvr_bridge_messages_received_total", nvr="nvr1", stream="meta"
    )
    assert received == total
    assert (
        metric_value(running.bridge, "nvr_bridge_messages_dropped_total", nvr="nvr1", stream="meta")
        == 0
    )


async def test_messages_read_during_an_outage_are_published_in_order_after_it(
    persistent_broker, base_topic, sim, start_bridge
):
    """While the broker is down, messages wait and go out, in order, when it is back."""
    broker = persistent_broker
    async with session_watcher(broker, f"{base_topic}/nvr1/channel/+/meta/Seq") as watcher:
        running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        await running.wait_online()
        broker.stop()
        await eventually(lambda: not running.bridge.link.connected, what="broker gone")
        for start in range(0, 300, 50):
            await sim.push("meta", meta_items(start, 50))
        await eventually(lambda: running.bridge.link.depth >= 300, what="300 waiting")
        broker.start()
        await eventually(lambda: len(watcher.payloads) >= 300, timeout=20, what="all 300")
    values = [int(orjson.loads(p)["data"]) for p in watcher.payloads]
    assert values == list(range(300))


async def test_a_full_buffer_drops_the_oldest_and_counts_them(
    private_broker, base_topic, sim, start_bridge
):
    """Past BRIDGE_BUFFER_SIZE during an outage, the oldest messages go, counted."""
    broker = private_broker
    running = await start_bridge(
        make_config(broker, base_topic, [nvr_config(sim)], buffer_size=100)
    )
    await running.wait_online()
    broker.stop()
    await eventually(lambda: not running.bridge.link.connected, what="broker gone")
    await sim.push("meta", meta_items(0, 150))
    await eventually(
        lambda: (
            metric_value(
                running.bridge, "nvr_bridge_messages_dropped_total", nvr="nvr1", stream="meta"
            )
            == 50
        ),
        what="50 dropped",
    )
    # Retained state is not dropped: the status topics and availability still wait.
    assert running.bridge.link.depth >= 100


async def test_sigkill_during_an_outage_loses_nothing_with_the_spool(
    private_broker, base_topic, tmp_path
):
    """With BRIDGE_SPOOL_DIR, messages read during an outage survive a SIGKILL."""
    broker = private_broker
    spool_dir = tmp_path / "spool"
    async with SimulatedNvr(password=SECRET) as sim:
        env = bridge_env(broker.url, sim.url, base_topic, BRIDGE_SPOOL_DIR=str(spool_dir))
        process = start_process(env)
        try:
            await eventually(lambda: sim.clients("meta") == 1, timeout=20, what="bridge connected")
            broker.stop()
            metrics_url = f"http://127.0.0.1:{env['BRIDGE_HTTP_PORT']}/metrics"
            await eventually_async(lambda: broker_disconnected(metrics_url), what="broker gone")
            for start in range(0, 500, 100):
                await sim.push("meta", meta_items(start, 100))

            def spooled() -> int:
                db_path = spool_dir / "spool.sqlite3"
                if not db_path.exists():
                    return 0
                with contextlib.closing(sqlite3.connect(db_path)) as db:
                    try:
                        return int(
                            db.execute(
                                "SELECT count(*) FROM outbox WHERE topic LIKE '%/Seq'"
                            ).fetchone()[0]
                        )
                    except sqlite3.OperationalError:
                        return 0

            await eventually(lambda: spooled() >= 500, timeout=5, what="500 on disk within 1 s")
            process.send_signal(signal.SIGKILL)
            process.wait(5)
        finally:
            if process.poll() is None:
                process.kill()
        broker.start()
        async with session_watcher(broker, f"{base_topic}/nvr1/channel/+/meta/Seq") as watcher:
            again = start_process(env)
            try:
                await eventually(
                    lambda: len(data_values(watcher.payloads)) >= 500, timeout=30, what="all 500"
                )
            finally:
                again.send_signal(signal.SIGTERM)
                await wait_exit(again, 10)
    assert data_values(watcher.payloads) >= set(range(500))
    assert isinstance(process, subprocess.Popen)
