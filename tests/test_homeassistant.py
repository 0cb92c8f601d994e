"""Home Assistant MQTT discovery: configs valid for the current schema, lifecycle, removal.

The configs are checked against the keys each platform of Home Assistant's MQTT
integration accepts (an unknown top-level key is dropped there without a word, one in
``device`` or ``origin`` rejects the whole config), and the lifecycle against a real
broker. tests/test_homeassistant_real.py checks the same in a real Home Assistant.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bridge.homeassistant import (
    ORIGIN,
    DiscoveryRegistry,
    Trigger,
    cameras_from_info,
    discovery_configs,
)
from bridge.nvr.pollers import NvrState
from bridge.nvr.readings import preset_token
from bridge.publishing import Publication
from bridge.topics import NvrTopics
from tests.conftest import BrokerProcess, eventually, free_port, make_config, nvr_config, watch

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
    "cameras": [
        {"ChannelID": 1, "DeviceName": "Front door", "Model": "EZN1360", "FirmwareVersion": "2.1"},
        {"ChannelID": 2, "DeviceName": ""},
    ],
}
STATE = NvrState(
    inputs=[1, 2, 3, 4],
    outputs=[5, 6, 7, 8],
    pins_known=True,
    presets={1: [{"name": "Door", "preset_token": "1"}, {"name": "Door", "preset_token": "2"}]},
    disks=[{"serial": "WD-1", "slot": "HDD-1", "active": True}, {"device": "/dev/sdb"}],
)
ALL = frozenset(
    {"manual_alarm", "manual_record", "set_pin", "ptz", "buzzer", "snapshot", "add_event"}
)

# The keys Home Assistant's MQTT platforms take (2026.11, per platform, beyond the common
# ones); anything else would be dropped silently, so a typo would go unnoticed.
COMMON = {
    "name",
    "unique_id",
    "default_entity_id",
    "device",
    "origin",
    "availability",
    "availability_mode",
    "entity_category",
    "icon",
    "json_attributes_topic",
    "json_attributes_template",
    "enabled_by_default",
    "qos",
}
PLATFORM_KEYS = {
    "binary_sensor": {"state_topic", "value_template", "device_class", "payload_on", "payload_off"},
    "switch": {
        "command_topic",
        "state_topic",
        "payload_on",
        "payload_off",
        "state_on",
        "state_off",
    },
    "button": {"command_topic", "payload_press"},
    "camera": {"topic"},
    "select": {"command_topic", "options", "state_topic"},
    "sensor": {"state_topic", "value_template", "device_class", "options", "unit_of_measurement"},
}
REQUIRED = {
    "binary_sensor": {"state_topic"},
    "switch": {"command_topic", "state_topic"},
    "button": {"command_topic"},
    "camera": {"topic"},
    "select": {"command_topic", "options"},
    "sensor": {"state_topic"},
    "device_automation": {"automation_type", "topic", "type", "subtype", "device"},
}
DEVICE_KEYS = {
    "identifiers",
    "name",
    "manufacturer",
    "model",
    "sw_version",
    "serial_number",
    "configuration_url",
    "via_device",
}


def configs_of(**kwargs: Any) -> dict[str, dict[str, Any]]:
    settings: dict[str, Any] = {
        "prefix": "homeassistant",
        "state": STATE,
        "snapshots": True,
        "commands": ALL,
        "url": "http://192.0.2.10:80",
    }
    settings.update(kwargs)
    return discovery_configs(NvrTopics("everfocus", "lobby"), INFO, **settings)


def entity(configs: dict[str, dict[str, Any]], component: str, object_id: str) -> dict[str, Any]:
    return configs[f"homeassistant/{component}/nvr_bridge_everfocus_lobby/{object_id}/config"]


def test_every_config_fits_the_current_schema_without_a_deprecated_key() -> None:
    """Known keys only, a unique id, default_entity_id with its domain, origin, devices."""
    unique_ids: set[str] = set()
    for topic, config in configs_of().items():
        prefix, component, node, object_id, last = topic.split("/")
        assert (prefix, node, last) == ("homeassistant", "nvr_bridge_everfocus_lobby", "config")
        assert REQUIRED[component] <= set(config), (topic, config)
        assert not set(config["device"]) - DEVICE_KEYS
        assert config["device"]["identifiers"] and config["device"]["name"]
        assert "object_id" not in config and "obj_id" not in config
        if component == "device_automation":
            assert config["automation_type"] == "trigger"
            continue
        assert not set(config) - COMMON - PLATFORM_KEYS[component], (topic, config)
        assert config["origin"] == ORIGIN
        assert config["unique_id"] not in unique_ids
        unique_ids.add(config["unique_id"])
        domain, _, rest = config["default_entity_id"].partition(".")
        assert domain == component and rest.startswith("lobby_")
        assert config["availability_mode"] == "all"
        for key in ("state_topic", "command_topic", "topic"):
            if key in config:
                assert config[key].startswith("everfocus/lobby/")
                assert "+" not in config[key] and "#" not in config[key]


def test_each_camera_is_a_device_under_the_nvr_and_names_do_not_repeat_it() -> None:
    """Cameras are devices with via_device; entity names never repeat the device's name."""
    configs = configs_of()
    motion = entity(configs, "binary_sensor", "ch1_motion")
    assert motion["device"]["identifiers"] == ["nvr_bridge_lobby_ch1"]
    assert motion["device"]["via_device"] == "nvr_bridge_lobby"
    assert motion["device"]["name"] == "Front door"
    assert motion["device"]["model"] == "EZN1360"
    assert motion["name"] == "Motion"
    assert entity(configs, "binary_sensor", "ch2_motion")["device"]["name"] == "Channel 2"
    buzzer = entity(configs, "button", "buzzer")
    assert buzzer["device"] == {
        "identifiers": ["nvr_bridge_lobby"],
        "manufacturer": "EverFocus",
        "name": "Lobby NVR",
        "model": "EPN4208",
        "sw_version": "1.0.25",
        "serial_number": "SN123",
        "configuration_url": "http://192.0.2.10:80",
    }
    for config in configs.values():
        if config.get("name"):
            assert config["device"]["name"] not in config["name"]
    # The camera entity is the camera device's main feature: it carries the device's name.
    assert entity(configs, "camera", "ch1_camera")["name"] is None


def test_switches_show_the_nvrs_state_not_a_guess() -> None:
    """Manual alarm, manual recording and output pins have state topics, no optimism."""
    configs = configs_of()
    alarm = entity(configs, "switch", "ch1_manual_alarm")
    assert alarm["command_topic"] == "everfocus/lobby/channel/1/alarm/set"
    assert alarm["state_topic"] == "everfocus/lobby/channel/1/alarm/state"
    assert (alarm["state_on"], alarm["state_off"]) == ("active", "inactive")
    record = entity(configs, "switch", "ch2_manual_record")
    assert record["state_topic"] == "everfocus/lobby/channel/2/record/state"
    output = entity(configs, "switch", "output_5")
    assert output["command_topic"] == "everfocus/lobby/pin/5/set"
    assert (output["state_topic"], output["state_on"]) == ("everfocus/lobby/pin/5/state", "1")
    for config in configs.values():
        assert "optimistic" not in config


def test_pins_are_exactly_those_the_nvr_reports() -> None:
    """Inputs are binary sensors, outputs switches; nothing about pins before GetGPIOInfo."""
    configs = configs_of()
    inputs = sorted(t for t in configs if "/input_" in t)
    outputs = sorted(t for t in configs if "/output_" in t)
    assert [t.split("/")[3] for t in inputs] == ["input_1", "input_2", "input_3", "input_4"]
    assert [t.split("/")[3] for t in outputs] == ["output_5", "output_6", "output_7", "output_8"]
    assert entity(configs, "binary_sensor", "input_2")["state_topic"] == (
        "everfocus/lobby/pin/2/state"
    )
    unknown = configs_of(state=NvrState())
    assert not [t for t in unknown if "/input_" in t or "/output_" in t]


def test_snapshots_presets_disks_and_the_nvr_entities() -> None:
    """Camera and take-snapshot button, preset select, disk sensors, firmware, connection."""
    configs = configs_of()
    camera = entity(configs, "camera", "ch1_camera")
    assert camera["topic"] == "everfocus/lobby/channel/1/snapshot"
    button = entity(configs, "button", "ch1_take_snapshot")
    assert button["command_topic"] == "everfocus/lobby/request/snapshot"
    assert orjson.loads(button["payload_press"]) == {"channel": 1}
    select = entity(configs, "select", "ch1_ptz_preset")
    assert select["command_topic"] == "everfocus/lobby/channel/1/ptz/preset/set"
    assert select["options"] == ["Door", "Door (2)"]
    # Each option the select sends back names its own preset, the repeated name too.
    presets = STATE.presets[1]
    assert [preset_token(presets, option) for option in select["options"]] == ["1", "2"]
    assert not any("/ch2_ptz_preset/" in t for t in configs)
    disks = sorted(t for t in configs if "/sensor/" in t and "/disk_" in t)
    assert len(disks) == 2
    disk = entity(configs, "sensor", "disk_wd_1")
    assert disk["state_topic"] == "everfocus/lobby/storage"
    assert disk["options"] == ["active", "inactive", "missing"]
    assert entity(configs, "sensor", "firmware")["state_topic"] == "everfocus/lobby/info"
    connection = entity(configs, "binary_sensor", "connection")
    assert connection["state_topic"] == "everfocus/lobby/availability"
    assert connection["availability"] == [{"topic": "everfocus/bridge/state"}]
    without = configs_of(snapshots=False)
    assert not [t for t in without if "/camera/" in t or "take_snapshot" in t]


def test_entities_of_commands_the_nvr_does_not_obey_are_left_out() -> None:
    """No buzzer button without buzzer, no output switch without set_pin, and so on."""
    configs = configs_of(commands=frozenset({"snapshot"}))
    components = {t.split("/")[1] + "/" + t.split("/")[3] for t in configs}
    assert "button/buzzer" not in components
    assert not [c for c in components if c.startswith("switch/")]
    assert not [c for c in components if c.startswith("select/")]
    assert "button/ch1_take_snapshot" in components


def test_device_triggers_for_the_event_types_seen_never_fire_on_replays() -> None:
    """A trigger per (camera, event type, state) seen, on the camera; exceptions on the NVR."""
    triggers = frozenset(
        {
            Trigger(1, "Motion", "active"),
            Trigger(1, "Line Cross", "once"),
            Trigger(None, "DiskFull", ""),
        }
    )
    configs = configs_of(triggers=triggers)
    found = {t: c for t, c in configs.items() if "/device_automation/" in t}
    assert len(found) == 3
    motion = next(c for c in found.values() if c["type"] == "Motion")
    assert motion["subtype"] == "active"
    assert motion["topic"] == "everfocus/lobby/channel/1/event/Motion"
    assert motion["payload"] == "active"
    # A live event has no "replayed" key: .get, or Home Assistant warns on every event.
    assert "value_json.get('replayed')" in motion["value_template"]
    assert motion["device"]["identifiers"] == ["nvr_bridge_lobby_ch1"]
    line = next(c for c in found.values() if c["type"] == "Line Cross")
    assert line["topic"] == "everfocus/lobby/channel/1/event/Line_Cross"
    disk = next(c for c in found.values() if c["type"] == "exception")
    assert (disk["subtype"], disk["topic"]) == ("DiskFull", "everfocus/lobby/exception/DiskFull")
    assert disk["device"]["identifiers"] == ["nvr_bridge_lobby"]


def test_channels_fall_back_to_counts_and_are_bounded() -> None:
    """Older firmware without cameraList: channels from the counts, at most 4,096."""
    cameras = cameras_from_info({"system": {"ipcam_channels": 3}, "cameras": None})
    assert [c.channel for c in cameras] == [1, 2, 3]
    assert cameras_from_info({"system": None, "cameras": None}) == []
    huge = cameras_from_info({"system": {"ipcam_channels": 2_000_000}, "cameras": None})
    assert len(huge) == 4096


class Published:
    def __init__(self) -> None:
        self.items: list[Publication] = []

    def __call__(self, publication: Publication) -> None:
        self.items.append(publication)

    def topics(self, *, empty: bool | None = None) -> list[str]:
        return [p.topic for p in self.items if empty is None or (not p.payload) == empty]


def test_the_registry_publishes_changes_only_and_remembers_triggers() -> None:
    """Announcing twice publishes each config once; a vanished entity is cleared."""
    published = Published()
    registry = DiscoveryRegistry("everfocus", "homeassistant", frozenset({"lobby"}), published)
    configs = configs_of()
    registry.announce("lobby", configs)
    first = len(published.items)
    registry.announce("lobby", configs)
    assert len(published.items) == first + 1  # only the registry list again
    fewer = configs_of(state=NvrState())
    registry.announce("lobby", fewer)
    cleared = set(published.topics(empty=True))
    assert cleared == set(configs) - set(fewer)
    assert registry.learn("lobby", Trigger(2, "Motion", "active"))
    assert not registry.learn("lobby", Trigger(2, "Motion", "active"))
    registry.announce("lobby", fewer)
    listed = orjson.loads(published.items[-1].payload)
    assert listed["triggers"] == [[2, "Motion", "active"]]
    published.items.clear()
    registry.republish()
    assert set(published.topics()) == set(fewer)


def test_a_registry_read_back_restores_triggers_and_clears_what_is_gone() -> None:
    """The list of an earlier run: its triggers come back; the old list format still works."""
    published = Published()
    registry = DiscoveryRegistry("everfocus", "homeassistant", frozenset({"lobby"}), published)
    earlier = {
        "topics": ["homeassistant/binary_sensor/x/gone/config"],
        "triggers": [[1, "Motion", "active"], ["bad"], [0, "x", "active"]],
    }
    learned = registry.recall("everfocus/bridge/discovery/lobby", orjson.dumps(earlier))
    assert learned
    assert registry.triggers["lobby"] == {Trigger(1, "Motion", "active")}
    registry.announce("lobby", configs_of())
    assert "homeassistant/binary_sensor/x/gone/config" in published.topics(empty=True)
    # An NVR without discovery any more: its configs and its list are cleared.
    old_format = orjson.dumps(["homeassistant/switch/y/old/config"])
    assert not registry.recall("everfocus/bridge/discovery/yard", old_format)
    assert "homeassistant/switch/y/old/config" in published.topics(empty=True)
    assert "everfocus/bridge/discovery/yard" in published.topics(empty=True)


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
                    "nvr_bridge_" + base_topic.replace("-", "_") + "_yard" in m.topic and m.payload
                    for m in w.messages
                ),
                what="yard's configs",
            )


@pytest.mark.asyncio
async def test_home_assistants_birth_message_republishes_every_config(
    broker, base_topic, sim, start_bridge
):
    """'online' on {prefix}/status: every config is published again."""
    prefix = f"{base_topic}-ha"
    config = make_config(broker, base_topic, [nvr_config(sim)], ha_discovery=True, ha_prefix=prefix)
    async with watch(broker, f"{prefix}/#") as w:
        running = await start_bridge(config)
        await running.wait_online()
        await w.wait_for(
            lambda: any(m.topic.endswith("/buzzer/config") for m in w.messages), what="discovery"
        )
        before = len([m for m in w.messages if m.topic.endswith("/buzzer/config")])
        await w.publish(f"{prefix}/status", b"online")
        await w.wait_for(
            lambda: len([m for m in w.messages if m.topic.endswith("/buzzer/config")]) > before,
            what="the buzzer config again",
        )


@pytest.mark.asyncio
async def test_a_broker_that_lost_its_retained_messages_is_whole_again(
    base_topic, sim, start_bridge, tmp_path
):
    """After a broker restart without persistence, the bridge republishes what it retains."""
    broker = BrokerProcess("mosquitto", free_port(), tmp_path)
    broker.start()
    try:
        prefix = f"{base_topic}-ha"
        config = make_config(
            broker, base_topic, [nvr_config(sim)], ha_discovery=True, ha_prefix=prefix
        )
        running = await start_bridge(config)
        await running.wait_online()
        await sim.push("event", {"ChannelID": 2, "Type": "Motion", "State": "active"})
        async with watch(broker, f"{base_topic}/#") as w:
            await w.wait_topic(f"{base_topic}/nvr1/channel/2/event/Motion/state")
        link = running.bridge.link
        before = link.connected_since
        broker.restart()
        await eventually(
            lambda: link.connected and link.connected_since > before and link.depth == 0,
            timeout=20,
            what="reconnected, with everything republished and confirmed",
        )
        async with watch(broker, "#") as late:
            wanted = {
                f"{base_topic}/bridge/state",
                f"{base_topic}/bridge/info",
                f"{base_topic}/nvr1/availability",
                f"{base_topic}/nvr1/info",
                f"{base_topic}/nvr1/channel/1/status",
                f"{base_topic}/nvr1/channel/2/event/Motion/state",
            }
            await late.wait_for(
                lambda: (
                    wanted <= {m.topic for m in late.messages if m.retain}
                    and any(m.topic.startswith(prefix + "/") and m.retain for m in late.messages)
                ),
                timeout=20,
                what=lambda: (
                    "every retained topic back, missing "
                    f"{wanted - {m.topic for m in late.messages if m.retain}}"
                ),
            )
            motion = late.on(f"{base_topic}/nvr1/channel/2/event/Motion/state")[-1]
            assert motion.text == "active"
    finally:
        broker.stop()
