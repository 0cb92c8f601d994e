"""The simulated NVR's pins, disks, PTZ cameras and camera names, over real HTTP."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridge.nvr.models import SystemMessage
from bridge.sim import SimulatedNvr
from bridge.sim.storage import GIB, Storage
from tests.test_sim import call, login, next_json, until, ws_url


@pytest.fixture
async def nvr() -> AsyncIterator[SimulatedNvr]:
    async with SimulatedNvr(channels=4, seed=13) as sim:
        yield sim


@pytest.fixture
async def client(nvr: SimulatedNvr) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=10)
    ) as session:
        status, answer = await login(session, nvr)
        assert (status, answer["Result"]) == (200, "OK")
        yield session


async def pins(client: aiohttp.ClientSession, nvr: SimulatedNvr) -> list[int]:
    _, status = await call(client, nvr, "GET", "/dio/GetPinStatus")
    return [p["pinVal"] for p in status["pin_value"]]


# -- pins -----------------------------------------------------------------------------


@pytest.mark.parametrize("pin", [1, 2, 3, 4])
async def test_pin_manual_setting_refuses_input_pins(
    client: aiohttp.ClientSession, nvr: SimulatedNvr, pin: int
) -> None:
    status, answer = await call(
        client, nvr, "POST", "/dio/pinManualSetting", {"pinID": pin, "pinValue": 1}
    )
    assert (status, answer["Result"]) == (200, "Error")
    assert "input" in answer["Description"]
    assert await pins(client, nvr) == [0] * 8


async def test_output_pins_are_set_and_logged(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    for pin in (5, 8):
        body = {"pinID": pin, "pinValue": 1}
        assert (await call(client, nvr, "POST", "/dio/pinManualSetting", body))[1] == {
            "Result": "OK"
        }
    assert await pins(client, nvr) == [0, 0, 0, 0, 1, 0, 0, 1]
    assert [e.description for e in nvr.log.entries if e.type == "Alarm"] == [
        "Alarm Out 5 On",
        "Alarm Out 8 On",
    ]


async def test_input_pins_follow_the_test_hook_and_the_control_api(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    nvr.set_input_pin(2, 1)
    assert await pins(client, nvr) == [0, 1, 0, 0, 0, 0, 0, 0]
    assert await call(client, nvr, "POST", "/_sim/input_pin", {"pin": 4, "value": 1}) == (
        200,
        {"Result": "OK"},
    )
    _, state = await call(client, nvr, "GET", "/_sim/state")
    assert [p["pinVal"] for p in state["pins"]] == [0, 1, 0, 1, 0, 0, 0, 0]
    for bad in ({"pin": 5, "value": 1}, {"pin": 1, "value": 2}, {"pin": "1", "value": 1}):
        assert (await call(client, nvr, "POST", "/_sim/input_pin", bad))[0] == 400
    with pytest.raises(ValueError, match="alarm input"):
        nvr.set_input_pin(6, 1)
    assert [e.description for e in nvr.log.entries if e.type == "Alarm"] == [
        "Alarm In 2 On",
        "Alarm In 4 On",
    ]


async def test_traffic_raises_input_pins_with_input_alarms() -> None:
    """An InputAlarm on channel n (1..4) raises pin n first and lowers it after it ends."""
    async with SimulatedNvr(traffic=True, traffic_rate=60, seed=2) as nvr:

        def pin_cycles() -> list[int]:
            lines = [e.description for e in nvr.log.entries]
            return [n for n in range(1, 5) if f"Alarm In {n} Off" in lines]

        await until(lambda: bool(pin_cycles()), timeout=10)
        lines = [(e.description, e.channel) for e in nvr.log.entries]
        pin = pin_cycles()[0]
        raised = lines.index((f"Alarm In {pin} On", None))
        assert lines.index(("Alarm Input Start", pin), raised) > raised
        assert lines.index((f"Alarm In {pin} Off", None)) > raised


# -- storage --------------------------------------------------------------------------


async def test_get_storages_lists_disks_in_the_guides_shape(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    status, disks = await call(client, nvr, "GET", "/storage/getStorages")
    assert status == 200 and len(disks) == 2
    for disk in disks:
        assert {
            "active",
            "device",
            "model",
            "serial",
            "size",
            "mountpoint",
            "fstype",
            "slot",
            "group",
        } <= set(disk)
        assert disk["active"] is True
        assert re.fullmatch(r"/dev/sd[a-z]", disk["device"])
        assert re.fullmatch(r"\d+\.\dT|\d+\.\dG", disk["size"])
        assert disk["mountpoint"] == "/mnt/" + disk["device"].removeprefix("/dev/")
    assert [d["slot"] for d in disks] == ["HDD-1", "HDD-2"]


def _gib(size: str) -> float:
    return float(size[:-1]) * (1024 if size.endswith("T") else 1)


def test_used_space_grows_slowly_until_the_disks_are_nearly_full() -> None:
    storage = Storage("EF0123456789", channels=4, started=1_000.0)
    first, hour, year = (storage.disks(now) for now in (1_000.0, 4_600.0, 1_000.0 + 3e7))
    for before, after in zip(first, hour, strict=True):
        assert 0 < _gib(after["used"]) - _gib(before["used"]) < 2
        assert _gib(after["free"]) < _gib(before["free"])
    for disk in year:
        used, free = _gib(disk["used"]), _gib(disk["free"])
        assert used / (used + free) == pytest.approx(0.97, abs=0.001)
        assert used + free == pytest.approx(_gib(disk["size"]), rel=0.03)
    assert first[0]["serial"] == Storage("EF0123456789", 4).disks()[0]["serial"]
    assert _gib(first[0]["size"]) * GIB > 3e12


async def test_a_disk_error_takes_the_disk_out_of_service(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    await nvr.push("exception", {"exception": "DiskError", "target": "sdb", "time": 1})
    _, disks = await call(client, nvr, "GET", "/storage/getStorages")
    assert [d["active"] for d in disks] == [True, False]
    assert nvr.log.entries[-1].description == "Disk Error sdb"


# -- PTZ ------------------------------------------------------------------------------


async def ptz(
    client: aiohttp.ClientSession, nvr: SimulatedNvr, channel: int, body: Any
) -> dict[str, Any]:
    path = f"/device/ptzControl?ChannelID={channel}"
    status, answer = await call(client, nvr, "POST", path, body)
    assert status == 200
    result: dict[str, Any] = answer
    return result


async def test_ptz_cameras_come_with_presets(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    assert await ptz(client, nvr, 2, {"command": "get_presets"}) == {
        "presets": [
            {"name": "Gate", "preset_token": "1"},
            {"name": "Loading dock", "preset_token": "2"},
            {"name": "Fence", "preset_token": "3"},
        ]
    }
    made = await ptz(
        client, nvr, 2, {"command": "set_preset", "parameters": {"preset_name": "Roof"}}
    )
    assert made == {"PresetToken": "4"}
    assert [e.description for e in nvr.log.entries][-1] == "PTZ Preset Settings"


@pytest.mark.parametrize(
    "body",
    [
        {"command": "get_presets"},
        {"command": "pan_left", "speed": 1},
        {"command": "stop"},
        {"command": "set_preset", "parameters": {"preset_name": "door"}},
        {"command": "remove_preset", "parameters": {"preset_token": "1"}},
        {"command": "goto_preset", "parameters": {"preset_token": "1"}},
        {"command": "start_tour", "parameters": {"picked_presets": []}},
        {"command": "stop_tour"},
        {"command": "get_tour_presets"},
    ],
)
@pytest.mark.parametrize("channel", [3, 4])
async def test_cameras_without_ptz_refuse_every_ptz_command(
    client: aiohttp.ClientSession, nvr: SimulatedNvr, channel: int, body: Any
) -> None:
    answer = await ptz(client, nvr, channel, body)
    assert answer == {
        "Result": "Error",
        "Description": f"the camera on channel {channel} has no PTZ",
    }


async def test_ptz_channels_are_configurable(client: aiohttp.ClientSession) -> None:
    async with SimulatedNvr(username=None, channels=3, ptz_channels=(3, 7)) as sim:
        assert (await ptz(client, sim, 1, {"command": "get_presets"}))["Result"] == "Error"
        presets = (await ptz(client, sim, 3, {"command": "get_presets"}))["presets"]
        assert [p["name"] for p in presets] == ["Home", "Overview"]


# -- cameras --------------------------------------------------------------------------


async def test_rename_camera_changes_the_list_and_sends_camera_detail(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    async with client.ws_connect(ws_url(nvr, "message")) as ws:
        await until(lambda: nvr.clients("message") == 1)
        await nvr.rename_camera(3, "Loading bay")
        item = await next_json(ws)
        SystemMessage.model_validate(item)
        assert (item["message"], item["target"]) == ("cameraDetail", 3)
        assert item["content"]["DeviceName"] == "Loading bay"
        assert item["content"]["Password"] == nvr.device.camera_passwords[3]
        body = {"channel": 1, "name": "Front door"}
        assert (await call(client, nvr, "POST", "/_sim/rename_camera", body))[0] == 200
        assert (await next_json(ws))["content"]["DeviceName"] == "Front door"
    _, cameras = await call(client, nvr, "GET", "/device/cameraList")
    assert [c["DeviceName"] for c in cameras] == [
        "Front door",
        "Camera 2",
        "Loading bay",
        "Camera 4",
    ]
    assert [(e.description, e.channel) for e in nvr.log.entries if e.type == "Configuration"] == [
        ("Modify Channel", 3),
        ("Modify Channel", 1),
    ]
    for bad in ({"channel": 5, "name": "x"}, {"channel": 1, "name": " "}, {"channel": 1}):
        assert (await call(client, nvr, "POST", "/_sim/rename_camera", bad))[0] == 400


async def test_manual_record_shows_in_camera_status_and_the_log(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    await call(client, nvr, "POST", "/record/manualRecord", {"channel": 4, "command": "start"})
    await call(client, nvr, "POST", "/record/manualAlarm", {"channel": 2, "command": "start"})
    _, status = await call(client, nvr, "GET", "/device/cameraStatus")
    assert [(s["Manual"], s["Recording"]) for s in status] == [
        (False, False),
        (False, False),
        (False, False),
        (True, True),
    ]
    async with client.ws_connect(ws_url(nvr, "status")) as ws:
        assert (await next_json(ws))[3]["Manual"] is True
    await call(client, nvr, "POST", "/record/manualRecord", {"channel": 4, "command": "stop"})
    logged = [(e.type, e.description, e.channel, e.user) for e in nvr.log.entries]
    assert logged[-3:] == [
        ("Record", "Manual Record Start", 4, "admin"),
        ("Alarm", "Manual Alarm Start", 2, "admin"),
        ("Record", "Manual Record Stop", 4, "admin"),
    ]
