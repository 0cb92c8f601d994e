"""Nothing an NVR, a client or the environment sends can stop the bridge.

Each test breaks one thing as an attacker or a broken peer would (CONTRACT section 9),
then checks what the bridge does afterwards: it still runs, ``/healthz`` answers 200,
the next valid message is published, the other NVR is untouched, and the bound holds.
The fault tests run two NVRs: ``bad``, the tests' own hostile server (``tests.hostile``),
and ``good``, the project's simulator. Bounds are asserted on structure (the lengths of
internal queues and maps against the configured bound), never on memory figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import orjson
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import SecretStr

from bridge.config import NvrConfig
from bridge.homeassistant import MAX_CAMERAS
from bridge.limits import MAX_CHANNELS
from bridge.normalize import TOPIC_CACHE_SIZE
from bridge.nvr.auth import LOGIN_PATH
from bridge.sim import SimulatedNvr
from tests.conftest import (
    POLL_INTERVAL,
    BrokerProcess,
    RunningBridge,
    Watcher,
    eventually,
    free_port,
    make_config,
    metric_value,
    nvr_config,
    watch,
)
from tests.hostile import (
    HostileNvr,
    Recorder,
    answer,
    nested_list,
    nested_object,
    redirect,
    streamed,
)
from tests.test_faults import captured_logs, http_get, logged, wait_for_log
from tests.test_process import SECRET, bridge_env

pytestmark = pytest.mark.asyncio

GOOD, BAD = "good", "bad"
HOSTILE_PASSWORD = "Hx7-h0stile-Pw"


# --- set-up -----------------------------------------------------------------------------


@pytest.fixture
async def hostile() -> AsyncIterator[HostileNvr]:
    async with HostileNvr() as nvr:
        yield nvr


@pytest.fixture
def persistent_broker() -> Iterator[BrokerProcess]:
    """A mosquitto of this test alone that keeps sessions across its restarts."""
    if shutil.which("mosquitto") is None:
        pytest.skip("needs mosquitto (sessions kept across a broker restart)")
    # mosquitto drops root to its own user, which cannot enter pytest's private tmp_path.
    workdir = Path(tempfile.mkdtemp(prefix="nvr-bridge-hostile-"))
    broker = BrokerProcess("mosquitto", free_port(), workdir, persistent=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def hostile_config(hostile: HostileNvr, **overrides: Any) -> NvrConfig:
    settings: dict[str, Any] = {
        "id": BAD,
        "url": hostile.url,
        "username": "admin",
        "password": SecretStr(HOSTILE_PASSWORD),
    }
    settings.update(overrides)
    return NvrConfig(**settings)


async def start_pair(
    start_bridge: Callable[..., Awaitable[RunningBridge]],
    broker: BrokerProcess,
    base_topic: str,
    sim: SimulatedNvr,
    hostile: HostileNvr,
    *,
    bad: dict[str, Any] | None = None,
    online: bool = True,
    **overrides: Any,
) -> RunningBridge:
    """A bridge of the healthy simulator (``good``) and the hostile server (``bad``)."""
    config = make_config(
        broker,
        base_topic,
        [nvr_config(sim, GOOD), hostile_config(hostile, **(bad or {}))],
        **overrides,
    )
    running = await start_bridge(config)
    if online:
        await running.wait_online()
    else:
        await eventually(lambda: running.bridge.nvrs[GOOD].online, what="the good NVR online")
    return running


# --- what "still serving" means -------------------------------------------------------------


async def assert_alive(running: RunningBridge) -> None:
    """The bridge task runs and /healthz answers 200."""
    assert running.task is not None
    assert not running.task.done(), running.task
    status, body = await http_get(running.bridge.http.port, "/healthz")
    assert (status, body) == (200, {"status": "ok"})


async def event_flows(
    broker: BrokerProcess, base_topic: str, nvr_id: str, nvr: SimulatedNvr | HostileNvr
) -> dict[str, Any]:
    """An event the NVR sends now is published; returns its payload."""
    await eventually(lambda: nvr.clients("event") >= 1, what=f"{nvr_id}'s event stream open")
    kind = f"Next{uuid.uuid4().hex[:6]}"
    topic = f"{base_topic}/{nvr_id}/channel/2/event/{kind}"
    async with watch(broker, topic) as w:
        await nvr.push("event", {"ChannelID": 2, "Type": kind, "State": "once"})
        (message,) = await w.wait_topic(topic)
    body: dict[str, Any] = message.json()
    assert body["type"] == kind
    return body


async def assert_serving(
    running: RunningBridge,
    broker: BrokerProcess,
    base_topic: str,
    sim: SimulatedNvr,
    hostile: HostileNvr | None = None,
) -> None:
    """After the fault: alive, the good NVR publishes, and the bad one too when given."""
    await assert_alive(running)
    await event_flows(broker, base_topic, GOOD, sim)
    if hostile is not None:
        await event_flows(broker, base_topic, BAD, hostile)


def metric(running: RunningBridge, name: str, **labels: str) -> float:
    return metric_value(running.bridge, name, **labels)


def invalid(running: RunningBridge, stream: str, nvr: str = BAD) -> float:
    return metric(running, "nvr_bridge_messages_invalid_total", nvr=nvr, stream=stream)


def received(running: RunningBridge, stream: str, nvr: str = BAD) -> float:
    return metric(running, "nvr_bridge_messages_received_total", nvr=nvr, stream=stream)


async def send_request(
    w: Watcher,
    base_topic: str,
    nvr: str,
    command: str,
    payload: bytes | dict[str, Any],
    **kwargs: Any,
) -> None:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    await w.publish(f"{base_topic}/{nvr}/request/{command}", data, qos=1, **kwargs)


async def command(
    w: Watcher, base_topic: str, nvr: str, name: str, payload: dict[str, Any], **kwargs: Any
) -> dict[str, Any]:
    """Publish a request with a fresh transaction and wait for its response."""
    transaction = uuid.uuid4().hex
    await send_request(w, base_topic, nvr, name, {**payload, "transaction": transaction}, **kwargs)
    return await response_to(w, base_topic, nvr, name, transaction)


async def response_to(
    w: Watcher, base_topic: str, nvr: str, name: str, transaction: Any
) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for message in w.on(f"{base_topic}/{nvr}/response/{name}"):
            body = json.loads(message.payload)
            if body.get("transaction") == transaction:
                return body  # type: ignore[no-any-return]
        return None

    found: dict[str, Any] = await w.wait_for(find, what=f"response to {name} {transaction!r}")
    return found


def commands_total(running: RunningBridge, nvr: str, command_name: str, outcome: str) -> float:
    return metric(
        running, "nvr_bridge_commands_total", nvr=nvr, command=command_name, outcome=outcome
    )


# === process deaths ==========================================================================


async def test_a_request_nested_300_deep_is_invalid_and_the_next_one_runs(
    broker, base_topic, sim, hostile, start_bridge
):
    """A transaction nested 300 deep: 'invalid request: ... deeper than 64 levels', no call."""
    running = await start_pair(start_bridge, broker, base_topic, sim, hostile)
    deep = '{"timeout": 2, "transaction": ' + nested_list(300) + "}"
    async with watch(broker, f"{base_topic}/{GOOD}/response/#") as w:
        await send_request(w, base_topic, GOOD, "buzzer", deep.encode())
        (refusal,) = await w.wait_topic(f"{base_topic}/{GOOD}/response/buzzer")
        body = refusal.json()
        assert body["status"] == "error"
        assert body["error"].startswith("invalid request:"), body
        assert "deeper than 64 levels" in body["error"]
        assert body["result"] is None
        assert sim.calls_to("/system/callBuzzer") == []
        done = await command(w, base_topic, GOOD, "buzzer", {"timeout": 2})
    assert done["status"] == "ok", done
    assert len(sim.calls_to("/system/callBuzzer")) == 1
    assert commands_total(running, GOOD, "buzzer", "invalid") == 1
    await assert_serving(running, broker, base_topic, sim, hostile)


@pytest.mark.parametrize(
    "location",
    ["http://127.0.0.1:{port}/meta/eventHook", "ws://127.0.0.1:70000/meta/eventHook"],
    ids=["http-scheme", "port-above-65535"],
)
async def test_a_websocket_redirect_to_a_bad_url_is_a_failed_connect_retried(
    broker, base_topic, sim, hostile, start_bridge, location
):
    """A handshake redirected to http:// or to port 70000: 'stream connect failed', retried."""
    target = location.format(port=hostile.port)
    hostile.handshakes["event"] = redirect(target)
    with captured_logs() as logs:
        running = await start_pair(start_bridge, broker, base_topic, sim, hostile, online=False)
        await wait_for_log(logs, "stream connect failed", nvr=BAD, stream="event")
        await eventually(lambda: len(hostile.handshakes_to("event")) >= 3, what="retries")
    # One clear line when the stream starts failing; the retries are debug.
    (line,) = [
        e for e in logged(logs, "stream connect failed", nvr=BAD) if e["log_level"] == "warning"
    ]
    assert line["stream"] == "event"
    assert target in line["reason"]
    assert not running.bridge.nvrs[BAD].online
    # The other streams of the bad NVR still work, and so does the good NVR.
    await eventually(lambda: hostile.clients("meta") == 1, what="bad's meta stream open")
    async with watch(broker, f"{base_topic}/{BAD}/channel/1/meta/#") as w:
        await hostile.push("meta", {"ChannelID": 1, "Type": "LPR", "Data": "AB-12"})
        await w.wait_topic(f"{base_topic}/{BAD}/channel/1/meta/LPR")
    await assert_serving(running, broker, base_topic, sim)
    del hostile.handshakes["event"]
    await running.wait_online()
    await event_flows(broker, base_topic, BAD, hostile)


async def test_items_nested_1000_and_500_deep_are_rejected_and_the_next_ones_published(
    broker, base_topic, sim, hostile, start_bridge
):
    """An event Type nested 1,000 deep, a message content 500 deep: rejected, counted, logged."""
    running = await start_pair(start_bridge, broker, base_topic, sim, hostile)
    deep_event = '{"ChannelID": 1, "Type": ' + nested_list(1000) + ', "State": "once"}'
    deep_message = '{"message": "deep", "time": 1, "content": ' + nested_object(500) + "}"
    async with watch(broker, f"{base_topic}/{BAD}/#") as w:
        with captured_logs() as logs:
            await hostile.push("event", deep_event)
            await hostile.push("message", deep_message)
            await hostile.push("event", {"ChannelID": 1, "Type": "After", "State": "once"})
            await hostile.push("message", {"message": "after", "time": 2, "content": {"a": 1}})
            await w.wait_topic(f"{base_topic}/{BAD}/channel/1/event/After")
            (after,) = await w.wait_topic(f"{base_topic}/{BAD}/message/after")
            await wait_for_log(logs, "frame rejected", count=2, nvr=BAD)
    assert after.json()["content"] == {"a": 1}
    assert invalid(running, "event") == 1
    assert invalid(running, "message") == 1
    lines = logged(logs, "frame rejected", nvr=BAD)
    assert {line["stream"] for line in lines} == {"event", "message"}
    assert all("deeper than the limit of 64" in line["reasons"][0] for line in lines)
    assert all(len(line["frame"]) <= 1024 + 3 for line in lines)
    assert not [m for m in w.messages if "/deep" in m.topic]
    await assert_serving(running, broker, base_topic, sim, hostile)


async def test_rest_answers_nested_300_deep_are_errors_and_streams_stay_up(
    broker, base_topic, sim, hostile, start_bridge
):
    """A command answer and getSystemInfo nested 300 deep: 'answer too deep'; info system null."""
    hostile.system_info = nested_object(300)
    hostile.cameras = [{"ChannelID": 1, "DeviceName": "Door"}]
    hostile.rest["/system/callBuzzer"] = answer(nested_list(300))
    async with watch(broker, f"{base_topic}/{BAD}/info") as info_watch:
        running = await start_pair(start_bridge, broker, base_topic, sim, hostile)
        (info,) = await info_watch.wait_topic(f"{base_topic}/{BAD}/info")
    assert info.json()["system"] is None
    assert info.json()["cameras"] == [{"ChannelID": 1, "DeviceName": "Door"}]
    async with watch(broker, f"{base_topic}/{BAD}/response/#") as w:
        failed = await command(w, base_topic, BAD, "buzzer", {"timeout": 1})
        assert failed["status"] == "error"
        assert failed["error"].startswith("answer too deep"), failed
        assert failed["result"] is None
        del hostile.rest["/system/callBuzzer"]
        done = await command(w, base_topic, BAD, "buzzer", {"timeout": 1})
    assert done["status"] == "ok"
    assert running.bridge.nvrs[BAD].online
    assert metric(running, "nvr_bridge_stream_reconnects_total", nvr=BAD, stream="event") == 0
    await assert_serving(running, broker, base_topic, sim, hostile)


async def test_history_entries_with_impossible_channel_or_time_are_skipped_in_the_replay(
    broker, base_topic, sim, hostile, start_bridge
):
    """eventSearch after a reconnect: ChannelID 2**63, ev_start 1e300/1e308 skipped; valid replayed."""
    running = await start_pair(start_bridge, broker, base_topic, sim, hostile)
    async with watch(broker, f"{base_topic}/{BAD}/channel/#") as w:
        now = int(time.time())
        hostile.history = (
            f'[{{"ChannelID": {2**63}, "Type": "Huge", "ev_start": {now}}},'
            '{"ChannelID": 1, "Type": "Far", "ev_start": 1e300},'
            '{"ChannelID": 1, "Type": "Inf", "ev_start": 1e308},'
            f'{{"ChannelID": 2, "Type": "Missed", "ev_start": {now}}}]'
        )
        await hostile.drop("event")
        (replayed,) = await w.wait_topic(f"{base_topic}/{BAD}/channel/2/event/Missed")
        await running.wait_online()
        await event_flows(broker, base_topic, BAD, hostile)
    body = replayed.json()
    assert body["replayed"] is True
    assert body["time"] == now * 1000
    assert len(hostile.calls_to("/record/eventSearch")) == 1
    for kind in ("Huge", "Far", "Inf"):
        assert not [m for m in w.messages if m.topic.endswith(f"/event/{kind}")], kind
    assert metric(running, "nvr_bridge_messages_replayed_total", nvr=BAD, stream="event") == 1
    await assert_serving(running, broker, base_topic, sim)


# === silent stops =============================================================================


async def test_invisible_and_noncharacter_type_becomes_underscores_and_the_link_stays_up(
    broker, base_topic, sim, hostile, start_bridge
):
    """U+1FFFE, U+10FFFF, U+202E, U+200B, U+FEFF in a Type: '_' in the topic, text in payload."""
    running = await start_pair(start_bridge, broker, base_topic, sim, hostile)
    kind = "Zone\U0001fffe\U0010ffff\u202e\u200b\ufeff!"
    async with (
        watch(broker, f"{base_topic}/bridge/state") as state,
        watch(broker, f"{base_topic}/{BAD}/channel/1/event/#") as w,
    ):
        await state.wait_for(lambda: state.messages, what="retained bridge state")
        with captured_logs() as logs:
            await hostile.push("event", {"ChannelID": 1, "Type": kind, "State": "active"})
            await hostile.push("event", {"ChannelID": 1, "Type": "Next", "State": "once"})
            (event,) = await w.wait_topic(f"{base_topic}/{BAD}/channel/1/event/Zone_____!")
            await w.wait_topic(f"{base_topic}/{BAD}/channel/1/event/Next")
        (retained,) = w.on(f"{base_topic}/{BAD}/channel/1/event/Zone_____!/state")
        await event_flows(broker, base_topic, GOOD, sim)
    assert event.json()["type"] == kind
    assert retained.text == "active"
    assert [m.text for m in state.messages] == ["online"]
    assert metric(running, "nvr_bridge_mqtt_connected") == 1
    assert not [e for e in logs if e["event"].startswith("mqtt")], logs
    await assert_serving(running, broker, base_topic, sim, hostile)


# === memory and bounds =========================================================================


async def test_100000_events_during_an_outage_keep_the_outbox_within_its_bound(
    persistent_broker, base_topic, sim, hostile, start_bridge
):
    """buffer_size 1000, broker stopped, 100,000 events: drops counted, structures bounded."""
    broker = persistent_broker
    bound = 1000
    running = await start_pair(start_bridge, broker, base_topic, sim, hostile, buffer_size=bound)
    outbox = running.bridge.link._outbox
    newest = {"ChannelID": 1, "Type": "Newest", "State": "once"}
    async with session_watcher(broker, f"{base_topic}/{GOOD}/channel/+/event/+") as watcher:
        broker.stop()
        await eventually(lambda: not running.bridge.link.connected, what="broker gone")
        await sim.burst("event", 100_000, per_frame=500)
        await sim.push("event", newest)
        await eventually(
            lambda: received(running, "event", GOOD) == 100_001, timeout=30, what="all read"
        )
        dropped = metric(running, "nvr_bridge_messages_dropped_total", nvr=GOOD, stream="event")
        assert dropped >= 100_001 - bound
        assert len(outbox._queue) <= 5 * bound
        assert len(outbox._non_retained) <= 2 * bound
        assert len(outbox._latest_retained) <= 200
        assert len(outbox._retained_alive) <= 200
        assert outbox.depth <= bound + len(outbox._retained_alive)
        waiting = [e.publication.topic for e in outbox.alive_entries()]
        assert waiting.count(f"{base_topic}/{GOOD}/channel/1/event/Newest") == 1
        await assert_alive(running)
        broker.start()
        await watcher.wait_for(
            lambda: any(b'"Newest"' in p for p in watcher.payloads), what="the newest event"
        )
    assert orjson.loads(watcher.payloads[-1])["type"] == "Newest"
    assert len(watcher.payloads) <= bound
    await eventually(lambda: outbox.depth == 0, what="outbox drained")
    await assert_serving(running, broker, base_topic, sim, hostile)


async def test_20000_retained_topics_keep_retained_bookkeeping_within_retained_max(
    private_broker, base_topic, sim, hostile, start_bridge
):
    """20,000 distinct active event types in an outage, retained_max 100: bounded, newest kept."""
    broker = private_broker
    retained_max = 100
    running = await start_pair(
        start_bridge, broker, base_topic, sim, hostile, retained_max=retained_max
    )
    bridge = running.bridge
    outbox = bridge.link._outbox
    broker.stop()
    await eventually(lambda: not bridge.link.connected, what="broker gone")
    total = 20_000
    for start in range(0, total, 500):
        frame = [
            {"ChannelID": 1, "Type": f"T{i}", "State": "active"} for i in range(start, start + 500)
        ]
        await hostile.push("event", frame)
    await eventually(lambda: received(running, "event") == total, timeout=20, what="all read")
    assert len(outbox._retained_alive) <= retained_max
    assert len(outbox._latest_retained) <= retained_max
    assert len(outbox._retained_line) <= 2 * retained_max + 1100
    assert len(outbox._queue) <= 2 * outbox.depth + 1100
    assert len(bridge.nvrs[BAD].normalizer._topic_cache) <= TOPIC_CACHE_SIZE
    dropped = metric(running, "nvr_bridge_messages_dropped_total", nvr=BAD, stream="event")
    assert dropped >= total - retained_max
    await assert_alive(running)
    broker.start()
    await eventually(lambda: bridge.link.connected, what="broker back")
    await eventually(lambda: outbox.depth == 0, timeout=20, what="outbox drained")
    state_filter = f"{base_topic}/{BAD}/channel/1/event/+/state"
    async with watch(broker, state_filter) as w:
        # Retained messages come before anything published after the subscription.
        sentinel = f"{base_topic}/{BAD}/channel/1/event/zz-sentinel/state"
        await w.publish(sentinel, b"x", qos=1)
        await w.wait_topic(sentinel)
    kept = {m.topic.split("/")[-2] for m in w.messages if m.retain}
    assert f"T{total - 1}" in kept
    assert len(kept) <= retained_max
    await assert_serving(running, broker, base_topic, sim, hostile)


async def test_status_of_more_than_4096_channels_is_refused_beyond_the_bound(
    private_broker, base_topic, sim, hostile, start_bridge
):
    """A status frame naming 5,000 channels: 4,096 remembered, the rest rejected, counted."""
    broker = private_broker
    running = await start_pair(start_bridge, broker, base_topic, sim, hostile)
    normalizer = running.bridge.nvrs[BAD].normalizer
    statuses = [
        {"ChannelID": c, "Online": True, "Recording": False, "Event": False} for c in range(1, 5001)
    ]
    async with watch(broker, f"{base_topic}/{BAD}/channel/1/status") as w:
        with captured_logs() as logs:
            await hostile.push("status", statuses)
            await eventually(lambda: received(running, "status") == 5000, what="all read")
            (line,) = await wait_for_log(logs, "frame rejected", nvr=BAD, stream="status")
        await w.wait_topic(f"{base_topic}/{BAD}/channel/1/status")
        # A change of a known channel is still published; a new channel is still refused.
        await hostile.push(
            "status",
            [
                {"ChannelID": 1, "Online": False, "Recording": False, "Event": False},
                {"ChannelID": 4097, "Online": True, "Recording": False, "Event": False},
            ],
        )
        (_, changed) = await w.wait_topic(f"{base_topic}/{BAD}/channel/1/status", count=2)
    assert changed.json()["online"] is False
    assert len(normalizer._status) == MAX_CHANNELS
    assert max(running.bridge.nvrs[BAD].known_channels()) == MAX_CHANNELS
    assert invalid(running, "status") == 5000 - MAX_CHANNELS + 1
    assert line["rejected"] == 5000 - MAX_CHANNELS
    assert "4096" in line["reasons"][0]
    await assert_serving(running, broker, base_topic, sim, hostile)


async def test_system_info_claiming_2_million_channels_is_clamped_to_4096(
    private_broker, base_topic, sim, hostile, start_bridge
):
    """getSystemInfo with 2,000,000 channels: known channels stop at 4,096, Home Assistant
    discovery at its own bound of 256 cameras."""
    broker = private_broker
    hostile.system_info = {"device_name": "Huge", "ipcam_channels": 2_000_000}
    registry = f"{base_topic}/bridge/discovery/{BAD}"
    async with watch(broker, registry) as w:
        running = await start_pair(
            start_bridge,
            broker,
            base_topic,
            sim,
            hostile,
            ha_discovery=True,
            ha_prefix=f"ha-{base_topic}",
        )
        (listed,) = await w.wait_topic(registry, timeout=20)
    supervisor = running.bridge.nvrs[BAD]
    assert supervisor.known_channels() == list(range(1, MAX_CHANNELS + 1))
    topics = orjson.loads(listed.payload)["topics"]
    assert any(f"/ch{MAX_CAMERAS}_motion/" in t for t in topics)
    assert not any(f"/ch{MAX_CAMERAS + 1}_" in t for t in topics)
    started = time.monotonic()
    await assert_alive(running)
    assert time.monotonic() - started < 2
    async with watch(broker, f"{base_topic}/{BAD}/response/#") as rw:
        done = await command(rw, base_topic, BAD, "buzzer", {"timeout": 1})
    assert done["status"] == "ok"
    await assert_serving(running, broker, base_topic, sim, hostile)


@pytest.mark.parametrize("announce", [False, True], ids=["chunked", "content-length"])
async def test_a_50_mb_rest_answer_is_refused_without_being_read_whole(
    broker, base_topic, sim, hostile, start_bridge, announce
):
    """A 50 MB answer, max_answer_bytes 1 MiB: 'answer too large', the connection cut early."""
    limit = 1024 * 1024
    total = 50 * 1024 * 1024
    handler, record = streamed(total, announce=announce)
    hostile.rest["/system/callBuzzer"] = handler
    running = await start_pair(
        start_bridge, broker, base_topic, sim, hostile, bad={"max_answer_bytes": limit}
    )
    async with watch(broker, f"{base_topic}/{BAD}/response/#") as w:
        failed = await command(w, base_topic, BAD, "buzzer", {"timeout": 1})
        await eventually(lambda: record.closed_early, what="the bridge hung up")
        del hostile.rest["/system/callBuzzer"]
        done = await command(w, base_topic, BAD, "buzzer", {"timeout": 1})
    assert failed["status"] == "error"
    assert failed["error"].startswith("answer too large"), failed
    assert str(limit) in failed["error"]
    assert failed["result"] is None
    assert not record.finished
    assert record.sent < total // 2
    assert done["status"] == "ok"
    await assert_serving(running, broker, base_topic, sim, hostile)


# === other findings ==============================================================================


async def test_an_nvr_refusing_every_session_after_login_gets_few_logins_and_one_line(
    broker, base_topic, sim, hostile, start_bridge
):
    """Login accepted, then 401 to everything: logins back off, 'login refused' logged once."""
    hostile.refuse_after_login = True
    window = 3.0
    with captured_logs() as logs:
        running = await start_pair(start_bridge, broker, base_topic, sim, hostile, online=False)
        await eventually(lambda: hostile.logins >= 1, what="a first login")
        started = time.monotonic()
        first = hostile.logins
        with contextlib.suppress(AssertionError):
            # Waits the whole window unless the logins run away (the old code: ~300/s).
            await eventually(lambda: hostile.logins - first > 30, timeout=window)
        elapsed = time.monotonic() - started
        logins = hostile.logins - first
    # Backoff from 0.05 s doubling to the 0.5 s cap, full jitter: about 14 in 3 s.
    assert elapsed >= window - 0.1, f"{logins} logins in {elapsed:.1f} s"
    assert logins <= 30, f"{logins} logins in {window} s"
    refused = [e for e in logged(logs, "login refused") if e["log_level"] == "error"]
    assert len(refused) == 1, f"{len(refused)} error lines 'login refused' for {logins} logins"
    assert not running.bridge.nvrs[BAD].online
    assert running.bridge.nvrs[BAD].client.login_problem
    await assert_serving(running, broker, base_topic, sim)
    hostile.refuse_after_login = False
    await running.wait_online()
    await event_flows(broker, base_topic, BAD, hostile)


FORBIDDEN_REPLY_TOPICS = {
    "sys": "$SYS/{base}",
    "bridge-state": "{base}/bridge/state",
    "other-availability": "{base}/" + BAD + "/availability",
    "ha-config": "homeassistant/binary_sensor/{base}/config",
    "outside-prefix": "elsewhere/{base}",
}


@pytest.mark.parametrize("case", list(FORBIDDEN_REPLY_TOPICS))
async def test_a_forbidden_response_topic_is_refused_on_the_normal_topic(
    broker, base_topic, sim, hostile, start_bridge, case
):
    """An MQTT 5 Response Topic in the broker's, bridge's or HA's space: refused, no call."""
    if not broker.speaks_v5:
        pytest.skip("needs an MQTT 5 broker (Response Topic)")
    forbidden = FORBIDDEN_REPLY_TOPICS[case].format(base=base_topic)
    prefix = f"replies/{base_topic}/"
    overrides = {"response_topic_prefix": prefix} if case == "outside-prefix" else {}
    running = await start_pair(start_bridge, broker, base_topic, sim, hostile, **overrides)
    async with watch(broker, f"{base_topic}/{GOOD}/response/#", v5=True) as w:
        await w.client.subscribe(forbidden, qos=1)
        await w.client.subscribe(f"{prefix}#", qos=1)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = forbidden
        props.CorrelationData = b"corr-1"
        await send_request(
            w,
            base_topic,
            GOOD,
            "buzzer",
            {"timeout": 2, "transaction": "evil"},
            properties=props,
        )
        refused = await response_to(w, base_topic, GOOD, "buzzer", "evil")
        # A request with a good Response Topic is answered there; the broker keeps order,
        # so a reply on the forbidden topic would have come before it.
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = f"{prefix}ok"
        props.CorrelationData = b"corr-2"
        await send_request(
            w, base_topic, GOOD, "buzzer", {"timeout": 2, "transaction": "good"}, properties=props
        )
        (reply,) = await w.wait_topic(f"{prefix}ok")
    assert refused["status"] == "error"
    assert refused["error"].startswith("refused: the Response Topic"), refused
    assert refused["result"] is None
    # Only the retained state the bridge owns there (bridge/state, availability), if any.
    assert {m.payload for m in w.on(forbidden)} <= {b"online"}
    assert reply.json()["status"] == "ok"
    assert reply.correlation_data == b"corr-2"
    assert [c.query for c in sim.calls_to("/system/callBuzzer")] == [{"timeout": "2"}]
    assert commands_total(running, GOOD, "buzzer", "refused") == 1
    assert commands_total(running, GOOD, "buzzer", "ok") == 1
    await assert_serving(running, broker, base_topic, sim, hostile)


async def test_a_repeated_transaction_is_answered_again_not_executed_again(
    broker, base_topic, sim, hostile, start_bridge
):
    """The same non-null transaction twice: one REST call, the first response sent again."""
    running = await start_pair(start_bridge, broker, base_topic, sim, hostile)
    topic = f"{base_topic}/{GOOD}/response/manual_alarm"
    request = {"channel": 1, "command": "start", "transaction": {"id": "once-only"}}
    async with watch(broker, f"{base_topic}/{GOOD}/response/#") as w:
        await send_request(w, base_topic, GOOD, "manual_alarm", request)
        (first,) = await w.wait_topic(topic)
        await send_request(w, base_topic, GOOD, "manual_alarm", request)
        (_, again) = await w.wait_topic(topic, count=2)
        # Without a transaction nothing identifies a repeat: both run.
        for _ in range(2):
            await send_request(
                w, base_topic, GOOD, "manual_alarm", {"channel": 2, "command": "stop"}
            )
        await w.wait_topic(topic, count=4)
    assert first.json()["status"] == "ok"
    assert again.payload == first.payload
    calls = sim.calls_to("/record/manualAlarm")
    assert [c.body for c in calls] == [
        {"channel": 1, "command": "start"},
        {"channel": 2, "command": "stop"},
        {"channel": 2, "command": "stop"},
    ]
    repeated = metric(
        running, "nvr_bridge_commands_repeated_total", nvr=GOOD, command="manual_alarm"
    )
    assert repeated == 1
    await assert_serving(running, broker, base_topic, sim, hostile)


async def test_the_memory_of_answers_is_bounded_in_bytes(
    broker, base_topic, sim, hostile, start_bridge, monkeypatch
):
    """Past REPEAT_BYTES the oldest answers are forgotten: a repeat of one runs again."""
    monkeypatch.setattr("bridge.command_runner.REPEAT_BYTES", 1500)
    running = await start_pair(start_bridge, broker, base_topic, sim, hostile)
    async with watch(broker, f"{base_topic}/{GOOD}/response/#") as w:

        async def buzz(transaction: str) -> dict[str, Any]:
            await send_request(
                w, base_topic, GOOD, "buzzer", {"timeout": 1, "transaction": transaction}
            )
            return await response_to(w, base_topic, GOOD, "buzzer", transaction)

        for i in range(40):
            assert (await buzz(f"t{i}"))["status"] == "ok"
        assert len(sim.calls_to("/system/callBuzzer")) == 40
        await buzz("t39")  # remembered: answered again, not run
        assert len(sim.calls_to("/system/callBuzzer")) == 40
        await buzz("t0")  # forgotten for the bound: runs again
        await eventually(
            lambda: len(sim.calls_to("/system/callBuzzer")) == 41, what="t0 run again"
        )
    runner = running.bridge.nvrs[GOOD].commands
    assert runner._answered_bytes <= 1500
    await assert_serving(running, broker, base_topic, sim, hostile)


@pytest.mark.parametrize(
    ("method_command", "path", "status"),
    [
        (("buzzer", {"timeout": 1}), "/system/callBuzzer", 302),
        (("manual_alarm", {"channel": 1, "command": "start"}), "/record/manualAlarm", 307),
    ],
    ids=["GET-302", "POST-307"],
)
async def test_a_rest_redirect_to_another_origin_is_not_followed(
    broker, base_topic, sim, hostile, start_bridge, method_command, path, status
):
    """A command redirected to another server: an error naming the Location, nothing sent there."""
    name, payload = method_command
    async with Recorder() as thief:
        location = f"{thief.url}/steal"
        hostile.rest[path] = redirect(location, status)
        running = await start_pair(start_bridge, broker, base_topic, sim, hostile)
        async with watch(broker, f"{base_topic}/{BAD}/response/#") as w:
            failed = await command(w, base_topic, BAD, name, payload)
            del hostile.rest[path]
            done = await command(w, base_topic, BAD, name, payload)
    assert failed["status"] == "error"
    assert location in failed["error"], failed
    assert thief.seen == []
    assert done["status"] == "ok"
    await assert_serving(running, broker, base_topic, sim, hostile)


async def test_same_origin_redirects_are_followed_up_to_three_hops(
    broker, base_topic, sim, hostile, start_bridge
):
    """Three same-origin hops are followed (with the cookie); a fourth is an error."""
    hostile.rest["/system/callBuzzer"] = redirect("/hop1", 302)
    hostile.rest["/hop1"] = redirect(f"{hostile.url}/hop2", 307)
    hostile.rest["/hop2"] = redirect("/hop3?x=1", 301)
    hostile.rest["/hop3"] = answer({"Result": "OK", "hops": 3})
    running = await start_pair(start_bridge, broker, base_topic, sim, hostile)
    async with watch(broker, f"{base_topic}/{BAD}/response/#") as w:
        done = await command(w, base_topic, BAD, "buzzer", {"timeout": 1})
        hostile.rest["/hop3"] = redirect("/hop4", 302)
        hostile.rest["/hop4"] = answer({"Result": "OK", "hops": 4})
        failed = await command(w, base_topic, BAD, "buzzer", {"timeout": 1})
    assert done["status"] == "ok", done
    assert done["result"] == {"Result": "OK", "hops": 3}
    (hop3, *_) = hostile.calls_to("/hop3")
    assert hop3.query == {"x": "1"}
    assert hop3.cookie is not None and "session=" in hop3.cookie
    assert failed["status"] == "error"
    assert "more than 3" in failed["error"]
    assert hostile.calls_to("/hop4") == []
    await assert_serving(running, broker, base_topic, sim, hostile)


async def test_a_relative_redirect_resolves_against_the_url_that_sent_it(
    broker, base_topic, sim, hostile, start_bridge
):
    """callBuzzer -> /b/second -> 'third': a relative Location resolves to /b/third (RFC 3986)."""
    hostile.rest["/system/callBuzzer"] = redirect("/b/second", 302)
    hostile.rest["/b/second"] = redirect("third", 302)
    hostile.rest["/b/third"] = answer({"Result": "OK", "at": "/b/third"})
    running = await start_pair(start_bridge, broker, base_topic, sim, hostile)
    async with watch(broker, f"{base_topic}/{BAD}/response/#") as w:
        done = await command(w, base_topic, BAD, "buzzer", {"timeout": 1})
    assert [s.path for s in hostile.requests if s.path != LOGIN_PATH][-3:] == [
        "/system/callBuzzer",
        "/b/second",
        "/b/third",
    ]
    assert done["result"] == {"Result": "OK", "at": "/b/third"}, done
    await assert_serving(running, broker, base_topic, sim, hostile)


async def test_a_login_redirected_to_another_origin_sends_it_no_digest(
    broker, base_topic, sim, hostile, start_bridge
):
    """307 on POST /admin/login to another server: not followed, nothing reaches it."""
    async with Recorder() as thief:
        location = f"{thief.url}/admin/login"

        async def login(request: Any) -> Any:
            if request.method == "GET":
                return await answer({"realm": "r", "qop": "auth", "nonce": "n"})(request)
            return await redirect(location, 307)(request)

        hostile.rest[LOGIN_PATH] = login
        with captured_logs() as logs:
            running = await start_pair(start_bridge, broker, base_topic, sim, hostile, online=False)
            line = (await wait_for_log(logs, "login failed"))[0]
            await eventually(
                lambda: len(hostile.calls_to(LOGIN_PATH)) >= 4, what="the login retried"
            )
        assert location in line["reason"]
        assert thief.seen == []
        assert hostile.logins == 0
        await assert_serving(running, broker, base_topic, sim)
        del hostile.rest[LOGIN_PATH]
        await running.wait_online()
    assert thief.seen == []
    await event_flows(broker, base_topic, BAD, hostile)


async def test_a_websocket_redirect_to_another_origin_is_not_followed(
    broker, base_topic, sim, hostile, start_bridge
):
    """A handshake redirected to another server: refused, naming it; it sees no connection."""
    async with Recorder() as thief:
        location = f"ws://127.0.0.1:{thief.port}/meta/eventHook"
        hostile.handshakes["event"] = redirect(location, 302)
        with captured_logs() as logs:
            running = await start_pair(start_bridge, broker, base_topic, sim, hostile, online=False)
            lines = await wait_for_log(logs, "stream connect failed", nvr=BAD, stream="event")
            await eventually(lambda: len(hostile.handshakes_to("event")) >= 3, what="retries")
        line = lines[0]
        assert location in line["reason"]
        assert "another origin" in line["reason"]
        assert thief.seen == []
        # The handshakes that reached the NVR itself carried its cookie.
        assert all(h.cookie and "session=" in h.cookie for h in hostile.handshakes_to("event"))
        await assert_serving(running, broker, base_topic, sim)
        del hostile.handshakes["event"]
        await running.wait_online()
    assert thief.seen == []
    await event_flows(broker, base_topic, BAD, hostile)


async def test_bad_channel_numbers_are_rejected_and_never_alias_channel_1(
    broker, base_topic, sim, hostile, start_bridge
):
    """ChannelID -1, 0, "01", 1.0, true: rejected (no level -1/0/01, nothing on 1); "7" is 7."""
    running = await start_pair(start_bridge, broker, base_topic, sim, hostile)
    bad_ids: list[Any] = [-1, 0, "01", 1.0, True]
    events = [{"ChannelID": c, "Type": "Alias", "State": "active"} for c in bad_ids]
    statuses = [
        {"ChannelID": c, "Online": True, "Recording": True, "Event": False} for c in bad_ids
    ]
    async with watch(broker, f"{base_topic}/{BAD}/channel/#") as w:
        await hostile.push("event", [*events, {"ChannelID": "7", "Type": "Alias", "State": "once"}])
        await hostile.push("status", statuses)
        await hostile.push("event", {"ChannelID": 1, "Type": "Marker", "State": "once"})
        (seven,) = await w.wait_topic(f"{base_topic}/{BAD}/channel/7/event/Alias")
        await w.wait_topic(f"{base_topic}/{BAD}/channel/1/event/Marker")
        await eventually(lambda: invalid(running, "status") == 5, what="statuses rejected")
    assert seven.json()["channel"] == 7
    assert sorted(m.topic.removeprefix(f"{base_topic}/{BAD}/") for m in w.messages) == [
        "channel/1/event/Marker",
        "channel/7/event/Alias",
    ]
    assert invalid(running, "event") == 5
    assert running.bridge.nvrs[BAD].normalizer.channels_seen == frozenset()
    await assert_serving(running, broker, base_topic, sim, hostile)


@pytest.mark.parametrize(
    "transaction", [2**70 + 1, {"ids": [-(2**65) - 3, 2**64 + 7, 1]}], ids=["int", "nested"]
)
async def test_a_transaction_beyond_64_bits_comes_back_exactly(
    broker, base_topic, sim, hostile, start_bridge, transaction
):
    """An integer transaction of 2**70 + 1: echoed exactly (read with the stdlib json)."""
    running = await start_pair(start_bridge, broker, base_topic, sim, hostile)
    async with watch(broker, f"{base_topic}/{GOOD}/response/#") as w:
        payload = json.dumps({"timeout": 3, "transaction": transaction}).encode()
        await send_request(w, base_topic, GOOD, "buzzer", payload)
        (message,) = await w.wait_topic(f"{base_topic}/{GOOD}/response/buzzer")
        body = json.loads(message.payload)
        done = await command(w, base_topic, GOOD, "buzzer", {"timeout": 4})
    assert body["transaction"] == transaction
    # Integers, not floats that happen to compare equal: the digits are in the payload.
    assert json.dumps(transaction, separators=(",", ":")) in message.text
    assert body["status"] == "ok", body
    assert done["status"] == "ok"
    assert [c.query for c in sim.calls_to("/system/callBuzzer")] == [
        {"timeout": "3"},
        {"timeout": "4"},
    ]
    await assert_serving(running, broker, base_topic, sim, hostile)


async def test_an_unexpected_error_in_one_nvr_restarts_that_nvr_alone(
    broker, base_topic, sim, hostile, start_bridge, monkeypatch
):
    """A RuntimeError in bad's normalizer: bad restarts (counted, logged); good never stops."""
    running = await start_pair(start_bridge, broker, base_topic, sim, hostile)
    bridge = running.bridge
    normalizer = bridge.nvrs[BAD].normalizer
    real_event = normalizer._dispatch["event"]
    failures: list[int] = []

    def event_once(*args: Any) -> Any:
        if not failures:
            failures.append(1)
            raise RuntimeError("injected fault")
        return real_event(*args)

    monkeypatch.setitem(normalizer._dispatch, "event", event_once)
    sent: list[int] = []
    stop = asyncio.Event()

    async def feed_good() -> None:
        while not stop.is_set() and len(sent) < 2000:  # about 40 s at most
            sent.append(len(sent))
            await sim.push("meta", {"ChannelID": 1, "Type": "Seq", "Data": str(sent[-1])})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.02):
                    await stop.wait()

    async with watch(broker, f"{base_topic}/{GOOD}/channel/1/meta/Seq") as w:
        feeder = asyncio.create_task(feed_good(), name="feed-good")
        try:
            await w.wait_for(lambda: len(w.messages) >= 5, what="good publishing")
            with captured_logs() as logs:
                await hostile.push("event", {"ChannelID": 1, "Type": "Boom", "State": "once"})
                line = (await wait_for_log(logs, "nvr failed, restarting it"))[0]
                await eventually(
                    lambda: metric(running, "nvr_bridge_nvr_restarts_total", nvr=BAD) == 1,
                    what="the restart counted",
                )
                await running.wait_online()
                await assert_alive(running)
            await event_flows(broker, base_topic, BAD, hostile)
        finally:
            stop.set()
            await feeder
        await w.wait_for(lambda: len(w.messages) >= len(sent), what="every good item")
    assert line["nvr"] == BAD
    assert line.get("exc_info")
    assert len(logged(logs, "nvr failed, restarting it")) == 1
    assert [int(m.json()["data"]) for m in w.messages] == list(range(len(sent)))
    assert metric(running, "nvr_bridge_nvr_restarts_total", nvr=GOOD) == 0
    assert metric(running, "nvr_bridge_stream_reconnects_total", nvr=GOOD, stream="meta") == 0
    assert not logged(logs, "nvr failed, restarting it", nvr=GOOD)
    await assert_serving(running, broker, base_topic, sim, hostile)


# === the process: secrets, spool, start-up ======================================================


class SessionWatcher:
    """A subscriber with a persistent session, reconnecting through broker restarts."""

    def __init__(self, broker: BrokerProcess, topic_filter: str) -> None:
        self.broker = broker
        self.topic_filter = topic_filter
        self.client_id = f"watch-{uuid.uuid4().hex[:8]}"
        self.payloads: list[bytes] = []
        self.connected = asyncio.Event()

    async def run(self) -> None:
        while True:
            client = aiomqtt.Client(
                "127.0.0.1",
                self.broker.port,
                identifier=self.client_id,
                protocol=aiomqtt.ProtocolVersion.V311,
                clean_session=False,
            )
            try:
                async with client:
                    await client.subscribe(self.topic_filter, qos=1)
                    self.connected.set()
                    async for message in client.messages:
                        self.payloads.append(bytes(message.payload))  # type: ignore[arg-type]
            except (aiomqtt.MqttError, OSError):
                self.connected.clear()
                # The broker is away; the test's deadline bounds this loop.
                await asyncio.sleep(POLL_INTERVAL)

    async def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 20, what: str = ""
    ) -> None:
        await eventually(predicate, timeout=timeout, what=what)


@contextlib.asynccontextmanager
async def session_watcher(
    broker: BrokerProcess, topic_filter: str
) -> AsyncIterator[SessionWatcher]:
    watcher = SessionWatcher(broker, topic_filter)
    task = asyncio.create_task(watcher.run(), name="session-watcher")
    try:
        async with asyncio.timeout(10):
            await watcher.connected.wait()
        yield watcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def spawn(
    env: dict[str, str], output: Path, preexec: Callable[[], None] | None = None
) -> subprocess.Popen[bytes]:
    """``python -m bridge run`` with stdout and stderr going to ``output`` (never a full pipe)."""
    with output.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "run"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec,  # noqa: PLW1509 - only sets a resource limit, no locks taken
        )


async def terminate(process: subprocess.Popen[bytes], timeout: float = 10) -> int:
    """SIGTERM and wait for the exit code (killed after ``timeout``)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            process.wait(5)
            raise AssertionError(f"the bridge did not exit within {timeout} s of SIGTERM")
        await asyncio.sleep(POLL_INTERVAL)  # inside a deadline
    return process.returncode


def log_events(output: Path, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``output`` named ``event``."""
    found = []
    for line in output.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            record = orjson.loads(line)
            if isinstance(record, dict) and record.get("event") == event:
                found.append(record)
    return found


async def http_port_answers(port: int, path: str, status: int) -> Any:
    """Poll the bridge's HTTP server until ``path`` answers ``status``; its body."""
    async with asyncio.timeout(20):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                answer_status, body = await http_get(port, path)
                if answer_status == status:
                    return body
            await asyncio.sleep(0.05)  # polling a subprocess, inside a deadline


async def test_the_nvr_password_echoed_back_never_leaves_the_bridge(
    broker, base_topic, hostile, tmp_path
):
    """The password in frames, content, answers and errors: in no log line, topic or payload."""
    pw = HOSTILE_PASSWORD
    hostile.system_info = {
        "device_name": "Echo",
        "admin_password": pw,
        "nested": {"deep": [{"ApiSecret": pw}]},
        "stream_url": f"rtsp://admin:{pw}@10.0.0.9/live",
        "note": f"the password is {pw}",
    }
    hostile.cameras = [
        {"ChannelID": 1, "DeviceName": "Door", "Password": pw, "auth": {"Credential": "c-1"}}
    ]
    hostile.rest["/system/callBuzzer"] = answer(
        {
            "Result": "Error",
            "Description": f"wrong password {pw}",
            "pwd": pw,
            "detail": {"urls": [f"rtsp://u:{pw}@cam/1"]},
        },
        500,
    )
    env = bridge_env(
        broker.url, hostile.url, base_topic, BRIDGE_NVR_PASSWORD=pw, BRIDGE_LOG_LEVEL="debug"
    )
    output = tmp_path / "bridge.log"
    prefix = '{"ChannelID": 1, "Type": 5, "pad": "'
    straddling = prefix + "x" * (1024 - len(prefix) - 6) + pw + '"}'  # cut mid-password
    async with watch(broker, f"{base_topic}/#") as w:
        process = spawn(env, output)
        try:
            await w.wait_for(
                lambda: (
                    [m.text for m in w.on(f"{base_topic}/nvr1/availability")][-1:] == ["online"]
                ),
                timeout=20,
                what="nvr1 online",
            )
            await hostile.push("event", {"ChannelID": 1, "Type": 7, "State": "x", "e": [{"b": pw}]})
            await hostile.push(
                "event", '{"ChannelID": 1, "Type": ' + nested_list(100, f'"{pw}"') + "}"
            )
            await hostile.push("event", f"not json at all {pw}")
            await hostile.push("event", straddling)
            await hostile.push("event", {"ChannelID": 1, "Type": f"Motion-{pw}", "State": "once"})
            await hostile.push("meta", {"ChannelID": 1, "Type": "LPR", "Data": f"plate {pw}"})
            await hostile.push(
                "exception",
                {"exception": "diskError", "time": 1, "target": {"url": f"smb://u:{pw}@nas/x"}},
            )
            await hostile.push(
                "message",
                {
                    "message": "userChanged",
                    "time": 2,
                    "target": {"password": pw},
                    "content": {
                        "cams": [
                            {
                                "Password": pw,
                                "url": f"rtsp://admin:{pw}@10.0.0.9/s",
                                "ApiSecret": "s-1",
                                "PWD": "p",
                                "level": {"deeper": {"x_credential_y": "c"}},
                                "text": f"see {pw} here",
                            }
                        ]
                    },
                },
            )
            await send_request(w, base_topic, "nvr1", "buzzer", {"timeout": 1, "transaction": pw})
            (response,) = await w.wait_topic(f"{base_topic}/nvr1/response/buzzer", timeout=20)
            (message,) = await w.wait_topic(f"{base_topic}/nvr1/message/userChanged")
            (event,) = await w.wait_topic(f"{base_topic}/nvr1/channel/1/event/Motion-***")
            (meta,) = await w.wait_topic(f"{base_topic}/nvr1/channel/1/meta/LPR")
            (exception,) = await w.wait_topic(f"{base_topic}/nvr1/exception/diskError")
            (info,) = await w.wait_topic(f"{base_topic}/nvr1/info")
            await eventually(
                lambda: len(log_events(output, "frame rejected")) >= 4, what="4 rejections logged"
            )
        finally:
            code = await terminate(process)
    assert code == 0
    text = output.read_text()
    assert pw not in text
    assert pw[:6] not in text  # nor the start of it, where a log line was cut
    assert "Traceback" not in text
    published = [m for m in w.messages if "/request/" not in m.topic]  # not the test's own
    assert len(published) >= 10
    for entry in published:
        assert pw not in entry.topic, entry.topic
        assert pw.encode() not in entry.payload, entry.topic
    body = response.json()
    assert body["status"] == "error"
    assert body["transaction"] == "***"
    assert body["result"] == {
        "Result": "Error",
        "Description": "wrong password ***",
        "pwd": "***",
        "detail": {"urls": ["rtsp://***@cam/1"]},
    }
    content = message.json()["content"]["cams"][0]
    assert content == {
        "Password": "***",
        "url": "rtsp://***@10.0.0.9/s",
        "ApiSecret": "***",
        "PWD": "***",
        "level": {"deeper": {"x_credential_y": "***"}},
        "text": "see *** here",
    }
    assert message.json()["target"] == {"password": "***"}
    assert event.json()["type"] == "Motion-***"
    assert meta.json()["data"] == "plate ***"
    assert exception.json()["target"] == {"url": "smb://***@nas/x"}
    system = info.json()["system"]
    assert system["admin_password"] == "***"
    assert system["nested"] == {"deep": [{"ApiSecret": "***"}]}
    assert system["stream_url"] == "rtsp://***@10.0.0.9/live"
    assert system["note"] == "the password is ***"
    assert info.json()["cameras"][0]["Password"] == "***"
    assert info.json()["cameras"][0]["auth"] == {"Credential": "***"}
    assert log_events(output, "command failed")


def meta_items(start: int, count: int) -> list[dict[str, Any]]:
    pad = "p" * 200  # rows large enough that an outage's writes exceed the file-size limit
    return [
        {"ChannelID": 1 + i % 4, "Type": "Seq", "Data": f"{start + i}:{pad}"} for i in range(count)
    ]


def seq_values(payloads: list[bytes]) -> list[int]:
    return [int(orjson.loads(p)["data"].split(":")[0]) for p in payloads]


def file_size_limit(limit: int) -> Callable[[], None]:
    """A preexec_fn: files may not grow beyond ``limit`` bytes, and writing more fails.

    With SIGXFSZ ignored, a write beyond the limit fails with EFBIG, as on a full disk.
    """

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


async def test_a_spool_that_cannot_write_says_so_once_and_keeps_messages_in_memory(
    persistent_broker, base_topic, tmp_path
):
    """The spool's writes fail (file-size limit): one line, gauge 0, /readyz says so; none lost."""
    broker = persistent_broker
    spool_dir = tmp_path / "spool"
    total = 3000
    async with (
        SimulatedNvr(password=SECRET) as sim,
        session_watcher(broker, f"{base_topic}/nvr1/channel/+/meta/Seq") as watcher,
    ):
        env = bridge_env(
            broker.url,
            sim.url,
            base_topic,
            BRIDGE_SPOOL_DIR=str(spool_dir),
            BRIDGE_HTTP_HOST="127.0.0.1",
        )
        port = int(env["BRIDGE_HTTP_PORT"])
        first_log = tmp_path / "first.log"
        process = spawn(env, first_log, preexec=file_size_limit(256 * 1024))
        try:
            await http_port_answers(port, "/readyz", 200)
            broker.stop()
            await http_port_answers(port, "/readyz", 503)
            for start in range(0, total, 250):
                await sim.push("meta", meta_items(start, 250))
            await eventually(
                lambda: log_events(first_log, "spool write failed, keeping messages in memory"),
                what="the spool failure logged",
            )
            metrics = (await http_get(port, "/metrics"))[1]
            assert "nvr_bridge_spool_writing 0.0" in metrics
            broker.start()
            await watcher.wait_for(
                lambda: len(set(seq_values(watcher.payloads))) >= total, what=f"all {total}"
            )
            body = await http_port_answers(port, "/readyz", 503)
            assert len(body["reasons"]) == 1, body
            assert body["reasons"][0].startswith("spool not writing"), body
            (status, health) = await http_get(port, "/healthz")
            assert (status, health) == (200, {"status": "ok"})
        finally:
            code = await terminate(process)
        assert code == 0
        failures = log_events(first_log, "spool write failed, keeping messages in memory")
        assert len(failures) == 1, failures
        assert "Traceback" not in first_log.read_text()
        # A clean restart without the limit publishes nothing the broker confirmed again.
        second_log = tmp_path / "second.log"
        again = spawn(env, second_log)
        try:
            await http_port_answers(port, "/readyz", 200)
            await sim.push("meta", meta_items(total, 1))
            await watcher.wait_for(lambda: total in seq_values(watcher.payloads), what="the marker")
        finally:
            assert await terminate(again) == 0
    counts = Counter(seq_values(watcher.payloads))
    assert set(counts) == set(range(total + 1))
    assert max(counts.values()) == 1, [v for v, n in counts.items() if n > 1][:10]
    assert not log_events(second_log, "spool restored")


def start_failure_env(
    case: str, tmp_path: Path, blocker: socket.socket
) -> tuple[dict[str, str], str]:
    env = bridge_env("mqtt://127.0.0.1:1", "http://127.0.0.1:1", "hostile")
    env["BRIDGE_HTTP_HOST"] = "127.0.0.1"
    command_name = "check-config" if case.endswith("check-config") else "run"
    if case.startswith("nvr-ca"):
        env["BRIDGE_NVR_URL"] = "https://127.0.0.1:1"
        env["BRIDGE_NVR_CA_FILE"] = str(tmp_path / "missing-ca.pem")
    elif case == "mqtt-ca-run":
        env["BRIDGE_MQTT_URL"] = "mqtts://127.0.0.1:1"
        env["BRIDGE_MQTT_CA_FILE"] = str(tmp_path / "missing-ca.pem")
    elif case == "busy-http-port":
        env["BRIDGE_HTTP_PORT"] = str(blocker.getsockname()[1])
    elif case == "spool-under-proc":
        # /proc takes no new directories, whoever asks (root included).
        env["BRIDGE_SPOOL_DIR"] = f"/proc/nvr-bridge-{uuid.uuid4().hex[:6]}/spool"
    return env, command_name


@pytest.mark.parametrize(
    ("case", "prefix"),
    [
        pytest.param(case, prefix, id=case)
        for case, prefix in [
            ("nvr-ca-run", "config error: "),
            ("nvr-ca-check-config", "config error: "),
            ("mqtt-ca-run", "config error: "),
            ("busy-http-port", "start error: "),
            ("spool-under-proc", "start error: "),
        ]
    ],
)
async def test_what_the_bridge_cannot_run_without_is_one_line_and_exit_2(tmp_path, case, prefix):
    """A missing CA file, a busy HTTP port, an unusable spool: one line, exit 2, no traceback."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        env, command_name = start_failure_env(case, tmp_path, blocker)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            command_name,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(30):
            stdout, stderr = await process.communicate()
    errors = stderr.decode().strip().splitlines()
    assert process.returncode == 2, (stdout, stderr)
    assert len(errors) == 1, errors
    assert errors[0].startswith(prefix), errors
    assert "Traceback" not in stdout.decode() + stderr.decode()
    expected = {
        "nvr-ca-run": "missing-ca.pem",
        "nvr-ca-check-config": "missing-ca.pem",
        "mqtt-ca-run": "missing-ca.pem",
        "busy-http-port": env.get("BRIDGE_HTTP_PORT", ""),
        "spool-under-proc": "/proc/",
    }[case]
    assert expected in errors[0]
