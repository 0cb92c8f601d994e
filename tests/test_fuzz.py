"""Long hypothesis runs: no NVR frame or MQTT request makes the pure core raise.

``process_frame`` and ``parse_request`` are the two doors untrusted input comes through;
each must turn anything into publications or a refusal sentence, never an exception.
"""

from __future__ import annotations

import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.commands import (
    COMMANDS,
    Convenience,
    ParsedRequest,
    PtzCommand,
    convenience_request,
    parse_request,
)
from bridge.config import COMMAND_NAMES
from bridge.limits import topic_problem
from bridge.normalize import Normalizer, process_frame
from bridge.nvr.models import STREAM_NAMES, StreamName
from bridge.topics import NvrTopics


def convenience_of(levels: list[str], payload: bytes) -> Convenience | None:
    """The convenience request of topic levels after the NVR id; None for other topics."""
    route = NvrTopics("b", "n").route(levels)
    if route is None or route.kind == "request":
        return None
    return convenience_request(route, payload)


pytestmark = pytest.mark.slow

FUZZ = settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TS = "2024-05-01T12:00:00.000Z"
NOW = 1_700_000_000.0

# -- JSON-ish values -------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    # The NVR models tolerate numbers sent as strings; these straddle the 64-bit limits.
    | st.integers(min_value=-(2**70), max_value=2**70).map(str)
    | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]).map(str)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)

channels = st.none() | st.integers(min_value=-5, max_value=64)
epoch_ms = st.integers(min_value=0, max_value=2**63 - 1)

# Per stream: (required fields, optional fields), each with values the model accepts.
STREAM_FIELDS: dict[StreamName, tuple[dict[str, Any], dict[str, Any]]] = {
    "event": (
        {"Type": st.text(), "State": st.sampled_from(["active", "inactive", "once"]) | st.text()},
        {"ChannelID": channels},
    ),
    "meta": ({"Type": st.text(), "Data": st.text()}, {"ChannelID": channels}),
    "exception": ({"exception": st.text(), "time": epoch_ms}, {"target": json_values}),
    "status": (
        {
            "ChannelID": st.integers(min_value=1, max_value=4),
            "Online": st.booleans(),
            "Recording": st.booleans(),
            "Event": st.booleans(),
        },
        {"Manual": st.none() | st.booleans()},
    ),
    "message": (
        {"message": st.text(), "time": epoch_ms},
        {"target": json_values, "content": json_values},
    ),
}


def with_extra(strategy: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Add up to two unknown fields (the NVR's newer firmware does)."""
    return st.builds(
        lambda item, extra: {**extra, **item},
        strategy,
        st.dictionaries(st.text(max_size=8), scalars, max_size=2),
    )


def stream_items(stream: StreamName) -> st.SearchStrategy[Any]:
    """Valid items, items with fields missing or of any type, and any JSON value."""
    required, optional = STREAM_FIELDS[stream]
    valid = st.fixed_dictionaries(required, optional=optional)
    mutated = st.fixed_dictionaries(
        {}, optional={name: value | scalars for name, value in {**required, **optional}.items()}
    )
    return with_extra(valid) | with_extra(mutated) | json_values


def stream_frames(stream: StreamName) -> st.SearchStrategy[tuple[StreamName, list[bytes]]]:
    """One or two frames of one stream (the second exercises the camera-status memory)."""
    item = stream_items(stream)
    frame = st.one_of(item, st.lists(item, max_size=4)).map(orjson.dumps)
    return st.tuples(st.just(stream), st.lists(frame, min_size=1, max_size=2))


def check_outcome(normalizer: Normalizer, stream: StreamName, raw: str | bytes) -> None:
    outcome = process_frame(normalizer, stream, raw, TS)
    assert outcome.received >= 0
    assert len(outcome.rejections) <= max(outcome.received, 1)
    for reason in outcome.rejections:
        assert isinstance(reason, str)
        assert reason.strip()
    for publication in outcome.publications:
        topic = publication.topic
        assert topic.startswith("everfocus/nvr1/")
        assert "+" not in topic
        assert "#" not in topic
        assert "\x00" not in topic
        assert len(topic.encode("utf-8")) <= 65535
        assert topic_problem(topic) is None
        assert publication.stream == stream
        if topic.endswith("/state"):
            # event, alarm and record states: plain text
            assert publication.payload in (b"active", b"inactive")
        else:
            body = orjson.loads(publication.payload)
            assert body["nvr"] == "nvr1"
            assert body["timestamp"] == TS


@FUZZ
@given(case=st.sampled_from(STREAM_NAMES).flatmap(stream_frames))
def test_process_frame_never_raises_on_json_frames(
    case: tuple[StreamName, list[bytes]],
) -> None:
    """Any JSON-ish frame on any stream gives publications and rejection sentences only."""
    stream, frames = case
    normalizer = Normalizer(NvrTopics("everfocus", "nvr1"))
    for frame in frames:
        check_outcome(normalizer, stream, frame)


@FUZZ
@given(
    stream=st.sampled_from(STREAM_NAMES),
    raw=st.binary(max_size=300) | st.text(max_size=100),
)
def test_process_frame_never_raises_on_arbitrary_input(
    stream: StreamName, raw: bytes | str
) -> None:
    """Arbitrary bytes or text (surrogates included) never make process_frame raise."""
    check_outcome(Normalizer(NvrTopics("everfocus", "nvr1")), stream, raw)


# -- requests --------------------------------------------------------------------------

zones = st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23)),
)
NOW_MS = int(NOW * 1000)
timestamps = (
    st.integers(min_value=NOW_MS - 60_000, max_value=NOW_MS + 60_000)
    | st.floats(min_value=NOW_MS - 60_000, max_value=NOW_MS + 60_000)
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.datetimes(timezones=st.just(UTC) | zones).map(datetime.isoformat)
    | st.datetimes().map(datetime.isoformat)
    | st.text(max_size=30)
    | json_values
)
channel = st.integers(min_value=1, max_value=64)
PTZ_COMMANDS = list(typing.get_args(PtzCommand))
speed = st.floats(min_value=0, max_value=1) | st.integers(min_value=0, max_value=1)
picked_presets = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.text(max_size=5),
            "preset_token": st.text(max_size=5),
            "time": st.integers(min_value=0, max_value=100),
        }
    ),
    max_size=3,
)
ptz_parameters = st.fixed_dictionaries(
    {},
    optional={
        "preset_name": st.text(max_size=10),
        "preset_token": st.text(max_size=10),
        "speed": speed,
        "picked_presets": picked_presets,
    },
)

# Per command: (required fields, optional fields), each with values the model accepts.
REQUEST_FIELDS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "add_event": (
        {
            "channel": channel,
            "type": st.text(min_size=1),
            "state": st.sampled_from(["active", "inactive", "once"]),
        },
        {},
    ),
    "add_meta": ({"channel": channel, "type": st.text(min_size=1), "data": st.text()}, {}),
    "manual_alarm": ({"channel": channel, "command": st.sampled_from(["start", "stop"])}, {}),
    "manual_record": ({"channel": channel, "command": st.sampled_from(["start", "stop"])}, {}),
    "set_pin": (
        {"pin": st.integers(min_value=1, max_value=2**63), "value": st.sampled_from([0, 1])},
        {},
    ),
    "ptz": (
        {"channel": channel, "command": st.sampled_from(PTZ_COMMANDS)},
        {
            "speed": speed,
            "number": st.integers(min_value=0, max_value=2**63),
            "parameters": ptz_parameters,
        },
    ),
    "buzzer": ({"timeout": st.integers(min_value=1, max_value=60)}, {}),
    "snapshot": ({"channel": channel}, {}),
}
COMMON_FIELDS = {"transaction": json_values, "timestamp": timestamps}
ALL_FIELDS = {
    name: value
    for required, optional in REQUEST_FIELDS.values()
    for name, value in {**required, **optional}.items()
}


def request_objects(command: str) -> st.SearchStrategy[dict[str, Any]]:
    """Valid requests of ``command``, requests with any fields of any type, any object."""
    required, optional = REQUEST_FIELDS.get(command, ({}, {}))
    valid = st.fixed_dictionaries(required, optional={**optional, **COMMON_FIELDS})
    mutated = st.fixed_dictionaries(
        {},
        optional={name: value | scalars for name, value in {**ALL_FIELDS, **COMMON_FIELDS}.items()},
    )
    return (
        valid
        | with_extra(valid)
        | with_extra(mutated)
        | st.dictionaries(st.text(max_size=8), json_values, max_size=4)
    )


def check_parsed(parsed: ParsedRequest) -> None:
    assert (parsed.call is None) != (parsed.refusal is None)
    if parsed.refusal is not None:
        assert parsed.refusal.outcome in {"invalid", "refused"}
        assert isinstance(parsed.refusal.error, str)
        assert parsed.refusal.error.strip()
    else:
        assert parsed.call is not None
        for sent in (parsed.call.body or {}, parsed.call.params or {}):
            assert "transaction" not in sent
            assert "timestamp" not in sent
        orjson.dumps(parsed.call.body)


commands_and_requests = st.sampled_from([*COMMAND_NAMES, "unknown"]).flatmap(
    lambda command: st.tuples(st.just(command), request_objects(command))
)


@FUZZ
@given(
    case=commands_and_requests,
    retained=st.sampled_from([False, False, False, True]),
    allowed=st.sampled_from([True, True, True, False]),
)
def test_parse_request_never_raises_on_json_objects(
    case: tuple[str, dict[str, Any]], retained: bool, allowed: bool
) -> None:
    """Any JSON object on any command gives a REST call or a refusal sentence."""
    command, request = case
    parsed = parse_request(
        command,
        orjson.dumps(request),
        allowed=frozenset(COMMANDS) if allowed else frozenset(),
        retained=retained,
        now=NOW,
        max_age=30,
    )
    check_parsed(parsed)


@FUZZ
@given(command=st.sampled_from(COMMAND_NAMES), payload=st.binary(max_size=200))
def test_parse_request_never_raises_on_arbitrary_bytes(command: str, payload: bytes) -> None:
    """Arbitrary bytes on any command give a REST call or a refusal sentence."""
    parsed = parse_request(
        command, payload, allowed=frozenset(COMMANDS), retained=False, now=NOW, max_age=30
    )
    check_parsed(parsed)


# A topic level where a number belongs: digits of any script, or any text.
number_levels = (
    st.integers(min_value=-5).map(str)
    | st.text(st.characters(whitelist_categories=("Nd", "No")), min_size=1, max_size=3)
    | st.text(max_size=5)
)
convenience_levels = st.one_of(
    st.tuples(st.just("pin"), number_levels, st.just("set")).map(list),
    st.tuples(
        st.just("channel"),
        number_levels,
        st.sampled_from(["alarm", "record", "ptz"]) | st.text(max_size=5),
        st.just("set"),
    ).map(list),
    st.lists(
        st.sampled_from(["pin", "channel", "alarm", "record", "set", "1"]) | st.text(), max_size=5
    ),
)
convenience_payloads = st.sampled_from(
    [b"1", b"0", b"ON", b"off", b"start", b"Stop", b"true"]
) | st.binary(max_size=20)


@FUZZ
@given(levels=convenience_levels, payload=convenience_payloads)
def test_convenience_request_never_raises(levels: list[str], payload: bytes) -> None:
    """Any convenience topic levels and payload give None, a request or an error sentence."""
    convenience = convenience_of(levels, payload)
    if convenience is None:
        return
    assert (convenience.request is None) != (convenience.error is None)
    if convenience.request is not None:
        check_parsed(
            parse_request(
                convenience.command,
                convenience.request,
                allowed=frozenset(COMMANDS),
                retained=False,
                now=NOW,
                max_age=30,
                decoded=True,
            )
        )
