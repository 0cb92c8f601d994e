"""The rest of the NVR on MQTT (CONTRACT section 7), end to end over real sockets.

Pins, storage, manual alarm and record state, PTZ presets, the history and state
queries, outage reports, a stale status stream and the cameraDetail refresh, each
checked against a real broker and the simulated NVR over HTTP and websockets. The
snapshots of section 7.1 are in ``tests/test_nvr_snapshots.py``. ``make_config`` turns
the pin, storage and preset readers off; each test here turns on the ones it is about.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from bridge.config import NvrConfig
from bridge.sim import SimulatedNvr
from bridge.sim.calls import RecordedCall
from bridge.sim.device import DeviceState
from bridge.sim.rest import Answer
from bridge.sim.storage import Storage
from tests.conftest import (
    BrokerProcess,
    Received,
    RunningBridge,
    Watcher,
    all_streams_connected,
    eventually,
    make_config,
    metric_value,
    nvr_config,
    watch,
)
from tests.test_faults import captured_logs, logged, wait_for_log

pytestmark = pytest.mark.asyncio

# Not "admin": the bridge masks the configured password wherever it occurs, and the NVR's
# answers name the user "admin" everywhere, which would blur every comparison of results.
SIM_PASSWORD = "Sim-Pw-7q2x"
STREAMS = ("event", "meta", "exception", "status", "message")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
PINS = tuple(range(1, 9))
# The readers' intervals when a test needs them to poll: fast, so tests stay short.
FAST = 0.2


# --- set-up and helpers -------------------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[SimulatedNvr]:
    """A quiet simulated NVR whose password differs from its user name."""
    async with SimulatedNvr(channels=4, traffic=False, password=SIM_PASSWORD) as nvr:
        yield nvr


@pytest.fixture
async def other_sim() -> AsyncIterator[SimulatedNvr]:
    """A second quiet simulated NVR."""
    async with SimulatedNvr(
        channels=4, traffic=False, password=SIM_PASSWORD, name="Other NVR"
    ) as nvr:
        yield nvr


def config_of(sim: SimulatedNvr, nvr_id: str = "nvr1") -> NvrConfig:
    return nvr_config(sim, nvr_id, password=SecretStr(SIM_PASSWORD))


StartBridge = Callable[..., Awaitable[RunningBridge]]


async def start_online(
    start_bridge: StartBridge,
    broker: BrokerProcess,
    base_topic: str,
    sims: list[SimulatedNvr] | SimulatedNvr,
    **overrides: Any,
) -> RunningBridge:
    """A bridge of ``sims`` (ids nvr1, nvr2...), online with every stream connected."""
    listed = sims if isinstance(sims, list) else [sims]
    nvrs = [config_of(s, f"nvr{i}") for i, s in enumerate(listed, start=1)]
    running = await start_bridge(make_config(broker, base_topic, nvrs, **overrides))
    await running.wait_online()
    for each in listed:
        await all_streams_connected(each)
    return running


async def request(w: Watcher, base: str, command: str, payload: Any, nvr: str = "nvr1") -> None:
    data = payload if isinstance(payload, bytes | str) else orjson.dumps(payload)
    await w.publish(f"{base}/{nvr}/request/{command}", data, qos=1)


async def response(
    w: Watcher, base: str, command: str, transaction: Any, nvr: str = "nvr1", timeout: float = 10
) -> dict[str, Any]:
    """The response to the request of ``command`` carrying ``transaction``."""

    def find() -> dict[str, Any] | None:
        for m in w.on(f"{base}/{nvr}/response/{command}"):
            body = m.json()
            if body.get("transaction") == transaction:
                return body
        return None

    return await w.wait_for(find, timeout, what=f"response to {command} {transaction}")


async def ask(
    w: Watcher, base: str, command: str, payload: dict[str, Any], nvr: str = "nvr1"
) -> dict[str, Any]:
    """Send a request with a fresh transaction and return its response."""
    transaction = uuid.uuid4().hex
    await request(w, base, command, {**payload, "transaction": transaction}, nvr)
    return await response(w, base, command, transaction, nvr)


async def retained(broker: BrokerProcess, topic: str) -> Received:
    """The retained message of ``topic``, as a client subscribing now receives it."""
    async with watch(broker, topic) as w:
        message = (await w.wait_topic(topic, timeout=5))[0]
    assert message.retain, f"{topic} is not retained"
    return message


def texts(w: Watcher, topic: str) -> list[str]:
    return [m.text for m in w.on(topic)]


def index_of(w: Watcher, topic: str, nth: int = 0) -> int:
    """The position of the ``nth`` message on ``topic`` among all the watcher saw."""
    positions = [i for i, m in enumerate(w.messages) if m.topic == topic]
    return positions[nth]


def calls_with(sim: SimulatedNvr, path: str, **query: str) -> list[RecordedCall]:
    return [c for c in sim.calls_to(path) if all(c.query.get(k) == v for k, v in query.items())]


async def calls_grow(sim: SimulatedNvr, path: str, more: int, timeout: float = 10) -> int:
    """Wait until ``path`` was called ``more`` times beyond now: the readers' clock."""
    target = len(sim.calls_to(path)) + more
    await eventually(
        lambda: len(sim.calls_to(path)) >= target,
        timeout=timeout,
        what=f"{more} more calls to {path}",
    )
    return len(sim.calls_to(path))


def freeze_storage(sim: SimulatedNvr) -> None:
    """Disks that are full (the NVR overwrites the oldest video): their figures stay put.

    The simulator's disks fill a little every second; full ones report the same answer
    on every poll, so "unchanged" is exact.
    """
    sim.storage = sim.rest.storage = Storage(sim.identity.serial, 4, started=0.0)


def polls(running: RunningBridge, poll: str, outcome: str, nvr: str = "nvr1") -> float:
    return metric_value(
        running.bridge, "nvr_bridge_nvr_polls_total", nvr=nvr, poll=poll, outcome=outcome
    )


def commands(running: RunningBridge, command: str, outcome: str, nvr: str = "nvr1") -> float:
    return metric_value(
        running.bridge, "nvr_bridge_commands_total", nvr=nvr, command=command, outcome=outcome
    )


def reconnects(running: RunningBridge, stream: str, nvr: str = "nvr1") -> float:
    return metric_value(
        running.bridge, "nvr_bridge_stream_reconnects_total", nvr=nvr, stream=stream
    )


async def event_flows(
    broker: BrokerProcess, base: str, sim: SimulatedNvr, nvr: str = "nvr1", within: float = 2.0
) -> float:
    """An event the NVR sends now is published within ``within`` s; returns the delay."""
    kind = f"Probe{uuid.uuid4().hex[:6]}"
    topic = f"{base}/{nvr}/channel/1/event/{kind}"
    async with watch(broker, topic) as w:
        started = time.monotonic()
        await sim.push("event", {"ChannelID": 1, "Type": kind, "State": "once"})
        await w.wait_topic(topic, timeout=within)
        return time.monotonic() - started


def parse_time(text: str) -> datetime:
    assert TIMESTAMP.match(text), text
    return datetime.fromisoformat(text)


# --- 7.2 digital inputs and outputs -------------------------------------------------------


async def test_pins_after_login_then_each_pin_state_on_first_sight_and_on_change_only(
    broker, base_topic, sim, start_bridge
):
    """`pins` lists inputs 1-4 and outputs 5-8; pin states come once, then on change only."""
    prefix = f"{base_topic}/nvr1"
    async with watch(broker, f"{prefix}/#") as w:
        await start_online(start_bridge, broker, base_topic, sim, pin_poll_interval=FAST)
        pins = (await w.wait_topic(f"{prefix}/pins"))[0].json()
        await w.wait_for(
            lambda: all(w.on(f"{prefix}/pin/{n}/state") for n in PINS), what="every pin state"
        )
        # Several polls of an unchanged NVR publish nothing more.
        await calls_grow(sim, "/dio/GetPinStatus", 4)
        assert {n: texts(w, f"{prefix}/pin/{n}/state") for n in PINS} == {n: ["0"] for n in PINS}
        sim.set_input_pin(2, 1)
        await w.wait_for(
            lambda: texts(w, f"{prefix}/pin/2/state") == ["0", "1"], what="input 2 changed"
        )
        await calls_grow(sim, "/dio/GetPinStatus", 4)
        sim.set_input_pin(2, 0)
        await w.wait_for(
            lambda: texts(w, f"{prefix}/pin/2/state") == ["0", "1", "0"], what="input 2 back"
        )
        await calls_grow(sim, "/dio/GetPinStatus", 3)
    assert set(pins) == {"nvr", "inputs", "outputs", "gpio", "timestamp"}
    assert pins["nvr"] == "nvr1"
    assert pins["inputs"] == [1, 2, 3, 4]
    assert pins["outputs"] == [5, 6, 7, 8]
    assert pins["gpio"] == sim.device.gpio_info()
    assert TIMESTAMP.match(pins["timestamp"])
    assert len(w.on(f"{prefix}/pins")) == 1
    assert len(sim.calls_to("/dio/GetGPIOInfo")) == 1
    assert {n: texts(w, f"{prefix}/pin/{n}/state") for n in PINS if n != 2} == {
        n: ["0"] for n in PINS if n != 2
    }
    assert (await retained(broker, f"{prefix}/pins")).json()["inputs"] == [1, 2, 3, 4]
    assert (await retained(broker, f"{prefix}/pin/2/state")).text == "0"
    assert (await retained(broker, f"{prefix}/pin/7/state")).text == "0"


async def test_set_pin_is_confirmed_on_the_state_topic_at_once_not_at_the_next_poll(
    broker, base_topic, sim, start_bridge
):
    """After set_pin (JSON or pin/{n}/set) the state topic confirms it within a second or so."""
    prefix = f"{base_topic}/nvr1"
    async with watch(broker, f"{prefix}/#") as w:
        await start_online(start_bridge, broker, base_topic, sim, pin_poll_interval=30)
        await w.wait_for(
            lambda: all(w.on(f"{prefix}/pin/{n}/state") for n in PINS), what="every pin state"
        )
        started = time.monotonic()
        answer = await ask(w, base_topic, "set_pin", {"pin": 6, "value": 1})
        assert answer["status"] == "ok", answer
        await w.wait_for(
            lambda: texts(w, f"{prefix}/pin/6/state") == ["0", "1"], 3, "pin 6 confirmed"
        )
        await w.publish(f"{prefix}/pin/7/set", b"ON", qos=1)
        await w.wait_for(
            lambda: texts(w, f"{prefix}/pin/7/state") == ["0", "1"], 3, "pin 7 confirmed"
        )
        await w.publish(f"{prefix}/pin/7/set", b"0", qos=1)
        await w.wait_for(
            lambda: texts(w, f"{prefix}/pin/7/state") == ["0", "1", "0"], 3, "pin 7 off"
        )
        elapsed = time.monotonic() - started
    assert elapsed < 10, f"the confirmations took {elapsed:.1f} s; the poll interval is 30 s"
    assert [c.body for c in sim.calls_to("/dio/pinManualSetting")] == [
        {"pinID": 6, "pinValue": 1},
        {"pinID": 7, "pinValue": 1},
        {"pinID": 7, "pinValue": 0},
    ]
    assert [m.json()["status"] for m in w.on(f"{prefix}/response/set_pin")] == ["ok"] * 3
    assert texts(w, f"{prefix}/pin/6/state") == ["0", "1"]


async def test_readers_turned_off_publish_nothing_and_ask_nothing(
    broker, base_topic, sim, start_bridge
):
    """pin_poll_interval=0, storage_poll_interval=0, ptz_presets=false: no such topics."""
    prefix = f"{base_topic}/nvr1"
    async with watch(broker, f"{prefix}/#") as w:
        await start_online(
            start_bridge,
            broker,
            base_topic,
            sim,
            pin_poll_interval=0,
            storage_poll_interval=0,
            ptz_presets=False,
        )
        await w.wait_topic(f"{prefix}/info")
        assert (await ask(w, base_topic, "set_pin", {"pin": 5, "value": 1}))["status"] == "ok"
        assert (await ask(w, base_topic, "system_info", {}))["status"] == "ok"
    topics = {m.topic for m in w.messages}
    assert not [t for t in topics if t.startswith((f"{prefix}/pin", f"{prefix}/storage"))]
    assert not [t for t in topics if "/ptz/" in t]
    assert sim.calls_to("/dio/GetGPIOInfo") == []
    assert sim.calls_to("/dio/GetPinStatus") == []
    assert sim.calls_to("/storage/getStorages") == []
    assert sim.calls_to("/device/ptzControl") == []


@pytest.mark.parametrize("mode", ["error", "garbage", "http500"])
async def test_a_failing_pin_poll_is_logged_once_counted_retried_and_leaves_the_streams(
    broker, base_topic, sim, start_bridge, mode
):
    """GetPinStatus failing: one log line, polls_total{outcome=error}, retried; streams fine."""
    prefix = f"{base_topic}/nvr1"
    sim.set_fault("/dio/GetPinStatus", mode)
    with captured_logs() as logs:
        async with watch(broker, f"{prefix}/#") as w:
            running = await start_online(
                start_bridge, broker, base_topic, sim, pin_poll_interval=FAST
            )
            await w.wait_topic(f"{prefix}/pins")
            await calls_grow(sim, "/dio/GetPinStatus", 5)
            failed = logged(logs, "nvr poll failed", endpoint="/dio/GetPinStatus")
            assert len(failed) == 1, failed
            assert failed[0]["log_level"] == "warning"
            assert polls(running, "pins", "error") >= 4
            assert polls(running, "pins", "ok") == 0
            assert not logged(logs, "nvr poll works again")
            assert not w.matching(f"{prefix}/pin/")
            assert await event_flows(broker, base_topic, sim) < 2
            assert all(reconnects(running, s) == 0 for s in STREAMS)
            assert running.bridge.nvrs["nvr1"].online
            # Once the NVR answers again, the next poll publishes every pin.
            sim.set_fault("/dio/GetPinStatus", None)
            await w.wait_for(
                lambda: all(w.on(f"{prefix}/pin/{n}/state") for n in PINS), what="pins back"
            )
            await wait_for_log(logs, "nvr poll works again", endpoint="/dio/GetPinStatus")
    assert len(logged(logs, "nvr poll failed", endpoint="/dio/GetPinStatus")) == 1
    assert polls(running, "pins", "ok") >= 1


async def test_a_pin_status_answering_404_is_not_asked_again_until_the_next_login(
    broker, base_topic, sim, start_bridge
):
    """404: logged once, counted unsupported, no more calls; after a new login asked again."""
    prefix = f"{base_topic}/nvr1"
    sim.set_fault("/dio/GetPinStatus", "http404")
    with captured_logs() as logs:
        async with watch(broker, f"{prefix}/#") as w:
            running = await start_online(
                start_bridge,
                broker,
                base_topic,
                sim,
                pin_poll_interval=FAST,
                storage_poll_interval=FAST,
            )
            await w.wait_topic(f"{prefix}/pins")
            # The storage poller at the same interval is the clock: five of its polls.
            await calls_grow(sim, "/storage/getStorages", 5)
            assert len(sim.calls_to("/dio/GetPinStatus")) == 1
            assert polls(running, "pins", "unsupported") == 1
            assert polls(running, "pins", "error") == 0
            assert len(logged(logs, "nvr does not serve", endpoint="/dio/GetPinStatus")) == 1
            assert await event_flows(broker, base_topic, sim) < 2
            # A new login: the sessions expire and the streams are cut.
            logins = sim.logins
            sim.expire_sessions()
            await sim.drop_websockets()
            await eventually(lambda: sim.logins > logins, what="a new login")
            await all_streams_connected(sim)
            await running.wait_online()
            await eventually(
                lambda: len(sim.calls_to("/dio/GetPinStatus")) == 2, what="asked again"
            )
            await calls_grow(sim, "/storage/getStorages", 5)
    assert len(sim.calls_to("/dio/GetPinStatus")) == 2
    assert not w.matching(f"{prefix}/pin/")


async def test_a_new_login_while_the_streams_stay_up_reads_the_pins_afresh(
    broker, base_topic, sim, start_bridge
):
    """A session re-login (streams untouched) is a login: GPIO info read, 404 asked again."""
    prefix = f"{base_topic}/nvr1"
    sim.set_fault("/dio/GetPinStatus", "http404")
    async with watch(broker, f"{prefix}/#") as w:
        await start_online(
            start_bridge, broker, base_topic, sim, pin_poll_interval=FAST, storage_poll_interval=0
        )
        await w.wait_topic(f"{prefix}/pins")
        logins = sim.logins
        sim.expire_sessions()
        # Activity: a query's REST call meets the 401, the bridge logs in again.
        assert (await ask(w, base_topic, "system_info", {}))["status"] == "ok"
        assert sim.logins == logins + 1
        assert all(sim.clients(s) == 1 for s in STREAMS)
        await eventually(
            lambda: len(sim.calls_to("/dio/GetGPIOInfo")) >= 2,
            timeout=5,
            what="GetGPIOInfo read again after the new login",
        )
        await eventually(
            lambda: len(sim.calls_to("/dio/GetPinStatus")) >= 2,
            timeout=5,
            what="the 404 endpoint asked again after the new login",
        )


async def test_readers_pause_while_offline_and_publish_afresh_after_the_next_login(
    broker, base_topic, sim, start_bridge
):
    """Offline: no polls. After the next login: pins, every pin state and storage again."""
    prefix = f"{base_topic}/nvr1"
    freeze_storage(sim)
    async with watch(broker, f"{prefix}/#") as w:
        running = await start_online(
            start_bridge,
            broker,
            base_topic,
            sim,
            pin_poll_interval=FAST,
            storage_poll_interval=FAST,
        )
        await w.wait_for(lambda: all(w.on(f"{prefix}/pin/{n}/state") for n in PINS), what="pins")
        await w.wait_topic(f"{prefix}/storage")
        sim.login_mode = "refuse"
        sim.expire_sessions()
        await sim.drop_websockets()
        await eventually(lambda: not running.bridge.nvrs["nvr1"].online, what="offline")
        pin_calls = len(sim.calls_to("/dio/GetPinStatus"))
        storage_calls = len(sim.calls_to("/storage/getStorages"))
        errors = polls(running, "pins", "error") + polls(running, "storage", "error")
        # The bridge's login attempts, every backoff, are the clock while it is offline.
        attempts = sim.login_attempts
        await eventually(lambda: sim.login_attempts >= attempts + 6, what="login attempts")
        assert len(sim.calls_to("/dio/GetPinStatus")) <= pin_calls + 1
        assert len(sim.calls_to("/storage/getStorages")) <= storage_calls + 1
        assert polls(running, "pins", "error") + polls(running, "storage", "error") <= errors + 2
        sim.login_mode = "ok"
        await all_streams_connected(sim)
        await running.wait_online()
        await w.wait_topic(f"{prefix}/pins", 2)
        await w.wait_for(
            lambda: all(len(w.on(f"{prefix}/pin/{n}/state")) == 2 for n in PINS),
            what="every pin state afresh",
        )
        await w.wait_topic(f"{prefix}/storage", 2)
    assert {n: texts(w, f"{prefix}/pin/{n}/state") for n in PINS} == {n: ["0", "0"] for n in PINS}
    assert (
        w.on(f"{prefix}/storage")[0].json()["disks"] == w.on(f"{prefix}/storage")[1].json()["disks"]
    )
    assert (
        metric_value(
            running.bridge,
            "nvr_bridge_nvr_request_seconds_count",
            nvr="nvr1",
            endpoint="/dio/GetPinStatus",
        )
        >= 2
    )


# --- 7.3 storage ----------------------------------------------------------------------------


async def test_storage_after_login_and_on_change_never_for_an_unchanged_poll(
    broker, base_topic, sim, start_bridge
):
    """`storage` carries getStorages' disks; republished only when they change."""
    prefix = f"{base_topic}/nvr1"
    topic = f"{prefix}/storage"
    freeze_storage(sim)
    async with watch(broker, f"{prefix}/#") as w:
        await start_online(start_bridge, broker, base_topic, sim, storage_poll_interval=FAST)
        first = (await w.wait_topic(topic))[0].json()
        await calls_grow(sim, "/storage/getStorages", 4)
        assert len(w.on(topic)) == 1
        assert sim.storage.disk_error("sda")
        second = (await w.wait_topic(topic, 2))[1].json()
        await calls_grow(sim, "/storage/getStorages", 4)
    assert set(first) == {"nvr", "disks", "timestamp"}
    assert first["nvr"] == "nvr1"
    assert TIMESTAMP.match(first["timestamp"])
    assert [d["device"] for d in first["disks"]] == ["/dev/sda", "/dev/sdb"]
    assert [d["active"] for d in first["disks"]] == [True, True]
    assert [d["active"] for d in second["disks"]] == [False, True]
    assert second["disks"] == sim.storage.disks()
    assert len(w.on(topic)) == 2
    assert (await retained(broker, topic)).json()["disks"] == second["disks"]


# --- 7.4 manual alarm and manual record state -----------------------------------------------


async def test_manual_alarm_state_follows_the_meta_hook_on_change_only(
    broker, base_topic, sim, start_bridge
):
    """manual_alarm start/stop -> channel/{ch}/alarm/state active/inactive, once per change."""
    prefix = f"{base_topic}/nvr1/channel/2"
    async with watch(broker, f"{base_topic}/nvr1/#") as w:
        await start_online(start_bridge, broker, base_topic, sim)
        for command in ("start", "start", "stop", "stop", "start"):
            answer = await ask(w, base_topic, "manual_alarm", {"channel": 2, "command": command})
            assert answer["status"] == "ok", answer
        # The metaHook items themselves are still published, one per command.
        await w.wait_for(
            lambda: (
                len(w.on(f"{prefix}/meta/manualAlarmStart")) == 3
                and len(w.on(f"{prefix}/meta/manualAlarmStop")) == 2
            ),
            what="every manual alarm meta item",
        )
        await w.wait_for(lambda: len(w.on(f"{prefix}/alarm/state")) >= 3, what="alarm states")
    assert texts(w, f"{prefix}/alarm/state") == ["active", "inactive", "active"]
    assert (await retained(broker, f"{prefix}/alarm/state")).text == "active"
    assert not w.matching(f"{base_topic}/nvr1/channel/1/alarm")


async def test_a_state_an_earlier_process_published_survives_a_broker_losing_it(
    private_broker, base_topic, sim, start_bridge
):
    """Alarm state is published on change only: a new process reads it back to republish it.

    A bridge starts an alarm and stops; a second one starts (the alarm does not change,
    so it publishes no state); the broker restarts without persistence: the second bridge
    publishes the state it read back, and Home Assistant's switch is not "unknown".
    """
    broker = private_broker
    topic = f"{base_topic}/nvr1/channel/2/alarm/state"
    async with watch(broker, f"{base_topic}/nvr1/#") as w:
        first = await start_online(start_bridge, broker, base_topic, sim)
        answer = await ask(w, base_topic, "manual_alarm", {"channel": 2, "command": "start"})
        assert answer["status"] == "ok", answer
        await w.wait_for(lambda: texts(w, topic) == ["active"], what="the alarm state")
    assert (await retained(broker, topic)).text == "active"
    await first.stop()
    second = await start_online(start_bridge, broker, base_topic, sim)
    link = second.bridge.link
    await eventually(lambda: link.retains(topic), what="the alarm state read back")
    before = link.connected_since
    broker.restart()
    await eventually(
        lambda: link.connected_since > before and link.connected and not link.depth,
        timeout=20,
        what="reconnected, everything republished",
    )
    assert (await retained(broker, topic)).text == "active"


async def test_manual_record_state_follows_the_status_streams_manual_field(
    broker, base_topic, sim, start_bridge
):
    """manual_record -> record/state from the status stream; a lone meta item does not move it."""
    prefix = f"{base_topic}/nvr1/channel"
    async with watch(broker, f"{base_topic}/nvr1/#") as w:
        await start_online(start_bridge, broker, base_topic, sim)
        await w.wait_topic(f"{prefix}/3/record/state")
        await w.wait_topic(f"{prefix}/1/record/state")
        assert (await ask(w, base_topic, "manual_record", {"channel": 3, "command": "start"}))[
            "status"
        ] == "ok"
        await w.wait_for(
            lambda: texts(w, f"{prefix}/3/record/state") == ["inactive", "active"],
            what="record active",
        )
        # The status stream shows it too, and the meta item came: still one "active".
        await w.wait_for(
            lambda: any(m.json()["manual"] is True for m in w.on(f"{prefix}/3/status")),
            what="status with manual true",
        )
        await w.wait_topic(f"{prefix}/3/meta/manualStart")
        assert (await ask(w, base_topic, "manual_record", {"channel": 3, "command": "stop"}))[
            "status"
        ] == "ok"
        await w.wait_for(
            lambda: texts(w, f"{prefix}/3/record/state") == ["inactive", "active", "inactive"],
            what="record inactive",
        )
        # The NVR says manualStart for channel 1, but its status says Manual false.
        await sim.push("meta", {"ChannelID": 1, "Type": "manualStart", "Data": '{"id": 1}'})
        await w.wait_topic(f"{prefix}/1/meta/manualStart")
        # A round trip: whatever the bridge published before its response has arrived.
        assert (await ask(w, base_topic, "system_info", {}))["status"] == "ok"
    assert texts(w, f"{prefix}/3/record/state") == ["inactive", "active", "inactive"]
    assert texts(w, f"{prefix}/1/record/state") == ["inactive"]
    assert (await retained(broker, f"{prefix}/3/record/state")).text == "inactive"


async def test_manual_record_state_comes_from_the_meta_hook_without_a_manual_field(
    broker, base_topic, sim, start_bridge, monkeypatch
):
    """An NVR whose status has no Manual field: record/state from manualStart/manualStop."""
    real = DeviceState.channel_status

    def without_manual(channel: int) -> dict[str, Any]:
        status = real(sim.device, channel)
        del status["Manual"]
        return status

    monkeypatch.setattr(sim.device, "channel_status", without_manual)
    prefix = f"{base_topic}/nvr1/channel/4"
    async with watch(broker, f"{base_topic}/nvr1/#") as w:
        await start_online(start_bridge, broker, base_topic, sim)
        status = (await w.wait_topic(f"{prefix}/status"))[0].json()
        assert status["manual"] is None
        for command in ("start", "start", "stop"):
            answer = await ask(w, base_topic, "manual_record", {"channel": 4, "command": command})
            assert answer["status"] == "ok", answer
        await w.wait_for(
            lambda: (
                len(w.on(f"{prefix}/meta/manualStart")) == 2
                and len(w.on(f"{prefix}/meta/manualStop")) == 1
            ),
            what="the manual record meta items",
        )
        await w.wait_for(lambda: len(w.on(f"{prefix}/record/state")) >= 2, what="record states")
    assert texts(w, f"{prefix}/record/state") == ["active", "inactive"]


# --- 7.5 PTZ presets ------------------------------------------------------------------------


async def test_presets_are_published_for_the_ptz_channels_only(
    broker, base_topic, sim, start_bridge
):
    """Channels 1 and 2 get ptz/presets; 3 and 4 answer an error and get nothing."""
    prefix = f"{base_topic}/nvr1/channel"
    async with watch(broker, f"{base_topic}/nvr1/#") as w:
        await start_online(start_bridge, broker, base_topic, sim, ptz_presets=True)
        one = (await w.wait_topic(f"{prefix}/1/ptz/presets"))[0].json()
        two = (await w.wait_topic(f"{prefix}/2/ptz/presets"))[0].json()
        await eventually(
            lambda: calls_with(sim, "/device/ptzControl", ChannelID="4"), what="channel 4 asked"
        )
        assert (await ask(w, base_topic, "system_info", {}))["status"] == "ok"
    assert set(one) == {"nvr", "channel", "presets", "timestamp"}
    assert one["nvr"] == "nvr1" and one["channel"] == 1
    assert TIMESTAMP.match(one["timestamp"])
    assert one["presets"] == [
        {"name": "Entrance", "preset_token": "1"},
        {"name": "Parking", "preset_token": "2"},
    ]
    assert two["presets"] == [
        {"name": "Gate", "preset_token": "1"},
        {"name": "Loading dock", "preset_token": "2"},
        {"name": "Fence", "preset_token": "3"},
    ]
    for channel in (1, 2, 3, 4):
        asked = calls_with(sim, "/device/ptzControl", ChannelID=str(channel))
        assert [c.body for c in asked] == [{"command": "get_presets"}]
    assert not w.on(f"{prefix}/3/ptz/presets")
    assert not w.on(f"{prefix}/4/ptz/presets")
    assert len(w.on(f"{prefix}/1/ptz/presets")) == 1
    assert (await retained(broker, f"{prefix}/2/ptz/presets")).json()["presets"] == two["presets"]


async def test_set_and_remove_preset_republish_the_channels_list(
    broker, base_topic, sim, start_bridge
):
    """A successful set_preset or remove_preset refreshes that channel's ptz/presets."""
    topic = f"{base_topic}/nvr1/channel/1/ptz/presets"
    async with watch(broker, f"{base_topic}/nvr1/#") as w:
        await start_online(start_bridge, broker, base_topic, sim, ptz_presets=True)
        await w.wait_topic(topic)
        await w.wait_topic(f"{base_topic}/nvr1/channel/2/ptz/presets")
        answer = await ask(
            w,
            base_topic,
            "ptz",
            {"channel": 1, "command": "set_preset", "parameters": {"preset_name": "Dock"}},
        )
        assert answer["status"] == "ok", answer
        added = (await w.wait_topic(topic, 2))[1].json()
        answer = await ask(
            w,
            base_topic,
            "ptz",
            {"channel": 1, "command": "remove_preset", "parameters": {"preset_token": "1"}},
        )
        assert answer["status"] == "ok", answer
        removed = (await w.wait_topic(topic, 3))[2].json()
        # A move changes no preset: no refresh.
        assert (await ask(w, base_topic, "ptz", {"channel": 1, "command": "stop"}))[
            "status"
        ] == "ok"
    assert added["presets"] == [
        {"name": "Entrance", "preset_token": "1"},
        {"name": "Parking", "preset_token": "2"},
        {"name": "Dock", "preset_token": "3"},
    ]
    assert removed["presets"] == [
        {"name": "Parking", "preset_token": "2"},
        {"name": "Dock", "preset_token": "3"},
    ]
    assert len(w.on(topic)) == 3
    assert len(w.on(f"{base_topic}/nvr1/channel/2/ptz/presets")) == 1


async def test_preset_set_topic_goes_to_a_preset_by_name_or_token(
    broker, base_topic, sim, start_bridge
):
    """channel/{ch}/ptz/preset/set with a name or a token runs goto_preset with the token."""
    prefix = f"{base_topic}/nvr1"
    async with watch(broker, f"{prefix}/#") as w:
        await start_online(start_bridge, broker, base_topic, sim, ptz_presets=True)
        await w.wait_topic(f"{prefix}/channel/2/ptz/presets")
        before = len(sim.calls_to("/device/ptzControl"))
        for count, payload in enumerate((b"Loading dock", b"3", b"gate"), start=1):
            await w.publish(f"{prefix}/channel/2/ptz/preset/set", payload, qos=1)
            await w.wait_topic(f"{prefix}/response/ptz", count)
    gotos = sim.calls_to("/device/ptzControl")[before:]
    assert [(c.query, c.body) for c in gotos] == [
        ({"ChannelID": "2"}, {"command": "goto_preset", "parameters": {"preset_token": token}})
        for token in ("2", "3", "1")
    ]
    answers = [m.json() for m in w.on(f"{prefix}/response/ptz")]
    assert [a["status"] for a in answers] == ["ok"] * 3, answers
    assert sim.rest.ptz.channels[2].at_preset == "1"


async def test_preset_set_with_an_unknown_name_is_an_error_without_a_rest_call(
    broker, base_topic, sim, start_bridge
):
    """An unknown preset name (or a channel without presets) gets status error on response/ptz."""
    prefix = f"{base_topic}/nvr1"
    async with watch(broker, f"{prefix}/#") as w:
        running = await start_online(start_bridge, broker, base_topic, sim, ptz_presets=True)
        await w.wait_topic(f"{prefix}/channel/1/ptz/presets")
        await eventually(
            lambda: calls_with(sim, "/device/ptzControl", ChannelID="4"), what="sweep done"
        )
        before = len(sim.calls_to("/device/ptzControl"))
        await w.publish(f"{prefix}/channel/1/ptz/preset/set", b"Nowhere", qos=1)
        await w.publish(f"{prefix}/channel/3/ptz/preset/set", b"Entrance", qos=1)
        await w.wait_topic(f"{prefix}/response/ptz", 2)
    answers = [m.json() for m in w.on(f"{prefix}/response/ptz")]
    assert [a["status"] for a in answers] == ["error", "error"]
    assert "Nowhere" in answers[0]["error"]
    assert all(a["result"] is None for a in answers)
    assert len(sim.calls_to("/device/ptzControl")) == before
    assert commands(running, "ptz", "invalid") == 2


# --- 7.6 history and state queries ----------------------------------------------------------


def query_case(name: str, now: int) -> tuple[str, dict[str, Any], str, str, dict[str, str], Any]:
    """(command, request, method, path, query, body) of one query, around ``now``."""
    start, end = now - 600, now + 60
    hour = now - now % 3600 - 3600
    day = now - now % 86400 - 86400
    cases: dict[str, tuple[str, dict[str, Any], str, str, dict[str, str], Any]] = {
        "event_search": (
            "event_search",
            {"channels": [1, 2], "start": start, "end": end, "types": ["Motion"], "stream": "Sub"},
            "POST",
            "/record/eventSearch",
            {},
            {
                "ChannelID": [1, 2],
                "StartTime": start,
                "EndTime": end,
                "Type": ["Motion"],
                "Stream": "Sub",
            },
        ),
        "event_search_plain": (
            "event_search",
            {"channels": [3], "start": start, "end": end},
            "POST",
            "/record/eventSearch",
            {},
            {"ChannelID": [3], "StartTime": start, "EndTime": end},
        ),
        "meta_search": (
            "meta_search",
            {"channel": 2, "start": start, "end": end, "types": ["LPR"]},
            "POST",
            "/record/metaSearch",
            {},
            {"ChannelID": 2, "StartTime": start, "EndTime": end, "Type": ["LPR"]},
        ),
        "snapshot_search": (
            "snapshot_search",
            {"channels": [1, 2], "start": start, "end": end, "types": ["Manual", "Motion"]},
            "POST",
            "/device/searchSnapshotPath",
            {},
            {"channels": [1, 2], "startTime": start, "endTime": end, "types": ["Manual", "Motion"]},
        ),
        "record_map_day": (
            "record_map",
            {"channels": [1, 2], "start": day, "end": day + 2 * 86400 - 1, "resolution": "day"},
            "POST",
            "/record/getMapByDay",
            {},
            {"ChannelIDs": [1, 2], "StartTime": day, "EndTime": day + 2 * 86400 - 1, "mainsub": 1},
        ),
        "record_map_minute": (
            "record_map",
            {
                "channels": [1],
                "start": hour,
                "end": hour + 7199,
                "resolution": "minute",
                "stream": "sub",
            },
            "POST",
            "/record/getMapByMinute",
            {},
            {"ChannelIDs": [1], "StartTime": hour, "EndTime": hour + 7199, "mainsub": 2},
        ),
        "record_map_second": (
            "record_map",
            {
                "channels": [1, 4],
                "start": now - 120,
                "end": now - 1,
                "resolution": "second",
                "stream": "main",
            },
            "POST",
            "/record/getMapBySecond",
            {},
            {"ChannelIDs": [1, 4], "StartTime": now - 120, "EndTime": now - 1, "mainsub": 1},
        ),
        "logs": (
            "logs",
            {"type": "All", "start_ms": 0, "end_ms": (now + 60) * 1000},
            "POST",
            "/system/searchLogs",
            {},
            {"type": "All", "startTime": 0, "endTime": (now + 60) * 1000},
        ),
        "pin_status": ("pin_status", {}, "GET", "/dio/GetPinStatus", {}, None),
        "system_info": ("system_info", {}, "GET", "/system/getSystemInfo", {}, None),
        "camera_list": ("camera_list", {}, "GET", "/device/cameraList", {}, None),
        "storage": ("storage", {}, "GET", "/storage/getStorages", {}, None),
    }
    return cases[name]


QUERY_CASES = [
    "event_search",
    "event_search_plain",
    "meta_search",
    "snapshot_search",
    "record_map_day",
    "record_map_minute",
    "record_map_second",
    "logs",
    "pin_status",
    "system_info",
    "camera_list",
    "storage",
]


def fill_history(sim: SimulatedNvr, now: int) -> None:
    """Things for the queries to find: events, metadata, snapshots, a pin, a log entry."""
    at = (now - 300) * 1000
    for offset, (channel, kind, state) in enumerate(
        [
            (1, "Motion", "active"),
            (1, "Motion", "inactive"),
            (2, "Motion", "once"),
            (3, "VLoss", "once"),
        ]
    ):
        sim.record_history(
            "event", {"ChannelID": channel, "Type": kind, "State": state}, at + offset * 1000
        )
    sim.record_history("meta", {"ChannelID": 2, "Type": "LPR", "Data": "AB-123"}, at)
    sim.record_history("meta", {"ChannelID": 2, "Type": "Counter", "Data": "7"}, at + 10)
    sim.take_snapshot(1, "Manual", at)
    sim.take_snapshot(2, "Motion", at + 2000)
    sim.take_snapshot(3, "Motion", at + 3000)
    sim.set_input_pin(3, 1)


@pytest.mark.parametrize("name", QUERY_CASES)
async def test_each_query_makes_its_rest_call_and_answers_the_nvrs_answer(
    broker, base_topic, sim, start_bridge, name
):
    """A query reaches the NVR as exactly its REST call; `result` is the NVR's answer."""
    now = int(time.time())
    command, payload, method, path, query, body = query_case(name, now)
    fill_history(sim, now)
    freeze_storage(sim)
    async with watch(broker, f"{base_topic}/nvr1/response/#") as w:
        running = await start_online(start_bridge, broker, base_topic, sim)
        before = len(sim.calls_to(path))
        answer = await ask(w, base_topic, command, payload)
    calls = sim.calls_to(path)[before:]
    assert len(calls) == 1, calls
    assert (calls[0].method, calls[0].query, calls[0].body) == (method, query, body)
    assert answer["status"] == "ok", answer
    assert answer["error"] is None
    assert answer["command"] == command
    assert set(answer) == {"status", "command", "transaction", "result", "error"}
    expected = (await sim.rest.answer(calls[0])).body
    assert answer["result"] == expected
    assert expected, f"the case {name} should find something"
    assert commands(running, command, "ok") == 1


INVALID_QUERIES: list[tuple[str, Any]] = [
    ("event_search", {"channels": [], "start": 0, "end": 10}),
    ("event_search", {"channels": [1], "start": 10, "end": 5}),
    ("event_search", {"channels": [1], "start": "0", "end": 5}),
    ("event_search", {"channels": [1], "start": 0, "end": 5, "stream": "main"}),
    ("event_search", {"channels": [0], "start": 0, "end": 5}),
    ("event_search", {"channels": [1], "start": 0, "end": 5, "types": []}),
    ("event_search", {"channels": [1], "start": 0.5, "end": 5}),
    ("meta_search", {"start": 0, "end": 5}),
    ("meta_search", {"channel": 1, "start": 0, "end": 5, "types": "LPR"}),
    ("meta_search", {"channel": True, "start": 0, "end": 5}),
    ("snapshot_search", {"channels": [1], "start": 0, "end": 5, "types": ["Bogus"]}),
    ("snapshot_search", {"channels": [1], "start": -1, "end": 5}),
    ("record_map", {"channels": [1, 2, 3, 4, 5], "start": 0, "end": 5, "resolution": "day"}),
    ("record_map", {"channels": [1], "start": 0, "end": 5, "resolution": "hour"}),
    ("record_map", {"channels": [1], "start": 0, "end": 5}),
    ("record_map", {"channels": [1], "start": 0, "end": 5, "resolution": "day", "stream": 1}),
    ("logs", {"type": "Everything", "start_ms": 0, "end_ms": 5}),
    ("logs", {"type": "All", "start_ms": 9, "end_ms": 5}),
    ("logs", {"type": "All", "start": 0, "end": 5}),
    ("pin_status", {"pin": 1}),
    ("system_info", {"verbose": True}),
    ("camera_list", {"channel": 1}),
    ("storage", {"disk": "sda"}),
    ("storage", [1]),
]
QUERY_PATHS = {
    "event_search": "/record/eventSearch",
    "meta_search": "/record/metaSearch",
    "snapshot_search": "/device/searchSnapshotPath",
    "record_map": "/record/getMap",
    "logs": "/system/searchLogs",
    "pin_status": "/dio/GetPinStatus",
    "system_info": "/system/getSystemInfo",
    "camera_list": "/device/cameraList",
    "storage": "/storage/getStorages",
}


async def test_invalid_queries_are_refused_without_a_rest_call(
    broker, base_topic, sim, start_bridge
):
    """Each invalid query: status error, `invalid request: ...`, result null, no REST call."""
    async with watch(broker, f"{base_topic}/nvr1/response/#") as w:
        running = await start_online(start_bridge, broker, base_topic, sim)
        calls_before = len(sim.calls)
        answers = []
        for index, (command, payload) in enumerate(INVALID_QUERIES):
            if isinstance(payload, dict):
                await request(w, base_topic, command, {**payload, "transaction": index})
                answers.append((command, payload, await response(w, base_topic, command, index)))
            else:
                topic = f"{base_topic}/nvr1/response/{command}"
                count = len(w.on(topic)) + 1
                await request(w, base_topic, command, payload)
                answers.append((command, payload, (await w.wait_topic(topic, count))[-1].json()))
    for command, payload, answer in answers:
        assert answer["status"] == "error", (command, payload, answer)
        assert answer["error"].startswith("invalid request:"), (command, payload, answer)
        assert answer["result"] is None, (command, payload, answer)
    made = [c for c in sim.calls[calls_before:] if c.path.startswith(tuple(QUERY_PATHS.values()))]
    assert made == []
    for command in QUERY_PATHS:
        expected = sum(1 for c, _ in INVALID_QUERIES if c == command)
        assert commands(running, command, "invalid") == expected, command


async def test_camera_list_masks_every_password_value(broker, base_topic, sim, start_bridge):
    """camera_list's result (and info's cameras) have every *password* value masked."""
    cameras = [
        {
            "ChannelID": 1,
            "DeviceName": "Door",
            "UserName": "viewer",
            "Password": "cam-Secret-1",
            "rtsp": {"adminPassword": "cam-Secret-2", "port": 554},
            "old_passwords": ["cam-Secret-3"],
        },
        {"ChannelID": 2, "DeviceName": "Yard", "PASSWORD_HASH": "cam-Secret-4"},
    ]

    async def camera_list(call: RecordedCall) -> Answer:
        return Answer(200, cameras)

    sim.rest.routes["/device/cameraList"]["GET"] = camera_list
    async with watch(broker, f"{base_topic}/nvr1/#") as w:
        await start_online(start_bridge, broker, base_topic, sim)
        answer = await ask(w, base_topic, "camera_list", {})
        info = (await w.wait_topic(f"{base_topic}/nvr1/info"))[0].json()
    assert answer["status"] == "ok", answer
    assert answer["result"] == [
        {
            "ChannelID": 1,
            "DeviceName": "Door",
            "UserName": "viewer",
            "Password": "***",
            "rtsp": {"adminPassword": "***", "port": 554},
            "old_passwords": "***",
        },
        {"ChannelID": 2, "DeviceName": "Yard", "PASSWORD_HASH": "***"},
    ]
    assert b"cam-Secret" not in orjson.dumps(answer)
    assert b"cam-Secret" not in orjson.dumps(info)
    assert all(b"cam-Secret" not in m.payload for m in w.messages)


async def test_a_result_larger_than_response_max_bytes_is_an_error_naming_its_size(
    broker, base_topic, sim, start_bridge
):
    """response_max_bytes=2048 and a day of minutes of 4 channels: `result too large`."""
    now = int(time.time())
    hour = now - now % 3600 - 86400
    async with watch(broker, f"{base_topic}/nvr1/response/#") as w:
        running = await start_online(start_bridge, broker, base_topic, sim, response_max_bytes=2048)
        answer = await ask(
            w,
            base_topic,
            "record_map",
            {"channels": [1, 2, 3, 4], "start": hour, "end": hour + 86399, "resolution": "minute"},
        )
        small = await ask(w, base_topic, "system_info", {})
    assert len(sim.calls_to("/record/getMapByMinute")) == 1
    assert answer["status"] == "error"
    assert answer["result"] is None
    assert answer["error"].startswith("result too large"), answer["error"]
    sizes = [int(n) for n in re.findall(r"(\d+) bytes", answer["error"])]
    assert sizes and sizes[0] > 2048, answer["error"]
    assert "2048" in answer["error"]
    assert small["status"] == "ok"
    counted = sum(
        commands(running, "record_map", outcome) for outcome in ("ok", "error", "invalid")
    )
    assert counted == 1


# --- 7.7 outage reports, a stale status stream, cameraDetail --------------------------------


async def cut_stream(sim: SimulatedNvr, running: RunningBridge, stream: str) -> float:
    """Drop one stream and keep it down (logins refused); returns when it went down."""
    attempts = sim.login_attempts
    sim.login_mode = "refuse"
    sim.expire_sessions()
    cut_at = time.time()
    await sim.drop_websockets(stream)
    await eventually(lambda: not running.bridge.nvrs["nvr1"].online, what="the stream down")
    await eventually(lambda: sim.login_attempts > attempts, what="a refused login")
    return cut_at


async def heal(sim: SimulatedNvr, running: RunningBridge) -> None:
    sim.login_mode = "ok"
    await all_streams_connected(sim)
    await running.wait_online()


OUTAGE_ITEMS: dict[str, list[dict[str, Any]]] = {
    "event": [
        {"ChannelID": 3, "Type": "InputAlarm", "State": "active"},
        {"ChannelID": 4, "Type": "Motion", "State": "once"},
    ],
    "meta": [
        {"ChannelID": 2, "Type": "LPR", "Data": "GAP-1"},
        {"ChannelID": 2, "Type": "LPR", "Data": "GAP-2"},
        {"ChannelID": 1, "Type": "Counter", "Data": "3"},
    ],
}


@pytest.mark.parametrize("stream", ["event", "meta"])
async def test_an_outage_is_reported_on_gap_after_its_replay(
    broker, base_topic, sim, start_bridge, stream
):
    """After an event/meta outage and its replay: `gap` with from, to, replayed, complete."""
    prefix = f"{base_topic}/nvr1"
    async with watch(broker, f"{prefix}/#") as w:
        running = await start_online(start_bridge, broker, base_topic, sim)
        cut_at = await cut_stream(sim, running, stream)
        items = OUTAGE_ITEMS[stream]
        for offset, item in enumerate(items):
            sim.record_history(stream, item, int(time.time() * 1000) + offset)
        healed_at = time.time()
        await heal(sim, running)
        gap = (await w.wait_topic(f"{prefix}/gap"))[0]
        await event_flows(broker, base_topic, sim)
    body = gap.json()
    assert set(body) == {"nvr", "stream", "from", "to", "replayed", "complete", "timestamp"}
    assert body["nvr"] == "nvr1"
    assert body["stream"] == stream
    assert body["replayed"] == len(items)
    assert body["complete"] is True
    began, ended = parse_time(body["from"]), parse_time(body["to"])
    assert began.tzinfo == UTC and ended.tzinfo == UTC
    assert cut_at - 1 <= began.timestamp() <= healed_at
    assert began <= ended
    assert ended.timestamp() >= healed_at - 0.01
    assert TIMESTAMP.match(body["timestamp"])
    assert not gap.retain
    assert len(w.on(f"{prefix}/gap")) == 1
    # The replayed items came out before the report.
    replayed = [i for i, m in enumerate(w.messages) if b'"replayed":true' in m.payload]
    assert len(replayed) == len(items)
    assert max(replayed) < index_of(w, f"{prefix}/gap")


@pytest.mark.parametrize("stream", ["event", "meta"])
async def test_an_outage_whose_history_search_fails_is_reported_incomplete(
    broker, base_topic, sim, start_bridge, stream
):
    """The history search answering 500: `gap` with complete false and replayed 0."""
    prefix = f"{base_topic}/nvr1"
    path = "/record/eventSearch" if stream == "event" else "/record/metaSearch"
    with captured_logs() as logs:
        async with watch(broker, f"{prefix}/#") as w:
            running = await start_online(start_bridge, broker, base_topic, sim)
            await cut_stream(sim, running, stream)
            sim.record_history(stream, OUTAGE_ITEMS[stream][0])
            sim.set_fault(path, "http500")
            await heal(sim, running)
            gap = (await w.wait_topic(f"{prefix}/gap"))[0].json()
            await event_flows(broker, base_topic, sim)
    assert gap["stream"] == stream
    assert gap["complete"] is False
    assert gap["replayed"] == 0
    assert parse_time(gap["from"]) <= parse_time(gap["to"])
    assert len(sim.calls_to(path)) >= 1
    assert logged(logs, "replay failed", stream=stream)
    assert not [m for m in w.messages if b'"replayed":true' in m.payload]


async def test_a_silent_status_stream_is_closed_and_reconnected_alone(
    broker, base_topic, sim, start_bridge
):
    """No status frame for status_stale_after: that stream reconnects, the others stay."""
    running = await start_online(
        start_bridge,
        broker,
        base_topic,
        sim,
        status_stale_after=1,
        ws_ping_interval=60,
        ws_ping_timeout=60,
    )
    bridge = running.bridge
    with captured_logs() as logs:
        sim.silent = True
        await eventually(lambda: reconnects(running, "status") >= 2, timeout=8, what="reconnects")
        sim.silent = False
        await running.wait_online()
    dropped = logged(logs, "stream disconnected", stream="status")
    assert dropped, logs
    assert dropped[0]["log_level"] == "warning"
    assert "BRIDGE_STATUS_STALE_AFTER" in dropped[0]["reason"]
    for stream in ("event", "meta", "exception", "message"):
        assert reconnects(running, stream) == 0, stream
        assert (
            metric_value(bridge, "nvr_bridge_stream_connected", nvr="nvr1", stream=stream) == 1
        ), stream
        assert sim.clients(stream) == 1
        assert not logged(logs, "stream disconnected", stream=stream)
    await event_flows(broker, base_topic, sim)


async def test_camera_detail_republishes_info_with_the_new_camera_name(
    broker, base_topic, sim, start_bridge
):
    """messageListen cameraDetail -> info published again with the renamed camera."""
    topic = f"{base_topic}/nvr1/info"
    async with watch(broker, f"{base_topic}/nvr1/#") as w:
        await start_online(start_bridge, broker, base_topic, sim)
        first = (await w.wait_topic(topic))[0].json()
        logins = sim.logins
        await sim.rename_camera(2, "Gate")
        await w.wait_topic(f"{base_topic}/nvr1/message/cameraDetail")
        second = (await w.wait_topic(topic, 2, timeout=8))[1].json()

    def names(info: dict[str, Any]) -> dict[int, str]:
        return {c["ChannelID"]: c["DeviceName"] for c in info["cameras"]}

    assert names(first)[2] == "Camera 2"
    assert names(second) == {1: "Camera 1", 2: "Gate", 3: "Camera 3", 4: "Camera 4"}
    assert second["system"] == sim.identity.system_info()
    assert sim.logins == logins
    assert (await retained(broker, topic)).json()["cameras"] == second["cameras"]


# --- every reader per NVR, never in the way -------------------------------------------------


async def test_one_nvrs_failing_and_slow_readers_never_delay_the_other_or_any_stream(
    broker, base_topic, sim, other_sim, start_bridge
):
    """nvr2's pins, storage, presets and snapshots hang or fail; nvr1 and every event flow."""
    for path in ("/dio/GetGPIOInfo", "/dio/GetPinStatus", "/device/ptzControl"):
        other_sim.set_fault(path, "slow", delay=60)
    other_sim.set_fault("/device/getSnapshot", "slow", delay=60)
    other_sim.set_fault("/storage/getStorages", "http500")
    freeze_storage(sim)
    good, bad = f"{base_topic}/nvr1", f"{base_topic}/nvr2"
    async with watch(broker, f"{base_topic}/#") as w:
        running = await start_online(
            start_bridge,
            broker,
            base_topic,
            [sim, other_sim],
            pin_poll_interval=FAST,
            storage_poll_interval=FAST,
            ptz_presets=True,
            snapshot_events=("Motion",),
            snapshot_min_interval=0,
        )
        await w.wait_topic(f"{good}/pins")
        await w.wait_for(lambda: all(w.on(f"{good}/pin/{n}/state") for n in PINS), what="pins")
        await w.wait_topic(f"{good}/storage")
        await w.wait_topic(f"{good}/channel/2/ptz/presets")
        # nvr2's slow snapshots fill its workers; its events are still published at once.
        for channel in (1, 2, 3, 4):
            await other_sim.push(
                "event", {"ChannelID": channel, "Type": "Motion", "State": "active"}
            )
        await w.wait_for(
            lambda: all(w.on(f"{bad}/channel/{ch}/event/Motion") for ch in (1, 2, 3, 4)),
            2,
            "nvr2's events",
        )
        await eventually(lambda: polls(running, "storage", "error", "nvr2") >= 3, what="errors")
        assert await event_flows(broker, base_topic, other_sim, "nvr2") < 1.5
        assert await event_flows(broker, base_topic, sim, "nvr1") < 1.5
        # nvr1's readers keep reading.
        sim.set_input_pin(4, 1)
        await w.wait_for(lambda: texts(w, f"{good}/pin/4/state") == ["0", "1"], 3, "nvr1 pin 4")
        assert sim.storage.disk_error("sdb")
        await w.wait_topic(f"{good}/storage", 2, timeout=3)
        # nvr2 answers its queries in spite of its hanging readers.
        started = time.monotonic()
        assert (await ask(w, base_topic, "system_info", {}, nvr="nvr2"))["status"] == "ok"
        assert time.monotonic() - started < 2
    assert all(reconnects(running, s, nvr) == 0 for s in STREAMS for nvr in ("nvr1", "nvr2"))
    assert running.bridge.nvrs["nvr1"].online and running.bridge.nvrs["nvr2"].online
    assert not w.matching(f"{bad}/pin")
    assert not w.matching(f"{bad}/storage")
    assert not [m for m in w.messages if m.topic.startswith(bad) and "/snapshot" in m.topic]
