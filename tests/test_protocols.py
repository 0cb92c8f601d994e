"""MQTT 5 and 3.1.1: the bridge speaks both, and falls back when a broker lacks 5."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from bridge.config import MqttConfig
from tests.conftest import BrokerProcess, free_port, make_config, metric_value, nvr_config, watch


@pytest.fixture
def broker_311(tmp_path: Path):
    """A broker without MQTT 5: the embedded one, refusing 5 as 3.1.1 brokers do."""
    broker = BrokerProcess("embedded-3.1.1", free_port(), tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def _bridge_round_trip(broker, base_topic, sim, start_bridge, protocol: str) -> str:
    mqtt = MqttConfig(url=broker.url, client_id=f"p-{uuid.uuid4().hex[:8]}", protocol=protocol)
    async with watch(broker, f"{base_topic}/#", v5=False) as w:
        running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)], mqtt=mqtt))
        await running.wait_online(timeout=15)
        await sim.push("event", {"ChannelID": 1, "Type": "Motion", "State": "active"})
        await w.wait_topic(f"{base_topic}/nvr1/channel/1/event/Motion/state")
        await w.publish(
            f"{base_topic}/nvr1/request/buzzer", b'{"timeout": 1, "transaction": 5}', qos=1
        )
        answer = (await w.wait_topic(f"{base_topic}/nvr1/response/buzzer"))[0].json()
    assert answer["status"] == "ok"
    assert metric_value(running.bridge, "nvr_bridge_mqtt_connected") == 1
    return running.bridge.link.protocol


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto")
async def test_mqtt_311_works_end_to_end(broker, base_topic, sim, start_bridge):
    """With BRIDGE_MQTT_PROTOCOL=3.1.1: events out, commands in, persistent session."""
    assert await _bridge_round_trip(broker, base_topic, sim, start_bridge, "3.1.1") == "3.1.1"


async def test_auto_falls_back_to_311_on_a_broker_without_mqtt5(
    broker_311, base_topic, sim, start_bridge
):
    """A broker that refuses MQTT 5: 'auto' falls back to 3.1.1 and works."""
    protocol = await _bridge_round_trip(broker_311, base_topic, sim, start_bridge, "auto")
    assert protocol == "3.1.1"


async def test_the_embedded_broker_speaks_mqtt5(base_topic, sim, start_bridge, tmp_path: Path):
    """The demo's own broker: 'auto' stays on MQTT 5 there, events and commands work."""
    broker = BrokerProcess("embedded", free_port(), tmp_path)
    broker.start()
    try:
        assert await _bridge_round_trip(broker, base_topic, sim, start_bridge, "auto") == "5"
    finally:
        broker.stop()


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto")
async def test_auto_uses_mqtt5_when_the_broker_has_it(broker, base_topic, sim, start_bridge):
    """Against mosquitto, 'auto' stays on MQTT 5."""
    assert await _bridge_round_trip(broker, base_topic, sim, start_bridge, "auto") == "5"
