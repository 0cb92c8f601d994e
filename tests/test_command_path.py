"""The command path end to end: MQTT request -> bridge -> NVR REST call -> MQTT response."""

from __future__ import annotations

import time
import uuid
from typing import Any

import aiomqtt
import orjson
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.conftest import eventually, make_config, metric_value, nvr_config, watch

pytestmark = pytest.mark.asyncio

# command, request, (method, path, query, body)
COMMAND_CASES: list[tuple[str, dict[str, Any], tuple[str, str, dict[str, str], Any]]] = [
    (
        "add_event",
        {"channel": 2, "type": "Motion", "state": "active"},
        ("POST", "/meta/addEvent", {}, {"ChannelID": 2, "Type": "Motion", "State": "active"}),
    ),
    (
        "add_meta",
        {"channel": 1, "type": "LPR", "data": "ABC-123"},
        ("POST", "/meta/addMeta", {}, {"ChannelID": 1, "Type": "LPR", "Data": "ABC-123"}),
    ),
    (
        "manual_alarm",
        {"channel": 3, "command": "start"},
        ("POST", "/record/manualAlarm", {}, {"channel": 3, "command": "start"}),
    ),
    (
        "manual_record",
        {"channel": 4, "command": "stop"},
        ("POST", "/record/manualRecord", {}, {"channel": 4, "command": "stop"}),
    ),
    (
        "set_pin",
        {"pin": 6, "value": 1},
        ("POST", "/dio/pinManualSetting", {}, {"pinID": 6, "pinValue": 1}),
    ),
    (
        "ptz",
        {"channel": 1, "command": "pan_left", "speed": 0.5},
        ("POST", "/device/ptzControl", {"ChannelID": "1"}, {"command": "pan_left", "speed": 0.5}),
    ),
    (
        "ptz",
        {"channel": 2, "command": "set_preset", "parameters": {"preset_name": "door"}},
        (
            "POST",
            "/device/ptzControl",
            {"ChannelID": "2"},
            {"command": "set_preset", "parameters": {"preset_name": "door"}},
        ),
    ),
    ("buzzer", {"timeout": 5}, ("GET", "/system/callBuzzer", {"timeout": "5"}, None)),
    ("snapshot", {"channel": 3}, ("GET", "/device/getSnapshot", {"ChannelID": "3"}, None)),
]


async def request(w, base: str, command: str, payload: Any, **kwargs: Any) -> None:
    data = payload if isinstance(payload, bytes | str) else orjson.dumps(payload)
    await w.publish(f"{base}/nvr1/request/{command}", data, qos=1, **kwargs)


async def response(w, base: str, command: str, transaction: Any) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for m in w.on(f"{base}/nvr1/response/{command}"):
            body = m.json()
            if body.get("transaction") == transaction:
                return body
        return None

    return await w.wait_for(find, what=f"response to {command} {transaction}")


def rest_calls(sim, path: str) -> list[Any]:
    return [c for c in sim.calls if c.path == path]


@pytest.mark.parametrize(("command", "payload", "expected"), COMMAND_CASES)
async def test_each_command_makes_its_rest_call_and_answers_ok(
    broker, base_topic, sim, start_bridge, command, payload, expected
):
    """Every command reaches the NVR as exactly its REST call and gets an ok response."""
    async with watch(broker, f"{base_topic}/nvr1/response/#") as w:
        running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        await running.wait_online()
        transaction = {"id": uuid.uuid4().hex, "n": [1, 2]}
        await request(w, base_topic, command, {**payload, "transaction": transaction})
        answer = await response(w, base_topic, command, transaction)
    method, path, query, body = expected
    calls = rest_calls(sim, path)
    assert len(calls) == 1
    assert calls[0].method == method
    assert calls[0].query == query
    assert calls[0].body == body
    assert answer["status"] == "ok"
    assert answer["command"] == command
    assert answer["error"] is None
    assert answer["result"] is not None
    assert set(answer) == {"status", "command", "transaction", "result", "error"}
    assert (
        metric_value(
            running.bridge, "nvr_bridge_commands_total", nvr="nvr1", command=command, outcome="ok"
        )
        == 1
    )


INVALID = [
    ("set_pin", {"pin": "1", "value": 1}, "pin"),
    ("set_pin", {"pin": 1, "value": 2}, "value"),
    ("manual_alarm", {"channel": 0, "command": "start"}, "channel"),
    ("manual_alarm", {"channel": 1, "command": "begin"}, "command"),
    ("buzzer", {"timeout": 61}, "timeout"),
    ("add_event", {"channel": 1, "type": "Motion", "state": "on"}, "state"),
    ("add_event", {"channel": 1, "type": "Motion", "state": "once", "colour": "red"}, "colour"),
    ("ptz", {"channel": 1, "command": "fly"}, "command"),
    ("snapshot", {}, "channel"),
    ("snapshot", b"{not json", "JSON"),
    ("snapshot", [1, 2], "object"),
    ("add_meta", {"channel": 1, "type": "t", "data": "d", "timestamp": "yesterday"}, "timestamp"),
]


@pytest.mark.parametrize(("command", "payload", "mentions"), INVALID)
async def test_invalid_requests_get_an_error_and_make_no_rest_call(
    broker, base_topic, sim, start_bridge, command, payload, mentions
):
    """A request failing validation gets status error naming the field; no REST call."""
    async with watch(broker, f"{base_topic}/nvr1/response/#") as w:
        running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        await running.wait_online()
        if isinstance(payload, dict):
            payload = {**payload, "transaction": "bad-1"}
            await request(w, base_topic, command, payload)
            answer = await response(w, base_topic, command, "bad-1")
        else:
            await request(w, base_topic, command, payload)
            answer = (await w.wait_topic(f"{base_topic}/nvr1/response/{command}"))[0].json()
    assert answer["status"] == "error"
    assert mentions in answer["error"]
    assert answer["result"] is None
    assert [
        c
        for c in sim.calls
        if not c.path.startswith(("/system/getSystemInfo", "/device/cameraList"))
    ] == []
    assert (
        metric_value(
            running.bridge,
            "nvr_bridge_commands_total",
            nvr="nvr1",
            command=command,
            outcome="invalid",
        )
        == 1
    )


@pytest.mark.parametrize(
    ("fault", "expect"),
    [("error", "Simulated failure"), ("http500", "HTTP 500"), ("slow", "did not answer")],
)
async def test_nvr_failures_give_an_error_response(
    broker, base_topic, sim, start_bridge, fault, expect
):
    """An NVR 'Result: Error', an HTTP 500 and a timeout each give status error."""
    sim.set_fault("/record/manualAlarm", fault, delay=3)
    async with watch(broker, f"{base_topic}/nvr1/response/#") as w:
        running = await start_bridge(
            make_config(broker, base_topic, [nvr_config(sim)], command_timeout=0.5)
        )
        await running.wait_online()
        await request(
            w, base_topic, "manual_alarm", {"channel": 1, "command": "start", "transaction": 7}
        )
        answer = await response(w, base_topic, "manual_alarm", 7)
    assert answer["status"] == "error"
    assert expect in answer["error"]
    # Never retried: it may have reached the NVR.
    assert len(rest_calls(sim, "/record/manualAlarm")) == 1
    assert (
        metric_value(
            running.bridge,
            "nvr_bridge_commands_total",
            nvr="nvr1",
            command="manual_alarm",
            outcome="error",
        )
        == 1
    )


async def test_mqtt5_response_topic_gets_the_reply_with_correlation_data(
    broker, base_topic, sim, start_bridge
):
    """An MQTT 5 request with a Response Topic gets its reply there, with its Correlation Data."""
    if not broker.speaks_v5:
        pytest.skip("the embedded broker speaks MQTT 3.1.1 only")
    reply_topic = f"replies-{base_topic}/me"
    async with watch(broker, f"{base_topic}/#", v5=True) as w:
        await w.client.subscribe(reply_topic, qos=1)
        running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        await running.wait_online()
        properties = Properties(PacketTypes.PUBLISH)
        properties.ResponseTopic = reply_topic
        properties.CorrelationData = b"\x01corr-42"
        await request(w, base_topic, "buzzer", {"timeout": 2}, properties=properties)
        reply = (await w.wait_topic(reply_topic))[0]
        await w.wait_topic(f"{base_topic}/nvr1/response/buzzer")
    assert reply.correlation_data == b"\x01corr-42"
    assert reply.json()["status"] == "ok"
    assert not reply.retain


async def test_disallowed_commands_are_refused(broker, base_topic, sim, start_bridge):
    """A command not in BRIDGE_COMMANDS, or unknown, is refused with a response; no call."""
    async with watch(broker, f"{base_topic}/nvr1/response/#") as w:
        running = await start_bridge(
            make_config(broker, base_topic, [nvr_config(sim)], commands=("buzzer",))
        )
        await running.wait_online()
        await request(
            w, base_topic, "manual_alarm", {"channel": 1, "command": "start", "transaction": "x"}
        )
        await request(w, base_topic, "self_destruct", {"transaction": "y"})
        refused = await response(w, base_topic, "manual_alarm", "x")
        unknown = await response(w, base_topic, "self_destruct", "y")
    assert refused["status"] == "error" and "not allowed" in refused["error"]
    assert unknown["status"] == "error" and "unknown command" in unknown["error"]
    assert rest_calls(sim, "/record/manualAlarm") == []
    bridge = running.bridge
    assert (
        metric_value(
            bridge,
            "nvr_bridge_commands_total",
            nvr="nvr1",
            command="manual_alarm",
            outcome="refused",
        )
        == 1
    )
    assert (
        metric_value(
            bridge, "nvr_bridge_commands_total", nvr="nvr1", command="unknown", outcome="refused"
        )
        == 1
    )


async def test_retained_request_is_refused_and_not_executed(broker, base_topic, sim, start_bridge):
    """A retained request (it would fire at every restart) is refused, never executed."""
    async with watch(broker, f"{base_topic}/nvr1/response/#") as w:
        await request(w, base_topic, "buzzer", {"timeout": 3, "transaction": "r"}, retain=True)
        running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        await running.wait_online()
        answer = await response(w, base_topic, "buzzer", "r")
        # Clearing the retained request (an empty retained payload) is no request: no answer.
        await w.publish(f"{base_topic}/nvr1/request/buzzer", b"", qos=1, retain=True)
        await w.publish(f"{base_topic}/nvr1/request/buzzer", b"", qos=1)
        await request(w, base_topic, "buzzer", {"timeout": 1, "transaction": "after"})
        await response(w, base_topic, "buzzer", "after")
    assert answer["status"] == "error" and "retained" in answer["error"]
    transactions = [m.json()["transaction"] for m in w.on(f"{base_topic}/nvr1/response/buzzer")]
    assert transactions == ["r", "after"]
    assert [c.query for c in rest_calls(sim, "/system/callBuzzer")] == [{"timeout": "1"}]


async def test_expired_request_is_not_executed(broker, base_topic, sim, start_bridge):
    """A request older than BRIDGE_COMMAND_MAX_AGE is answered 'expired...' and not run."""
    async with watch(broker, f"{base_topic}/nvr1/response/#") as w:
        running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        await running.wait_online()
        old = int((time.time() - 120) * 1000)
        await request(
            w,
            base_topic,
            "manual_alarm",
            {"channel": 1, "command": "start", "timestamp": old, "transaction": 1},
        )
        fresh = int(time.time() * 1000)
        await request(
            w,
            base_topic,
            "manual_alarm",
            {"channel": 1, "command": "stop", "timestamp": fresh, "transaction": 2},
        )
        expired = await response(w, base_topic, "manual_alarm", 1)
        ok = await response(w, base_topic, "manual_alarm", 2)
    assert expired["status"] == "error" and expired["error"].startswith("expired")
    assert ok["status"] == "ok"
    assert [c.body for c in rest_calls(sim, "/record/manualAlarm")] == [
        {"channel": 1, "command": "stop"}
    ]


async def test_a_burst_of_200_is_answered_within_the_inflight_bound(
    broker, base_topic, sim, start_bridge
):
    """200 requests at once: every one answered, never more than the bound at the NVR."""
    sim.set_fault("/system/callBuzzer", "slow", delay=0.02)
    nvr = nvr_config(sim, max_inflight_commands=4)
    async with watch(broker, f"{base_topic}/nvr1/response/#") as w:
        running = await start_bridge(make_config(broker, base_topic, [nvr]))
        await running.wait_online()
        for n in range(200):
            await request(w, base_topic, "buzzer", {"timeout": 1, "transaction": n})
        await w.wait_for(lambda: len(w.messages) >= 200, timeout=30, what="200 responses")
    transactions = sorted(m.json()["transaction"] for m in w.messages)
    assert transactions == list(range(200))
    assert all(m.json()["status"] == "ok" for m in w.messages)
    assert len(rest_calls(sim, "/system/callBuzzer")) == 200
    assert sim.peak_inflight <= 4
    assert running.bridge.nvrs["nvr1"].commands.peak_inflight == 4


async def test_the_inflight_bound_counts_polls_snapshots_and_logins_too(
    broker, base_topic, sim, start_bridge
):
    """Commands, pin and storage polls share one bound: the NVR never sees more at once."""
    for path in ("/system/callBuzzer", "/dio/GetPinStatus", "/storage/getStorages"):
        sim.set_fault(path, "slow", delay=0.02)
    nvr = nvr_config(sim, max_inflight_commands=2)
    config = make_config(
        broker, base_topic, [nvr], pin_poll_interval=0.05, storage_poll_interval=0.05
    )
    async with watch(broker, f"{base_topic}/nvr1/response/#") as w:
        running = await start_bridge(config)
        await running.wait_online()
        for n in range(60):
            await request(w, base_topic, "buzzer", {"timeout": 1, "transaction": n})
        await w.wait_for(lambda: len(w.messages) >= 60, timeout=30, what="60 responses")
    assert all(m.json()["status"] == "ok" for m in w.messages)
    assert len(rest_calls(sim, "/dio/GetPinStatus")) >= 2, "the pin poll ran meanwhile"
    assert len(rest_calls(sim, "/storage/getStorages")) >= 2, "the storage poll ran meanwhile"
    assert sim.peak_inflight == 2


async def test_events_keep_flowing_while_commands_are_slow(broker, base_topic, sim, start_bridge):
    """Commands stuck on a slow NVR never delay the event streams."""
    sim.set_fault("/record/manualRecord", "slow", delay=5)
    async with watch(broker, f"{base_topic}/#") as w:
        running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        await running.wait_online()
        for n in range(12):
            await request(
                w, base_topic, "manual_record", {"channel": 1, "command": "start", "transaction": n}
            )
        await eventually(
            lambda: len(rest_calls(sim, "/record/manualRecord")) >= 8, what="8 slow calls"
        )
        started = time.monotonic()
        await sim.push("event", {"ChannelID": 1, "Type": "Motion", "State": "once"})
        await w.wait_topic(f"{base_topic}/nvr1/channel/1/event/Motion", timeout=2)
        assert time.monotonic() - started < 2
        # Other commands of this NVR queue behind the bound; the event did not.
        assert not w.matching(f"{base_topic}/nvr1/response/")


async def test_convenience_topics_map_to_commands(broker, base_topic, sim, start_bridge):
    """pin/{n}/set, channel/{ch}/alarm/set and record/set take plain ON/OFF-style values."""
    async with watch(broker, f"{base_topic}/nvr1/response/#") as w:
        running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        await running.wait_online()
        await w.publish(f"{base_topic}/nvr1/pin/7/set", b"ON", qos=1)
        await w.publish(f"{base_topic}/nvr1/channel/2/alarm/set", b"start", qos=1)
        await w.publish(f"{base_topic}/nvr1/channel/4/record/set", b"OFF", qos=1)
        await w.publish(f"{base_topic}/nvr1/pin/1/set", b"maybe", qos=1)
        await w.wait_for(lambda: len(w.messages) >= 4, what="4 responses")
    assert rest_calls(sim, "/dio/pinManualSetting")[0].body == {"pinID": 7, "pinValue": 1}
    assert rest_calls(sim, "/record/manualAlarm")[0].body == {"channel": 2, "command": "start"}
    assert rest_calls(sim, "/record/manualRecord")[0].body == {"channel": 4, "command": "stop"}
    errors = [m.json() for m in w.messages if m.json()["status"] == "error"]
    assert len(errors) == 1 and errors[0]["command"] == "set_pin"


async def test_expired_session_is_renewed_for_a_command(broker, base_topic, sim, start_bridge):
    """A 401 on a command means: log in again and retry once; the caller sees ok."""
    async with watch(broker, f"{base_topic}/nvr1/response/#") as w:
        running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        await running.wait_online()
        logins = sim.logins
        sim.expire_sessions()
        await request(w, base_topic, "snapshot", {"channel": 1, "transaction": "s"})
        answer = await response(w, base_topic, "snapshot", "s")
    assert answer["status"] == "ok"
    assert "snapshotPath" in answer["result"]
    assert sim.logins == logins + 1


async def test_request_before_login_is_queued_not_lost(broker, base_topic, sim, start_bridge):
    """Requests published while the bridge is away reach it afterwards (persistent session)."""
    config = make_config(broker, base_topic, [nvr_config(sim)])
    running = await start_bridge(config)
    await running.wait_online()
    await running.stop()
    async with watch(broker, f"{base_topic}/nvr1/response/#") as w:
        client = aiomqtt.Client("127.0.0.1", broker.port, identifier=f"pub-{uuid.uuid4().hex[:6]}")
        async with client:
            await client.publish(
                f"{base_topic}/nvr1/request/buzzer",
                orjson.dumps({"timeout": 1, "transaction": "late"}),
                qos=1,
            )
        again = await start_bridge(config)
        await again.wait_online()
        answer = await response(w, base_topic, "buzzer", "late")
    assert answer["status"] == "ok"
