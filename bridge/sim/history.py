"""The simulated NVR's searchable record of events and metadata (SDK guide 4.5 and 4.6).

Everything the simulator emits or is pushed on ``eventHook``/``metaHook`` lands here, and
``POST /record/eventSearch`` / ``POST /record/metaSearch`` search it. Tests may also add
items that were never sent, to stand for what happened while a client was disconnected.
The record is bounded: the oldest items are forgotten first.

eventSearch answers with the guide's fields and, as an extension, the item's ``State``
and its ``time`` in epoch milliseconds: each state change is one result (``ev_start`` =
``ev_end`` = its second), so a client can replay exactly what it missed.

Errors::

    SearchError        a search request the NVR would refuse (wrong field types)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

HistoryStream = Literal["event", "meta"]
DEFAULT_LIMIT = 100_000
# Pre- and post-record spans reported by eventSearch, as a real NVR configured with defaults.
PRE_RECORD_S = 10
POST_RECORD_S = 30
# A plausible stream size per event second; the simulator stores no video.
BYTES_PER_SECOND = 350_000


class SearchError(ValueError):
    """A search body with a field of the wrong kind; the message names the field."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One event as the NVR logged it (one entry per state change)."""

    channel: int | None
    type: str
    state: str
    time_ms: int


@dataclass(frozen=True, slots=True)
class MetaRecord:
    """One metadata item as the NVR logged it."""

    channel: int | None
    type: str
    data: str
    time_ms: int


def _channel_of(item: dict[str, Any]) -> tuple[bool, int | None]:
    """``(ok, channel)``: the item's ChannelID, absent meaning a system-wide item."""
    channel = item.get("ChannelID")
    if channel is None:
        return True, None
    if isinstance(channel, int) and not isinstance(channel, bool):
        return True, channel
    return False, None


def event_record(item: Any, time_ms: int) -> EventRecord | None:
    """The record of an eventHook item, or None when it lacks ``Type``/``State`` strings."""
    if not isinstance(item, dict):
        return None
    ok, channel = _channel_of(item)
    kind, state = item.get("Type"), item.get("State")
    if not ok or not isinstance(kind, str) or not isinstance(state, str):
        return None
    return EventRecord(channel, kind, state, time_ms)


def meta_record(item: Any, time_ms: int) -> MetaRecord | None:
    """The record of a metaHook item, or None when it lacks ``Type``/``Data`` strings."""
    if not isinstance(item, dict):
        return None
    ok, channel = _channel_of(item)
    kind, data = item.get("Type"), item.get("Data")
    if not ok or not isinstance(kind, str) or not isinstance(data, str):
        return None
    return MetaRecord(channel, kind, data, time_ms)


def _int_filter(query: dict[str, Any], key: str) -> frozenset[int] | None:
    """An int or a list of ints from the query, None when the field is absent."""
    value = query.get(key)
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise SearchError(f"{key} must be an integer or a list of integers, not {value!r}")
    return frozenset(values)


def _str_filter(query: dict[str, Any], key: str) -> frozenset[str] | None:
    """A string or a list of strings from the query, None when the field is absent."""
    value = query.get(key)
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in values):
        raise SearchError(f"{key} must be a string or a list of strings, not {value!r}")
    return frozenset(values)


def _time_filter(query: dict[str, Any], key: str) -> float | None:
    """An epoch-seconds bound from the query, None when the field is absent."""
    value = query.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise SearchError(f"{key} must be a number of epoch seconds, not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class _Query:
    """A parsed search body: each filter None when the body leaves it out."""

    channels: frozenset[int] | None
    types: frozenset[str] | None
    start_s: float | None
    end_s: float | None

    @classmethod
    def parse(cls, body: Any) -> _Query:
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise SearchError("the search body must be a JSON object")
        return cls(
            channels=_int_filter(body, "ChannelID"),
            types=_str_filter(body, "Type"),
            start_s=_time_filter(body, "StartTime"),
            end_s=_time_filter(body, "EndTime"),
        )

    def matches(self, channel: int | None, kind: str, time_ms: int) -> bool:
        # Bounds are whole seconds and inclusive: EndTime 100 includes 100.999 s.
        second = time_ms // 1000
        return (
            (self.channels is None or channel in self.channels)
            and (self.types is None or kind in self.types)
            and (self.start_s is None or second >= self.start_s)
            and (self.end_s is None or second <= self.end_s)
        )


class History:
    """Bounded, time-ordered on search, in-memory logs of events and metadata."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.events: deque[EventRecord] = deque(maxlen=limit)
        self.metas: deque[MetaRecord] = deque(maxlen=limit)

    def record(self, stream: str, item: Any, time_ms: int) -> bool:
        """Log an eventHook or metaHook item; False (nothing logged) when it is not valid."""
        if stream == "event":
            event = event_record(item, time_ms)
            if event is None:
                return False
            self.events.append(event)
            return True
        if stream == "meta":
            meta = meta_record(item, time_ms)
            if meta is None:
                return False
            self.metas.append(meta)
            return True
        raise ValueError(f"only 'event' and 'meta' items have a history, not {stream!r}")

    def clear(self) -> None:
        """Forget everything."""
        self.events.clear()
        self.metas.clear()

    def search_events(self, body: Any) -> list[dict[str, Any]]:
        """Answer ``/record/eventSearch``: the guide's fields plus ``State`` and ``time`` (ms)."""
        query = _Query.parse(body)
        found = [e for e in self.events if query.matches(e.channel, e.type, e.time_ms)]
        found.sort(key=lambda e: e.time_ms)
        return [_event_entry(e) for e in found]

    def search_metas(self, body: Any) -> list[dict[str, Any]]:
        """Answer ``/record/metaSearch``: ChannelID, Type, Data and Timestamp (ms)."""
        query = _Query.parse(body)
        found = [m for m in self.metas if query.matches(m.channel, m.type, m.time_ms)]
        found.sort(key=lambda m: m.time_ms)
        return [
            {"ChannelID": m.channel, "Type": m.type, "Data": m.data, "Timestamp": m.time_ms}
            for m in found
        ]


def _event_entry(event: EventRecord) -> dict[str, Any]:
    """One eventSearch result: each state change is its own one-second event."""
    second = event.time_ms // 1000
    return {
        "ChannelID": event.channel,
        "ev_start": second,
        "ev_end": second,
        "pre_rec": second - PRE_RECORD_S,
        "post_rec": second + POST_RECORD_S,
        "video_size": (PRE_RECORD_S + POST_RECORD_S + 1) * BYTES_PER_SECOND,
        "Type": event.type,
        "comment": f"{event.type}-{event.channel}",
        "State": event.state,
        "time": event.time_ms,
    }
