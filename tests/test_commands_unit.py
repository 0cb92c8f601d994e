"""Command requests to REST calls, refusals and convenience topics (CONTRACT.md section 5)."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.commands import (
    COMMANDS,
    Convenience,
    ParsedRequest,
    RestCall,
    convenience_request,
    parse_request,
    parse_timestamp,
    transaction_json,
)
from bridge.config import COMMAND_NAMES
from bridge.topics import NvrTopics


def convenience_of(levels: list[str], payload: bytes) -> Convenience | None:
    """The convenience request of topic levels after the NVR id; None for other topics."""
    route = NvrTopics("b", "n").route(levels)
    if route is None or route.kind == "request":
        return None
    return convenience_request(route, payload)


NOW = 1_700_000_000.0
NOW_MS = int(NOW * 1000)
MAX_AGE = 30.0
ALL = frozenset(COMMAND_NAMES)


def parse(
    command: str,
    request: Any,
    *,
    allowed: frozenset[str] = ALL,
    retained: bool = False,
    now: float = NOW,
) -> ParsedRequest:
    """Parse a request given as a JSON value (or raw bytes)."""
    raw = request if isinstance(request, bytes) else orjson.dumps(request)
    return parse_request(command, raw, allowed=allowed, retained=retained, now=now, max_age=MAX_AGE)


def call_of(command: str, request: dict[str, Any]) -> RestCall:
    parsed = parse(command, request)
    assert parsed.refusal is None, parsed.refusal
    assert parsed.call is not None
    return parsed.call


def refusal_of(command: str, request: Any, **kwargs: Any) -> tuple[str, str]:
    parsed = parse(command, request, **kwargs)
    assert parsed.call is None
    assert parsed.refusal is not None
    assert parsed.refusal.error
    return parsed.refusal.outcome, parsed.refusal.error


# -- valid requests map to the contract's REST calls -----------------------------------


@pytest.mark.parametrize(
    ("command", "request_", "expected"),
    [
        (
            "add_event",
            {"channel": 1, "type": "Motion", "state": "active"},
            RestCall(
                "POST", "/meta/addEvent", body={"ChannelID": 1, "Type": "Motion", "State": "active"}
            ),
        ),
        (
            "add_event",
            {"channel": 16, "type": "Door", "state": "once"},
            RestCall(
                "POST", "/meta/addEvent", body={"ChannelID": 16, "Type": "Door", "State": "once"}
            ),
        ),
        (
            "add_meta",
            {"channel": 2, "type": "Plate", "data": '{"plate": "AB"}'},
            RestCall(
                "POST",
                "/meta/addMeta",
                body={"ChannelID": 2, "Type": "Plate", "Data": '{"plate": "AB"}'},
            ),
        ),
        (
            "manual_alarm",
            {"channel": 3, "command": "start"},
            RestCall("POST", "/record/manualAlarm", body={"channel": 3, "command": "start"}),
        ),
        (
            "manual_record",
            {"channel": 4, "command": "stop"},
            RestCall("POST", "/record/manualRecord", body={"channel": 4, "command": "stop"}),
        ),
        (
            "set_pin",
            {"pin": 2, "value": 1},
            RestCall("POST", "/dio/pinManualSetting", body={"pinID": 2, "pinValue": 1}),
        ),
        (
            "set_pin",
            {"pin": 1, "value": 0},
            RestCall("POST", "/dio/pinManualSetting", body={"pinID": 1, "pinValue": 0}),
        ),
        (
            "ptz",
            {"channel": 5, "command": "pan_left", "speed": 0.5},
            RestCall(
                "POST",
                "/device/ptzControl",
                params={"ChannelID": "5"},
                body={"command": "pan_left", "speed": 0.5},
            ),
        ),
        (
            "ptz",
            {"channel": 1, "command": "stop"},
            RestCall(
                "POST", "/device/ptzControl", params={"ChannelID": "1"}, body={"command": "stop"}
            ),
        ),
        (
            "ptz",
            {"channel": 1, "command": "set_preset", "parameters": {"preset_name": "Door"}},
            RestCall(
                "POST",
                "/device/ptzControl",
                params={"ChannelID": "1"},
                body={"command": "set_preset", "parameters": {"preset_name": "Door"}},
            ),
        ),
        (
            "ptz",
            {
                "channel": 2,
                "command": "goto_preset",
                "number": 3,
                "parameters": {"preset_token": "t3", "speed": 1},
            },
            RestCall(
                "POST",
                "/device/ptzControl",
                params={"ChannelID": "2"},
                body={
                    "command": "goto_preset",
                    "number": 3,
                    "parameters": {"preset_token": "t3", "speed": 1},
                },
            ),
        ),
        (
            "ptz",
            {
                "channel": 7,
                "command": "start_tour",
                "parameters": {
                    "speed": 0.25,
                    "picked_presets": [{"name": "A", "preset_token": "t1", "time": 5}],
                },
            },
            RestCall(
                "POST",
                "/device/ptzControl",
                params={"ChannelID": "7"},
                body={
                    "command": "start_tour",
                    "parameters": {
                        "speed": 0.25,
                        "picked_presets": [{"name": "A", "preset_token": "t1", "time": 5}],
                    },
                },
            ),
        ),
        (
            "buzzer",
            {"timeout": 1},
            RestCall("GET", "/system/callBuzzer", params={"timeout": "1"}),
        ),
        (
            "buzzer",
            {"timeout": 60},
            RestCall("GET", "/system/callBuzzer", params={"timeout": "60"}),
        ),
        (
            "snapshot",
            {"channel": 12},
            RestCall("GET", "/device/getSnapshot", params={"ChannelID": "12"}),
        ),
        (
            "event_search",
            {"channels": [1, 3], "start": 100, "end": 200},
            RestCall(
                "POST",
                "/record/eventSearch",
                body={"ChannelID": [1, 3], "StartTime": 100, "EndTime": 200},
            ),
        ),
        (
            "event_search",
            {"channels": [2], "start": 5, "end": 5, "types": ["Motion"], "stream": "Sub"},
            RestCall(
                "POST",
                "/record/eventSearch",
                body={
                    "ChannelID": [2],
                    "StartTime": 5,
                    "EndTime": 5,
                    "Type": ["Motion"],
                    "Stream": "Sub",
                },
            ),
        ),
        (
            "meta_search",
            {"channel": 4, "start": 1, "end": 9, "types": ["LPR"]},
            RestCall(
                "POST",
                "/record/metaSearch",
                body={"ChannelID": 4, "StartTime": 1, "EndTime": 9, "Type": ["LPR"]},
            ),
        ),
        (
            "snapshot_search",
            {"channels": [1], "start": 1, "end": 2, "types": ["Motion"]},
            RestCall(
                "POST",
                "/device/searchSnapshotPath",
                body={"channels": [1], "startTime": 1, "endTime": 2, "types": ["Motion"]},
            ),
        ),
        (
            "snapshot_search",
            {"channels": [1], "start": 1, "end": 2},
            RestCall(
                "POST",
                "/device/searchSnapshotPath",
                body={
                    "channels": [1],
                    "startTime": 1,
                    "endTime": 2,
                    "types": ["Manual", "Normal", "Motion", "InputAlarm"],
                },
            ),
        ),
        (
            "record_map",
            {"channels": [1, 2], "start": 0, "end": 86400, "resolution": "day"},
            RestCall(
                "POST",
                "/record/getMapByDay",
                body={"ChannelIDs": [1, 2], "StartTime": 0, "EndTime": 86400, "mainsub": 1},
            ),
        ),
        (
            "record_map",
            {"channels": [3], "start": 0, "end": 60, "resolution": "second", "stream": "sub"},
            RestCall(
                "POST",
                "/record/getMapBySecond",
                body={"ChannelIDs": [3], "StartTime": 0, "EndTime": 60, "mainsub": 2},
            ),
        ),
        (
            "logs",
            {"type": "Alarm", "start_ms": 1000, "end_ms": 2000},
            RestCall(
                "POST",
                "/system/searchLogs",
                body={"type": "Alarm", "startTime": 1000, "endTime": 2000},
            ),
        ),
        ("pin_status", {}, RestCall("GET", "/dio/GetPinStatus")),
        ("system_info", {}, RestCall("GET", "/system/getSystemInfo")),
        ("camera_list", {}, RestCall("GET", "/device/cameraList")),
        ("storage", {}, RestCall("GET", "/storage/getStorages")),
    ],
)
def test_valid_request_maps_to_its_rest_call(
    command: str, request_: dict[str, Any], expected: RestCall
) -> None:
    """Each command's valid request is exactly the REST call of CONTRACT.md section 5."""
    assert call_of(command, request_) == expected


def test_every_command_is_covered() -> None:
    """The mapping holds exactly the contract's commands: eight acting, nine reading."""
    assert set(COMMANDS) == {
        "add_event",
        "add_meta",
        "manual_alarm",
        "manual_record",
        "set_pin",
        "ptz",
        "buzzer",
        "snapshot",
        "event_search",
        "meta_search",
        "snapshot_search",
        "record_map",
        "logs",
        "pin_status",
        "system_info",
        "camera_list",
        "storage",
    }


def test_ptz_body_leaves_out_absent_and_null_optionals() -> None:
    """ptz sends the request without channel; absent or null optional fields are left out."""
    call = call_of(
        "ptz",
        {"channel": 3, "command": "tilt_up", "speed": None, "number": None, "parameters": None},
    )
    assert call.body == {"command": "tilt_up"}
    assert call.params == {"ChannelID": "3"}


VALID: dict[str, dict[str, Any]] = {
    "add_event": {"channel": 1, "type": "Motion", "state": "active"},
    "add_meta": {"channel": 1, "type": "Plate", "data": "x"},
    "manual_alarm": {"channel": 1, "command": "start"},
    "manual_record": {"channel": 1, "command": "start"},
    "set_pin": {"pin": 1, "value": 1},
    "ptz": {"channel": 1, "command": "zoom_in"},
    "buzzer": {"timeout": 5},
    "snapshot": {"channel": 1},
    "event_search": {"channels": [1], "start": 1, "end": 2},
    "meta_search": {"channel": 1, "start": 1, "end": 2},
    "snapshot_search": {"channels": [1], "start": 1, "end": 2},
    "record_map": {"channels": [1], "start": 1, "end": 2, "resolution": "minute"},
    "logs": {"type": "All", "start_ms": 1, "end_ms": 2},
    "pin_status": {},
    "system_info": {},
    "camera_list": {},
    "storage": {},
}


@pytest.mark.parametrize("command", COMMAND_NAMES)
@pytest.mark.parametrize(
    "transaction", ["abc-1", 42, 1.5, None, True, [1, "two"], {"id": 7, "nested": [None]}]
)
def test_transaction_echoed_and_never_in_the_body(command: str, transaction: Any) -> None:
    """Any JSON transaction is echoed; transaction and timestamp never reach the NVR."""
    request = {**VALID[command], "transaction": transaction, "timestamp": NOW_MS}
    parsed = parse(command, request)
    assert parsed.refusal is None
    assert parsed.transaction == transaction
    assert parsed.command == command
    assert parsed.call is not None
    sent = orjson.dumps([parsed.call.body, parsed.call.params])
    assert b"transaction" not in sent
    assert b"timestamp" not in sent
    assert str(NOW_MS).encode() not in sent


def test_transaction_null_when_absent() -> None:
    """Without a transaction the echo is null."""
    assert parse("snapshot", {"channel": 1}).transaction is None


def test_transaction_echoed_on_refusal() -> None:
    """An invalid request still echoes its transaction."""
    parsed = parse("snapshot", {"channel": 0, "transaction": "t-9"})
    assert parsed.refusal is not None
    assert parsed.transaction == "t-9"


# -- invalid requests ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "request_", "field"),
    [
        ("snapshot", {"channel": "1"}, "channel"),
        ("snapshot", {"channel": True}, "channel"),
        ("snapshot", {"channel": 1.0}, "channel"),
        ("snapshot", {"channel": 0}, "channel"),
        ("snapshot", {"channel": -1}, "channel"),
        ("snapshot", {}, "channel"),
        ("add_event", {"channel": 1, "type": "M", "state": "on"}, "state"),
        ("add_event", {"channel": 1, "type": "", "state": "once"}, "type"),
        ("add_event", {"channel": 1, "type": 5, "state": "once"}, "type"),
        ("add_meta", {"channel": 1, "type": "P", "data": 5}, "data"),
        ("add_meta", {"channel": 1, "type": "P"}, "data"),
        ("manual_alarm", {"channel": 1, "command": "begin"}, "command"),
        ("manual_record", {"channel": 0, "command": "start"}, "channel"),
        ("manual_record", {"channel": 1, "command": "START"}, "command"),
        ("set_pin", {"pin": 0, "value": 1}, "pin"),
        ("set_pin", {"pin": "1", "value": 1}, "pin"),
        ("set_pin", {"pin": True, "value": 1}, "pin"),
        ("set_pin", {"pin": 1, "value": 2}, "value"),
        ("set_pin", {"pin": 1, "value": -1}, "value"),
        ("set_pin", {"pin": 1, "value": True}, "value"),
        ("set_pin", {"pin": 1, "value": "1"}, "value"),
        ("buzzer", {"timeout": 0}, "timeout"),
        ("buzzer", {"timeout": 61}, "timeout"),
        ("buzzer", {"timeout": "5"}, "timeout"),
        ("buzzer", {"timeout": 5.0}, "timeout"),
        ("ptz", {"channel": 1, "command": "fly"}, "command"),
        ("ptz", {"channel": 1, "command": "pan_left", "speed": 2}, "speed"),
        ("ptz", {"channel": 1, "command": "pan_left", "speed": "fast"}, "speed"),
        ("ptz", {"channel": 1, "command": "goto_preset", "number": -1}, "number"),
        ("ptz", {"channel": 1, "command": "set_preset"}, "parameters.preset_name"),
        ("ptz", {"channel": 1, "command": "set_preset", "parameters": {}}, "preset_name"),
        ("ptz", {"channel": 1, "command": "goto_preset", "parameters": {}}, "preset_token"),
        (
            "ptz",
            {"channel": 1, "command": "tilt_up", "parameters": {"preset_name": "x"}},
            "parameters.preset_name",
        ),
        (
            "ptz",
            {"channel": 1, "command": "start_tour", "parameters": {"bogus": 1}},
            "bogus",
        ),
        ("snapshot", {"channel": 1, "extra": 1}, "extra"),
        ("buzzer", {"timeout": 5, "Timeout": 5}, "Timeout"),
        ("ptz", {"channel": 1, "command": "stop", "ChannelID": 1}, "ChannelID"),
        ("event_search", {"channels": [], "start": 1, "end": 2}, "channels"),
        ("event_search", {"channels": [0], "start": 1, "end": 2}, "channels"),
        ("event_search", {"channels": [1], "start": 3, "end": 2}, "must not be after"),
        ("event_search", {"channels": [1], "start": -1, "end": 2}, "start"),
        ("event_search", {"channels": [1], "start": 1.5, "end": 2}, "start"),
        ("event_search", {"channels": [1], "start": 1, "end": 2, "stream": "main"}, "stream"),
        ("event_search", {"channels": [1], "start": 1, "end": 2, "types": []}, "types"),
        ("meta_search", {"channel": "1", "start": 1, "end": 2}, "channel"),
        ("snapshot_search", {"channels": [1], "start": 1, "end": 2, "types": ["Car"]}, "types"),
        (
            "record_map",
            {"channels": [1, 2, 3, 4, 5], "start": 1, "end": 2, "resolution": "day"},
            "channels",
        ),
        ("record_map", {"channels": [1], "start": 1, "end": 2, "resolution": "hour"}, "resolution"),
        ("logs", {"type": "all", "start_ms": 1, "end_ms": 2}, "type"),
        ("logs", {"type": "All", "start_ms": 5, "end_ms": 2}, "must not be after"),
        ("pin_status", {"pin": 1}, "pin"),
        ("storage", {"disk": "sda"}, "disk"),
    ],
)
def test_invalid_request_names_the_field(command: str, request_: Any, field: str) -> None:
    """A mistyped, out-of-range, missing or extra field is 'invalid', naming the field."""
    outcome, error = refusal_of(command, request_)
    assert outcome == "invalid"
    assert error.startswith("invalid request")
    assert field in error


@pytest.mark.parametrize("raw", [b"", b"not json", b"{", b"\xff\xfe", b"{'channel': 1}"])
def test_not_json_is_invalid(raw: bytes) -> None:
    """A payload that is not JSON is 'invalid' and says so."""
    outcome, error = refusal_of("snapshot", raw)
    assert outcome == "invalid"
    assert "not valid JSON" in error


@pytest.mark.parametrize("raw", [b"[]", b"[1]", b"1", b'"x"', b"null", b"true"])
def test_json_non_object_is_invalid(raw: bytes) -> None:
    """A JSON value that is not an object is 'invalid'."""
    outcome, error = refusal_of("snapshot", raw)
    assert outcome == "invalid"
    assert "JSON object" in error


# -- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["reboot", "", "Snapshot", "set_pin/1", "+"])
def test_unknown_command_is_refused(command: str) -> None:
    """A command that is not one of the eight is 'refused', naming it."""
    outcome, error = refusal_of(command, {"channel": 1})
    assert outcome == "refused"
    assert repr(command) in error


def test_unknown_command_refused_even_with_bad_json() -> None:
    """'unknown command' comes before the JSON check."""
    outcome, error = refusal_of("reboot", b"{nope")
    assert outcome == "refused"
    assert "unknown command" in error


def test_command_not_allowed_is_refused() -> None:
    """A command missing from BRIDGE_COMMANDS is 'refused', naming it."""
    outcome, error = refusal_of("buzzer", {"timeout": 5}, allowed=frozenset({"snapshot"}))
    assert outcome == "refused"
    assert "'buzzer'" in error
    assert "not allowed" in error


def test_not_allowed_comes_before_validation() -> None:
    """A refused command is refused even when its payload is also invalid."""
    outcome, _ = refusal_of("buzzer", b"garbage", allowed=frozenset())
    assert outcome == "refused"


def test_retained_request_is_refused() -> None:
    """A request delivered with the retain flag is never executed."""
    outcome, error = refusal_of("snapshot", {"channel": 1}, retained=True)
    assert outcome == "refused"
    assert "retain" in error


def test_retained_comes_before_not_allowed() -> None:
    """Order: unknown command, retained, not allowed."""
    _, error = refusal_of("snapshot", {"channel": 1}, retained=True, allowed=frozenset())
    assert "retain" in error
    _, error = refusal_of("bogus", {"channel": 1}, retained=True)
    assert "unknown command" in error


# -- timestamp and expiry --------------------------------------------------------------


def test_recent_epoch_ms_timestamp_is_accepted() -> None:
    """A timestamp within BRIDGE_COMMAND_MAX_AGE lets the request run."""
    parsed = parse("snapshot", {"channel": 1, "timestamp": NOW_MS - 29_000})
    assert parsed.call is not None


def test_old_epoch_ms_timestamp_is_expired() -> None:
    """A timestamp older than the max age is 'refused' with an error starting 'expired'."""
    outcome, error = refusal_of("snapshot", {"channel": 1, "timestamp": NOW_MS - 31_000})
    assert outcome == "refused"
    assert error.startswith("expired")


def test_float_epoch_ms_timestamp() -> None:
    """Epoch milliseconds may be a float."""
    assert parse("snapshot", {"channel": 1, "timestamp": NOW_MS - 0.5}).call is not None
    outcome, error = refusal_of("snapshot", {"channel": 1, "timestamp": float(NOW_MS - 60_000)})
    assert (outcome, error.split(":")[0]) == ("refused", "expired")


@pytest.mark.parametrize(
    "stamp",
    [
        datetime.fromtimestamp(NOW - 5, UTC).isoformat(),
        datetime.fromtimestamp(NOW - 5, UTC).isoformat().replace("+00:00", "Z"),
        datetime.fromtimestamp(NOW - 5, timezone(timedelta(hours=5, minutes=30))).isoformat(),
        datetime.fromtimestamp(NOW - 5, timezone(timedelta(hours=-8))).isoformat(),
    ],
)
def test_iso_timestamp_with_zone_is_accepted(stamp: str) -> None:
    """An ISO 8601 timestamp with a zone (Z or an offset) is read correctly."""
    assert parse("snapshot", {"channel": 1, "timestamp": stamp}).call is not None
    assert parse_timestamp(stamp) == pytest.approx(NOW - 5)


def test_old_iso_timestamp_is_expired() -> None:
    """An old ISO timestamp is expired too."""
    stamp = "2023-11-14T22:00:00+00:00"
    outcome, error = refusal_of("snapshot", {"channel": 1, "timestamp": stamp})
    assert outcome == "refused"
    assert error.startswith("expired")


@pytest.mark.parametrize("stamp", ["2023-11-14T22:13:15", "2023-11-14", "yesterday", "", "1700"])
def test_timestamp_string_without_zone_or_not_iso_is_invalid(stamp: str) -> None:
    """An ISO string without a zone, or a string that is not ISO, makes the request invalid."""
    outcome, error = refusal_of("snapshot", {"channel": 1, "timestamp": stamp})
    assert outcome == "invalid"
    assert "timestamp" in error


@pytest.mark.parametrize("stamp", [True, [NOW_MS], {"ms": NOW_MS}])
def test_timestamp_not_number_or_string_is_invalid(stamp: Any) -> None:
    """A timestamp that is neither a number nor a string is 'invalid', naming it."""
    outcome, error = refusal_of("snapshot", {"channel": 1, "timestamp": stamp})
    assert outcome == "invalid"
    assert "timestamp" in error


def test_null_timestamp_is_no_timestamp() -> None:
    """timestamp: null is the same as no timestamp."""
    assert parse("snapshot", {"channel": 1, "timestamp": None}).call is not None


@pytest.mark.parametrize("ahead_s", [1, 3600, 10 * 365 * 86400])
def test_future_timestamp_is_accepted(ahead_s: int) -> None:
    """A timestamp in the future (clock drift) is taken as now and runs."""
    parsed = parse("snapshot", {"channel": 1, "timestamp": NOW_MS + ahead_s * 1000})
    assert parsed.call is not None


def test_validation_comes_before_expiry() -> None:
    """A request both invalid and expired is 'invalid'."""
    outcome, error = refusal_of("snapshot", {"channel": 0, "timestamp": NOW_MS - 3_600_000})
    assert outcome == "invalid"
    assert "channel" in error


def test_expiry_uses_the_given_clock() -> None:
    """The same request is fresh or expired depending on now."""
    request = {"channel": 1, "timestamp": NOW_MS}
    assert parse("snapshot", request, now=NOW + 30).call is not None
    assert parse("snapshot", request, now=NOW + 31).refusal is not None


def test_parse_timestamp_units() -> None:
    """Numbers are epoch milliseconds; ISO strings are read with their zone."""
    assert parse_timestamp(1_700_000_000_000) == 1_700_000_000.0
    assert parse_timestamp(1_500.0) == 1.5
    assert parse_timestamp("1970-01-01T01:00:00+01:00") == 0.0
    with pytest.raises(ValueError, match="time zone"):
        parse_timestamp("2024-01-01T00:00:00")
    with pytest.raises(ValueError, match="timestamp"):
        parse_timestamp("not a time")


def test_real_clock_request_is_fresh() -> None:
    """A request stamped with the real clock now is accepted with the real clock."""
    now = time.time()
    parsed = parse("snapshot", {"channel": 1, "timestamp": int(now * 1000)}, now=now)
    assert parsed.call is not None


# -- convenience topics ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "value"),
    [(b"1", 1), (b"0", 0), (b"ON", 1), (b"OFF", 0), (b"on", 1), (b"off", 0), (b" On \n", 1)],
)
def test_convenience_pin_set(payload: bytes, value: int) -> None:
    """pin/{n}/set takes 1/0/ON/OFF (any case) and maps to set_pin."""
    convenience = convenience_of(["pin", "3", "set"], payload)
    assert convenience is not None
    assert convenience.command == "set_pin"
    assert convenience.error is None
    assert convenience.request == {"pin": 3, "value": value}
    parsed = parse_request(
        "set_pin",
        convenience.request,
        allowed=ALL,
        retained=False,
        now=NOW,
        max_age=MAX_AGE,
        decoded=True,
    )
    assert parsed.call == RestCall(
        "POST", "/dio/pinManualSetting", body={"pinID": 3, "pinValue": value}
    )


@pytest.mark.parametrize(
    ("kind", "command"), [("alarm", "manual_alarm"), ("record", "manual_record")]
)
@pytest.mark.parametrize(
    ("payload", "action"),
    [(b"start", "start"), (b"stop", "stop"), (b"ON", "start"), (b"OFF", "stop"), (b"1", "start")],
)
def test_convenience_channel_alarm_and_record(
    kind: str, command: str, payload: bytes, action: str
) -> None:
    """channel/{ch}/alarm/set and record/set take start/stop/ON/OFF."""
    convenience = convenience_of(["channel", "2", kind, "set"], payload)
    assert convenience is not None
    assert convenience.command == command
    assert convenience.error is None
    assert convenience.request == {"channel": 2, "command": action}


@pytest.mark.parametrize(
    ("levels", "payload", "command"),
    [
        (["pin", "3", "set"], b"2", "set_pin"),
        (["pin", "3", "set"], b"", "set_pin"),
        (["pin", "3", "set"], b"maybe", "set_pin"),
        (["pin", "0", "set"], b"1", "set_pin"),
        (["pin", "x", "set"], b"1", "set_pin"),
        (["pin", "-1", "set"], b"1", "set_pin"),
        (["channel", "0", "alarm", "set"], b"start", "manual_alarm"),
        (["channel", "two", "record", "set"], b"start", "manual_record"),
        (["channel", "2", "record", "set"], b"pause", "manual_record"),
        (["channel", "2", "alarm", "set"], b"\xff", "manual_alarm"),
    ],
)
def test_convenience_bad_values_give_errors(
    levels: list[str], payload: bytes, command: str
) -> None:
    """A bad plain value or number is an error sentence for the command, no request."""
    convenience = convenience_of(levels, payload)
    assert convenience is not None
    assert convenience.command == command
    assert convenience.request is None
    assert convenience.error
    assert convenience.error.startswith("invalid request")


@pytest.mark.parametrize("number", ["²", "①", "1²"])
def test_convenience_unicode_digit_number_is_an_error_not_a_crash(number: str) -> None:
    """A topic number made of Unicode digits int() cannot read is an error, not an exception."""
    for levels in (["pin", number, "set"], ["channel", number, "alarm", "set"]):
        convenience = convenience_of(levels, b"1")
        assert convenience is not None
        assert convenience.request is None
        assert convenience.error


@pytest.mark.parametrize(
    "levels",
    [
        ["pin", "3"],
        ["pin", "3", "get"],
        ["pin", "3", "set", "x"],
        ["channel", "2", "ptz", "set"],
        ["channel", "2", "alarm"],
        ["channel", "2", "alarm", "get"],
        ["request", "snapshot"],
        ["response", "snapshot"],
        [],
    ],
)
def test_convenience_other_topics_are_none(levels: list[str]) -> None:
    """Topics that are not convenience topics give None."""
    assert convenience_of(levels, b"1") is None


# -- properties ------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "channel",
        "type",
        "state",
        "data",
        "command",
        "pin",
        "value",
        "timeout",
        "speed",
        "number",
        "parameters",
        "transaction",
        "timestamp",
    ]
)
request_objects = st.dictionaries(field_names | st.text(max_size=8), json_values, max_size=6)
commands = st.sampled_from([*COMMAND_NAMES, "unknown", ""])


def assert_well_formed(parsed: ParsedRequest) -> None:
    assert (parsed.call is None) != (parsed.refusal is None)
    if parsed.refusal is not None:
        assert parsed.refusal.outcome in {"invalid", "refused"}
        assert isinstance(parsed.refusal.error, str)
        assert parsed.refusal.error.strip()


@settings(max_examples=200, deadline=None)
@given(
    command=commands,
    payload=st.binary(max_size=200),
    retained=st.booleans(),
    now=st.floats(min_value=0, max_value=4e9),
)
def test_parse_request_never_raises_for_bytes(
    command: str, payload: bytes, retained: bool, now: float
) -> None:
    """Any bytes on any command give a call or a refusal with a sentence, never an exception."""
    parsed = parse_request(
        command, payload, allowed=ALL, retained=retained, now=now, max_age=MAX_AGE
    )
    assert_well_formed(parsed)


@settings(max_examples=300, deadline=None)
@given(
    command=commands, request=request_objects, allowed=st.frozensets(st.sampled_from(COMMAND_NAMES))
)
def test_parse_request_never_raises_for_json_objects(
    command: str, request: dict[str, Any], allowed: frozenset[str]
) -> None:
    """Any JSON object on any command gives a call or a refusal with a sentence."""
    parsed = parse_request(
        command,
        orjson.dumps(request),
        allowed=allowed,
        retained=False,
        now=NOW,
        max_age=MAX_AGE,
    )
    assert_well_formed(parsed)
    assert parsed.transaction == request.get("transaction")
    if parsed.call is not None:
        for sent in (parsed.call.body or {}, parsed.call.params or {}):
            assert "transaction" not in sent
            assert "timestamp" not in sent


@pytest.mark.parametrize(
    "value",
    [
        7,
        -(2**63),
        2**64 - 1,
        2**64,
        "a1",
        "caf\u00e9 \U0001f600",
        "\ud800",
        1.5,
        True,
        None,
        {"b": [1, {"z": 1, "a": 2}], "a": "x"},
    ],
    ids=repr,
)
def test_transaction_json_is_the_canonical_stdlib_form(value):
    """orjson's fast path gives exactly the stdlib's bytes."""
    try:
        expected = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        want: bytes | type[Exception] = expected.encode()
    except UnicodeEncodeError:
        want = UnicodeEncodeError
    if want is UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            transaction_json(value)
        return
    assert transaction_json(value) == want


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")  # pragma: no cover


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_kept_transactions_take_their_size_not_a_page_each():
    """Every remembered request keeps its transaction's JSON: 20,000 of them must not
    hold 20,000 of orjson's 4 KiB result buffers (80 MB; sized copies take about 1)."""
    before = _rss_bytes()
    kept = [transaction_json(n) for n in range(20_000)]
    grown = _rss_bytes() - before
    assert len(kept) == 20_000
    assert grown < 20 * 1024 * 1024, f"RSS grew {grown / 1e6:.1f} MB"
