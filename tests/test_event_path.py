"""The event path end to end: simulated NVR -> bridge -> real broker -> subscriber."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import (
    all_streams_connected,
    eventually,
    make_config,
    metric_value,
    nvr_config,
    watch,
)

pytestmark = pytest.mark.asyncio


async def test_every_stream_publishes_its_topic_and_payload(broker, base_topic, sim, start_bridge):
    """Each of the five streams reaches its CONTRACT.md section 4 topic with its payload."""
    async with watch(broker, f"{base_topic}/#") as w:
        bridge = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        await bridge.wait_online()
        await sim.push("event", {"ChannelID": 2, "Type": "Motion", "State": "active"})
        await sim.push("meta", {"ChannelID": 3, "Type": "LPR", "Data": "ABC-123"})
        await sim.push(
            "exception", {"exception": "DiskError", "target": "sda", "time": 1700000000000}
        )
        await sim.push(
            "message",
            {
                "message": "sysTimeChanged",
                "time": 1700000000001,
                "content": {"sysTimeChanged": True},
            },
        )
        prefix = f"{base_topic}/nvr1"
        event = (await w.wait_topic(f"{prefix}/channel/2/event/Motion"))[0]
        state = (await w.wait_topic(f"{prefix}/channel/2/event/Motion/state"))[0]
        meta = (await w.wait_topic(f"{prefix}/channel/3/meta/LPR"))[0]
        exception = (await w.wait_topic(f"{prefix}/exception/DiskError"))[0]
        message = (await w.wait_topic(f"{prefix}/message/sysTimeChanged"))[0]
        status = (await w.wait_topic(f"{prefix}/channel/1/status"))[0]

    body = event.json()
    assert set(body) == {"nvr", "channel", "type", "state", "timestamp"}
    assert (body["nvr"], body["channel"], body["type"], body["state"]) == (
        "nvr1",
        2,
        "Motion",
        "active",
    )
    assert body["timestamp"].endswith("Z") and len(body["timestamp"]) == 24
    assert not event.retain
    assert state.text == "active"
    assert meta.json()["data"] == "ABC-123" and meta.json()["channel"] == 3
    assert exception.json() == {
        "nvr": "nvr1",
        "exception": "DiskError",
        "target": "sda",
        "time": 1700000000000,
        "timestamp": exception.json()["timestamp"],
    }
    assert message.json()["content"] == {"sysTimeChanged": True}
    assert message.json()["target"] is None
    assert set(status.json()) == {
        "nvr",
        "channel",
        "online",
        "recording",
        "event",
        "manual",
        "timestamp",
    }


async def test_array_frames_publish_every_item(broker, base_topic, sim, start_bridge):
    """A frame holding a JSON array publishes each of its items, in order."""
    async with watch(broker, f"{base_topic}/nvr1/channel/+/event/#") as w:
        bridge = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        await bridge.wait_online()
        items = [{"ChannelID": c, "Type": "Motion", "State": "once"} for c in (1, 2, 3, 4)]
        await sim.push("event", items)
        await w.wait_for(lambda: len(w.messages) >= 4, what="4 events")
    assert [m.json()["channel"] for m in w.messages] == [1, 2, 3, 4]
    # 'once' has no state topic
    assert not [m for m in w.messages if m.topic.endswith("/state")]


async def test_topic_levels_from_nvr_data_are_sanitized(broker, base_topic, sim, start_bridge):
    """'/', '+', '#' and whitespace in NVR strings become '_' in topics, kept in payloads."""
    async with watch(broker, f"{base_topic}/#") as w:
        bridge = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        await bridge.wait_online()
        await sim.push("event", {"Type": "a/b+c#d e", "State": "inactive"})
        topic = f"{base_topic}/nvr1/channel/system/event/a_b_c_d_e"
        received = (await w.wait_topic(topic))[0]
        await w.wait_topic(topic + "/state")
    assert received.json()["type"] == "a/b+c#d e"
    assert received.json()["channel"] is None


async def test_camera_status_is_published_on_first_sight_and_change_only(
    broker, base_topic, sim, start_bridge
):
    """The NVR repeats status every second; only first sight and changes are published."""
    async with watch(broker, f"{base_topic}/nvr1/channel/1/status") as w:
        bridge = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        await bridge.wait_online()
        await w.wait_for(lambda: len(w.messages) >= 1, what="first status")
        ticks = metric_value(
            bridge.bridge, "nvr_bridge_messages_received_total", nvr="nvr1", stream="status"
        )
        # Wait for at least two more one-second reports of the NVR.
        await eventually(
            lambda: (
                metric_value(
                    bridge.bridge, "nvr_bridge_messages_received_total", nvr="nvr1", stream="status"
                )
                >= ticks + 8
            ),
            timeout=5,
            what="two more status reports",
        )
        assert len(w.messages) == 1
        await sim.push(
            "status", [{"ChannelID": 1, "Online": False, "Recording": False, "Event": False}]
        )
        await w.wait_for(lambda: len(w.messages) >= 2, what="changed status")
    assert w.messages[0].retain is False or w.messages[0].retain is True
    assert w.messages[1].json()["online"] is False


async def test_retained_state_and_availability_reach_late_subscribers(
    broker, base_topic, sim, start_bridge
):
    """Event state, camera status, availability and bridge state are retained."""
    bridge = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
    await bridge.wait_online()
    await sim.push("event", {"ChannelID": 1, "Type": "Motion", "State": "active"})
    async with watch(broker, f"{base_topic}/nvr1/channel/1/event/Motion/state") as first:
        await first.wait_for(lambda: first.messages, what="state")
    async with watch(broker, f"{base_topic}/#") as late:
        await late.wait_topic(f"{base_topic}/nvr1/channel/1/event/Motion/state")
        await late.wait_topic(f"{base_topic}/nvr1/availability")
        await late.wait_topic(f"{base_topic}/bridge/state")
        await late.wait_topic(f"{base_topic}/nvr1/channel/1/status")
        await late.wait_topic(f"{base_topic}/nvr1/info")
    assert all(m.retain for m in late.messages)
    assert late.on(f"{base_topic}/nvr1/availability")[-1].text == "online"
    assert late.on(f"{base_topic}/bridge/state")[-1].text == "online"
    assert not late.matching(f"{base_topic}/nvr1/channel/1/event/Motion") or all(
        m.topic.endswith("/state") or m.topic.endswith("/status")
        for m in late.messages
        if "/channel/" in m.topic
    )


async def test_all_streams_reconnect_after_the_nvr_drops_them(
    broker, base_topic, sim, start_bridge
):
    """Dropped websockets reconnect on their own; availability goes offline then online."""
    async with watch(broker, f"{base_topic}/nvr1/availability") as w:
        bridge = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        await bridge.wait_online()
        await sim.drop_websockets()
        await w.wait_for(
            lambda: (
                [m.text for m in w.messages][-2:] == ["offline", "online"] and len(w.messages) >= 3
            ),
            what="offline then online",
        )
        await all_streams_connected(sim)
    for stream in ("event", "meta", "exception", "status", "message"):
        assert (
            metric_value(
                bridge.bridge, "nvr_bridge_stream_reconnects_total", nvr="nvr1", stream=stream
            )
            >= 1
        )
    async with watch(broker, f"{base_topic}/nvr1/channel/4/event/#") as after:
        await sim.push("event", {"ChannelID": 4, "Type": "Motion", "State": "once"})
        await after.wait_for(lambda: after.messages, what="event after reconnect")


async def test_expired_sessions_lead_to_a_new_login(broker, base_topic, sim, start_bridge):
    """After the NVR forgets its sessions, the bridge logs in again and reconnects."""
    bridge = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
    await bridge.wait_online()
    logins = sim.logins
    sim.expire_sessions()
    await sim.drop_websockets()
    await eventually(lambda: sim.logins > logins, what="a new login")
    await bridge.wait_online()
    # Five streams got a 401 at once, yet one login served them all.
    assert sim.logins == logins + 1
    async with watch(broker, f"{base_topic}/nvr1/channel/2/meta/#") as w:
        await sim.push("meta", {"ChannelID": 2, "Type": "Tag", "Data": "x"})
        await w.wait_for(lambda: w.messages, what="meta after re-login")


async def test_garbage_frames_are_counted_and_skipped(broker, base_topic, sim, start_bridge):
    """Non-JSON, wrong-shape and over-1-MiB frames are skipped; the stream stays up."""
    async with watch(broker, f"{base_topic}/nvr1/channel/+/event/#") as w:
        running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        await running.wait_online()
        await sim.push("event", "this is not json {")
        await sim.push("event", "42")
        await sim.push("event", {"ChannelID": 1, "Type": "Motion"})  # missing State
        await sim.push(
            "event",
            [
                {"ChannelID": 1, "Type": 5, "State": "once"},
                {"ChannelID": 2, "Type": "Motion", "State": "once"},
            ],
        )
        await sim.push("event", '{"Type": "' + "x" * (1024 * 1024 + 10) + '", "State": "once"}')
        await sim.push("event", {"ChannelID": 3, "Type": "Motion", "State": "once"})
        await w.wait_for(lambda: len(w.messages) >= 2, what="the two valid events")
    assert [m.json()["channel"] for m in w.messages] == [2, 3]
    bridge = running.bridge
    invalid = metric_value(bridge, "nvr_bridge_messages_invalid_total", nvr="nvr1", stream="event")
    received = metric_value(
        bridge, "nvr_bridge_messages_received_total", nvr="nvr1", stream="event"
    )
    assert invalid == 5
    assert received == 7
    assert sim.clients("event") == 1
    assert (
        metric_value(bridge, "nvr_bridge_stream_reconnects_total", nvr="nvr1", stream="event") == 0
    )


async def test_refused_login_is_retried_until_accepted(broker, base_topic, sim, start_bridge):
    """A refused login does not crash anything; the bridge keeps trying and gets online."""
    sim.login_mode = "refuse"
    running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
    await eventually(lambda: sim.login_attempts >= 2, what="repeated login attempts")
    assert sim.logins == 0
    assert not running.bridge.nvrs["nvr1"].online
    sim.login_mode = "ok"
    await running.wait_online(timeout=15)
    refused = metric_value(
        running.bridge, "nvr_bridge_nvr_logins_total", nvr="nvr1", outcome="refused"
    )
    assert refused >= 2


async def test_two_nvrs_in_one_process_have_separate_topics(broker, base_topic, start_bridge):
    """Two NVRs bridged by one process publish under their own ids."""
    from bridge.sim import SimulatedNvr

    async with SimulatedNvr(channels=2) as one, SimulatedNvr(channels=2, username=None) as two:
        config = make_config(
            broker,
            base_topic,
            [nvr_config(one, "front"), nvr_config(two, "back", username=None, password=None)],
        )
        async with watch(broker, f"{base_topic}/+/channel/+/event/#") as w:
            running = await start_bridge(config)
            await running.wait_online()
            await one.push("event", {"ChannelID": 1, "Type": "Motion", "State": "once"})
            await two.push("event", {"ChannelID": 2, "Type": "InputAlarm", "State": "once"})
            await w.wait_for(lambda: len(w.messages) >= 2, what="one event per NVR")
    topics = sorted(m.topic for m in w.messages)
    assert topics == [
        f"{base_topic}/back/channel/2/event/InputAlarm",
        f"{base_topic}/front/channel/1/event/Motion",
    ]


async def test_metrics_count_what_happened(broker, base_topic, sim, start_bridge):
    """N events pushed are N received and, with their state topics, 2N published."""
    running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
    await running.wait_online()
    bridge = running.bridge
    for stream in ("event", "meta", "exception", "status", "message"):
        assert (
            bridge.metrics.registry.get_sample_value(
                "nvr_bridge_messages_invalid_total", {"nvr": "nvr1", "stream": stream}
            )
            == 0
        )
    n = 25
    await sim.push("event", [{"ChannelID": 1, "Type": "Motion", "State": "active"}] * n)
    await eventually(
        lambda: (
            metric_value(bridge, "nvr_bridge_messages_published_total", nvr="nvr1", stream="event")
            >= 2 * n
        ),
        what="2N published",
    )
    assert (
        metric_value(bridge, "nvr_bridge_messages_received_total", nvr="nvr1", stream="event") == n
    )
    assert metric_value(bridge, "nvr_bridge_stream_connected", nvr="nvr1", stream="event") == 1
    assert metric_value(bridge, "nvr_bridge_mqtt_connected") == 1
    await eventually(lambda: metric_value(bridge, "nvr_bridge_publish_queue_depth") == 0)


async def test_stop_publishes_offline_and_closes_websockets(broker, base_topic, sim, start_bridge):
    """A clean stop publishes the NVR's and the bridge's offline and closes every socket."""
    async with watch(broker, f"{base_topic}/#") as w:
        running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        await running.wait_online()
        await asyncio.wait_for(running.stop(), 5)
        await w.wait_for(
            lambda: [m.text for m in w.on(f"{base_topic}/bridge/state")][-1:] == ["offline"],
            what="bridge offline",
        )
    assert w.on(f"{base_topic}/nvr1/availability")[-1].text == "offline"
    await eventually(lambda: sim.clients("event") == 0, what="websockets closed")
