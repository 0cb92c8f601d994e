"""Snapshots as images on MQTT (CONTRACT section 7.1), end to end over real sockets.

An event of a configured type, or the ``snapshot`` command, makes the bridge ask the
simulated NVR for a snapshot and download its JPEG; the image goes retained to
``channel/{ch}/snapshot`` and a report to ``.../snapshot/taken``. Every way the two calls
can fail publishes nothing on either topic, logs one line and is counted, and the event
stream goes on.
"""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
from PIL import Image

from tests.conftest import Watcher, eventually, make_config, metric_value, nvr_config, watch
from tests.test_faults import captured_logs, logged
from tests.test_nvr_state import TIMESTAMP, ask, calls_with, index_of, retained

pytestmark = pytest.mark.asyncio


def snapshots(running: Any, outcome: str) -> float:
    return metric_value(running.bridge, "nvr_bridge_snapshots_total", nvr="nvr1", outcome=outcome)


async def start(start_bridge, broker, base_topic, sim, **overrides: Any) -> Any:
    running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)], **overrides))
    await running.wait_online()
    return running


def event(channel: int, kind: str = "Motion", state: str = "active") -> dict[str, Any]:
    return {"ChannelID": channel, "Type": kind, "State": state}


def assert_jpeg(payload: bytes) -> None:
    """The payload is a whole, decodable JPEG (the simulator's 320x180 pictures)."""
    with Image.open(io.BytesIO(payload)) as image:
        assert image.format == "JPEG"
        assert image.size == (320, 180)
        image.load()


def snapshot_topics(w: Watcher, base: str, channel: int) -> list[str]:
    prefix = f"{base}/nvr1/channel/{channel}/snapshot"
    return [m.topic for m in w.messages if m.topic in (prefix, f"{prefix}/taken")]


async def test_a_configured_event_publishes_first_then_the_jpeg_and_its_report(
    broker, base_topic, sim, start_bridge
):
    """Motion active on ch 2 (configured as `motion`): event, then the image, then `taken`."""
    prefix = f"{base_topic}/nvr1/channel/2"
    async with watch(broker, f"{base_topic}/nvr1/channel/#") as w:
        running = await start(start_bridge, broker, base_topic, sim, snapshot_events=("motion",))
        await sim.push("event", event(2))
        await w.wait_topic(f"{prefix}/snapshot/taken")
    image = w.on(f"{prefix}/snapshot")[0].payload
    taken = w.on(f"{prefix}/snapshot/taken")[0].json()
    assert_jpeg(image)
    downloads = sim.calls_to("/device/download/")
    assert len(downloads) == 1
    path = downloads[0].query["snapshot"]
    assert image == sim.snapshots.image(path)
    assert [c.query for c in sim.calls_to("/device/getSnapshot")] == [{"ChannelID": "2"}]
    assert set(taken) == {"nvr", "channel", "path", "bytes", "trigger", "timestamp"}
    assert taken["nvr"] == "nvr1"
    assert taken["channel"] == 2
    assert taken["path"] == path
    assert taken["bytes"] == len(image)
    assert taken["trigger"] == "Motion"
    assert TIMESTAMP.match(taken["timestamp"])
    # The event first, as a subscriber sees it; then the image, then its report.
    assert (
        index_of(w, f"{prefix}/event/Motion")
        < index_of(w, f"{prefix}/snapshot")
        < index_of(w, f"{prefix}/snapshot/taken")
    )
    assert not w.on(f"{prefix}/snapshot/taken")[0].retain
    kept = await retained(broker, f"{prefix}/snapshot")
    assert kept.payload == image
    assert snapshots(running, "ok") == 1
    assert snapshots(running, "error") == snapshots(running, "skipped") == 0
    for endpoint in ("/device/getSnapshot", "/device/download/"):
        assert (
            metric_value(
                running.bridge,
                "nvr_bridge_nvr_request_seconds_count",
                nvr="nvr1",
                endpoint=endpoint,
            )
            == 1
        ), endpoint


async def test_once_triggers_in_any_case_while_inactive_and_other_types_do_not(
    broker, base_topic, sim, start_bridge
):
    """`once` and `active` of a configured type (any case) trigger; inactive and others not."""
    async with watch(broker, f"{base_topic}/nvr1/channel/#") as w:
        running = await start(
            start_bridge,
            broker,
            base_topic,
            sim,
            snapshot_events=("MOTION", "inputalarm"),
            snapshot_min_interval=0,
        )
        await sim.push("event", event(1, "Motion", "inactive"))
        await sim.push("event", event(1, "Tamper", "active"))
        await sim.push("event", event(1, "VideoLoss", "once"))
        await sim.push("event", event(3, "InputAlarm", "once"))
        await sim.push("event", event(4, "motion", "active"))
        await w.wait_topic(f"{base_topic}/nvr1/channel/3/snapshot/taken")
        await w.wait_topic(f"{base_topic}/nvr1/channel/4/snapshot/taken")
        for kind in ("Motion", "Tamper", "VideoLoss"):
            await w.wait_topic(f"{base_topic}/nvr1/channel/1/event/{kind}")
    assert w.on(f"{base_topic}/nvr1/channel/3/snapshot/taken")[0].json()["trigger"] == "InputAlarm"
    assert w.on(f"{base_topic}/nvr1/channel/4/snapshot/taken")[0].json()["trigger"] == "motion"
    assert sorted(c.query["ChannelID"] for c in sim.calls_to("/device/getSnapshot")) == ["3", "4"]
    assert snapshot_topics(w, base_topic, 1) == []
    assert snapshots(running, "ok") == 2
    assert snapshots(running, "skipped") == 0


async def test_no_snapshot_events_configured_means_no_snapshots(
    broker, base_topic, sim, start_bridge
):
    """The default (no BRIDGE_SNAPSHOT_EVENTS): events take no snapshot."""
    async with watch(broker, f"{base_topic}/nvr1/#") as w:
        running = await start(start_bridge, broker, base_topic, sim)
        await sim.push("event", event(1, "Motion", "active"))
        await w.wait_topic(f"{base_topic}/nvr1/channel/1/event/Motion")
        assert (await ask(w, base_topic, "system_info", {}))["status"] == "ok"
    assert sim.calls_to("/device/getSnapshot") == []
    assert not [m for m in w.messages if "/snapshot" in m.topic]
    assert snapshots(running, "ok") == snapshots(running, "skipped") == 0


async def test_the_min_interval_skips_later_triggers_of_a_channel_and_counts_them(
    broker, base_topic, sim, start_bridge
):
    """Within snapshot_min_interval a channel's later triggers are skipped (other channels not)."""
    async with watch(broker, f"{base_topic}/nvr1/channel/#") as w:
        running = await start(
            start_bridge,
            broker,
            base_topic,
            sim,
            snapshot_events=("Motion",),
            snapshot_min_interval=30,
        )
        await sim.push("event", event(1))
        await w.wait_topic(f"{base_topic}/nvr1/channel/1/snapshot/taken")
        await sim.push("event", event(1, state="once"))
        await sim.push("event", event(1, state="active"))
        await sim.push("event", event(2))
        await w.wait_topic(f"{base_topic}/nvr1/channel/2/snapshot/taken")
        await w.wait_topic(f"{base_topic}/nvr1/channel/1/event/Motion", 3)
    assert snapshots(running, "skipped") == 2
    assert snapshots(running, "ok") == 2
    assert len(calls_with(sim, "/device/getSnapshot", ChannelID="1")) == 1
    assert len(w.on(f"{base_topic}/nvr1/channel/1/snapshot")) == 1
    # Every event itself was published.
    assert [m.json()["state"] for m in w.on(f"{base_topic}/nvr1/channel/1/event/Motion")] == [
        "active",
        "once",
        "active",
    ]


async def test_a_slow_download_never_delays_the_triggering_events(
    broker, base_topic, sim, start_bridge
):
    """Downloads taking 1 s: every triggering event (more than the workers) comes at once."""
    sim.set_fault("/device/download/", "slow", delay=1)
    async with watch(broker, f"{base_topic}/nvr1/channel/#") as w:
        await start(
            start_bridge,
            broker,
            base_topic,
            sim,
            snapshot_events=("Motion",),
            snapshot_min_interval=0,
        )
        delays = []
        for channel in (1, 2, 3, 4):
            started = time.monotonic()
            await sim.push("event", event(channel))
            await w.wait_topic(f"{base_topic}/nvr1/channel/{channel}/event/Motion", timeout=1)
            delays.append(time.monotonic() - started)
        await sim.push("event", event(1, "Tamper", "once"))
        await w.wait_topic(f"{base_topic}/nvr1/channel/1/event/Tamper", timeout=1)
        assert not [m for m in w.messages if "/snapshot" in m.topic]
        # The snapshots come later, each after its event.
        for channel in (1, 2, 3, 4):
            await w.wait_topic(f"{base_topic}/nvr1/channel/{channel}/snapshot/taken", timeout=10)
    assert max(delays) < 0.5, delays
    for channel in (1, 2, 3, 4):
        prefix = f"{base_topic}/nvr1/channel/{channel}"
        assert index_of(w, f"{prefix}/event/Motion") < index_of(w, f"{prefix}/snapshot")
        assert_jpeg(w.on(f"{prefix}/snapshot")[0].payload)


async def test_the_snapshot_command_publishes_the_image_before_its_ok_response(
    broker, base_topic, sim, start_bridge
):
    """`snapshot` {"channel": 3}: image retained and `taken` (trigger request), then `ok`."""
    prefix = f"{base_topic}/nvr1"
    async with watch(broker, f"{prefix}/#") as w:
        running = await start(start_bridge, broker, base_topic, sim)
        answer = await ask(w, base_topic, "snapshot", {"channel": 3})
        # A client that sees "ok" finds the new image retained.
        kept = await retained(broker, f"{prefix}/channel/3/snapshot")
    assert answer["status"] == "ok", answer
    path = answer["result"]["snapshotPath"]
    image = w.on(f"{prefix}/channel/3/snapshot")[0].payload
    assert kept.payload == image == sim.snapshots.image(path)
    assert_jpeg(image)
    taken = w.on(f"{prefix}/channel/3/snapshot/taken")[0].json()
    assert taken["trigger"] == "request"
    assert taken["path"] == path and taken["bytes"] == len(image) and taken["channel"] == 3
    assert (
        index_of(w, f"{prefix}/channel/3/snapshot")
        < index_of(w, f"{prefix}/channel/3/snapshot/taken")
        < index_of(w, f"{prefix}/response/snapshot")
    )
    assert [c.query for c in sim.calls_to("/device/download/")] == [{"snapshot": path}]
    assert snapshots(running, "ok") == 1
    assert (
        metric_value(
            running.bridge,
            "nvr_bridge_commands_total",
            nvr="nvr1",
            command="snapshot",
            outcome="ok",
        )
        == 1
    )


# (id, faulted path, mode, fault parameters, bridge settings, outcome)
FAILURES: list[tuple[str, str | None, str | None, dict[str, Any], dict[str, Any], str]] = [
    ("getsnapshot-error", "/device/getSnapshot", "error", {}, {}, "error"),
    ("getsnapshot-500", "/device/getSnapshot", "http500", {}, {}, "error"),
    ("getsnapshot-garbage", "/device/getSnapshot", "garbage", {}, {}, "error"),
    ("download-404", "/device/download/", "http404", {}, {}, "error"),
    ("download-500", "/device/download/", "http500", {}, {}, "error"),
    ("download-garbage", "/device/download/", "garbage", {}, {}, "error"),
    ("download-nonjpeg", "/device/download/", "nonjpeg", {}, {}, "error"),
    (
        "download-oversize",
        "/device/download/",
        "oversize",
        {"size": 300_000},
        {"snapshot_max_bytes": 100_000},
        "too_large",
    ),
    ("image-beyond-max", None, None, {}, {"snapshot_max_bytes": 2048}, "too_large"),
    ("download-timeout", "/device/download/", "slow", {"delay": 5}, {}, "error"),
]


@pytest.mark.parametrize(
    ("path", "mode", "fault", "settings", "outcome"),
    [pytest.param(*case[1:], id=case[0]) for case in FAILURES],
)
async def test_a_failed_snapshot_publishes_nothing_logs_once_and_counts(
    broker, base_topic, sim, start_bridge, monkeypatch, path, mode, fault, settings, outcome
):
    """Each failure: nothing on snapshot or taken, one `snapshot failed`, the outcome counted."""
    if mode == "slow":
        # The contract's 10 s timeout, shortened so the test stays short.
        monkeypatch.setattr("bridge.nvr.snapshots.SNAPSHOT_TIMEOUT", 0.5)
    if path is not None:
        sim.set_fault(path, mode, **fault)
    prefix = f"{base_topic}/nvr1/channel"
    with captured_logs() as logs:
        async with watch(broker, f"{base_topic}/nvr1/channel/#") as w:
            running = await start(
                start_bridge,
                broker,
                base_topic,
                sim,
                snapshot_events=("Motion",),
                **settings,
            )
            await sim.push("event", event(2))
            await w.wait_topic(f"{prefix}/2/event/Motion")
            await eventually(lambda: snapshots(running, outcome) == 1, what=f"{outcome} counted")
            # The stream goes on: the next event is published.
            await sim.push("event", event(2, "Tamper", "once"))
            await w.wait_topic(f"{prefix}/2/event/Tamper", timeout=2)
    assert snapshot_topics(w, base_topic, 2) == []
    failed = logged(logs, "snapshot failed")
    assert len(failed) == 1, failed
    assert failed[0]["channel"] == 2
    assert failed[0]["outcome"] == outcome
    assert failed[0]["trigger"] == "Motion"
    assert failed[0]["log_level"] == "warning"
    assert snapshots(running, "ok") == 0
    assert running.bridge.nvrs["nvr1"].online
    if mode == "slow":
        assert "0.5 s" in failed[0]["error"]


@pytest.mark.parametrize(
    ("mode", "settings", "outcome"),
    [
        ("http404", {}, "error"),
        ("nonjpeg", {}, "error"),
        (None, {"snapshot_max_bytes": 2048}, "too_large"),
    ],
)
async def test_a_failed_download_leaves_the_snapshot_command_ok(
    broker, base_topic, sim, start_bridge, mode, settings, outcome
):
    """The command's getSnapshot worked, its download failed: ok, nothing published, counted."""
    if mode is not None:
        sim.set_fault("/device/download/", mode)
    with captured_logs() as logs:
        async with watch(broker, f"{base_topic}/nvr1/#") as w:
            running = await start(start_bridge, broker, base_topic, sim, **settings)
            answer = await ask(w, base_topic, "snapshot", {"channel": 1})
    assert answer["status"] == "ok", answer
    assert answer["result"]["snapshotPath"]
    assert snapshot_topics(w, base_topic, 1) == []
    assert len(sim.calls_to("/device/download/")) == 1
    failed = logged(logs, "snapshot failed")
    assert len(failed) == 1 and failed[0]["outcome"] == outcome, failed
    assert failed[0]["trigger"] == "request"
    assert snapshots(running, outcome) == 1


async def test_a_refused_getsnapshot_makes_the_snapshot_command_an_error(
    broker, base_topic, sim, start_bridge
):
    """The command's own REST call failing is an error response (section 5); no download."""
    sim.set_fault("/device/getSnapshot", "error")
    async with watch(broker, f"{base_topic}/nvr1/#") as w:
        running = await start(start_bridge, broker, base_topic, sim)
        answer = await ask(w, base_topic, "snapshot", {"channel": 1})
    assert answer["status"] == "error"
    assert "Simulated failure" in answer["error"]
    assert sim.calls_to("/device/download/") == []
    assert snapshot_topics(w, base_topic, 1) == []
    assert snapshots(running, "ok") == 0
    assert (
        metric_value(
            running.bridge,
            "nvr_bridge_commands_total",
            nvr="nvr1",
            command="snapshot",
            outcome="error",
        )
        == 1
    )
