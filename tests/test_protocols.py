"""MQTT 5 and 3.1.1: the bridge speaks both, and falls back when a broker lacks 5."""

from __future__ import annotations

import asyncio
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from bridge.config import MqttConfig
from tests.conftest import BrokerProcess, free_port, make_config, metric_value, nvr_config, watch


@pytest.fixture
def embedded_broker(tmp_path: Path):
    """The embedded Python broker (amqtt, MQTT 3.1.1 only) in a subprocess."""
    broker = BrokerProcess("amqtt", free_port(), tmp_path)
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


async def test_auto_falls_back_to_311_on_the_embedded_broker(
    embedded_broker, base_topic, sim, start_bridge
):
    """The embedded broker cannot do MQTT 5: 'auto' falls back to 3.1.1 and works."""
    protocol = await _bridge_round_trip(embedded_broker, base_topic, sim, start_bridge, "auto")
    assert protocol == "3.1.1"


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto")
async def test_auto_uses_mqtt5_when_the_broker_has_it(broker, base_topic, sim, start_bridge):
    """Against mosquitto, 'auto' stays on MQTT 5."""
    assert await _bridge_round_trip(broker, base_topic, sim, start_bridge, "auto") == "5"


async def test_demo_shows_events_with_nothing_else_installed():
    """`nvr-bridge demo` runs the embedded broker, simulator and bridge and shows traffic."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "demo",
        "--duration",
        "6",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    text = out.decode()
    assert process.returncode == 0, text
    assert "everfocus/bridge/state" in text
    assert "everfocus/demo/availability" in text
    assert "everfocus/demo/channel/" in text
    assert "mosquitto_sub -h 127.0.0.1" in text
    assert "Traceback" not in text
