"""No gap after an NVR outage: what happened while a stream was down is replayed once."""

from __future__ import annotations

import time

from bridge.nvr.models import EventHookMessage
from bridge.replay import GapMemory, HistoryItem, events_from_search, metas_from_search
from tests.conftest import (
    all_streams_connected,
    eventually,
    make_config,
    metric_value,
    nvr_config,
    watch,
)


def _item(channel: int, kind: str, state: str, time_ms: int) -> HistoryItem:
    message = EventHookMessage(ChannelID=channel, Type=kind, State=state)
    return HistoryItem(message, (channel, kind, state), time_ms)


def test_gap_memory_skips_items_seen_live_and_replays_the_rest_once():
    """A history item matching a live one (same fields, within tolerance) is not replayed."""
    memory = GapMemory()
    now = 1_700_000_000.0
    memory.saw_live((1, "Motion", "active"), now)
    history = [
        _item(1, "Motion", "active", int(now * 1000) + 500),  # seen live
        _item(2, "Motion", "active", int(now * 1000) + 2000),  # missed
        _item(1, "Motion", "inactive", int(now * 1000) + 9000),  # missed
    ]
    missed = memory.missed(history)
    assert [i.key for i in missed] == [(2, "Motion", "active"), (1, "Motion", "inactive")]
    # Overlapping searches never publish the same item twice.
    assert memory.missed(history) == []


def test_search_answers_are_parsed_in_time_order_and_bad_entries_skipped():
    """The guide's eventSearch and metaSearch shapes become history items, oldest first."""
    events = events_from_search(
        [
            {"ChannelID": 2, "ev_start": 1700000010, "ev_end": 1700000011, "Type": "Motion"},
            {"ChannelID": 1, "ev_start": 1700000001, "Type": "InputAlarm", "State": "active"},
            {"ChannelID": 1, "Type": 5},
            "junk",
        ]
    )
    assert [(i.message.channel, i.message.state, i.time_ms) for i in events] == [
        (1, "active", 1700000001000),
        (2, "once", 1700000010000),
    ]
    metas = metas_from_search(
        [{"ChannelID": 3, "Type": "LPR", "Data": "X", "Timestamp": 5}, {"Type": 1}]
    )
    assert [(i.message.channel, i.key, i.time_ms) for i in metas] == [(3, (3, "LPR", "X"), 5)]
    assert events_from_search({"not": "a list"}) == []


async def test_events_recorded_during_an_outage_are_published_once_after_it(
    broker, base_topic, sim, start_bridge
):
    """Items the NVR recorded while the streams were down come out once, flagged replayed."""
    async with watch(broker, f"{base_topic}/nvr1/channel/+/#") as w:
        running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        await running.wait_online()
        await sim.push("event", {"ChannelID": 1, "Type": "Motion", "State": "active"})
        await w.wait_topic(f"{base_topic}/nvr1/channel/1/event/Motion")
        # The NVR keeps recording while the bridge is cut off (logins refused first, so
        # the streams cannot come straight back with the old session).
        sim.login_mode = "refuse"
        sim.expire_sessions()
        await sim.drop_websockets()
        await eventually(lambda: not running.bridge.nvrs["nvr1"].online, what="offline")
        now_ms = int(time.time() * 1000)
        sim.record_history(
            "event", {"ChannelID": 3, "Type": "InputAlarm", "State": "active"}, now_ms
        )
        sim.record_history("event", {"ChannelID": 4, "Type": "Motion", "State": "once"}, now_ms + 1)
        sim.record_history("meta", {"ChannelID": 2, "Type": "LPR", "Data": "GAP-1"}, now_ms + 2)
        sim.login_mode = "ok"
        await running.wait_online()
        await all_streams_connected(sim)
        await w.wait_topic(f"{base_topic}/nvr1/channel/3/event/InputAlarm")
        await w.wait_topic(f"{base_topic}/nvr1/channel/4/event/Motion")
        await w.wait_topic(f"{base_topic}/nvr1/channel/2/meta/LPR")
        # A second outage with an overlapping window publishes nothing again.
        await sim.drop_websockets()
        await eventually(
            lambda: (
                metric_value(
                    running.bridge, "nvr_bridge_stream_reconnects_total", nvr="nvr1", stream="event"
                )
                >= 2
            ),
            what="second reconnect",
        )
        await running.wait_online()
        await sim.push("event", {"ChannelID": 1, "Type": "Motion", "State": "inactive"})
        await w.wait_for(
            lambda: len(w.on(f"{base_topic}/nvr1/channel/1/event/Motion")) >= 2,
            what="live event after",
        )
    replayed = w.on(f"{base_topic}/nvr1/channel/3/event/InputAlarm")
    assert len(replayed) == 1
    body = replayed[0].json()
    assert body["replayed"] is True and body["state"] == "active" and body["time"] == now_ms
    # A replayed event is history, not the current state.
    assert not w.on(f"{base_topic}/nvr1/channel/3/event/InputAlarm/state")
    assert len(w.on(f"{base_topic}/nvr1/channel/4/event/Motion")) == 1
    meta = w.on(f"{base_topic}/nvr1/channel/2/meta/LPR")
    assert len(meta) == 1 and meta[0].json()["replayed"] is True
    # The event seen live before the outage is not replayed.
    live = w.on(f"{base_topic}/nvr1/channel/1/event/Motion")
    assert [m.json().get("replayed") for m in live] == [None, None]
    assert (
        metric_value(
            running.bridge, "nvr_bridge_messages_replayed_total", nvr="nvr1", stream="event"
        )
        == 2
    )


def test_gap_memory_forgets_replayed_ids_no_later_search_can_return():
    """Replayed ids older than the searched window are dropped: the memory stays small."""
    memory = GapMemory()
    start = 1_700_000_000.0
    first = [_item(1, "Motion", f"s{i}", int((start + i) * 1000)) for i in range(100)]
    assert len(memory.missed(first, since=start)) == 100
    assert memory.missed(first, since=start) == []  # an overlapping search: nothing twice
    # A later outage's search starts after all of them: they are forgotten...
    later = start + 1_000
    second = [_item(2, "Motion", "active", int((later + 1) * 1000))]
    assert len(memory.missed(second, since=later)) == 1
    assert len(memory._replayed) == 1 and len(memory._replayed_set) == 1
    # ... and an item older than the window, which the NVR should not have returned, is
    # not published late.
    assert memory.missed(first[:1], since=later) == []
