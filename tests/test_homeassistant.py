"""Home Assistant MQTT discovery: payloads valid for HA's schema, published and cleared."""

from __future__ import annotations

import orjson
import pytest

from bridge.homeassistant import cameras_from_info, discovery_configs
from bridge.topics import NvrTopics
from tests.conftest import make_config, nvr_config, watch

INFO = {
    "nvr": "lobby",
    "system": {
        "device_name": "Lobby NVR",
        "model": "EPN4208",
        "software_version": "1.0.25",
        "serial": "SN123",
        "ipcam_channels": 2,
        "analog_channels": 0,
    },
    "cameras": [{"ChannelID": 1, "DeviceName": "Front door"}, {"ChannelID": 2, "DeviceName": ""}],
}

# What HA's MQTT schema requires per component, beyond the common keys.
REQUIRED = {
    "binary_sensor": {"state_topic"},
    "switch": {"command_topic"},
    "button": {"command_topic"},
}


def test_discovery_configs_carry_ha_required_keys_and_real_topics():
    """Every config has a unique id, the device identity, availability and real topics."""
    topics = NvrTopics("everfocus", "lobby")
    configs = discovery_configs(topics, INFO, prefix="homeassistant")
    unique_ids = set()
    for topic, config in configs.items():
        prefix, component, node, object_id, last = topic.split("/")
        assert (prefix, last) == ("homeassistant", "config")
        assert component in REQUIRED
        assert REQUIRED[component] <= set(config)
        assert config["unique_id"] not in unique_ids
        unique_ids.add(config["unique_id"])
        assert config["device"]["identifiers"] == ["nvr_bridge_lobby"]
        assert config["device"]["name"] == "Lobby NVR"
        assert config["device"]["model"] == "EPN4208"
        assert config["device"]["sw_version"] == "1.0.25"
        assert config["device"]["serial_number"] == "SN123"
        assert config["availability_mode"] == "all"
        assert [a["topic"] for a in config["availability"]] == [
            "everfocus/bridge/state",
            "everfocus/lobby/availability",
        ]
        for key in ("state_topic", "command_topic"):
            if key in config:
                assert config[key].startswith("everfocus/lobby/")
                assert "+" not in config[key] and "#" not in config[key]
    names = {c["name"] for c in configs.values()}
    assert "Front door motion" in names
    assert "Channel 2 recording" in names
    motion = configs["homeassistant/binary_sensor/nvr_bridge_everfocus_lobby/ch1_motion/config"]
    assert motion["state_topic"] == "everfocus/lobby/channel/1/event/Motion/state"
    assert (motion["payload_on"], motion["payload_off"]) == ("active", "inactive")
    online = configs["homeassistant/binary_sensor/nvr_bridge_everfocus_lobby/ch1_online/config"]
    assert online["state_topic"] == "everfocus/lobby/channel/1/status"
    assert online["device_class"] == "connectivity"
    button = configs["homeassistant/button/nvr_bridge_everfocus_lobby/buzzer/config"]
    assert button["command_topic"] == "everfocus/lobby/request/buzzer"
    assert orjson.loads(button["payload_press"]) == {"timeout": 5}
    pins = [c for t, c in configs.items() if "/output_pin_" in t]
    assert [p["command_topic"] for p in pins][0] == "everfocus/lobby/pin/1/set"


def test_channels_fall_back_to_counts_without_a_camera_list():
    """Older firmware without cameraList: channels from getSystemInfo's counts."""
    cameras = cameras_from_info({"system": {"ipcam_channels": 3}, "cameras": None})
    assert [c.channel for c in cameras] == [1, 2, 3]
    assert cameras_from_info({"system": None, "cameras": None}) == []


@pytest.mark.asyncio
async def test_discovery_is_published_and_cleared_when_the_nvr_is_removed(
    broker, base_topic, sim, start_bridge
):
    """Discovery appears after login; a restart without that NVR clears its configs."""
    prefix = f"{base_topic}-ha"
    async with watch(broker, f"{prefix}/#") as w:
        first = await start_bridge(
            make_config(
                broker, base_topic, [nvr_config(sim, "gate")], ha_discovery=True, ha_prefix=prefix
            )
        )
        await first.wait_online()
        await w.wait_for(
            lambda: any(m.topic.endswith("/buzzer/config") for m in w.messages), what="discovery"
        )
        published = {m.topic for m in w.messages if m.payload}
        await first.stop()
        from bridge.sim import SimulatedNvr

        async with SimulatedNvr() as other:
            second = await start_bridge(
                make_config(
                    broker,
                    base_topic,
                    [nvr_config(other, "yard")],
                    ha_discovery=True,
                    ha_prefix=prefix,
                )
            )
            await second.wait_online()
            await w.wait_for(
                lambda: published <= {m.topic for m in w.messages if not m.payload},
                what="gate's configs cleared",
            )
            await w.wait_for(
                lambda: any(
                    "nvr_bridge_" + base_topic + "_yard" in m.topic and m.payload
                    for m in w.messages
                ),
                what="yard's configs",
            )
