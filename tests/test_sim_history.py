"""The simulated NVR's record maps (guide 5.1 to 5.3) and system log (9.25, 9.26)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridge.sim import SimulatedNvr
from bridge.sim.logs import SystemLog
from tests.test_sim import call, login

DAY_0 = 1_699_920_000  # 2023-11-14 00:00:00 UTC, a day (and hour) boundary
HOUR_0 = DAY_0 + 10 * 3600


@pytest.fixture
async def nvr() -> AsyncIterator[SimulatedNvr]:
    async with SimulatedNvr(channels=4, seed=17) as sim:
        yield sim


@pytest.fixture
async def client(nvr: SimulatedNvr) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=10)
    ) as session:
        status, answer = await login(session, nvr)
        assert (status, answer["Result"]) == (200, "OK")
        yield session


def event(nvr: SimulatedNvr, channel: int, state: str, second: int, kind: str = "Motion") -> None:
    nvr.record_history("event", {"ChannelID": channel, "Type": kind, "State": state}, second * 1000)


@pytest.fixture
def recorded(nvr: SimulatedNvr) -> SimulatedNvr:
    """Channel 1: motion 10:05:00-10:05:20 (so video 10:04:50-10:05:50) and a once at
    10:30:00 (10:29:50-10:30:30); channel 2: manual record 10:00:00-10:01:00 on day 2."""
    event(nvr, 1, "active", HOUR_0 + 300)
    event(nvr, 1, "inactive", HOUR_0 + 320)
    event(nvr, 1, "once", HOUR_0 + 1800, "Tag")
    start = {"ChannelID": 2, "Type": "manualStart", "Data": '{"id": 1}'}
    stop = {"ChannelID": 2, "Type": "manualStop", "Data": '{"id": 1}'}
    nvr.record_history("meta", start, (HOUR_0 + 86_400) * 1000)
    nvr.record_history("meta", stop, (HOUR_0 + 86_400 + 60) * 1000)
    return nvr


def query(channels: list[int], start: int, end: int, **extra: Any) -> dict[str, Any]:
    return {"ChannelIDs": channels, "StartTime": start, "EndTime": end, "mainsub": 1, **extra}


# -- record maps ----------------------------------------------------------------------


async def test_map_by_day_marks_days_with_video(
    client: aiohttp.ClientSession, recorded: SimulatedNvr
) -> None:
    body = query([1, 2, 3], DAY_0 - 86_400, DAY_0 + 3 * 86_400 - 1)
    status, answer = await call(client, recorded, "POST", "/record/getMapByDay", body)
    assert status == 200
    assert answer == {
        "StartTime": DAY_0 - 86_400,
        "EndTime": DAY_0 + 3 * 86_400 - 1,
        "CH1": "-+--",
        "CH2": "--+-",
        "CH3": "----",
    }


async def test_map_by_day_is_cut_to_35_days(
    client: aiohttp.ClientSession, recorded: SimulatedNvr
) -> None:
    body = query([1], DAY_0, DAY_0 + 100 * 86_400)
    _, answer = await call(client, recorded, "POST", "/record/getMapByDay", body)
    assert answer["EndTime"] == DAY_0 + 35 * 86_400 - 1
    assert answer["CH1"] == "+" + "-" * 34


async def test_map_by_minute_has_one_string_of_minutes_per_hour(
    client: aiohttp.ClientSession, recorded: SimulatedNvr
) -> None:
    body = query([1], HOUR_0 - 3600, HOUR_0 + 3600 - 1, mainsub=2)
    _, answer = await call(client, recorded, "POST", "/record/getMapByMinute", body)
    first_hour, second_hour = answer["CH1"]
    assert first_hour == "-" * 60
    # 10:04:50-10:05:50 touches minutes 4 and 5; 10:29:50-10:30:30 minutes 29 and 30.
    expected = ["-"] * 60
    for minute in (4, 5, 29, 30):
        expected[minute] = "+"
    assert second_hour == "".join(expected)
    cut = query([1], HOUR_0, HOUR_0 + 48 * 3600)
    _, answer = await call(client, recorded, "POST", "/record/getMapByMinute", cut)
    assert answer["EndTime"] == HOUR_0 + 24 * 3600 - 1
    assert len(answer["CH1"]) == 24 and {len(h) for h in answer["CH1"]} == {60}


async def test_map_by_second_has_one_string_of_seconds_per_minute(
    client: aiohttp.ClientSession, recorded: SimulatedNvr
) -> None:
    body = query([1], HOUR_0 + 4 * 60, HOUR_0 + 6 * 60 - 1)
    _, answer = await call(client, recorded, "POST", "/record/getMapBySecond", body)
    assert answer["CH1"] == ["-" * 50 + "+" * 10, "+" * 51 + "-" * 9]
    cut = query([1], HOUR_0 + 17, HOUR_0 + 7200)
    _, answer = await call(client, recorded, "POST", "/record/getMapBySecond", cut)
    assert answer["EndTime"] == HOUR_0 + 17 + 3599
    assert len(answer["CH1"]) == 60


async def test_an_event_still_active_records_until_now(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    await nvr.push("event", {"ChannelID": 3, "Type": "Motion", "State": "active"})
    now = int(time.time())
    body = query([3], now - 59, now)
    _, answer = await call(client, nvr, "POST", "/record/getMapBySecond", body)
    assert answer["CH3"][0].endswith("+" * 10)


@pytest.mark.parametrize("path", ["getMapByDay", "getMapByMinute", "getMapBySecond"])
@pytest.mark.parametrize(
    "body",
    [
        query([], DAY_0, DAY_0 + 1),
        query([1, 2, 3, 4, 1], DAY_0, DAY_0 + 1),
        query([5], DAY_0, DAY_0 + 1),
        query(["1"], DAY_0, DAY_0 + 1),
        query([1], DAY_0 + 10, DAY_0),
        query([1], "today", DAY_0),
        query([1], DAY_0, DAY_0 + 1, mainsub=3),
        {"ChannelIDs": [1]},
        [1],
    ],
)
async def test_record_maps_refuse_bad_bodies(
    client: aiohttp.ClientSession, nvr: SimulatedNvr, path: str, body: Any
) -> None:
    status, answer = await call(client, nvr, "POST", f"/record/{path}", body)
    assert (status, answer["Result"]) == (200, "Error")


@pytest.mark.parametrize(
    ("path", "start"), [("getMapByDay", HOUR_0), ("getMapByMinute", HOUR_0 + 60)]
)
async def test_maps_by_day_and_minute_need_an_aligned_start(
    client: aiohttp.ClientSession, nvr: SimulatedNvr, path: str, start: int
) -> None:
    _, answer = await call(client, nvr, "POST", f"/record/{path}", query([1], start, start + 60))
    assert answer["Result"] == "Error" and "boundary" in answer["Description"]


# -- the system log -------------------------------------------------------------------


async def test_search_logs_has_logins_commands_and_what_the_streams_said(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    await call(client, nvr, "POST", "/record/manualAlarm", {"channel": 1, "command": "start"})
    await call(client, nvr, "POST", "/dio/pinManualSetting", {"pinID": 7, "pinValue": 1})
    await call(client, nvr, "GET", "/system/callBuzzer?timeout=3")
    await nvr.push("event", {"ChannelID": 2, "Type": "Motion", "State": "active"})
    await nvr.push("exception", {"exception": "DiskFull", "time": 1})
    await nvr.push("message", {"message": "network", "time": 1, "content": {}})
    body = {"type": "All", "startTime": 0, "endTime": 0}
    status, logs = await call(client, nvr, "POST", "/system/searchLogs", body)
    assert status == 200
    assert [(e["type"], e["description"]) for e in logs] == [
        ("System", "System Startup"),
        ("System", "Login"),
        ("Alarm", "Manual Alarm Start"),
        ("Alarm", "Alarm Out 7 On"),
        ("System", "Call Buzzer"),
        ("Alarm", "Motion Start"),
        ("Storage", "Disk Full"),
        ("Configuration", "Network Settings"),
    ]
    login_line, motion = logs[1], logs[5]
    assert login_line["user"] == "admin" and "channel" not in login_line
    assert (motion["channel"], motion["hasRecord"]) == (2, 1)
    assert all(isinstance(e["createTime"], int) and e["hasRecord"] in (0, 1) for e in logs)
    times = [e["createTime"] for e in logs]
    assert times == sorted(times)
    only = {"type": "Storage", "startTime": 0, "endTime": 0}
    _, storage = await call(client, nvr, "POST", "/system/searchLogs", only)
    assert [e["description"] for e in storage] == ["Disk Full"]


async def test_failed_logins_and_logouts_are_logged(nvr: SimulatedNvr) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        await login(session, nvr, password="wrong")
        await login(session, nvr)
        await call(session, nvr, "GET", "/admin/logout")
    assert [(e.description, e.user) for e in nvr.log.entries][-3:] == [
        ("Login Failed", "admin"),
        ("Login", "admin"),
        ("Logout", "admin"),
    ]


async def test_search_logs_bounds_are_inclusive_milliseconds(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    nvr.log.entries.clear()
    for offset in (0, 500, 1000, 2000):
        nvr.log.add("Record", f"at {offset}", time_ms=1_700_000_000_000 + offset)

    async def found(start: int, end: int, kind: str = "All") -> list[str]:
        body = {"type": kind, "startTime": start, "endTime": end}
        _, logs = await call(client, nvr, "POST", "/system/searchLogs", body)
        return [e["description"] for e in logs]

    base = 1_700_000_000_000
    assert await found(base + 500, base + 1000) == ["at 500", "at 1000"]
    assert await found(0, base + 499) == ["at 0"]
    assert await found(base + 1001, 0) == ["at 2000"]
    assert await found(0, 0, "Alarm") == []


@pytest.mark.parametrize(
    "body",
    [
        {"type": "Everything", "startTime": 0, "endTime": 0},
        {"startTime": 0, "endTime": 0},
        {"type": "All", "startTime": -1, "endTime": 0},
        {"type": "All", "startTime": 0},
        {"type": "All", "startTime": 0, "endTime": 1.5},
        ["All"],
    ],
)
async def test_search_logs_refuses_bad_bodies(
    client: aiohttp.ClientSession, nvr: SimulatedNvr, body: Any
) -> None:
    status, answer = await call(client, nvr, "POST", "/system/searchLogs", body)
    assert (status, answer["Result"]) == (200, "Error")


async def test_add_logs_adds_entries_that_search_finds(
    client: aiohttp.ClientSession, nvr: SimulatedNvr
) -> None:
    entry = {
        "type": "Account",
        "description": "Modify User",
        "channel": 2,
        "createTime": 1_700_000_000_123,
        "user": "operator",
        "hasRecord": True,
    }
    assert await call(client, nvr, "POST", "/system/addLogs", [entry]) == (200, {"Result": "OK"})
    body = {"type": "Account", "startTime": 0, "endTime": 0}
    _, logs = await call(client, nvr, "POST", "/system/searchLogs", body)
    assert logs == [{**entry, "hasRecord": 1}]
    for bad in ([{**entry, "type": "Fun"}], [{**entry, "hasRecord": 1}], [{"type": "System"}]):
        assert (await call(client, nvr, "POST", "/system/addLogs", bad))[1]["Result"] == "Error"


def test_the_log_is_bounded_and_answers_at_most_4000() -> None:
    log = SystemLog(limit=5_000)
    for n in range(5_000):
        log.add("Record", str(n), time_ms=n + 1)
    found = log.search({"type": "All", "startTime": 0, "endTime": 10_000})
    assert len(found) == 4_000 and found[0]["description"] == "0"
    small = SystemLog(limit=2)
    for n in range(3):
        small.add("Record", str(n))
    assert [e.description for e in small.entries] == ["1", "2"]
