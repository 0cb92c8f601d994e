"""Stream frames to MQTT publications (CONTRACT.md sections 3 and 4), and the login digest.

Pure functions only: ``process_frame`` and the ``Normalizer`` over hand-written frames,
plus hypothesis properties on the topic levels built from NVR text.
"""

from __future__ import annotations

import hashlib
import re
import string
import time
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.limits import topic_problem
from bridge.normalize import (
    MAX_FRAME_BYTES,
    FrameRejected,
    ItemRejected,
    Normalizer,
    Publication,
    format_timestamp,
    parse_frame,
    process_frame,
    sanitize_level,
    validate_item,
)
from bridge.nvr.auth import LoginChallenge, digest_response, login_body
from bridge.nvr.models import STREAM_NAMES, EventHookMessage, StreamName
from bridge.redaction import redact_value
from bridge.topics import NvrTopics

BASE = "everfocus"
NVR = "nvr1"
TS = "2024-05-01T12:00:00.000Z"
TIMESTAMP_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


def event(channel: Any = 3, type_: str = "Motion", state: str = "active") -> dict[str, Any]:
    return {"ChannelID": channel, "Type": type_, "State": state}


def meta(channel: Any = 2, type_: str = "Plate", data: str = "ABC123") -> dict[str, Any]:
    return {"ChannelID": channel, "Type": type_, "Data": data}


def status(
    channel: Any = 1,
    online: bool = True,
    recording: bool = False,
    event_: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "ChannelID": channel,
        "Online": online,
        "Recording": recording,
        "Event": event_,
        **extra,
    }


VALID_ITEMS: dict[StreamName, dict[str, Any]] = {
    "event": event(),
    "meta": meta(),
    "exception": {"exception": "diskFull", "target": 1, "time": 1_700_000_000_000},
    "status": status(),
    "message": {"message": "configChanged", "time": 1_700_000_000_000},
}


@pytest.fixture
def normalizer() -> Normalizer:
    return Normalizer(NvrTopics(BASE, NVR))


def run(normalizer: Normalizer, stream: StreamName, frame: Any) -> list[Publication]:
    """Publish one frame (a JSON value) and insist nothing was rejected."""
    outcome = process_frame(normalizer, stream, orjson.dumps(frame), TS)
    assert outcome.rejections == []
    return outcome.publications


def payload(publication: Publication) -> Any:
    return orjson.loads(publication.payload)


# -- eventHook -------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["active", "inactive"])
def test_event_publishes_payload_and_retained_state(normalizer: Normalizer, state: str) -> None:
    """An active/inactive event gives the event message plus the retained /state text."""
    first, second = run(normalizer, "event", event(3, "Motion", state))
    assert first.topic == f"{BASE}/{NVR}/channel/3/event/Motion"
    assert first.retain is False
    assert payload(first) == {
        "nvr": NVR,
        "channel": 3,
        "type": "Motion",
        "state": state,
        "timestamp": TS,
    }
    assert second.topic == f"{BASE}/{NVR}/channel/3/event/Motion/state"
    assert second.retain is True
    assert second.payload == state.encode()
    assert first.stream == second.stream == "event"
    assert first.nvr == second.nvr == NVR


@pytest.mark.parametrize("state", ["once", "ACTIVE", "pulse", ""])
def test_event_with_other_state_has_no_state_topic(normalizer: Normalizer, state: str) -> None:
    """Only exactly active/inactive feed the retained /state topic; once does not."""
    (only,) = run(normalizer, "event", event(1, "Alarm", state))
    assert only.topic == f"{BASE}/{NVR}/channel/1/event/Alarm"
    assert only.retain is False
    assert payload(only)["state"] == state


def test_event_replayed_flag_and_no_state_topic(normalizer: Normalizer) -> None:
    """A replayed event carries replayed: true and does not rewrite the retained state."""
    message = validate_item("event", event(1, "Motion", "active"))
    (only,) = normalizer.normalize("event", message, TS, history_ms=1_700_000_000_000)
    assert payload(only)["replayed"] is True
    assert payload(only)["time"] == 1_700_000_000_000
    assert only.retain is False


@pytest.mark.parametrize("frame_channel", ["missing", None])
def test_event_without_channel_uses_system_level(
    normalizer: Normalizer, frame_channel: str | None
) -> None:
    """A missing or null ChannelID is the level 'system' and null in the payload."""
    item = event(type_="Tamper", state="once")
    if frame_channel == "missing":
        del item["ChannelID"]
    else:
        item["ChannelID"] = None
    (only,) = run(normalizer, "event", item)
    assert only.topic == f"{BASE}/{NVR}/channel/system/event/Tamper"
    assert payload(only)["channel"] is None


def test_event_channel_given_as_string_is_tolerated(normalizer: Normalizer) -> None:
    """The NVR's '1' for a channel is read as channel 1 (models.py tolerates it)."""
    first, _ = run(normalizer, "event", event("7"))
    assert first.topic == f"{BASE}/{NVR}/channel/7/event/Motion"
    assert payload(first)["channel"] == 7


# -- metaHook --------------------------------------------------------------------------


def test_meta_publishes_data_as_is(normalizer: Normalizer) -> None:
    """Metadata keeps the NVR's Data string untouched (even when it looks like JSON)."""
    data = '{"plate": "AB 12/3", "score": 0.9}\n'
    (only,) = run(normalizer, "meta", meta(2, "Plate", data))
    assert only.topic == f"{BASE}/{NVR}/channel/2/meta/Plate"
    assert only.retain is False
    assert only.stream == "meta"
    assert payload(only) == {
        "nvr": NVR,
        "channel": 2,
        "type": "Plate",
        "data": data,
        "timestamp": TS,
    }


def test_meta_without_channel_uses_system_level(normalizer: Normalizer) -> None:
    """Metadata with no channel goes under channel/system with channel null."""
    item = meta()
    del item["ChannelID"]
    (only,) = run(normalizer, "meta", item)
    assert only.topic == f"{BASE}/{NVR}/channel/system/meta/Plate"
    assert payload(only)["channel"] is None


# -- exceptionListen -------------------------------------------------------------------


def test_exception_payload_with_target(normalizer: Normalizer) -> None:
    """An exception carries its target and the NVR's epoch-ms time."""
    item = {"exception": "diskError", "target": {"disk": 2}, "time": 1_700_000_000_123}
    (only,) = run(normalizer, "exception", item)
    assert only.topic == f"{BASE}/{NVR}/exception/diskError"
    assert only.retain is False
    assert only.stream == "exception"
    assert payload(only) == {
        "nvr": NVR,
        "exception": "diskError",
        "target": {"disk": 2},
        "time": 1_700_000_000_123,
        "timestamp": TS,
    }


def test_exception_target_null_when_absent(normalizer: Normalizer) -> None:
    """An exception without target publishes target: null."""
    (only,) = run(normalizer, "exception", {"exception": "netDown", "time": 5})
    assert payload(only)["target"] is None
    assert "target" in payload(only)


# -- cameraStatus ----------------------------------------------------------------------


def test_status_first_sight_is_published_retained(normalizer: Normalizer) -> None:
    """A channel's first status is published, retained, with manual null when absent."""
    (only,) = run(normalizer, "status", status(4, True, True, False))
    assert only.topic == f"{BASE}/{NVR}/channel/4/status"
    assert only.retain is True
    assert only.stream == "status"
    assert payload(only) == {
        "nvr": NVR,
        "channel": 4,
        "online": True,
        "recording": True,
        "event": False,
        "manual": None,
        "timestamp": TS,
    }


def test_status_identical_repeat_is_not_published(normalizer: Normalizer) -> None:
    """The NVR's per-second repeat of an unchanged status publishes nothing."""
    assert len(run(normalizer, "status", status(1))) == 1
    assert run(normalizer, "status", status(1)) == []
    assert run(normalizer, "status", status(1, NewField="ignored")) == []


@pytest.mark.parametrize(
    "changed",
    [
        {"Online": False},
        {"Recording": True},
        {"Event": True},
        {"Manual": False},
        {"Manual": True},
    ],
)
def test_status_change_of_any_field_is_published(
    normalizer: Normalizer, changed: dict[str, Any]
) -> None:
    """A change of online/recording/event/manual (null to false included) republishes."""
    run(normalizer, "status", status(1))
    published = run(normalizer, "status", {**status(1), **changed})
    (only,) = [p for p in published if p.topic.endswith("/status")]
    field = next(iter(changed)).lower()
    assert payload(only)[field] == changed[next(iter(changed))]
    assert run(normalizer, "status", {**status(1), **changed}) == []


def test_status_manual_back_to_null_is_a_change(normalizer: Normalizer) -> None:
    """Manual false then absent (null) is a change too."""
    run(normalizer, "status", status(1, Manual=False))
    (only,) = run(normalizer, "status", status(1))
    assert payload(only)["manual"] is None


def test_status_channels_are_tracked_separately(normalizer: Normalizer) -> None:
    """Seeing channel 1 does not hide the first status of channel 2."""
    run(normalizer, "status", status(1))
    publications = run(normalizer, "status", [status(1), status(2)])
    assert [p.topic for p in publications] == [f"{BASE}/{NVR}/channel/2/status"]


def test_status_forget_status_republishes_everything(normalizer: Normalizer) -> None:
    """After forget_status (a stream reconnect) every channel's next status is published."""
    run(normalizer, "status", [status(1), status(2)])
    assert run(normalizer, "status", [status(1), status(2)]) == []
    normalizer.forget_status()
    publications = run(normalizer, "status", [status(1), status(2)])
    assert [p.topic for p in publications] == [
        f"{BASE}/{NVR}/channel/1/status",
        f"{BASE}/{NVR}/channel/2/status",
    ]


def test_status_requires_a_channel(normalizer: Normalizer) -> None:
    """cameraStatus without ChannelID is rejected, naming the field."""
    item = status()
    del item["ChannelID"]
    outcome = process_frame(normalizer, "status", orjson.dumps(item), TS)
    assert outcome.publications == []
    assert len(outcome.rejections) == 1
    assert "ChannelID" in outcome.rejections[0]


# -- messageListen ---------------------------------------------------------------------


def test_message_payload_fields(normalizer: Normalizer) -> None:
    """A system message publishes nvr, message, target, content, time, timestamp."""
    item = {"message": "cameraDetail", "target": 3, "content": {"name": "Lobby"}, "time": 9}
    (only,) = run(normalizer, "message", item)
    assert only.topic == f"{BASE}/{NVR}/message/cameraDetail"
    assert only.retain is False
    assert only.stream == "message"
    assert payload(only) == {
        "nvr": NVR,
        "message": "cameraDetail",
        "target": 3,
        "content": {"name": "Lobby"},
        "time": 9,
        "timestamp": TS,
    }


def test_message_target_and_content_null_when_absent(normalizer: Normalizer) -> None:
    """Left-out target and content are null."""
    (only,) = run(normalizer, "message", {"message": "reboot", "time": 1})
    body = payload(only)
    assert body["target"] is None
    assert body["content"] is None


def test_message_content_passwords_redacted_at_any_depth(normalizer: Normalizer) -> None:
    """Every value under a key containing 'password' (any case, any depth, in lists) is ***."""
    content = {
        "name": "Lobby",
        "password": "top1",
        "Password": {"nested": "top2"},
        "camera": {
            "PASSWORD": "top3",
            "adminPassword": ["top4"],
            "users": [{"user": "a", "passwordHash": "top5"}, [{"rtsp_password": "top6"}]],
        },
        "note": "passwords are redacted",
    }
    (only,) = run(normalizer, "message", {"message": "cameraDetail", "time": 1, "content": content})
    body = payload(only)["content"]
    assert body == {
        "name": "Lobby",
        "password": "***",
        "Password": "***",
        "camera": {
            "PASSWORD": "***",
            "adminPassword": "***",
            "users": [{"user": "a", "passwordHash": "***"}, [{"rtsp_password": "***"}]],
        },
        "note": "passwords are redacted",
    }
    for secret in ("top1", "top2", "top3", "top4", "top5", "top6"):
        assert secret.encode() not in only.payload


def test_message_content_list_at_top_level_is_redacted(normalizer: Normalizer) -> None:
    """Content that is a list of objects is redacted element by element."""
    content = [{"Password": "x1"}, {"id": 1}, "plain"]
    (only,) = run(normalizer, "message", {"message": "m", "time": 1, "content": content})
    assert payload(only)["content"] == [{"Password": "***"}, {"id": 1}, "plain"]


def test_redact_value_leaves_other_values_alone() -> None:
    """Scalars, strings mentioning password, and non-password keys are unchanged."""
    assert redact_value("password") == "password"
    assert redact_value(5) == 5
    assert redact_value(None) is None
    assert redact_value({"user": "password"}) == {"user": "password"}


# -- timestamp and sanitizing ----------------------------------------------------------


def test_format_timestamp_is_utc_with_milliseconds_and_z() -> None:
    """format_timestamp gives YYYY-MM-DDTHH:MM:SS.mmmZ in UTC."""
    assert format_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert format_timestamp(1_700_000_000.1239) == "2023-11-14T22:13:20.123Z"
    assert format_timestamp(1_700_000_000) == "2023-11-14T22:13:20.000Z"
    assert TIMESTAMP_FORMAT.fullmatch(format_timestamp(time.time()))


@pytest.mark.parametrize(
    ("raw", "level"),
    [
        ("Motion", "Motion"),
        ("a/b", "a_b"),
        ("a+b", "a_b"),
        ("a#b", "a_b"),
        ("a\x00b", "a_b"),
        ("a b", "a_b"),
        ("a\tb", "a_b"),
        ("a\nb", "a_b"),
        ("a\u3000b", "a_b"),
        ("a//b", "a__b"),
        ("a \tb", "a__b"),
        ("/+#\x00 ", "_____"),
        ("", "_"),
        ("Tür-Öffnung_2", "Tür-Öffnung_2"),
    ],
)
def test_sanitize_level_replaces_each_unsafe_char_by_one_underscore(raw: str, level: str) -> None:
    """'/', '+', '#', NUL and whitespace each become one '_'; empty becomes '_'."""
    assert sanitize_level(raw) == level


@pytest.mark.parametrize(
    ("stream", "item", "topic", "field", "original"),
    [
        (
            "event",
            event(1, "Door/Open #1", "once"),
            "channel/1/event/Door_Open__1",
            "type",
            "Door/Open #1",
        ),
        ("meta", meta(1, "a+b c", "d"), "channel/1/meta/a_b_c", "type", "a+b c"),
        (
            "exception",
            {"exception": "disk/1 #", "time": 1},
            "exception/disk_1__",
            "exception",
            "disk/1 #",
        ),
        ("message", {"message": "", "time": 1}, "message/_", "message", ""),
    ],
)
def test_topic_level_sanitized_but_payload_keeps_original(
    normalizer: Normalizer,
    *,
    stream: StreamName,
    item: dict[str, Any],
    topic: str,
    field: str,
    original: str,
) -> None:
    """The topic level is sanitized while the payload keeps the NVR's original text."""
    (only,) = run(normalizer, stream, item)
    assert only.topic == f"{BASE}/{NVR}/{topic}"
    assert payload(only)[field] == original


def test_long_level_keeps_topic_under_mqtt_limit(normalizer: Normalizer) -> None:
    """A huge event type still makes a topic within MQTT's 65535-byte limit."""
    (only,) = run(normalizer, "event", event(1, "\U0001f600" * 100_000, "once"))
    assert len(only.topic.encode("utf-8")) <= 65535
    assert payload(only)["type"] == "\U0001f600" * 100_000


# -- frames ----------------------------------------------------------------------------


def test_frame_with_one_object(normalizer: Normalizer) -> None:
    """A frame holding one object is one item."""
    outcome = process_frame(normalizer, "meta", orjson.dumps(meta()), TS)
    assert outcome.received == 1
    assert outcome.rejections == []
    assert len(outcome.publications) == 1


def test_frame_with_array_publishes_each_item(normalizer: Normalizer) -> None:
    """A JSON array frame publishes every item in order."""
    frame = [meta(1, "A"), meta(2, "B"), meta(None, "C")]
    outcome = process_frame(normalizer, "meta", orjson.dumps(frame), TS)
    assert outcome.received == 3
    assert [p.topic for p in outcome.publications] == [
        f"{BASE}/{NVR}/channel/1/meta/A",
        f"{BASE}/{NVR}/channel/2/meta/B",
        f"{BASE}/{NVR}/channel/system/meta/C",
    ]


def test_frame_as_text_is_accepted(normalizer: Normalizer) -> None:
    """A str frame (a websocket text frame) works like bytes."""
    outcome = process_frame(normalizer, "meta", orjson.dumps(meta()).decode(), TS)
    assert len(outcome.publications) == 1


def test_empty_array_frame_is_nothing(normalizer: Normalizer) -> None:
    """An empty array receives nothing and rejects nothing."""
    outcome = process_frame(normalizer, "event", b"[]", TS)
    assert (outcome.received, outcome.rejections, outcome.publications) == (0, [], [])


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe", b'{"Type": "a"', "[1,"])
def test_non_json_frame_counts_one_received_one_rejected(
    normalizer: Normalizer, raw: str | bytes
) -> None:
    """A frame that is not JSON counts as one item received and one rejection."""
    outcome = process_frame(normalizer, "event", raw, TS)
    assert outcome.received == 1
    assert len(outcome.rejections) == 1
    assert "not valid JSON" in outcome.rejections[0]
    assert outcome.publications == []


@pytest.mark.parametrize("raw", [b"42", b'"text"', b"null", b"true", b"1.5"])
def test_json_scalar_frame_is_rejected(normalizer: Normalizer, raw: bytes) -> None:
    """A JSON scalar frame is rejected as a whole, counted as one."""
    outcome = process_frame(normalizer, "event", raw, TS)
    assert outcome.received == 1
    assert len(outcome.rejections) == 1
    assert "object" in outcome.rejections[0]
    assert outcome.publications == []
    with pytest.raises(FrameRejected):
        parse_frame(raw)


def test_array_with_valid_and_invalid_items(normalizer: Normalizer) -> None:
    """The valid items of an array are published; each invalid one is one rejection."""
    frame = [
        event(1, "Motion", "active"),
        {"ChannelID": 1, "Type": 5, "State": "active"},
        "not an object",
        event(2, "Alarm", "once"),
        [event()],
        {"State": "active"},
    ]
    outcome = process_frame(normalizer, "event", orjson.dumps(frame), TS)
    assert outcome.received == 6
    assert len(outcome.rejections) == 4
    assert outcome.rejections[0].startswith("item 1: ")
    assert "Type" in outcome.rejections[0]
    assert outcome.rejections[1].startswith("item 2: ")
    assert outcome.rejections[2].startswith("item 4: ")
    assert outcome.rejections[3].startswith("item 5: ")
    assert "missing field 'Type'" in outcome.rejections[3]
    assert [p.topic for p in outcome.publications] == [
        f"{BASE}/{NVR}/channel/1/event/Motion",
        f"{BASE}/{NVR}/channel/1/event/Motion/state",
        f"{BASE}/{NVR}/channel/2/event/Alarm",
    ]


def test_frame_over_one_mebibyte_is_rejected(normalizer: Normalizer) -> None:
    """A frame larger than 1 MiB is rejected without parsing; exactly 1 MiB is accepted."""
    template = orjson.dumps({**meta(), "pad": ""})
    padding = MAX_FRAME_BYTES - len(template)
    exact = orjson.dumps({**meta(), "pad": "x" * padding})
    assert len(exact) == MAX_FRAME_BYTES
    accepted = process_frame(normalizer, "meta", exact, TS)
    assert accepted.rejections == []
    assert len(accepted.publications) == 1

    too_big = orjson.dumps({**meta(), "pad": "x" * (padding + 1)})
    rejected = process_frame(normalizer, "meta", too_big, TS)
    assert rejected.received == 1
    assert rejected.publications == []
    (reason,) = rejected.rejections
    assert str(MAX_FRAME_BYTES + 1) in reason
    assert "limit" in reason


def test_frame_size_limit_counts_utf8_bytes_of_text(normalizer: Normalizer) -> None:
    """A text frame is measured in UTF-8 bytes, not characters."""
    text = orjson.dumps({**meta(), "pad": "é" * (MAX_FRAME_BYTES // 2)}).decode()
    assert len(text) < MAX_FRAME_BYTES < len(text.encode())
    outcome = process_frame(normalizer, "meta", text, TS)
    assert outcome.publications == []
    assert len(outcome.rejections) == 1


def test_unknown_extra_fields_are_ignored(normalizer: Normalizer) -> None:
    """Fields the NVR adds are accepted and do not reach the payload."""
    item = {**event(1, "Motion", "once"), "Firmware": "9.9", "Extra": {"a": [1]}}
    (only,) = run(normalizer, "event", item)
    assert set(payload(only)) == {"nvr", "channel", "type", "state", "timestamp"}


@pytest.mark.parametrize(
    ("stream", "item", "field"),
    [
        ("event", {"ChannelID": 1, "Type": 5, "State": "active"}, "Type"),
        ("event", {"ChannelID": 1, "Type": "M", "State": None}, "State"),
        ("event", {"ChannelID": "one", "Type": "M", "State": "once"}, "ChannelID"),
        ("event", {"ChannelID": 1.5, "Type": "M", "State": "once"}, "ChannelID"),
        ("meta", {"ChannelID": 1, "Type": "P", "Data": {"plate": "x"}}, "Data"),
        ("exception", {"exception": "x", "time": "soon"}, "time"),
        ("exception", {"exception": ["x"], "time": 1}, "exception"),
        ("exception", {"exception": "x"}, "time"),
        ("status", status(Online="yes"), "Online"),
        ("status", status(Recording=1), "Recording"),
        ("status", status(Manual="no"), "Manual"),
        ("message", {"message": 3, "time": 1}, "message"),
        ("message", {"message": "m", "time": None}, "time"),
    ],
)
def test_wrong_types_are_rejected_naming_the_field(
    normalizer: Normalizer, stream: StreamName, item: dict[str, Any], field: str
) -> None:
    """A mistyped or missing required field rejects the item with a message naming it."""
    outcome = process_frame(normalizer, stream, orjson.dumps(item), TS)
    assert outcome.publications == []
    assert outcome.received == 1
    (reason,) = outcome.rejections
    assert f"'{field}'" in reason
    with pytest.raises(ItemRejected, match=re.escape(f"'{field}'")):
        validate_item(stream, item)


@pytest.mark.parametrize(
    ("stream", "item"),
    [
        ("event", {"ChannelID": "99999999999999999999", "Type": "M", "State": "once"}),
        ("meta", {"ChannelID": "99999999999999999999", "Type": "P", "Data": "d"}),
        ("status", status(channel="99999999999999999999")),
        ("exception", {"exception": "x", "time": "99999999999999999999"}),
        ("message", {"message": "m", "time": "-99999999999999999999"}),
    ],
)
def test_oversized_integer_string_does_not_crash_process_frame(
    normalizer: Normalizer, stream: StreamName, item: dict[str, Any]
) -> None:
    """A numeric string beyond 64 bits (coerced to int) is one rejection, not an exception."""
    outcome = process_frame(normalizer, stream, orjson.dumps(item), TS)
    assert outcome.received == 1
    assert len(outcome.rejections) + len(outcome.publications) >= 1
    for publication in outcome.publications:
        orjson.loads(publication.payload)


@pytest.mark.parametrize("stream", STREAM_NAMES)
def test_every_stream_accepts_its_valid_item(normalizer: Normalizer, stream: StreamName) -> None:
    """Each stream's minimal valid item publishes, labelled with its stream and NVR."""
    publications = run(normalizer, stream, VALID_ITEMS[stream])
    assert publications
    assert all(p.stream == stream and p.nvr == NVR for p in publications)
    assert all(p.topic.startswith(f"{BASE}/{NVR}/") for p in publications)
    assert payload(publications[0])["timestamp"] == TS


# -- properties of topic levels --------------------------------------------------------

# orjson never yields lone surrogates (it rejects them in frames), so text reaching the
# Normalizer through process_frame has none; sanitize_level itself is checked on any text.
nvr_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))


def assert_safe_topic(topic: str, levels: int) -> None:
    assert topic.count("/") + 1 == levels
    assert "+" not in topic
    assert "#" not in topic
    assert "\x00" not in topic
    assert len(topic.encode("utf-8")) <= 65535
    assert topic_problem(topic) is None


@settings(max_examples=150, deadline=None)
@given(text=st.text())
def test_sanitize_level_is_never_empty_and_has_no_separator(text: str) -> None:
    """sanitize_level of any text (surrogates, controls) is a non-empty, UTF-8 safe level."""
    level = sanitize_level(text)
    assert level
    assert "/" not in level
    assert "+" not in level
    assert "#" not in level
    assert "\x00" not in level
    level.encode("utf-8")
    assert level == sanitize_level(level)


@settings(max_examples=150, deadline=None)
@given(
    text=nvr_text,
    channel=st.none() | st.integers(min_value=1, max_value=2**31 - 1),
    state=st.sampled_from(["active", "inactive", "once"]),
)
def test_any_event_type_gives_a_safe_topic(text: str, channel: int | None, state: str) -> None:
    """Any event Type gives a 6-level topic (7 for /state) without wildcards or NUL."""
    normalizer = Normalizer(NvrTopics(BASE, NVR))
    message = EventHookMessage.model_validate({"ChannelID": channel, "Type": text, "State": state})
    publications = normalizer.normalize("event", message, TS)
    assert_safe_topic(publications[0].topic, 6)
    assert payload(publications[0])["type"] == text
    for extra in publications[1:]:
        assert_safe_topic(extra.topic, 7)
        assert extra.topic.endswith("/state")


@settings(max_examples=150, deadline=None)
@given(text=nvr_text, channel=st.none() | st.integers(min_value=1, max_value=2**31 - 1))
def test_any_meta_type_gives_a_safe_topic(text: str, channel: int | None) -> None:
    """Any meta Type gives a 6-level topic without wildcards or NUL."""
    outcome = process_frame(
        Normalizer(NvrTopics(BASE, NVR)),
        "meta",
        orjson.dumps({"ChannelID": channel, "Type": text, "Data": text}),
        TS,
    )
    (only,) = outcome.publications
    assert_safe_topic(only.topic, 6)
    assert payload(only)["data"] == text


@settings(max_examples=150, deadline=None)
@given(text=nvr_text)
def test_any_exception_name_gives_a_safe_topic(text: str) -> None:
    """Any exception name gives a 4-level topic without wildcards or NUL."""
    outcome = process_frame(
        Normalizer(NvrTopics(BASE, NVR)),
        "exception",
        orjson.dumps({"exception": text, "time": 1}),
        TS,
    )
    (only,) = outcome.publications
    assert_safe_topic(only.topic, 4)
    assert payload(only)["exception"] == text


@settings(max_examples=150, deadline=None)
@given(text=nvr_text)
def test_any_message_name_gives_a_safe_topic(text: str) -> None:
    """Any message name gives a 4-level topic without wildcards or NUL."""
    outcome = process_frame(
        Normalizer(NvrTopics(BASE, NVR)),
        "message",
        orjson.dumps({"message": text, "time": 1}),
        TS,
    )
    (only,) = outcome.publications
    assert_safe_topic(only.topic, 4)
    assert payload(only)["message"] == text


# -- login digest (CONTRACT.md section 3) ----------------------------------------------


def md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


CHALLENGE = LoginChallenge(realm="NVR", qop="auth", nonce="abc123", opaque="op")


def test_digest_response_matches_rfc2617_by_hand() -> None:
    """response = MD5(HA1:nonce:nc:cnonce:qop:HA2), HA1 = MD5(user:realm:pw), HA2 = POST uri."""
    ha1 = md5("admin:NVR:s3cret")
    ha2 = md5("POST:/admin/login")
    expected = md5(f"{ha1}:abc123:00000001:0a4f113b:auth:{ha2}")
    got = digest_response(
        username="admin", password="s3cret", challenge=CHALLENGE, nc="00000001", cnonce="0a4f113b"
    )
    assert got == expected


def test_digest_response_depends_on_every_input() -> None:
    """Changing the password, nonce, nc or cnonce changes the response."""
    base = {"username": "admin", "password": "pw", "challenge": CHALLENGE, "nc": "00000001"}
    reference = digest_response(**base, cnonce="aa")
    assert digest_response(**{**base, "password": "pX"}, cnonce="aa") != reference
    assert digest_response(**{**base, "nc": "00000002"}, cnonce="aa") != reference
    assert digest_response(**base, cnonce="ab") != reference
    other = LoginChallenge(realm="NVR", qop="auth", nonce="zzz")
    assert digest_response(**{**base, "challenge": other}, cnonce="aa") != reference


def test_login_body_format() -> None:
    """login_body sends username, nc as 8 hex digits, a fresh hex cnonce and the digest."""
    body = login_body("admin", "s3cret", CHALLENGE, 1)
    assert set(body) == {"username", "nc", "cnonce", "response"}
    assert body["username"] == "admin"
    assert body["nc"] == "00000001"
    assert body["cnonce"]
    assert set(body["cnonce"]) <= set(string.hexdigits)
    ha1 = md5("admin:NVR:s3cret")
    ha2 = md5("POST:/admin/login")
    assert body["response"] == md5(f"{ha1}:abc123:00000001:{body['cnonce']}:auth:{ha2}")
    assert login_body("admin", "s3cret", CHALLENGE, 26)["nc"] == "0000001a"
    assert login_body("admin", "s3cret", CHALLENGE, 1)["cnonce"] != body["cnonce"]


def test_login_challenge_from_json() -> None:
    """The challenge reads realm/nonce, defaults qop to auth, and rejects a bad answer."""
    challenge = LoginChallenge.from_json({"realm": "R", "nonce": "N"})
    assert (challenge.qop, challenge.opaque) == ("auth", "")
    with pytest.raises(ValueError, match="nonce"):
        LoginChallenge.from_json({"realm": "R"})
    with pytest.raises(ValueError, match="not a JSON object"):
        LoginChallenge.from_json(["R"])


def test_topic_cache_stays_bounded_and_gives_the_same_topics(monkeypatch: pytest.MonkeyPatch):
    """NvrTopics are built once per channel and type, and an NVR inventing names cannot
    grow the cache past its bound."""
    import bridge.normalize as normalize_module

    monkeypatch.setattr(normalize_module, "TOPIC_CACHE_SIZE", 8)
    normalizer = Normalizer(NvrTopics(BASE, NVR))
    for i in range(100):
        message = EventHookMessage(ChannelID=1, Type=f"T/{i}#", State="once")
        (publication,) = normalizer.normalize("event", message, "t")
        assert publication.topic == f"{BASE}/{NVR}/channel/1/event/T_{i}_"
        assert len(normalizer._topic_cache) <= 8


@given(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=40) | st.text(max_size=40))
def test_topic_problem_shortcut_agrees_with_the_full_check(topic: str) -> None:
    """The printable-ASCII shortcut refuses exactly what the character class refuses."""
    from bridge import limits

    expected = None if topic and not limits._UNSAFE_TOPIC_CHARS.search(topic) else "problem"
    assert (topic_problem(topic) is None) is (expected is None)


@given(
    st.recursive(
        st.integers() | st.text(max_size=3),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=2), c, max_size=3),
        max_leaves=12,
    ),
    st.integers(0, 6),
)
def test_json_depth_matches_a_recursive_definition(value: object, limit: int) -> None:
    """json_depth_exceeds (with its flat shortcut) is the depth of nested containers > limit."""
    from bridge.limits import json_depth_exceeds

    def depth(node: object) -> int:
        if isinstance(node, dict):
            return 1 + max((depth(v) for v in node.values()), default=0)
        if isinstance(node, list):
            return 1 + max((depth(v) for v in node), default=0)
        return 0

    assert json_depth_exceeds(value, limit) is (depth(value) > limit)
