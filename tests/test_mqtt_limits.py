"""Nothing a broker or an MQTT client sends can stop the bridge (CONTRACT section 9).

Each test breaks the MQTT side one way, with a real mosquitto configured for it, a
recording proxy or a scripted broker (``tests.mqtt_peers``), and checks what the bridge
does next: a message too large for the broker is dropped and counted, never retried;
one the broker closes the connection over is dropped as poison after three strikes; a
response too large is an error response; a request is executed at most once, even when
its delivery is repeated; a retained request is refused; a broker that drops every
connection is retried with the backoff; a link that delivers nothing fails
``/healthz``; a message too large for the bridge is skipped and acknowledged.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.config import MqttConfig
from bridge.mqtt import link as link_module
from bridge.mqtt.codec import PUBACK, Ack, Publish
from bridge.mqtt.link import MAX_INCOMING, POISON_STRIKES
from bridge.publishing import Publication
from tests.conftest import (
    POLL_INTERVAL,
    BrokerProcess,
    RunningBridge,
    Watcher,
    _broker_kind,
    eventually,
    free_port,
    make_config,
    metric_value,
    nvr_config,
    watch,
)
from tests.mqtt_peers import MqttProxy, ScriptedBroker
from tests.test_faults import captured_logs, http_get, logged, wait_for_log

pytestmark = pytest.mark.asyncio
# Where mosquitto's own behaviour is part of the test (Maximum Packet Size, sessions, DUP
# redelivery, Retain As Published), not the demo's embedded broker.
needs_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto") is None or _broker_kind() != "mosquitto",
    reason="needs mosquitto as the test broker",
)

MAX_PACKET = 65_536
POISON_LOG = "publish dropped: the broker closed the connection right after it, each time"


def mqtt_config(url: str, **overrides: Any) -> MqttConfig:
    settings: dict[str, Any] = {
        "url": url,
        "client_id": f"limits-{uuid.uuid4().hex[:8]}",
        "protocol": "5",
    }
    settings.update(overrides)
    return MqttConfig(**settings)


@pytest.fixture
async def small_packet_broker(tmp_path: Path) -> AsyncIterator[BrokerProcess]:
    """A mosquitto whose Maximum Packet Size is 64 KiB (announced to MQTT 5 clients)."""
    broker = BrokerProcess(
        "mosquitto", free_port(), tmp_path, extra_conf=f"max_packet_size {MAX_PACKET}\n"
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def metric(running: RunningBridge, name: str, **labels: str) -> float:
    return metric_value(running.bridge, name, **labels)


def dropped(running: RunningBridge, stream: str = "meta") -> float:
    return metric(running, "nvr_bridge_messages_dropped_total", nvr="nvr1", stream=stream)


async def request(w: Watcher, base_topic: str, command: str, body: Any, **kwargs: Any) -> None:
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    await w.publish(f"{base_topic}/nvr1/request/{command}", payload, qos=1, **kwargs)


async def healthz_becomes(running: RunningBridge, status: int, timeout: float = 10.0) -> Any:
    """Poll /healthz until it answers ``status``; its body."""
    port = running.bridge.http.port
    async with asyncio.timeout(timeout):
        while True:
            answer, body = await http_get(port, "/healthz")
            if answer == status:
                return body
            await asyncio.sleep(POLL_INTERVAL)  # inside a deadline


async def start_online(start_bridge: Any, config: Any, sim: Any) -> RunningBridge:
    running: RunningBridge = await start_bridge(config)
    await running.wait_online()
    await eventually(lambda: sim.clients("meta") >= 1, what="the meta stream open")
    await eventually(lambda: running.bridge.link.depth == 0, what="the start-up messages sent")
    return running


# --- a message larger than the broker's Maximum Packet Size -----------------------------------


@needs_mosquitto
@pytest.mark.parametrize(
    ("protocol", "max_packet"),
    [("5", None), ("3.1.1", MAX_PACKET)],
    ids=["mqtt5-announced", "3.1.1-BRIDGE_MQTT_MAX_PACKET"],
)
async def test_a_message_over_the_maximum_packet_size_is_dropped_and_counted(
    small_packet_broker, base_topic, sim, start_bridge, protocol, max_packet
):
    """100 KB against a 64 KiB limit: dropped, counted, one log line, the next one flows, no reconnect."""
    broker = small_packet_broker
    mqtt = mqtt_config(broker.url, protocol=protocol, max_packet=max_packet)
    running = await start_online(
        start_bridge, make_config(broker, base_topic, [nvr_config(sim)], mqtt=mqtt), sim
    )
    meta = f"{base_topic}/nvr1/channel/1/meta"
    async with watch(broker, f"{meta}/#", v5=protocol == "5") as w:
        with captured_logs() as logs:
            await sim.push("meta", {"ChannelID": 1, "Type": "Big", "Data": "x" * 100_000})
            await eventually(lambda: dropped(running) == 1, what="the big item counted dropped")
            await sim.push("meta", {"ChannelID": 1, "Type": "Small", "Data": "fits"})
            (small,) = await w.wait_topic(f"{meta}/Small")
            assert metric(running, "nvr_bridge_mqtt_connected") == 1
    assert small.json()["data"] == "fits"
    assert w.on(f"{meta}/Big") == []
    (line,) = logged(logs, "publish dropped")
    assert "Maximum Packet Size" in line["reason"], line
    assert not logged(logs, "mqtt connection lost")
    assert not logged(logs, "mqtt connected")  # the same connection throughout
    assert dropped(running) == 1
    assert running.bridge.link.depth == 0
    assert metric(running, "nvr_bridge_publish_dropped_total", reason="too_large") == 1
    # Not a stream message (a snapshot, a state, a response): counted all the same.
    running.bridge.link.publish(
        Publication(f"{base_topic}/nvr1/channel/1/snapshot", b"x" * 100_000, True, "nvr1")
    )
    await eventually(
        lambda: metric(running, "nvr_bridge_publish_dropped_total", reason="too_large") == 2,
        what="the big snapshot counted dropped",
    )
    assert dropped(running) == 1


@needs_mosquitto
async def test_without_a_known_limit_the_message_the_broker_closes_on_is_dropped_as_poison(
    small_packet_broker, base_topic, sim, start_bridge
):
    """3.1.1, no cap: mosquitto closes on the 100 KB item; three strikes, dropped, no tight loop."""
    broker = small_packet_broker
    async with MqttProxy(broker.port) as proxy:
        config = make_config(
            broker,
            base_topic,
            [nvr_config(sim)],
            mqtt=mqtt_config(proxy.url, protocol="3.1.1"),
            backoff_initial=0.05,
            backoff_max=0.5,
        )
        running = await start_online(start_bridge, config, sim)
        meta = f"{base_topic}/nvr1/channel/1/meta"
        async with watch(broker, f"{meta}/#", v5=False) as w:
            with captured_logs() as logs:
                before = len(proxy.connects())
                started = time.monotonic()
                await sim.push("meta", {"ChannelID": 1, "Type": "Big", "Data": "x" * 100_000})
                await wait_for_log(logs, POISON_LOG, timeout=20)
                took = time.monotonic() - started
                await running.wait_online()
                await sim.push("meta", {"ChannelID": 1, "Type": "Small", "Data": "after"})
                await w.wait_topic(f"{meta}/Small")
                reconnects = len(proxy.connects()) - before
    # Each strike is one lost connection and one reconnect: bounded, not a loop.
    assert reconnects == POISON_STRIKES, (reconnects, took)
    assert w.on(f"{meta}/Big") == []
    (line,) = logged(logs, POISON_LOG)
    assert line["size"] > MAX_PACKET
    assert dropped(running) == 1
    assert metric(running, "nvr_bridge_publish_dropped_total", reason="poison") == 1
    assert len(logged(logs, "mqtt connection lost")) == POISON_STRIKES
    assert metric(running, "nvr_bridge_mqtt_connected") == 1


# --- a response larger than the broker's Maximum Packet Size -----------------------------------


@needs_mosquitto
@pytest.mark.parametrize(
    ("protocol", "max_packet"),
    [("5", None), ("3.1.1", MAX_PACKET)],
    ids=["mqtt5-announced", "3.1.1-BRIDGE_MQTT_MAX_PACKET"],
)
async def test_a_response_over_the_maximum_packet_size_is_an_error_response(
    small_packet_broker, base_topic, sim, start_bridge, protocol, max_packet
):
    """A 100 KB NVR answer against a 64 KiB broker: `status: error`, `result too large`, not silence."""
    broker = small_packet_broker
    mqtt = mqtt_config(broker.url, protocol=protocol, max_packet=max_packet)
    running = await start_online(
        start_bridge, make_config(broker, base_topic, [nvr_config(sim)], mqtt=mqtt), sim
    )
    sim.set_fault("/system/callBuzzer", "oversize", size=100_000)
    responses = f"{base_topic}/nvr1/response"
    async with watch(broker, f"{responses}/#", v5=protocol == "5") as w:
        with captured_logs() as logs:
            await request(w, base_topic, "buzzer", {"timeout": 1, "transaction": "big"})
            (answer,) = await w.wait_topic(f"{responses}/buzzer")
            sim.set_fault("/system/callBuzzer", None)
            await request(w, base_topic, "buzzer", {"timeout": 1, "transaction": "small"})
            (_, after) = await w.wait_topic(f"{responses}/buzzer", count=2)
    body = answer.json()
    assert body["status"] == "error", body
    assert body["error"].startswith("result too large"), body
    assert "Maximum Packet Size" in body["error"], body
    assert (body["transaction"], body["result"]) == ("big", None)
    assert after.json()["status"] == "ok"
    assert len(sim.calls_to("/system/callBuzzer")) == 2
    assert not logged(logs, "mqtt connection lost")
    assert not logged(logs, "publish dropped")
    assert metric(running, "nvr_bridge_mqtt_connected") == 1


# --- at most once: a DUP redelivery ------------------------------------------------------------


@needs_mosquitto
@pytest.mark.parametrize(
    ("protocol", "slow"),
    [("5", False), ("3.1.1", False), ("5", True)],
    ids=["5", "3.1.1", "5-redelivered-while-running"],
)
async def test_a_dup_redelivery_of_a_request_is_answered_again_not_executed_again(
    broker, base_topic, sim, start_bridge, protocol, slow
):
    """The bridge's PUBACK of a request is lost, the broker redelivers it (DUP): one REST call, two answers.

    With a slow NVR the redelivery arrives while the first run is still waiting for it.
    """
    if slow:
        sim.set_fault("/system/callBuzzer", "slow", delay=1.0)
    async with MqttProxy(broker.port) as proxy:
        config = make_config(
            broker, base_topic, [nvr_config(sim)], mqtt=mqtt_config(proxy.url, protocol=protocol)
        )
        running = await start_online(start_bridge, config, sim)
        responses = f"{base_topic}/nvr1/response"
        async with watch(broker, f"{responses}/#", v5=protocol == "5") as w:
            proxy.cut_after_request(f"{base_topic}/nvr1/request/")
            # No transaction: only the delivery (packet id + DUP) tells the repeat apart.
            await request(w, base_topic, "buzzer", {"timeout": 2})
            async with asyncio.timeout(10):
                await proxy.cut_done.wait()
            first, again = await w.wait_topic(f"{responses}/buzzer", count=2, timeout=15)
            # A barrier: a later request's answer comes after any third buzzer answer.
            await request(w, base_topic, "manual_alarm", {"channel": 1, "command": "start"})
            await w.wait_topic(f"{responses}/manual_alarm")
    assert len(w.on(f"{responses}/buzzer")) == 2
    assert first.json()["status"] == "ok", first.json()
    assert again.payload == first.payload
    assert [c.query for c in sim.calls_to("/system/callBuzzer")] == [{"timeout": "2"}]
    repeated = metric(running, "nvr_bridge_commands_repeated_total", nvr="nvr1", command="buzzer")
    assert repeated == 1
    # The scenario happened as designed: the broker redelivered the same packet with DUP.
    cut = next(c for c in proxy.connections if c.cut)
    (original,) = [p for p in cut.down() if isinstance(p, Publish) and "/request/" in p.topic]
    redelivered = [
        p
        for c in proxy.connections[cut.index + 1 :]
        for p in c.down()
        if isinstance(p, Publish) and p.topic == original.topic
    ]
    assert [(p.dup, p.packet_id) for p in redelivered] == [(True, original.packet_id)]
    assert not original.dup


# --- a retained request ------------------------------------------------------------------------


@needs_mosquitto
async def test_a_retained_request_delivered_live_is_refused(broker, base_topic, sim, start_bridge):
    """Published with retain while the bridge listens: Retain As Published shows it, refused."""
    mqtt = mqtt_config(broker.url, protocol="5")
    running = await start_online(
        start_bridge, make_config(broker, base_topic, [nvr_config(sim)], mqtt=mqtt), sim
    )
    responses = f"{base_topic}/nvr1/response"
    async with watch(broker, f"{responses}/#") as w:
        await request(w, base_topic, "buzzer", {"timeout": 1, "transaction": "kept"}, retain=True)
        (answer,) = await w.wait_topic(f"{responses}/buzzer")
        # Clearing the retained request is no request: not answered, not counted.
        await request(w, base_topic, "buzzer", b"", retain=True)
        await request(w, base_topic, "buzzer", {"timeout": 1, "transaction": "after"})
        _, after = await w.wait_topic(f"{responses}/buzzer", count=2)
    assert after.json()["transaction"] == "after"
    body = answer.json()
    assert body["status"] == "error", body
    assert body["error"].startswith("refused: the request was retained"), body
    assert body["transaction"] == "kept"
    assert [c.query for c in sim.calls_to("/system/callBuzzer")] == [{"timeout": "1"}]
    refused = metric(
        running, "nvr_bridge_commands_total", nvr="nvr1", command="buzzer", outcome="refused"
    )
    assert refused == 1


# --- a broker that closes the connection after each PUBLISH ----------------------------------------


async def test_a_broker_closing_after_every_publish_is_retried_with_the_backoff(
    base_topic, sim, start_bridge
):
    """Each connection closed at its first PUBLISH: attempts follow the backoff, /healthz 200, then all arrive."""
    async with ScriptedBroker("ack") as scripted:
        config = make_config(
            scripted,
            base_topic,
            [nvr_config(sim)],
            mqtt=mqtt_config(scripted.url),
            backoff_initial=0.2,
            backoff_max=1.0,
        )
        running = await start_online(start_bridge, config, sim)
        scripted.set_mode("close")
        connects_before = len(scripted.connect_times)
        kinds = [f"Queued{n}" for n in range(3)]
        for kind in kinds:
            await sim.push("event", {"ChannelID": 1, "Type": kind, "State": "once"})
        # The measurement window: three seconds of a broker that never keeps a connection,
        # /healthz asked all along.
        window_end = time.monotonic() + 3.0
        while time.monotonic() < window_end:
            status, body = await http_get(running.bridge.http.port, "/healthz")
            assert (status, body) == (200, {"status": "ok"})
            await asyncio.sleep(0.1)  # the pace of the measurement, not a synchronisation
        attempts = len(scripted.connect_times) - connects_before
        scripted.set_mode("ack")
        events = [f"{base_topic}/nvr1/channel/1/event/{kind}" for kind in kinds]
        await eventually(
            lambda: all(t in scripted.delivered() for t in events), what="the queued events"
        )
        await running.wait_online()
    # Backoff 0.2 s doubling to 1 s with full jitter: about 7 attempts in 3 s. No backoff
    # at all would be thousands; the old code's ~10 per second, 30.
    assert 2 <= attempts <= 20, attempts
    # Nothing queued was lost to the closed connections (the first event was sent into one).
    assert [t for t in scripted.delivered() if t in events] == events


# --- /healthz: a link that delivers nothing ---------------------------------------------------


async def test_healthz_fails_while_the_broker_acknowledges_nothing_and_recovers(
    base_topic, sim, start_bridge
):
    """A broker that takes publishes and never PUBACKs (but answers pings): 503 after 1 s, 200 after."""
    async with ScriptedBroker("ack") as scripted:
        config = make_config(
            scripted, base_topic, [nvr_config(sim)], mqtt=mqtt_config(scripted.url), stall_seconds=1
        )
        running = await start_online(start_bridge, config, sim)
        await healthz_becomes(running, 200)
        scripted.set_mode("silent")
        topic = f"{base_topic}/nvr1/channel/1/event/Stalled"
        await sim.push("event", {"ChannelID": 1, "Type": "Stalled", "State": "once"})
        await eventually(lambda: topic in scripted.topics(), what="the event sent, unacknowledged")
        assert topic not in scripted.delivered()
        sent = time.monotonic()
        body = await healthz_becomes(running, 503)
        failed_after = time.monotonic() - sent
        assert running.bridge.link.connected
        scripted.set_mode("ack")
        await healthz_becomes(running, 200)
        assert running.bridge.link.depth == 0
        assert topic in scripted.delivered()
    assert body["status"] == "unhealthy"
    assert any(reason.startswith("mqtt link") for reason in body["dead"]), body
    assert failed_after >= 0.9, failed_after  # waited more than stall_seconds (1 s) first
    assert len(scripted.connect_times) == 1  # healthz failed, the link was never dropped


async def test_healthz_does_not_fail_for_a_message_queued_after_an_idle_spell(
    base_topic, sim, start_bridge
):
    """Idle longer than stall_seconds, then one message: it has waited for 0 s, not for the idle time."""
    async with ScriptedBroker("ack") as scripted:
        config = make_config(
            scripted, base_topic, [nvr_config(sim)], mqtt=mqtt_config(scripted.url), stall_seconds=1
        )
        running = await start_online(start_bridge, config, sim)
        # An idle, connected link is healthy however long it idles (1.5 s > stall_seconds).
        idle_until = time.monotonic() + 1.5
        while time.monotonic() < idle_until:
            assert (await http_get(running.bridge.http.port, "/healthz"))[0] == 200
            await asyncio.sleep(0.1)  # the pace of the measurement, not a synchronisation
        scripted.set_mode("silent")
        topic = f"{base_topic}/nvr1/channel/1/event/AfterIdle"
        await sim.push("event", {"ChannelID": 1, "Type": "AfterIdle", "State": "once"})
        await eventually(lambda: topic in scripted.topics(), what="the event sent, unacknowledged")
        status, body = await http_get(running.bridge.http.port, "/healthz")
        scripted.set_mode("ack")
        await healthz_becomes(running, 200)
    # The message has waited a few milliseconds, far less than stall_seconds.
    assert (status, body) == (200, {"status": "ok"})


async def test_a_broker_that_never_answers_connect_gets_a_growing_backoff(
    base_topic, sim, start_bridge, monkeypatch
):
    """No CONNACK ever: no connection lived, so the backoff must grow, never reset.

    The link's constants are scaled down together (the real ones are equal too: a 10 s
    CONNECT timeout and a 10 s stable connection), so the test takes seconds, not minutes.
    """
    monkeypatch.setattr(link_module, "CONNECT_TIMEOUT", 0.3)
    monkeypatch.setattr(link_module, "STABLE_SECONDS", 0.3)
    async with ScriptedBroker("mute") as scripted:
        config = make_config(
            scripted,
            base_topic,
            [nvr_config(sim)],
            mqtt=mqtt_config(scripted.url, protocol="5"),
            backoff_initial=0.05,
            backoff_max=5.0,
        )
        with captured_logs() as logs:
            running = await start_bridge(config)
            await wait_for_log(logs, "mqtt reconnecting", count=6, timeout=30)
            assert not running.bridge.link.connected
    failures = logged(logs, "mqtt connect failed")
    assert failures and "no answer to CONNECT" in failures[0]["error"], failures[:1]
    delays = [entry["retry_in"] for entry in logged(logs, "mqtt reconnecting")][:6]
    # Ceilings 0.05, 0.1, 0.2, 0.4, 0.8, 1.6 s with full jitter: all six under 0.05 s has a
    # chance of 3e-5; a backoff reset after every attempt keeps every one under 0.05 s.
    assert max(delays) > 0.05, delays


# --- an inbound message larger than the bridge's own limit ---------------------------------------


@needs_mosquitto
async def test_an_inbound_message_over_the_bridges_limit_is_skipped_and_acknowledged(
    broker, base_topic, sim, start_bridge
):
    """3.1.1 (no limit to announce): a 4 MiB+ request is skipped unread and PUBACKed; the next is answered."""
    async with MqttProxy(broker.port) as proxy:
        config = make_config(
            broker, base_topic, [nvr_config(sim)], mqtt=mqtt_config(proxy.url, protocol="3.1.1")
        )
        running = await start_online(start_bridge, config, sim)
        responses = f"{base_topic}/nvr1/response"
        async with watch(broker, f"{responses}/#", v5=False) as w:
            with captured_logs() as logs:
                limit = running.bridge.link.max_incoming
                assert limit >= MAX_INCOMING
                await request(w, base_topic, "buzzer", b"x" * (limit + 1024))
                (line,) = await wait_for_log(logs, "inbound message too large, skipped")
                await request(w, base_topic, "buzzer", {"timeout": 1, "transaction": "next"})
                (answer,) = await w.wait_topic(f"{responses}/buzzer")
    assert answer.json()["status"] == "ok"
    assert answer.json()["transaction"] == "next"
    assert [c.query for c in sim.calls_to("/system/callBuzzer")] == [{"timeout": "1"}]
    (connection,) = proxy.connections  # the connection was never dropped
    (big,) = [p for p in connection.down() if isinstance(p, Publish) and len(p.payload) > limit]
    assert line["packet_id"] == big.packet_id
    assert Ack(PUBACK, big.packet_id) in connection.up()
    assert not logged(logs, "mqtt connection lost")
    assert metric(running, "nvr_bridge_mqtt_connected") == 1
