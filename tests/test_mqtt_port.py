"""The MQTT port and the link against a real mosquitto, measured from outside.

``MqttConnection`` (the port) and ``MqttLink`` (the outbox and reconnects on top) are
checked where their promises are visible: on the wire, through a recording proxy
(``tests.mqtt_peers``), and at a real broker's subscribers. The Receive Maximum the
broker announces bounds the unconfirmed publishes; the Last Will fires after an abort
(the port's, or the link's own on a silent broker) and never after a clean close; the
keepalive holds a connection the broker has no reason to answer; a persistent session
hands the bridge, once, a request sent while it was away, in MQTT 5 and 3.1.1.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.config import MqttConfig
from bridge.mqtt.codec import V5, V311, ConnAck, Connect, Disconnect, Oversized, Publish, Will
from bridge.mqtt.connection import MqttConnection
from tests.conftest import (
    BrokerProcess,
    RunningBridge,
    _broker_kind,
    eventually,
    free_port,
    make_config,
    metric_value,
    nvr_config,
    watch,
)
from tests.mqtt_peers import MqttProxy
from tests.test_faults import captured_logs, logged

# mosquitto's own behaviour is under test here (Receive Maximum, Maximum Packet Size, Wills,
# sessions, DUP redelivery), not the demo's embedded broker.
pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(
        shutil.which("mosquitto") is None or _broker_kind() != "mosquitto",
        reason="needs mosquitto as the test broker",
    ),
]

RECEIVE_MAXIMUM = 5


def mqtt_config(url: str, **overrides: Any) -> MqttConfig:
    settings: dict[str, Any] = {
        "url": url,
        "client_id": f"port-{uuid.uuid4().hex[:8]}",
        "protocol": "5",
    }
    settings.update(overrides)
    return MqttConfig(**settings)


@pytest.fixture
async def small_window_broker(tmp_path: Path) -> AsyncIterator[BrokerProcess]:
    """A mosquitto announcing a Receive Maximum of 5 (``max_inflight_messages``)."""
    broker = BrokerProcess(
        "mosquitto", free_port(), tmp_path, extra_conf=f"max_inflight_messages {RECEIVE_MAXIMUM}\n"
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Handler:
    """A ConnectionHandler that records what the port tells it."""

    def __init__(self) -> None:
        self.publishes: list[Publish] = []
        self.acks: list[tuple[int, int]] = []
        self.oversized: list[Oversized] = []
        self.lost: list[str] = []

    def on_publish(self, packet: Publish) -> None:
        self.publishes.append(packet)

    def on_ack(self, packet_id: int, reason_code: int) -> None:
        self.acks.append((packet_id, reason_code))

    def on_oversized(self, skipped: Oversized) -> None:
        self.oversized.append(skipped)

    def on_lost(self, reason: str) -> None:
        self.lost.append(reason)


async def open_port(port: int, version: int, will: Will) -> tuple[MqttConnection, Handler]:
    handler = Handler()
    connection = await MqttConnection.open(
        handler,
        host="127.0.0.1",
        port=port,
        connect=Connect(f"will-{uuid.uuid4().hex[:8]}", version, keepalive=30, will=will),
        max_incoming=1024 * 1024,
    )
    return connection, handler


def published(running: RunningBridge, stream: str = "meta") -> float:
    return metric_value(
        running.bridge, "nvr_bridge_messages_published_total", nvr="nvr1", stream=stream
    )


# --- Receive Maximum ----------------------------------------------------------------------


async def test_at_most_receive_maximum_publishes_are_unconfirmed(
    small_window_broker, base_topic, sim, start_bridge
):
    """A burst of 300 against Receive Maximum 5: never more than 5 unacked on the wire, all arrive."""
    broker = small_window_broker
    count = 300
    async with MqttProxy(broker.port) as proxy:
        proxy.down_delay = 0.002  # PUBACKs come back late: the window fills
        config = make_config(
            broker, base_topic, [nvr_config(sim)], mqtt=mqtt_config(proxy.url, protocol="5")
        )
        meta = f"{base_topic}/nvr1/channel/"
        async with watch(broker, f"{base_topic}/nvr1/channel/+/meta/#") as w:
            running = await start_bridge(config)
            await running.wait_online()
            await eventually(lambda: sim.clients("meta") >= 1, what="the meta stream open")
            await sim.burst("meta", count)
            await w.wait_for(
                lambda: len(w.matching(meta)) >= count, timeout=30, what=f"{count} meta messages"
            )
            await eventually(
                lambda: published(running) == count, what=f"{count} publishes confirmed"
            )
    (connack,) = [p for p in proxy.connections[0].down() if isinstance(p, ConnAck)]
    assert connack.properties.get("receive_maximum") == RECEIVE_MAXIMUM
    assert len(proxy.connections) == 1, "the bridge reconnected"
    assert proxy.max_unconfirmed <= RECEIVE_MAXIMUM
    # The burst did fill the window (the bound was exercised, not merely never reached).
    assert proxy.max_unconfirmed == RECEIVE_MAXIMUM
    assert len(w.matching(meta)) == count
    assert proxy.connections[0].unconfirmed == set()


# --- the Last Will -------------------------------------------------------------------------


@pytest.mark.parametrize("version", [V5, V311], ids=["5", "3.1.1"])
async def test_the_will_fires_after_an_abort_and_never_after_a_graceful_close(
    broker, base_topic, version
):
    """close(graceful=True) sends DISCONNECT: no Will; close(graceful=False) and abort(): the Will."""
    topic = f"{base_topic}/will"
    async with watch(broker, topic) as w:
        graceful, handler = await open_port(broker.port, version, Will(topic, b"graceful", 1))
        graceful.close(graceful=True)
        assert not graceful.is_open
        assert handler.lost == ["closed by the bridge"]
        cut, _ = await open_port(broker.port, version, Will(topic, b"cut", 1))
        cut.close(graceful=False)
        # A barrier: the broker read the graceful DISCONNECT before it accepted this next
        # connection, so a Will of the graceful one would have come before this one's.
        await w.wait_topic(topic)
        aborted, _ = await open_port(broker.port, version, Will(topic, b"aborted", 1))
        aborted.abort()
        await w.wait_topic(topic, count=2)
    assert [m.payload for m in w.on(topic)] == [b"cut", b"aborted"]


async def test_a_silent_broker_is_detected_the_will_fires_and_the_bridge_comes_back(
    broker, base_topic, sim, start_bridge
):
    """The broker stops talking, sockets open: the bridge aborts, the Will says offline, then online.

    After the reconnect the bridge's retained topics (availability here) are published again.
    """
    state = f"{base_topic}/bridge/state"
    availability = f"{base_topic}/nvr1/availability"
    keepalive = 5
    async with MqttProxy(broker.port) as proxy, watch(broker, f"{base_topic}/#") as w:
        mqtt = mqtt_config(proxy.url, keepalive=keepalive)
        running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)], mqtt=mqtt))
        await running.wait_online()
        await w.wait_for(lambda: w.on(state) and w.on(state)[-1].payload == b"online")
        before = len(w.on(state))
        await w.wait_topic(availability)
        availability_before = len(w.on(availability))
        with captured_logs() as logs:
            (silenced,) = proxy.silence()
            silent_at = time.monotonic()
            async with asyncio.timeout(keepalive * 3):
                await silenced.client_closed.wait()
            detected_after = time.monotonic() - silent_at
            # The proxy closes its broker side in turn; the broker then publishes the Will.
            async with asyncio.timeout(5):
                await silenced.broker_closed.wait()
            await w.wait_for(
                lambda: [m.payload for m in w.on(state)[before:]] == [b"offline", b"online"],
                timeout=15,
                what="offline (the Will), then online again",
            )
            await running.wait_online()
            # Retained topics are published again after the reconnect.
            await w.wait_topic(availability, count=availability_before + 1)
    # An abort: no DISCONNECT (which would have cancelled the Will).
    assert not [p for p in silenced.up() if isinstance(p, Disconnect)]
    # Detected after 1.5 keepalives without a word, checked every half keepalive.
    assert keepalive <= detected_after <= keepalive * 2.5, detected_after
    lost = logged(logs, "mqtt connection lost")
    assert lost, logs
    assert "no answer from the broker" in lost[0]["error"]
    assert len(proxy.connections) == 2
    assert metric_value(running.bridge, "nvr_bridge_mqtt_connected") == 1
    assert w.on(availability)[-1].payload == b"online"


# --- keepalive -------------------------------------------------------------------------------


async def test_a_steady_qos0_stream_keeps_the_connection_alive(broker, base_topic):
    """QoS 0 publishes every 0.25 s, keepalive 3 s: the broker acks nothing, yet the link lives.

    The broker owes a QoS 0 publisher no answer, so the port must ping when it has heard
    nothing for a while, not only when it has sent nothing (BRIDGE_MQTT_QOS=0).
    """
    handler = Handler()
    connection = await MqttConnection.open(
        handler,
        host="127.0.0.1",
        port=broker.port,
        connect=Connect(f"qos0-{uuid.uuid4().hex[:8]}", V5, keepalive=3),
        max_incoming=1024 * 1024,
    )
    topic = f"{base_topic}/qos0".encode()
    async with watch(broker, f"{base_topic}/qos0") as w:
        started = time.monotonic()
        # Past 2 keepalives: a connection that only pings when idle is cut at 1.5.
        while time.monotonic() - started < 7 and connection.is_open:
            connection.publish(topic, b"tick", 0, False)
            await asyncio.sleep(0.25)  # the pace of the stream, not a synchronisation
        lived = time.monotonic() - started
        still_open = connection.is_open
        connection.close(graceful=True)
    assert still_open, f"lost after {lived:.1f} s: {handler.lost}"
    assert len(w.on(f"{base_topic}/qos0")) > 20


# --- the persistent session ---------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_request_queued_while_the_bridge_was_away_runs_once(
    broker, base_topic, sim, start_bridge, protocol
):
    """Stopped cleanly, a QoS 1 request arrives, a new bridge with the same client id runs it once."""
    mqtt = mqtt_config(broker.url, protocol=protocol, session_expiry=300)
    config = make_config(broker, base_topic, [nvr_config(sim)], mqtt=mqtt)
    first = await start_bridge(config)
    await first.wait_online()
    await first.stop()
    responses = f"{base_topic}/nvr1/response"
    async with watch(broker, f"{responses}/#", v5=protocol == "5") as w:
        request = {"timeout": 1, "transaction": f"queued-{protocol}"}
        await w.publish(f"{base_topic}/nvr1/request/buzzer", orjson.dumps(request), qos=1)
        assert sim.calls_to("/system/callBuzzer") == []
        with captured_logs() as logs:
            second = await start_bridge(config)
            (answer,) = await w.wait_topic(f"{responses}/buzzer")
            # A barrier: a later request's answer comes after any second buzzer answer would.
            await w.publish(
                f"{base_topic}/nvr1/request/manual_alarm",
                orjson.dumps({"channel": 1, "command": "start"}),
                qos=1,
            )
            await w.wait_topic(f"{responses}/manual_alarm")
    assert answer.json()["status"] == "ok", answer.json()
    assert answer.json()["transaction"] == f"queued-{protocol}"
    assert len(w.on(f"{responses}/buzzer")) == 1
    assert [c.query for c in sim.calls_to("/system/callBuzzer")] == [{"timeout": "1"}]
    (connected,) = logged(logs, "mqtt connected")
    assert connected["session_present"] is True
    assert connected["protocol"] == protocol
    assert second.bridge.link.protocol == protocol
