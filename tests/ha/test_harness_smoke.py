"""The Home Assistant harness against a real Home Assistant and a real broker.

MQTT discovery published by hand (one binary_sensor, one switch, one device), checked through
Home Assistant itself: registries, states, a service call that reaches the command topic, the
log, and a restart. Skips when Home Assistant is not installed (scripts/install-home-assistant.sh),
fails instead under NVR_BRIDGE_REQUIRE_HA=1.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiomqtt
import pytest

from tests.conftest import BrokerProcess, watch
from tests.ha.harness import HomeAssistant, home_assistant_python

# Log lines that would mean Home Assistant rejected or frowns upon a discovery payload.
PROBLEMS = ("Invalid config", "deprecated", "Error '", "extra keys not allowed")


@pytest.fixture
async def start_ha(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[HomeAssistant]]]:
    """Start Home Assistant instances for this test; every one is killed at teardown.

    The install is looked up in the test itself, so that a missing one under
    NVR_BRIDGE_REQUIRE_HA=1 is a failed test (not an error in a fixture).
    """
    instances: list[HomeAssistant] = []

    async def start(broker: BrokerProcess, name: str = "ha-config") -> HomeAssistant:
        instance = HomeAssistant(home_assistant_python(), tmp_path / name)
        instances.append(instance)
        await instance.start("127.0.0.1", broker.port)
        return instance

    try:
        yield start
    finally:
        for instance in instances:
            await instance.close()  # kills Home Assistant whatever the test did


async def publish(broker: BrokerProcess, *messages: tuple[str, object]) -> None:
    """Publish retained messages (JSON-encoded unless bytes/str), QoS 1, then disconnect."""
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, identifier=f"pub-{uuid.uuid4().hex[:8]}"
    ) as client:
        for topic, payload in messages:
            body = payload if isinstance(payload, str | bytes) else json.dumps(payload)
            await client.publish(topic, body, qos=1, retain=True)


async def test_discovery_states_commands_and_restart(start_ha, broker: BrokerProcess):
    run = uuid.uuid4().hex[:8]
    base = f"harness-{run}"
    device = {
        "identifiers": [f"harness_{run}"],
        "name": f"Harness {run}",
        "manufacturer": "nvr-bridge tests",
        "model": "smoke",
    }
    motion_id, relay_id = f"harness_{run}_motion", f"harness_{run}_relay"
    motion_config = {
        "name": "Motion",
        "unique_id": motion_id,
        "state_topic": f"{base}/motion",
        "payload_on": "ON",
        "payload_off": "OFF",
        "device_class": "motion",
        "device": device,
    }
    relay_config = {
        "name": "Relay",
        "unique_id": relay_id,
        "command_topic": f"{base}/relay/set",
        "state_topic": f"{base}/relay",
        "device": device,
    }

    ha = await start_ha(broker)
    await publish(
        broker,
        (f"homeassistant/binary_sensor/{base}/motion/config", motion_config),
        (f"homeassistant/switch/{base}/relay/config", relay_config),
        (f"{base}/motion", "OFF"),
    )

    # The registries: both entities, of the right domains, on one device that carries the block.
    motion = await ha.wait_for(lambda: ha.registry_entry(motion_id), what="motion in registry")
    relay = await ha.wait_for(lambda: ha.registry_entry(relay_id), what="relay in registry")
    assert motion["entity_id"].startswith("binary_sensor.")
    assert relay["entity_id"].startswith("switch.")
    assert motion["device_id"] and motion["device_id"] == relay["device_id"]
    devices = {d["id"]: d for d in await ha.device_registry()}
    entry = devices[motion["device_id"]]
    assert ["mqtt", f"harness_{run}"] in entry["identifiers"]
    assert (entry["name"], entry["manufacturer"], entry["model"]) == (
        device["name"],
        "nvr-bridge tests",
        "smoke",
    )

    # The binary_sensor's state follows its state topic.
    async def motion_is(value: str) -> bool:
        state = await ha.state(motion["entity_id"])
        return state is not None and state["state"] == value

    await ha.wait_for(lambda: motion_is("off"), what="motion off")
    assert (await ha.state(motion["entity_id"]))["attributes"]["device_class"] == "motion"
    await publish(broker, (f"{base}/motion", "ON"))
    await ha.wait_for(lambda: motion_is("on"), what="motion on")

    # switch.turn_on through the REST API reaches the command topic; the state topic then
    # moves the switch's state.
    async with watch(broker, f"{base}/relay/set") as commands:
        await ha.call_service("switch", "turn_on", {"entity_id": relay["entity_id"]})
        received = await commands.wait_topic(f"{base}/relay/set")
    assert received[0].text == "ON"
    await publish(broker, (f"{base}/relay", "ON"))
    await ha.wait_for(
        lambda: _state_is(ha, relay["entity_id"], "on"), what="relay on after its state topic"
    )

    # Home Assistant has nothing to say against these payloads.
    assert _problems(ha) == []

    # After a restart the entities come back, with the same ids and their (retained) states.
    await ha.restart()
    await ha.wait_for(lambda: motion_is("on"), what="motion on after restart")
    await ha.wait_for(
        lambda: _state_is(ha, relay["entity_id"], "on"), what="relay on after restart"
    )
    assert (await ha.registry_entry(motion_id))["entity_id"] == motion["entity_id"]
    assert ha.launches == 2
    assert _problems(ha) == []


def _problems(ha: HomeAssistant) -> list[str]:
    """Log lines against MQTT payloads: MQTT's own warnings and errors, and the PROBLEMS anywhere."""
    return [
        line
        for line in ha.log_text().splitlines()
        if any(needle in line for needle in PROBLEMS)
        or ("[homeassistant.components.mqtt" in line and (" WARNING " in line or " ERROR " in line))
    ]


async def _state_is(ha: HomeAssistant, entity_id: str, value: str) -> bool:
    state = await ha.state(entity_id)
    return state is not None and state["state"] == value
