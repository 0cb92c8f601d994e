"""Fault injection: each fault is detected, reported in logs or metrics, and healed alone.

Every test breaks one thing while the bridge runs (the NVR's websockets, its login, its
REST answers, its frames, its liveness, its very existence, or the broker), checks that
the bridge noticed and said so, then lets the fault clear and checks that the bridge
recovers without a restart: an event pushed afterwards is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from bridge.sim import SimulatedNvr
from tests.conftest import (
    POLL_INTERVAL,
    all_streams_connected,
    eventually,
    make_config,
    metric_value,
    nvr_config,
    watch,
)

pytestmark = pytest.mark.asyncio

STREAMS = ("event", "meta", "exception", "status", "message")


def captured_logs() -> Any:
    """Capture structlog events with the bound ``nvr`` and ``stream`` merged in."""
    return capture_logs(processors=[merge_contextvars])


def logged(logs: list[dict[str, Any]], event: str, **fields: Any) -> list[dict[str, Any]]:
    """The captured log entries named ``event`` whose fields include ``fields``."""
    return [
        entry
        for entry in logs
        if entry.get("event") == event and all(entry.get(k) == v for k, v in fields.items())
    ]


async def http_get(port: int | None, path: str) -> tuple[int, Any]:
    """GET a path of the bridge's health server: (status, JSON body or text)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as answer,
    ):
        raw = await answer.read()
    try:
        return answer.status, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return answer.status, raw.decode()


async def readyz_becomes(port: int | None, status: int, timeout: float = 10.0) -> Any:
    """Poll /readyz until it answers ``status``; returns its JSON body."""
    async with asyncio.timeout(timeout):
        while True:
            answer, body = await http_get(port, "/readyz")
            if answer == status:
                return body
            await asyncio.sleep(POLL_INTERVAL)  # inside a deadline


async def assert_healthy(running: Any) -> None:
    """/healthz answers 200: the process's loops are alive whatever the fault."""
    status, body = await http_get(running.bridge.http.port, "/healthz")
    assert (status, body) == (200, {"status": "ok"})
    assert running.task is not None and not running.task.done()


async def assert_events_flow(
    broker: Any, base_topic: str, sim: SimulatedNvr, channel: int = 3, *, resend: bool = False
) -> None:
    """An event the NVR sends now is published: the bridge has recovered.

    ``resend`` pushes the event again every 0.25 s until one arrives, for recoveries where
    a connection opened during the fault may still die once more on its own.
    """
    kind = f"Recovered{uuid.uuid4().hex[:6]}"
    topic = f"{base_topic}/nvr1/channel/{channel}/event/{kind}"
    async with watch(broker, topic) as w:
        await sim.push("event", {"ChannelID": channel, "Type": kind, "State": "once"})
        if resend:
            async with asyncio.timeout(10):
                while True:
                    with contextlib.suppress(AssertionError):
                        await w.wait_topic(topic, timeout=0.25)
                    if w.on(topic):
                        break
                    await sim.push("event", {"ChannelID": channel, "Type": kind, "State": "once"})
        message = (await w.wait_topic(topic))[0]
    assert message.json()["type"] == kind


async def wait_for_log(
    logs: list[dict[str, Any]], event: str, count: int = 1, timeout: float = 10.0, **fields: Any
) -> list[dict[str, Any]]:
    """Wait until ``count`` entries named ``event`` (with ``fields``) were logged."""
    await eventually(
        lambda: len(logged(logs, event, **fields)) >= count,
        timeout=timeout,
        what=f"{count} log line(s) {event!r} {fields or ''}",
    )
    return logged(logs, event, **fields)


def gauge(running: Any, name: str, **labels: str) -> Callable[[], float]:
    return lambda: metric_value(running.bridge, name, **labels)


# --- the NVR's websockets ---------------------------------------------------------------


async def test_all_dropped_websockets_are_logged_and_reconnect(
    broker, base_topic, sim, start_bridge
):
    """The NVR closes every stream: each logs 'stream disconnected', counts a reconnect, heals."""
    running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
    await running.wait_online()
    with captured_logs() as logs:
        await sim.drop_websockets()
        for stream in STREAMS:
            await wait_for_log(logs, "stream disconnected", stream=stream, nvr="nvr1")
        await all_streams_connected(sim)
        await running.wait_online()
    for stream in STREAMS:
        (line,) = logged(logs, "stream disconnected", stream=stream)
        assert line["log_level"] == "warning"
        assert "1001" in line["reason"]  # the simulator's "going away" close code
        reconnects = metric_value(
            running.bridge, "nvr_bridge_stream_reconnects_total", nvr="nvr1", stream=stream
        )
        assert reconnects == 1
        assert (
            metric_value(running.bridge, "nvr_bridge_stream_connected", nvr="nvr1", stream=stream)
            == 1
        )
    await assert_events_flow(broker, base_topic, sim)


async def test_one_dropped_stream_reconnects_alone(broker, base_topic, sim, start_bridge):
    """Only the dropped stream reconnects; the other four are untouched."""
    running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
    await running.wait_online()
    async with watch(broker, f"{base_topic}/nvr1/availability") as w:
        await w.wait_for(lambda: w.messages, what="retained availability")
        with captured_logs() as logs:
            await sim.drop_websockets("meta")
            await wait_for_log(logs, "stream disconnected", stream="meta")
            await eventually(
                gauge(running, "nvr_bridge_stream_reconnects_total", nvr="nvr1", stream="meta"),
                what="meta reconnected",
            )
            await running.wait_online()
            await w.wait_for(
                lambda: [m.text for m in w.messages][-2:] == ["offline", "online"],
                what="availability offline then online",
            )
    assert [line["stream"] for line in logged(logs, "stream disconnected")] == ["meta"]
    for stream in STREAMS:
        reconnects = metric_value(
            running.bridge, "nvr_bridge_stream_reconnects_total", nvr="nvr1", stream=stream
        )
        assert reconnects == (1 if stream == "meta" else 0), stream
    assert all(sim.clients(s) == 1 for s in STREAMS)
    async with watch(broker, f"{base_topic}/nvr1/channel/2/meta/#") as w:
        await sim.push("meta", {"ChannelID": 2, "Type": "LPR", "Data": "AFTER-1"})
        (message,) = await w.wait_topic(f"{base_topic}/nvr1/channel/2/meta/LPR")
    assert message.json()["data"] == "AFTER-1"


# --- login --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["refuse", "refuse401"])
async def test_refused_login_is_reported_then_retried_until_accepted(
    broker, base_topic, sim, start_bridge, mode
):
    """A refused login ({"Result": "Error"} or 401): 'login refused', counted, not ready; heals."""
    sim.login_mode = mode
    with captured_logs() as logs:
        running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        refusals = await wait_for_log(logs, "login refused", count=2)
        status, body = await http_get(running.bridge.http.port, "/readyz")
        assert status == 503
        assert body["ready"] is False
        assert any(reason.startswith("nvr nvr1 offline") for reason in body["reasons"])
        await assert_healthy(running)
        assert sim.logins == 0
        sim.login_mode = "ok"
        await running.wait_online()
    line = refusals[0]
    assert line["log_level"] == "error"
    assert line["username"] == "admin"
    assert line["url"] == sim.url
    assert line["retry_in"] >= 0
    assert ("401" if mode == "refuse401" else "refused the login") in line["reason"]
    # One clear line per attempt, not one per stream: five streams share the login.
    assert len(logged(logs, "login refused")) <= sim.login_attempts
    bridge = running.bridge
    refused = metric_value(bridge, "nvr_bridge_nvr_logins_total", nvr="nvr1", outcome="refused")
    assert refused >= 2
    assert metric_value(bridge, "nvr_bridge_nvr_logins_total", nvr="nvr1", outcome="ok") == 1
    assert sim.logins == 1
    status, body = await http_get(bridge.http.port, "/readyz")
    assert (status, body) == (200, {"ready": True})
    await assert_events_flow(broker, base_topic, sim)


async def test_slow_login_still_gets_online(broker, base_topic, sim, start_bridge):
    """A login answered after 1 s is waited for: one login, no retry storm, online."""
    sim.login_mode = "slow"
    sim.login_delay = 1.0
    started = time.monotonic()
    with captured_logs() as logs:
        running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        await running.wait_online()
    assert time.monotonic() - started >= 1.0
    assert sim.logins == 1
    assert sim.login_attempts == 1
    assert not logged(logs, "login failed")
    assert not logged(logs, "login refused")
    assert len(logged(logs, "logged in")) == 1
    await assert_events_flow(broker, base_topic, sim)


async def test_login_answering_500_is_transient_and_retried(broker, base_topic, sim, start_bridge):
    """A 500 on login: 'login failed' (a warning, counted failed, not refused); then online."""
    sim.login_mode = "error500"
    with captured_logs() as logs:
        running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        failures = await wait_for_log(logs, "login failed", count=2)
        assert not running.bridge.nvrs["nvr1"].online
        await assert_healthy(running)
        sim.login_mode = "ok"
        await running.wait_online()
    assert failures[0]["log_level"] == "warning"
    assert "500" in failures[0]["reason"]
    assert failures[0]["url"] == sim.url
    assert not logged(logs, "login refused")
    bridge = running.bridge
    assert metric_value(bridge, "nvr_bridge_nvr_logins_total", nvr="nvr1", outcome="failed") >= 2
    assert metric_value(bridge, "nvr_bridge_nvr_logins_total", nvr="nvr1", outcome="refused") == 0
    await assert_events_flow(broker, base_topic, sim)


# --- REST commands ------------------------------------------------------------------------


async def command(w: Any, base_topic: str, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Publish a request with a fresh transaction and wait for its response."""
    transaction = uuid.uuid4().hex
    await w.publish(
        f"{base_topic}/nvr1/request/{name}",
        orjson.dumps({**payload, "transaction": transaction}),
        qos=1,
    )

    def find() -> dict[str, Any] | None:
        for message in w.on(f"{base_topic}/nvr1/response/{name}"):
            body = message.json()
            if body.get("transaction") == transaction:
                return body
        return None

    answer: dict[str, Any] = await w.wait_for(find, what=f"response to {name} {transaction}")
    return answer


async def test_rest_500_gives_an_error_response_then_ok_once_cleared(
    broker, base_topic, sim, start_bridge
):
    """A command answered 500: status error, 'command failed' logged; fine after the fault."""
    path = "/record/manualAlarm"
    running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
    await running.wait_online()
    sim.set_fault(path, "http500")
    async with watch(broker, f"{base_topic}/nvr1/response/#") as w:
        with captured_logs() as logs:
            failed = await command(
                w, base_topic, "manual_alarm", {"channel": 1, "command": "start"}
            )
        sim.set_fault(path, None)
        done = await command(w, base_topic, "manual_alarm", {"channel": 1, "command": "stop"})
    assert failed["status"] == "error"
    assert "HTTP 500" in failed["error"]
    assert failed["result"] == {"Result": "Error", "Description": "Internal error"}
    (line,) = logged(logs, "command failed", command="manual_alarm")
    assert "500" in line["error"]
    assert done["status"] == "ok" and done["error"] is None
    assert [c.body["command"] for c in sim.calls_to(path)] == ["start", "stop"]

    def outcome(kind: str) -> float:
        return metric_value(
            running.bridge,
            "nvr_bridge_commands_total",
            nvr="nvr1",
            command="manual_alarm",
            outcome=kind,
        )

    assert (outcome("error"), outcome("ok")) == (1, 1)
    # A failed REST call is no stream fault.
    assert running.bridge.nvrs["nvr1"].online
    assert (
        metric_value(
            running.bridge, "nvr_bridge_stream_reconnects_total", nvr="nvr1", stream="event"
        )
        == 0
    )
    await assert_events_flow(broker, base_topic, sim)


async def test_rest_answer_slower_than_command_timeout_fails_fast_then_recovers(
    broker, base_topic, sim, start_bridge
):
    """A REST answer later than command_timeout: error within the timeout, not retried; heals."""
    path = "/system/callBuzzer"
    running = await start_bridge(
        make_config(broker, base_topic, [nvr_config(sim)], command_timeout=0.5)
    )
    await running.wait_online()
    sim.set_fault(path, "slow", delay=5)
    async with watch(broker, f"{base_topic}/nvr1/response/#") as w:
        with captured_logs() as logs:
            started = time.monotonic()
            late = await command(w, base_topic, "buzzer", {"timeout": 2})
            elapsed = time.monotonic() - started
        # A timed-out call may have reached the NVR: it is never retried.
        assert len(sim.calls_to(path)) == 1
        sim.set_fault(path, None)
        done = await command(w, base_topic, "buzzer", {"timeout": 3})
    assert late["status"] == "error"
    assert "0.5 s" in late["error"]
    assert late["result"] is None
    assert 0.5 <= elapsed < 3.0
    (line,) = logged(logs, "command failed", command="buzzer")
    assert "did not answer" in line["error"]
    assert done["status"] == "ok"
    assert len(sim.calls_to(path)) == 2
    error = metric_value(
        running.bridge, "nvr_bridge_commands_total", nvr="nvr1", command="buzzer", outcome="error"
    )
    assert error == 1
    await assert_events_flow(broker, base_topic, sim)


# --- frames ---------------------------------------------------------------------------------


async def test_garbage_and_truncated_frames_are_counted_and_the_stream_stays_up(
    broker, base_topic, sim, start_bridge
):
    """Garbage, a truncated object and a truncated array: counted invalid, logged, no reconnect."""
    running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
    await running.wait_online()
    bridge = running.bridge
    frames = [
        "\x00\x01 <html>garbage</html> \ufffd",
        '{"ChannelID": 1, "Type": "Motion", "Sta',
        '[{"ChannelID": 1, "Type": "Motion", "State": "once"}, {"Chan',
    ]
    with captured_logs() as logs:
        for frame in frames:
            await sim.push("event", frame)
        rejected = await wait_for_log(logs, "frame rejected", count=len(frames), stream="event")
    assert (
        metric_value(bridge, "nvr_bridge_messages_invalid_total", nvr="nvr1", stream="event") == 3
    )
    assert (
        metric_value(bridge, "nvr_bridge_messages_received_total", nvr="nvr1", stream="event") == 3
    )
    assert (
        metric_value(bridge, "nvr_bridge_messages_published_total", nvr="nvr1", stream="event") == 0
    )
    for line, frame in zip(rejected, frames, strict=True):
        assert line["log_level"] == "warning"
        assert line["nvr"] == "nvr1"
        assert line["rejected"] == 1
        assert line["reasons"]
        assert frame[:20] in str(line["frame"])
    assert not logged(logs, "stream disconnected")
    assert sim.clients("event") == 1
    assert metric_value(bridge, "nvr_bridge_stream_connected", nvr="nvr1", stream="event") == 1
    assert (
        metric_value(bridge, "nvr_bridge_stream_reconnects_total", nvr="nvr1", stream="event") == 0
    )
    await assert_events_flow(broker, base_topic, sim)
    assert (
        metric_value(bridge, "nvr_bridge_messages_received_total", nvr="nvr1", stream="event") == 4
    )


async def test_a_burst_of_20000_events_is_received_and_published(
    broker, base_topic, sim, start_bridge
):
    """20,000 events in frames of 100: all received, all published with their states, stream up."""
    total = 20_000
    running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
    await running.wait_online()
    bridge = running.bridge

    def count(name: str) -> float:
        return metric_value(bridge, f"nvr_bridge_messages_{name}_total", nvr="nvr1", stream="event")

    started = time.monotonic()
    await sim.burst("event", total, per_frame=100)
    await eventually(lambda: count("received") == total, timeout=20, what="20,000 received")
    # The simulator alternates active and inactive, so each event also changes its state topic.
    await eventually(
        lambda: count("published") >= 2 * total, timeout=20, what="40,000 publishes confirmed"
    )
    elapsed = time.monotonic() - started
    assert count("published") == 2 * total
    assert count("invalid") == count("dropped") == 0
    await eventually(
        lambda: metric_value(bridge, "nvr_bridge_publish_queue_depth") == 0, what="buffer drained"
    )
    assert metric_value(bridge, "nvr_bridge_stream_connected", nvr="nvr1", stream="event") == 1
    assert (
        metric_value(bridge, "nvr_bridge_stream_reconnects_total", nvr="nvr1", stream="event") == 0
    )
    assert sim.clients("event") == 1
    assert bridge.nvrs["nvr1"].online
    assert elapsed < 20
    await assert_events_flow(broker, base_topic, sim)


# --- liveness -------------------------------------------------------------------------------


async def test_a_silent_nvr_is_detected_by_ping_and_reconnected(
    broker, base_topic, sim, start_bridge
):
    """An NVR that keeps its sockets open and says nothing: no pong, streams dead; then heals."""
    config = make_config(
        broker, base_topic, [nvr_config(sim)], ws_ping_interval=0.5, ws_ping_timeout=0.5
    )
    running = await start_bridge(config)
    await running.wait_online()
    bridge = running.bridge
    async with watch(broker, f"{base_topic}/nvr1/availability") as w:
        await w.wait_for(lambda: [m.text for m in w.messages] == ["online"], what="online")
        with captured_logs() as logs:
            sim.silent = True
            await eventually(
                lambda: (
                    metric_value(bridge, "nvr_bridge_stream_connected", nvr="nvr1", stream="event")
                    == 0
                ),
                what="the event stream seen dead",
            )
            await w.wait_for(
                lambda: [m.text for m in w.messages][-1:] == ["offline"], what="offline"
            )
            for stream in STREAMS:
                await wait_for_log(logs, "stream disconnected", stream=stream)
            # Streams flap (reconnect, then die again), so readiness is caught when down.
            body = await readyz_becomes(bridge.http.port, 503)
            assert body["ready"] is False
            assert any(reason.startswith("nvr nvr1 offline") for reason in body["reasons"])
            await assert_healthy(running)
            # Reconnections succeed (the NVR still accepts) and die again, each counted.
            await eventually(
                lambda: all(
                    metric_value(bridge, "nvr_bridge_stream_reconnects_total", nvr="nvr1", stream=s)
                    >= 1
                    for s in STREAMS
                ),
                what="every stream reconnecting",
            )
            sim.silent = False
            await running.wait_online()
            await w.wait_for(lambda: [m.text for m in w.messages][-1:] == ["online"], what="online")
    dead = logged(logs, "stream disconnected", stream="event")[0]
    assert dead["log_level"] == "warning"
    assert "pong" in dead["reason"]
    await assert_events_flow(broker, base_topic, sim, resend=True)
    await running.wait_online()


async def test_an_nvr_that_goes_away_and_comes_back_is_logged_into_again(
    broker, base_topic, sim, start_bridge
):
    """The NVR stops (connection refused), then a fresh one starts on the same port: re-login."""
    running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
    await running.wait_online()
    bridge = running.bridge
    port = sim.port
    with captured_logs() as logs:
        await sim.stop()
        await eventually(lambda: not bridge.nvrs["nvr1"].online, what="the NVR seen gone")
        await wait_for_log(logs, "stream connect failed", stream="event")
        await assert_healthy(running)
        status, body = await http_get(bridge.http.port, "/readyz")
        assert status == 503
        assert any("nvr nvr1 offline" in reason for reason in body["reasons"])
        reborn = SimulatedNvr(channels=4, traffic=False)
        await reborn.start(port=port)
        try:
            await running.wait_online()
            await all_streams_connected(reborn)
            # The new NVR knows no session: one fresh login serves all five streams.
            assert reborn.logins == 1
            await assert_events_flow(broker, base_topic, reborn)
        finally:
            await reborn.stop()
    failed = logged(logs, "stream connect failed", stream="event")[0]
    assert failed["log_level"] == "warning"
    assert "Connect" in failed["reason"] or "refused" in failed["reason"].lower()
    assert len(logged(logs, "logged in")) == 1
    assert metric_value(bridge, "nvr_bridge_nvr_logins_total", nvr="nvr1", outcome="ok") == 2


# --- the broker -----------------------------------------------------------------------------


async def test_broker_outage_is_reported_and_the_bridge_reconnects(
    private_broker, base_topic, sim, start_bridge
):
    """The broker stops: 'mqtt connection lost', mqtt_connected 0, /readyz 503; back: 1, 200."""
    broker = private_broker
    running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
    await running.wait_online()
    bridge = running.bridge
    port = bridge.http.port
    assert metric_value(bridge, "nvr_bridge_mqtt_connected") == 1
    with captured_logs() as logs:
        broker.stop()
        await eventually(
            lambda: metric_value(bridge, "nvr_bridge_mqtt_connected") == 0, what="broker seen gone"
        )
        # Reconnection attempts while it is away find nobody listening.
        await wait_for_log(logs, "mqtt connect failed", error="[Errno 111] Connection refused")
        status, body = await http_get(port, "/readyz")
        assert status == 503
        assert body == {"ready": False, "reasons": [f"mqtt broker {broker.url} not connected"]}
        await assert_healthy(running)
        # The NVR side is unaffected by the broker's absence.
        assert bridge.nvrs["nvr1"].online
        broker.start()
        await eventually(
            lambda: metric_value(bridge, "nvr_bridge_mqtt_connected") == 1,
            what="broker reconnected",
        )
        await wait_for_log(logs, "mqtt connected")
    refused = logged(logs, "mqtt connect failed", error="[Errno 111] Connection refused")[0]
    assert refused["log_level"] == "warning"
    assert "broker running" in refused["hint"]
    status, body = await http_get(port, "/readyz")
    assert (status, body) == (200, {"ready": True})
    await assert_healthy(running)
    async with watch(broker, f"{base_topic}/bridge/state") as w:
        await w.wait_for(lambda: [m.text for m in w.messages] == ["online"], what="bridge online")
    await assert_events_flow(broker, base_topic, sim)
    # The first line of the outage must say that an established connection was lost, not
    # that a connection attempt failed (the operator's first clue when the broker dies).
    first = next(entry for entry in logs if entry["event"].startswith("mqtt"))
    assert first["event"] == "mqtt connection lost", first
    assert first["log_level"] == "warning"
    assert first["url"] == broker.url
