"""The simulated NVR, over real HTTP, websockets and UDP on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import structlog.testing
from defusedxml import ElementTree

from bridge.nvr.auth import LoginChallenge, login_body
from bridge.nvr.models import STREAM_MODELS, STREAM_PATHS, EventHookMessage, SystemMessage
from bridge.sim import History, SimulatedFleet, SimulatedNvr, hub, run_simulator
from bridge.sim.device import DeviceIdentity, DeviceState
from bridge.sim.discovery import inquiry
from bridge.sim.fleet import server_ssl_context
from bridge.sim.history import SearchError
from bridge.sim.traffic import message
from tests.conftest import POLL_INTERVAL

T0_MS = 1_700_000_000_000
T0_S = T0_MS // 1000


# -- helpers --------------------------------------------------------------------------


@pytest.fixture
async def nvr() -> AsyncIterator[SimulatedNvr]:
    async with SimulatedNvr(channels=4, seed=7) as sim:
        yield sim


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # NVRs are addressed by IP: the default cookie jar would drop their cookies.
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=10)
    ) as session:
        yield session


async def login(
    http: aiohttp.ClientSession,
    nvr: SimulatedNvr,
    password: str = "admin",  # noqa: S107 - the simulator's default account
) -> tuple[int, Any]:
    async with http.get(nvr.url + "/admin/login") as response:
        challenge = LoginChallenge.from_json(await response.json())
    body = login_body("admin", password, challenge, 1)
    async with http.post(nvr.url + "/admin/login", json=body) as response:
        return response.status, await response.json(content_type=None)


@pytest.fixture
async def client(http: aiohttp.ClientSession, nvr: SimulatedNvr) -> aiohttp.ClientSession:
    """A session logged in to ``nvr``."""
    status, answer = await login(http, nvr)
    assert (status, answer["Result"]) == (200, "OK")
    return http


async def call(
    http: aiohttp.ClientSession, nvr: SimulatedNvr, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    async with http.request(method, nvr.url + path, json=body) as response:
        text = await response.text()
        try:
            return response.status, orjson.loads(text)
        except orjson.JSONDecodeError:
            return response.status, text


async def next_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 2.0) -> Any:
    message = await ws.receive(timeout=timeout)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    return orjson.loads(message.data)


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(POLL_INTERVAL)  # inside a deadline


def ws_url(nvr: SimulatedNvr, stream: str) -> str:
    return nvr.url + STREAM_PATHS[stream]  # type: ignore[index]


# -- login and sessions ---------------------------------------------------------------


async def test_login_sets_an_http_only_session_cookie(
    http: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    async with http.get(nvr.url + "/admin/login") as response:
        params = await response.json()
    assert params["realm"] == "xnvr"
    assert params["qop"] == "auth"
    assert params["opaque"] == ""
    assert params["change_pwd"] == "no"
    challenge = LoginChallenge.from_json(params)
    async with http.post(
        nvr.url + "/admin/login", json=login_body("admin", "admin", challenge, 1)
    ) as response:
        assert await response.json() == {"Result": "OK", "Description": "userID=1"}
        cookie = response.cookies["session"]
    assert cookie.value
    assert cookie["httponly"]
    assert cookie["path"] == "/"
    assert (nvr.logins, nvr.login_attempts) == (1, 1)


async def test_wrong_password_is_refused_without_a_session(
    http: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    status, answer = await login(http, nvr, password="wrong")
    assert status == 200
    assert answer == {"Result": "Error", "Description": "Invalid username or password"}
    assert (nvr.logins, nvr.login_attempts) == (0, 1)
    assert (await call(http, nvr, "GET", "/system/getSystemInfo"))[0] == 401


async def test_an_answer_to_a_nonce_never_issued_is_refused(
    http: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    forged = LoginChallenge(realm="xnvr", qop="auth", nonce="00" * 16)
    status, answer = await call(
        http, nvr, "POST", "/admin/login", login_body("admin", "admin", forged, 1)
    )
    assert (status, answer["Result"]) == (200, "Error")


async def test_rest_call_without_session_is_401_and_recorded(
    http: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    body = {"channel": 1, "command": "start"}
    status, _ = await call(http, nvr, "POST", "/record/manualAlarm", body)
    assert status == 401
    [recorded] = nvr.calls_to("/record/manualAlarm")
    assert (recorded.authorized, recorded.body) == (False, body)


async def test_websocket_handshake_without_session_is_401(
    http: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(ws_url(nvr, "event"))
    assert refused.value.status == 401
    assert nvr.clients("event") == 0


async def test_expire_sessions_makes_the_next_call_and_handshake_401(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    assert (await call(client, nvr, "GET", "/system/getSystemInfo"))[0] == 200
    nvr.expire_sessions()
    assert (await call(client, nvr, "GET", "/system/getSystemInfo"))[0] == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(ws_url(nvr, "status"))
    assert refused.value.status == 401
    await login(client, nvr)
    assert (await call(client, nvr, "GET", "/system/getSystemInfo"))[0] == 200
    assert nvr.logins == 2


async def test_logout_drops_the_session(client: aiohttp.ClientSession, nvr: SimulatedNvr) -> None:
    assert await call(client, nvr, "GET", "/admin/logout") == (200, {"Result": "OK"})
    assert (await call(client, nvr, "GET", "/dio/GetPinStatus"))[0] == 401


async def test_nvr_without_account_needs_no_login(http: aiohttp.ClientSession) -> None:
    async with SimulatedNvr(username=None) as open_nvr:
        status, info = await call(http, open_nvr, "GET", "/system/getSystemInfo")
        assert (status, info["device_name"]) == (200, "Simulated NVR")
        async with http.ws_connect(ws_url(open_nvr, "status")) as ws:
            assert len(await next_json(ws)) == 4


@pytest.mark.parametrize(
    ("mode", "status", "result"),
    [("refuse", 200, "Error"), ("refuse401", 401, "Error"), ("error500", 500, "Error")],
)
async def test_login_modes_refuse_without_session(
    http: aiohttp.ClientSession, nvr: SimulatedNvr, mode: Any, status: int, result: str
) -> None:
    nvr.login_mode = mode
    answer_status, answer = await login(http, nvr)
    assert (answer_status, answer["Result"]) == (status, result)
    assert (nvr.logins, nvr.login_attempts) == (0, 1)
    nvr.login_mode = "ok"
    assert (await login(http, nvr))[1]["Result"] == "OK"


async def test_slow_login_answers_after_the_delay(
    http: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    nvr.login_mode, nvr.login_delay = "slow", 0.3
    started = time.monotonic()
    assert (await login(http, nvr))[1]["Result"] == "OK"
    assert time.monotonic() - started >= 0.3


# -- websocket streams ----------------------------------------------------------------


async def test_camera_status_sends_every_channel_at_once_then_every_second(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    async with client.ws_connect(ws_url(nvr, "status")) as ws:
        first = await next_json(ws, timeout=1.5)
        assert [s["ChannelID"] for s in first] == [1, 2, 3, 4]
        for entry in first:
            STREAM_MODELS["status"].model_validate(entry)
            assert entry == {
                "ChannelID": entry["ChannelID"],
                "Online": True,
                "Recording": False,
                "Event": False,
                "Manual": False,
            }
        assert len(await next_json(ws, timeout=1.5)) == 4
    assert (await call(client, nvr, "GET", "/device/cameraStatus")) == (200, first)


async def test_push_sends_objects_arrays_and_raw_text_as_given(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    async with client.ws_connect(ws_url(nvr, "event")) as ws:
        await until(lambda: nvr.clients("event") == 1)
        item = {"ChannelID": 2, "Type": "Motion", "State": "active"}
        await nvr.push("event", item)
        assert await next_json(ws) == item
        await nvr.push("event", [item, {"ChannelID": None, "Type": "Tag", "State": "once"}])
        assert len(await next_json(ws)) == 2
        for raw in ('{"ChannelID": 1, "Type": "Mot', "not json at all"):
            await nvr.push("event", raw)
            assert (await ws.receive(timeout=2)).data == raw
        await nvr.push("event", b"\xff\xfe garbage bytes")
        garbled = await ws.receive(timeout=2)
        assert garbled.type in {aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE}
    # Valid pushed events are searchable; raw text is not parsed.
    assert [(e.channel, e.type) for e in nvr.history.events] == [
        (2, "Motion"),
        (2, "Motion"),
        (None, "Tag"),
    ]


async def test_push_to_an_unknown_stream_is_an_error(nvr: SimulatedNvr) -> None:
    with pytest.raises(ValueError, match="stream must be one of"):
        await nvr.push("alarms", {})


async def test_add_event_reaches_event_clients_and_status(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    async with client.ws_connect(ws_url(nvr, "event")) as ws:
        await until(lambda: nvr.clients("event") == 1)
        body = {"ChannelID": 3, "Type": "Motion", "State": "active"}
        assert await call(client, nvr, "POST", "/meta/addEvent", body) == (200, {"Result": "OK"})
        assert await next_json(ws) == body
    [recorded] = nvr.calls_to("/meta/addEvent")
    assert (recorded.method, recorded.body, recorded.authorized) == ("POST", body, True)
    _, status = await call(client, nvr, "GET", "/device/cameraStatus")
    assert status[2] == {
        "ChannelID": 3,
        "Online": True,
        "Recording": True,
        "Event": True,
        "Manual": False,
    }
    assert len(nvr.history.events) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"ChannelID": 1, "Type": "Motion", "State": "on"},
        {"ChannelID": 5, "Type": "Motion", "State": "active"},
        {"ChannelID": "1", "Type": "Motion", "State": "active"},
        {"ChannelID": 1, "State": "active"},
        ["not", "an", "object"],
    ],
)
async def test_add_event_refuses_invalid_bodies(
    client: aiohttp.ClientSession, nvr: SimulatedNvr, body: Any
) -> None:
    status, answer = await call(client, nvr, "POST", "/meta/addEvent", body)
    assert (status, answer["Result"]) == (200, "Error")
    assert answer["Description"]
    assert not nvr.history.events


async def test_add_event_and_meta_over_websocket_are_broadcast(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    async with (
        client.ws_connect(ws_url(nvr, "event")) as events,
        client.ws_connect(ws_url(nvr, "meta")) as metas,
        client.ws_connect(nvr.url + "/meta/addEvent") as add_event,
        client.ws_connect(nvr.url + "/meta/addMeta") as add_meta,
    ):
        await until(lambda: nvr.clients("event") == nvr.clients("meta") == 1)
        await add_event.send_str("garbage")
        await add_event.send_json({"ChannelID": 1, "Type": "Tag", "State": "once"})
        assert await next_json(events) == {"ChannelID": 1, "Type": "Tag", "State": "once"}
        await add_meta.send_json({"ChannelID": 2, "Type": "LPR", "Data": "ABC123"})
        assert await next_json(metas) == {"ChannelID": 2, "Type": "LPR", "Data": "ABC123"}
    assert not nvr.calls


async def test_add_meta_reaches_meta_clients(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    async with client.ws_connect(ws_url(nvr, "meta")) as ws:
        await until(lambda: nvr.clients("meta") == 1)
        body = {"ChannelID": 1, "Type": "LPR", "Data": "XYZ"}
        assert (await call(client, nvr, "POST", "/meta/addMeta", body))[1] == {"Result": "OK"}
        assert await next_json(ws) == body
    bad = {"ChannelID": 1, "Type": "LPR", "Data": 5}
    assert (await call(client, nvr, "POST", "/meta/addMeta", bad))[1]["Result"] == "Error"


@pytest.mark.parametrize(
    ("path", "start", "stop"),
    [
        ("/record/manualRecord", "manualStart", "manualStop"),
        ("/record/manualAlarm", "manualAlarmStart", "manualAlarmStop"),
    ],
)
async def test_manual_commands_add_matching_metas(
    client: aiohttp.ClientSession, nvr: SimulatedNvr, path: str, start: str, stop: str
) -> None:
    async with client.ws_connect(ws_url(nvr, "meta")) as ws:
        await until(lambda: nvr.clients("meta") == 1)
        assert (await call(client, nvr, "POST", path, {"channel": 2, "command": "start"}))[1] == {
            "Result": "OK"
        }
        started = await next_json(ws)
        _, status = await call(client, nvr, "GET", "/device/cameraStatus")
        recording = path == "/record/manualRecord"
        assert (status[1]["Manual"], status[1]["Recording"]) == (recording, recording)
        await call(client, nvr, "POST", path, {"channel": 2, "command": "stop"})
        stopped = await next_json(ws)
    assert (started["ChannelID"], started["Type"]) == (2, start)
    assert (stopped["ChannelID"], stopped["Type"]) == (2, stop)
    assert orjson.loads(started["Data"]) == orjson.loads(stopped["Data"])
    assert isinstance(orjson.loads(started["Data"])["id"], int)
    _, found = await call(client, nvr, "POST", "/record/metaSearch", {"Type": [start, stop]})
    assert [m["Type"] for m in found] == [start, stop]
    bad = {"channel": 2, "command": "pause"}
    assert (await call(client, nvr, "POST", path, bad))[1]["Result"] == "Error"


# -- REST endpoints -------------------------------------------------------------------


async def test_ptz_presets_round_trip(client: aiohttp.ClientSession, nvr: SimulatedNvr) -> None:
    async def ptz(body: Any, channel: int = 1) -> Any:
        status, answer = await call(
            client, nvr, "POST", f"/device/ptzControl?ChannelID={channel}", body
        )
        assert status == 200
        return answer

    assert await ptz({"command": "pan_left", "speed": 3}) == {"Result": "OK"}
    assert await ptz({"command": "stop"}) == {"Result": "OK"}
    door = (await ptz({"command": "set_preset", "parameters": {"preset_name": "door"}}))[
        "PresetToken"
    ]
    gate = (await ptz({"command": "set_preset", "parameters": {"preset_name": "gate"}}))[
        "PresetToken"
    ]
    assert door != gate
    renamed = {"preset_name": "front door", "preset_token": door}
    assert await ptz({"command": "set_preset", "parameters": renamed}) == {"PresetToken": door}
    # Channel 1's camera came with two presets.
    assert await ptz({"command": "get_presets"}) == {
        "presets": [
            {"name": "Entrance", "preset_token": "1"},
            {"name": "Parking", "preset_token": "2"},
            {"name": "front door", "preset_token": door},
            {"name": "gate", "preset_token": gate},
        ]
    }
    # Channel 3's camera has no PTZ.
    assert (await ptz({"command": "get_presets"}, channel=3))["Result"] == "Error"
    goto = {"command": "goto_preset", "parameters": {"preset_token": gate, "speed": 0.5}}
    assert await ptz(goto) == {"Result": "OK"}
    picked = [{"name": "gate", "preset_token": gate, "time": 5}]
    tour = {"command": "start_tour", "parameters": {"picked_presets": picked}}
    assert await ptz(tour) == {"Result": "OK"}
    assert await ptz({"command": "get_tour_presets"}) == {
        "presets": [{"name": "gate", "preset_token": gate}]
    }
    assert await ptz({"command": "stop_tour"}) == {"Result": "OK"}
    remove = {"command": "remove_preset", "parameters": {"preset_token": door}}
    assert await ptz(remove) == {"Result": "OK"}
    assert (await ptz(remove))["Result"] == "Error"
    assert (await ptz({"command": "dance"}))["Result"] == "Error"
    assert (await ptz({"command": "stop"}, channel=9))["Result"] == "Error"


async def test_pins_can_be_set_and_read(client: aiohttp.ClientSession, nvr: SimulatedNvr) -> None:
    assert (await call(client, nvr, "POST", "/dio/pinManualSetting", {"pinID": 6, "pinValue": 1}))[
        1
    ] == {"Result": "OK"}
    for bad in ({"pinID": 9, "pinValue": 1}, {"pinID": 6, "pinValue": 2}, {"pinID": True}):
        answer = (await call(client, nvr, "POST", "/dio/pinManualSetting", bad))[1]
        assert answer["Result"] == "Error"
    _, pins = await call(client, nvr, "GET", "/dio/GetPinStatus")
    assert pins["pin_value"][5] == {"pinNum": 6, "pinVal": 1}
    assert [p["pinVal"] for p in pins["pin_value"]] == [0, 0, 0, 0, 0, 1, 0, 0]
    _, gpio = await call(client, nvr, "GET", "/dio/GetGPIOInfo")
    assert gpio[0] == {"ch": 0, "alarmIn": [1, 2, 3, 4], "alarmOut": [5, 6, 7, 8]}


async def test_buzzer_and_snapshot(client: aiohttp.ClientSession, nvr: SimulatedNvr) -> None:
    assert await call(client, nvr, "GET", "/system/callBuzzer?timeout=10") == (
        200,
        {"Result": "OK"},
    )
    for bad in ("0", "61", "x"):
        answer = (await call(client, nvr, "GET", f"/system/callBuzzer?timeout={bad}"))[1]
        assert answer["Result"] == "Error"
    _, snapshot = await call(client, nvr, "GET", "/device/getSnapshot?ChannelID=3")
    assert snapshot["snapshotPath"].startswith("/snapshot/ch3_")
    assert snapshot["snapshotPath"].endswith(".jpg")
    assert [c.query for c in nvr.calls_to("/device/getSnapshot")] == [{"ChannelID": "3"}]


async def test_system_info_and_camera_list(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    _, info = await call(client, nvr, "GET", "/system/getSystemInfo")
    assert info["device_name"] == "Simulated NVR"
    assert info["model"] == "EPN4208-SIM"
    assert (info["analog_channels"], info["ipcam_channels"]) == (0, 4)
    assert {"software_version", "serial", "device_id"} <= info.keys()
    _, cameras = await call(client, nvr, "GET", "/device/cameraList")
    assert [c["ChannelID"] for c in cameras] == [1, 2, 3, 4]
    assert not any("password" in key.lower() for c in cameras for key in c)


async def test_unknown_path_is_404_and_wrong_method_405(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    assert (await call(client, nvr, "GET", "/no/such/thing"))[0] == 404
    assert (await call(client, nvr, "GET", "/meta/addEvent"))[0] == 405


# -- history --------------------------------------------------------------------------


@pytest.fixture
def logged(nvr: SimulatedNvr) -> SimulatedNvr:
    """An NVR whose history holds a few events and metas around T0."""
    nvr.record_history("event", {"ChannelID": 1, "Type": "Motion", "State": "active"}, T0_MS)
    nvr.record_history(
        "event", {"ChannelID": 1, "Type": "Motion", "State": "inactive"}, T0_MS + 5_000
    )
    nvr.record_history(
        "event", {"ChannelID": 2, "Type": "InputAlarm", "State": "active"}, T0_MS + 10_000
    )
    nvr.record_history("event", {"ChannelID": 3, "Type": "Motion", "State": "once"}, T0_MS + 20_999)
    nvr.record_history("meta", {"ChannelID": 1, "Type": "LPR", "Data": "AB1"}, T0_MS + 1_000)
    nvr.record_history("meta", {"ChannelID": 2, "Type": "LPR", "Data": "CD2"}, T0_MS + 2_000)
    nvr.record_history("meta", {"ChannelID": 2, "Type": "Count", "Data": "3"}, T0_MS + 3_000)
    return nvr


async def test_event_search_filters_by_channel_time_and_type(
    client: aiohttp.ClientSession, logged: SimulatedNvr
) -> None:
    query = {
        "ChannelID": [1, 2],
        "StartTime": T0_S,
        "EndTime": T0_S + 10,
        "Type": ["Motion", "InputAlarm"],
        "Stream": "Main",
    }
    status, found = await call(client, logged, "POST", "/record/eventSearch", query)
    assert status == 200
    assert [(e["ChannelID"], e["Type"], e["State"]) for e in found] == [
        (1, "Motion", "active"),
        (1, "Motion", "inactive"),
        (2, "InputAlarm", "active"),
    ]
    first = found[0]
    assert (first["ev_start"], first["ev_end"], first["time"]) == (T0_S, T0_S, T0_MS)
    assert first["comment"] == "Motion-1"
    query = {**query, "Type": ["Motion"], "StartTime": T0_S + 1}
    assert len((await call(client, logged, "POST", "/record/eventSearch", query))[1]) == 1
    # EndTime is inclusive to the whole second.
    query = {"ChannelID": [3], "StartTime": T0_S, "EndTime": T0_S + 20}
    assert len((await call(client, logged, "POST", "/record/eventSearch", query))[1]) == 1
    bad = {"ChannelID": "all"}
    assert (await call(client, logged, "POST", "/record/eventSearch", bad))[1]["Result"] == "Error"


async def test_meta_search_filters_by_channel_time_and_type(
    client: aiohttp.ClientSession, logged: SimulatedNvr
) -> None:
    query = {"ChannelID": 2, "Type": "LPR", "StartTime": T0_S, "EndTime": T0_S + 60}
    _, found = await call(client, logged, "POST", "/record/metaSearch", query)
    assert found == [{"ChannelID": 2, "Type": "LPR", "Data": "CD2", "Timestamp": T0_MS + 2_000}]
    query = {"ChannelID": [1, 2], "StartTime": T0_S + 2, "EndTime": T0_S + 3}
    _, found = await call(client, logged, "POST", "/record/metaSearch", query)
    assert [m["Data"] for m in found] == ["CD2", "3"]


async def test_recorded_history_is_not_sent(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    async with client.ws_connect(ws_url(nvr, "event")) as ws:
        await until(lambda: nvr.clients("event") == 1)
        nvr.record_history("event", {"ChannelID": 1, "Type": "Motion", "State": "active"})
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=0.2)
    with pytest.raises(ValueError, match="not a valid event"):
        nvr.record_history("event", {"ChannelID": 1})
    with pytest.raises(ValueError, match="history"):
        nvr.record_history("status", {"ChannelID": 1})


def test_history_is_bounded_and_checks_query_types() -> None:
    history = History(limit=3)
    for second in range(5):
        history.record("meta", {"ChannelID": 1, "Type": "T", "Data": str(second)}, second * 1000)
    assert [m["Data"] for m in history.search_metas({})] == ["2", "3", "4"]
    for bad in ({"Type": 5}, {"StartTime": "now"}, {"ChannelID": [True]}, [1]):
        with pytest.raises(SearchError):
            history.search_events(bad)


# -- faults ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "status", "answer"),
    [
        ("error", 200, {"Result": "Error", "Description": "Simulated failure"}),
        ("http500", 500, {"Result": "Error", "Description": "Internal error"}),
        ("http404", 404, "404: Not Found"),
    ],
)
async def test_faults_fail_calls_that_are_still_recorded(
    client: aiohttp.ClientSession, nvr: SimulatedNvr, mode: Any, status: int, answer: Any
) -> None:
    nvr.set_fault("/system/getSystemInfo", mode)
    assert await call(client, nvr, "GET", "/system/getSystemInfo") == (status, answer)
    assert len(nvr.calls_to("/system/getSystemInfo")) == 1
    nvr.set_fault("/system/getSystemInfo", None)
    assert (await call(client, nvr, "GET", "/system/getSystemInfo"))[0] == 200


async def test_slow_fault_answers_normally_after_the_delay(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    nvr.set_fault("/system/callBuzzer", "slow", delay=0.3)
    started = time.monotonic()
    assert (await call(client, nvr, "GET", "/system/callBuzzer?timeout=1"))[1] == {"Result": "OK"}
    assert time.monotonic() - started >= 0.3


async def test_stop_does_not_wait_for_a_slow_call(client: aiohttp.ClientSession) -> None:
    sim = SimulatedNvr()
    await sim.start()
    await login(client, sim)
    sim.set_fault("/system/callBuzzer", "slow", delay=60)
    pending = asyncio.ensure_future(call(client, sim, "GET", "/system/callBuzzer?timeout=1"))
    await until(lambda: bool(sim.calls))
    started = time.monotonic()
    await sim.stop()
    assert time.monotonic() - started < 5
    # The call ends with the server: answered, or cut off.
    async with asyncio.timeout(5):
        with contextlib.suppress(aiohttp.ClientError):
            await pending


def test_unknown_fault_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="fault mode"):
        SimulatedNvr().set_fault("/x", "explode")  # type: ignore[arg-type]


# -- connection control ---------------------------------------------------------------


async def test_drop_websockets_closes_one_stream_or_all(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    async with (
        client.ws_connect(ws_url(nvr, "event")) as events,
        client.ws_connect(ws_url(nvr, "message")) as messages,
    ):
        await until(lambda: nvr.clients("event") == nvr.clients("message") == 1)
        await nvr.push("event", {"ChannelID": 1, "Type": "Motion", "State": "active"})
        await nvr.drop_websockets("event")
        # Frames already sent arrive before the close.
        assert (await next_json(events))["Type"] == "Motion"
        assert (await events.receive(timeout=2)).type is aiohttp.WSMsgType.CLOSE
        assert nvr.clients("event") == 0
        assert nvr.clients("message") == 1
        await nvr.drop_websockets()
        assert (await messages.receive(timeout=2)).type is aiohttp.WSMsgType.CLOSE
        assert nvr.clients("message") == 0


async def test_silent_nvr_sends_nothing_and_answers_no_ping(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    nvr.silent = True
    async with client.ws_connect(ws_url(nvr, "status"), autoping=False) as ws:
        await until(lambda: nvr.clients("status") == 1)
        await ws.ping(b"anyone?")
        await nvr.push("status", [{"ChannelID": 1}])
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=0.4)
        nvr.silent = False
        await ws.ping(b"now?")
        reply = await ws.receive(timeout=2)
        while reply.type is aiohttp.WSMsgType.TEXT:  # the status ticker may come first
            reply = await ws.receive(timeout=2)
        assert (reply.type, reply.data) == (aiohttp.WSMsgType.PONG, b"now?")
    # A silent NVR still notices a client that leaves.
    await until(lambda: nvr.clients("status") == 0)


async def test_a_stuck_client_is_dropped_without_starving_the_others(
    monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> None:
    monkeypatch.setattr(hub, "SEND_TIMEOUT", 0.2)
    monkeypatch.setattr(hub, "MAX_PENDING_FRAMES", 20)
    async with SimulatedNvr(username=None) as nvr:
        # A client that completes the handshake and then never reads.
        _, stuck = await asyncio.open_connection("127.0.0.1", nvr.port)
        stuck.write(
            b"GET /meta/eventHook HTTP/1.1\r\nHost: nvr\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        received = 0
        async with http.ws_connect(ws_url(nvr, "event")) as healthy:

            async def read() -> None:
                nonlocal received
                async for _ in healthy:
                    received += 1

            reader = asyncio.create_task(read())
            await until(lambda: nvr.clients("event") == 2)
            item = {"ChannelID": 1, "Type": "Motion", "State": "active", "pad": "x" * 16_000}
            pushed = 0
            async with asyncio.timeout(10):
                while nvr.clients("event") == 2:
                    await nvr.push("event", item)
                    pushed += 1
            await until(lambda: received == pushed)
            reader.cancel()
            await asyncio.wait([reader])
        stuck.close()


async def test_a_slow_login_the_client_gave_up_on_opens_no_session(
    http: aiohttp.ClientSession,
) -> None:
    async with SimulatedNvr() as nvr:
        nvr.login_mode, nvr.login_delay = "slow", 30
        with structlog.testing.capture_logs() as logs:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await login(http, nvr)
            await until(lambda: any(e["event"] == "login abandoned" for e in logs))
        assert (nvr.login_attempts, nvr.logins) == (1, 0)


async def test_burst_batches_valid_items_per_frame(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    async with client.ws_connect(ws_url(nvr, "event")) as ws:
        await until(lambda: nvr.clients("event") == 1)
        await nvr.burst("event", 7, per_frame=3)
        frames = [await next_json(ws) for _ in range(3)]
        assert [len(f) for f in frames] == [3, 3, 1]
        for item in (i for f in frames for i in f):
            EventHookMessage.model_validate(item)
        await nvr.burst("event", 2)
        singles = [await next_json(ws) for _ in range(2)]
        assert all(isinstance(s, dict) for s in singles)
    assert len(nvr.history.events) == 9


@pytest.mark.parametrize("stream", ["meta", "exception", "status", "message"])
async def test_burst_items_fit_each_stream(
    client: aiohttp.ClientSession, nvr: SimulatedNvr, stream: Any
) -> None:
    async with client.ws_connect(ws_url(nvr, stream)) as ws:
        await until(lambda: nvr.clients(stream) == 1)
        await nvr.burst(stream, 5, per_frame=5)
        frame = await next_json(ws)
        while len(frame) != 5:  # skip the status array sent on connect
            frame = await next_json(ws)
        for item in frame:
            STREAM_MODELS[stream].model_validate(item)


# -- the control API ------------------------------------------------------------------


async def test_control_api_drives_the_nvr(
    http: aiohttp.ClientSession, client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    async def control(path: str, body: Any = None, method: str = "POST") -> tuple[int, Any]:
        return await call(http, nvr, method, "/_sim/" + path, body)

    async with client.ws_connect(ws_url(nvr, "exception")) as ws:
        await until(lambda: nvr.clients("exception") == 1)
        _, state = await control("state", method="GET")
        assert state["clients"]["exception"] == 1
        assert (state["logins"], state["login_attempts"]) == (1, 1)
        item = {"exception": "DiskFull", "time": T0_MS}
        assert await control("push", {"stream": "exception", "payload": item}) == (
            200,
            {"Result": "OK"},
        )
        assert await next_json(ws) == item
        await control("push", {"stream": "exception", "raw": "{broken"})
        assert (await ws.receive(timeout=2)).data == "{broken"
        await control("burst", {"stream": "exception", "count": 2, "per_frame": 2})
        assert len(await next_json(ws)) == 2
        await control("drop", {"stream": None})
        assert (await ws.receive(timeout=2)).type is aiohttp.WSMsgType.CLOSE

    await control("fault", {"path": "/dio/GetPinStatus", "mode": "http500"})
    assert (await call(client, nvr, "GET", "/dio/GetPinStatus"))[0] == 500
    await control("fault", {"path": "/dio/GetPinStatus", "mode": None})
    assert (await call(client, nvr, "GET", "/dio/GetPinStatus"))[0] == 200
    _, calls = await control("calls?path=/dio/GetPinStatus", method="GET")
    assert [c["path"] for c in calls] == ["/dio/GetPinStatus"] * 2
    assert set(calls[0]) >= {"method", "path", "query", "body", "time"}

    item = {"ChannelID": 4, "Type": "Motion", "State": "active"}
    await control("history", {"stream": "event", "item": item, "time_ms": T0_MS})
    _, found = await call(client, nvr, "POST", "/record/eventSearch", {"ChannelID": [4]})
    assert [e["time"] for e in found] == [T0_MS]

    await control("silent", {"silent": True})
    assert nvr.silent
    await control("login_mode", {"mode": "refuse401", "delay": 1})
    assert (nvr.login_mode, nvr.login_delay) == ("refuse401", 1.0)
    await control("expire")
    assert (await call(client, nvr, "GET", "/dio/GetPinStatus"))[0] == 401

    for path, body in [
        ("push", {"stream": "nope", "payload": {}}),
        ("login_mode", {"mode": "maybe"}),
        ("fault", {"path": "/x", "mode": "explode"}),
        ("history", {"stream": "event", "item": {}}),
        ("burst", {"stream": "event", "count": 0}),
    ]:
        status, answer = await control(path, body)
        assert (status, answer["Result"]) == (400, "Error"), path
    assert (await control("nothing"))[0] == 404


# -- discovery, TLS, fleets, entry point ----------------------------------------------


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait(data)


async def _discover(port: int, count: int) -> list[Any]:
    loop = asyncio.get_running_loop()
    transport, collector = await loop.create_datagram_endpoint(
        _Collector, local_addr=("127.0.0.1", 0)
    )
    try:
        transport.sendto(b"hello?", ("127.0.0.1", port))
        transport.sendto(inquiry()[:-1] + b"\x07\x00", ("127.0.0.1", port))  # 23 bytes
        transport.sendto(b"\x00" * 22, ("127.0.0.1", port))
        transport.sendto(inquiry(), ("127.0.0.1", port))
        answers = [await asyncio.wait_for(collector.received.get(), 2) for _ in range(count)]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(collector.received.get(), 0.2)
    finally:
        transport.close()
    return [ElementTree.fromstring(a) for a in answers]


async def test_udp_discovery_answers_inquiries_and_ignores_garbage(nvr: SimulatedNvr) -> None:
    port = await nvr.start_discovery("127.0.0.1", 0)
    [info] = await _discover(port, 1)
    assert info.tag == "DeviceInfo"
    assert info.findtext("HttpPort") == str(nvr.port)
    assert info.findtext("DeviceName") == "Simulated NVR"
    assert info.findtext("IPChannels") == "4"
    assert info.findtext("Ipv4/Addr") == "127.0.0.1"
    assert info.findtext("MacAddr") == "00:04:4b:53:49:01"


async def test_fleet_runs_distinct_nvrs_and_answers_discovery_for_each(
    http: aiohttp.ClientSession,
) -> None:
    async with SimulatedFleet(3, username=None, channels=2) as fleet:
        ports = {nvr.port for nvr in fleet.nvrs}
        assert len(ports) == 3
        names = set()
        for nvr in fleet.nvrs:
            _, info = await call(http, nvr, "GET", "/system/getSystemInfo")
            names.add((info["device_name"], info["serial"]))
        assert len(names) == 3
        answers = await _discover(await fleet.start_discovery("127.0.0.1", 0), 3)
        assert {int(a.findtext("HttpPort")) for a in answers} == ports
    assert all(nvr.port for nvr in fleet.nvrs)


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "simulated nvr")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


async def test_tls_serves_https_and_wss(tmp_path: Path) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=cert_file)
    async with (
        SimulatedNvr(ssl_context=server_ssl_context(cert_file, key_file)) as nvr,
        aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=aiohttp.TCPConnector(ssl=trust),
        ) as session,
    ):
        assert nvr.url.startswith("https://127.0.0.1:")
        assert (await login(session, nvr))[1]["Result"] == "OK"
        async with session.ws_connect(ws_url(nvr, "status")) as ws:
            assert len(await next_json(ws)) == 4


async def test_run_simulator_prints_each_nvr_and_serves_until_cancelled(
    capsys: pytest.CaptureFixture[str], http: aiohttp.ClientSession
) -> None:
    task = asyncio.create_task(
        run_simulator(
            host="127.0.0.1",
            port=0,
            channels=2,
            username="admin",
            password="secret",
            traffic=True,
            count=2,
        )
    )
    printed: list[str] = []

    def both_printed() -> bool:
        # stdout also holds the simulator's log lines.
        lines = capsys.readouterr().out.splitlines()
        printed.extend(line for line in lines if line.startswith("Simulated NVR"))
        return len(printed) >= 2

    try:
        await until(both_printed)
        assert all("username=admin password=secret" in line for line in printed)
        url = printed[0].split()[-3]
        assert url.startswith("http://127.0.0.1:")
        async with http.get(url + "/admin/login") as response:
            assert (await response.json())["realm"] == "xnvr"
    finally:
        task.cancel()
        await asyncio.wait([task])
    assert task.cancelled()


async def test_traffic_produces_valid_items_and_stop_leaves_nothing_running(
    http: aiohttp.ClientSession,
) -> None:
    nvr = SimulatedNvr(traffic=True, traffic_rate=40, seed=3)
    await nvr.start()
    await login(http, nvr)
    async with http.ws_connect(ws_url(nvr, "event")) as ws:
        items = [await next_json(ws) for _ in range(4)]
    for item in items:
        assert item["Type"] in {"Motion", "InputAlarm"}
        EventHookMessage.model_validate(item)
    assert any(name.startswith("sim-traffic") for name in _task_names())
    await nvr.stop()
    await nvr.stop()
    assert not [name for name in _task_names() if name.startswith("sim-")]
    # A stopped NVR starts again, keeping its state.
    await nvr.start()
    assert nvr.history.events
    await nvr.stop()


def _task_names() -> list[str]:
    return [task.get_name() for task in asyncio.all_tasks()]


def test_camera_detail_messages_carry_a_password() -> None:
    device = DeviceState(4, rng=random.Random(1))
    item = message("cameraDetail", random.Random(1), DeviceIdentity("nvr", 4), device, 2)
    SystemMessage.model_validate(item)
    assert (item["message"], item["target"]) == ("cameraDetail", 2)
    assert item["content"]["Password"] == device.camera_passwords[2]
    assert item["content"]["ChannelID"] == 2
