"""The simulated NVR's system log: ``searchLogs`` and ``addLogs`` (SDK guide 9.25, 9.26).

The NVR logs logins, the commands it carries out (manual record and alarm, pins, PTZ
presets, snapshots, searches), what its own streams report (event starts and ends, disk
exceptions, configuration messages) and, under traffic, input pins and video loss. The
types and descriptions follow the guide's table in 9.26. The log is bounded: the oldest
entries are forgotten first. Times are epoch milliseconds.

Errors::

    SearchError        a searchLogs body the NVR would refuse (from ``history``)
    InvalidLog         an addLogs entry the NVR would refuse
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from bridge.sim.device import ALARM_IN_PINS
from bridge.sim.history import SearchError

LogType = Literal["System", "Configuration", "Account", "Alarm", "Record", "Storage"]
LOG_TYPES: tuple[str, ...] = get_args(LogType)
ALL = "All"
DEFAULT_LIMIT = 4_000
# searchLogs answers at most this many entries (guide 9.25), the oldest first.
MAX_RESULTS = 4_000
EVENT_STATES = {"active": "Start", "inactive": "End"}
EVENT_NAMES = {"InputAlarm": "Alarm Input"}
MESSAGE_LOGS: dict[str, str] = {
    "network": "Network Settings",
    "portList": "Port Settings",
    "cameraDetail": "Modify Channel",
    "cameraSubnetMask": "Modify Channel Network",
    "sysTimeChanged": "Time Settings",
}


class InvalidLog(ValueError):
    """An addLogs entry with a field missing or of the wrong kind; the message names it."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One log line as searchLogs reports it."""

    type: str
    description: str
    create_ms: int
    channel: int | None = None
    user: str | None = None
    has_record: bool = False

    def to_json(self) -> dict[str, Any]:
        """The searchLogs entry: optional fields left out when they do not apply."""
        entry: dict[str, Any] = {"type": self.type, "description": self.description}
        if self.channel is not None:
            entry["channel"] = self.channel
        entry["createTime"] = self.create_ms
        if self.user is not None:
            entry["user"] = self.user
        entry["hasRecord"] = int(self.has_record)
        return entry


def _ms_bound(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SearchError(f"{key} is required: epoch milliseconds (0 for no bound), not {value!r}")
    return value


class SystemLog:
    """Bounded, in-memory, time-ordered log entries."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.entries: deque[LogEntry] = deque(maxlen=limit)

    def add(
        self,
        kind: LogType,
        description: str,
        *,
        channel: int | None = None,
        user: str | None = None,
        has_record: bool = False,
        time_ms: int | None = None,
    ) -> LogEntry:
        """Log one line; ``time_ms`` defaults to now."""
        entry = LogEntry(
            kind, description, _now_ms() if time_ms is None else time_ms, channel, user, has_record
        )
        self.entries.append(entry)
        return entry

    def pin(self, pin: int, value: int, *, user: str | None = None) -> None:
        """Log a pin change: ``Alarm In 2 On``, ``Alarm Out 6 Off``."""
        direction = "In" if pin in ALARM_IN_PINS else "Out"
        self.add("Alarm", f"Alarm {direction} {pin} {'On' if value else 'Off'}", user=user)

    def observe(self, stream: str, item: Any, recording: Callable[[int], bool]) -> None:
        """Log what an item the NVR sent says, if it is worth a line (events, exceptions...)."""
        if not isinstance(item, dict):
            return
        line: tuple[LogType, str, Any] | None = None
        if stream == "event":
            line = _event_line(item)
        elif stream == "exception":
            line = _exception_line(item)
        elif stream == "message":
            line = _message_line(item)
        if line is None:
            return
        kind, description, channel = line
        if not isinstance(channel, int) or isinstance(channel, bool):
            channel = None
        has_record = channel is not None and recording(channel)
        self.add(kind, description, channel=channel, has_record=has_record)

    def search(self, body: Any) -> list[dict[str, Any]]:
        """Answer searchLogs (guide 9.25): one type or ``All``, bounds in ms (0 = open)."""
        if not isinstance(body, dict):
            raise SearchError("the search body must be a JSON object")
        kind = body.get("type")
        if kind != ALL and kind not in LOG_TYPES:
            raise SearchError(f"type must be one of {ALL}, {', '.join(LOG_TYPES)}, not {kind!r}")
        start, end = _ms_bound(body, "startTime"), _ms_bound(body, "endTime")
        end = end or _now_ms()
        found = [e for e in self.entries if kind in (ALL, e.type) and start <= e.create_ms <= end]
        found.sort(key=lambda e: e.create_ms)
        return [e.to_json() for e in found[:MAX_RESULTS]]

    def add_json(self, body: Any) -> int:
        """Log the entries of an addLogs body (guide 9.26); returns how many."""
        items = body if isinstance(body, list) else [body]
        entries = [_entry_of(item) for item in items]
        self.entries.extend(entries)
        return len(entries)


def _entry_of(item: Any) -> LogEntry:
    """An addLogs entry checked field by field; InvalidLog names the first bad one."""
    if not isinstance(item, dict):
        raise InvalidLog("each log must be a JSON object")
    kind, description = item.get("type"), item.get("description")
    channel, user = item.get("channel"), item.get("user")
    created, has_record = item.get("createTime"), item.get("hasRecord")
    if kind not in LOG_TYPES:
        raise InvalidLog(f"type must be one of {', '.join(LOG_TYPES)}, not {kind!r}")
    if not isinstance(description, str):
        raise InvalidLog("description is required and must be a string")
    if channel is not None and (not isinstance(channel, int) or isinstance(channel, bool)):
        raise InvalidLog(f"channel must be a number, not {channel!r}")
    if not isinstance(created, int) or isinstance(created, bool) or created < 0:
        raise InvalidLog(f"createTime is required: epoch milliseconds, not {created!r}")
    if user is not None and not isinstance(user, str):
        raise InvalidLog(f"user must be a string, not {user!r}")
    if not isinstance(has_record, bool):
        raise InvalidLog(f"hasRecord is required and must be true or false, not {has_record!r}")
    return LogEntry(kind, description, created, channel, user, has_record)


def _event_line(item: dict[str, Any]) -> tuple[LogType, str, Any] | None:
    kind, state = item.get("Type"), item.get("State")
    if not isinstance(kind, str) or state not in ("active", "inactive", "once"):
        return None
    name = EVENT_NAMES.get(kind, kind)
    suffix = EVENT_STATES.get(state)
    return "Alarm", name if suffix is None else f"{name} {suffix}", item.get("ChannelID")


def _exception_line(item: dict[str, Any]) -> tuple[LogType, str, Any] | None:
    exception, target = item.get("exception"), item.get("target")
    if exception == "DiskFull":
        return "Storage", "Disk Full", None
    if exception == "DiskError":
        return "Storage", f"Disk Error {target}" if isinstance(target, str) else "Disk Error", None
    return None


def _message_line(item: dict[str, Any]) -> tuple[LogType, str, Any] | None:
    message = item.get("message")
    description = MESSAGE_LOGS.get(message) if isinstance(message, str) else None
    if description is None:
        return None
    return "Configuration", description, item.get("target")
