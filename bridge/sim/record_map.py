"""Record maps (SDK guide 5.1 to 5.3): which days, minutes or seconds of a channel hold video.

The simulator stores no video; what it recorded follows from its history. Events imply
recording: from ``PRE_RECORD_S`` before an event becomes active until ``POST_RECORD_S``
after it ends (a ``once`` event is both), as eventSearch reports; manual recording covers
``manualStart`` to ``manualStop``. A span still open records until now. Each slot of a
map is ``+`` when any span touches it, else ``-``. All bounds are inclusive epoch seconds.

Errors::

    MapError           a getMapBy* body the NVR would refuse (wrong fields, bad bounds)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

from bridge.sim.history import POST_RECORD_S, PRE_RECORD_S, EventRecord, MetaRecord

Resolution = Literal["day", "minute", "second"]
DAY, HOUR, MINUTE = 86_400, 3_600, 60
MAX_CHANNELS = 4
Span = tuple[int, int]


class MapError(ValueError):
    """A record map request the NVR refuses; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class MapShape:
    """How one resolution cuts time: slot length, longest query, alignment, slots per string."""

    slot: int
    max_slots: int
    align: int
    per_string: int | None


SHAPES: dict[Resolution, MapShape] = {
    # One string of days (35 at most; StartTime at a day boundary).
    "day": MapShape(DAY, 35, DAY, None),
    # One string of 60 minutes per hour (24 hours at most; StartTime at an hour boundary).
    "minute": MapShape(MINUTE, 24 * 60, HOUR, 60),
    # One string of 60 seconds per minute (60 minutes at most).
    "second": MapShape(1, 3_600, 1, 60),
}


@dataclass(frozen=True, slots=True)
class MapQuery:
    """A parsed getMapBy* body."""

    channels: tuple[int, ...]
    start: int
    end: int
    mainsub: int

    @classmethod
    def parse(cls, body: Any, shape: MapShape, channel_count: int) -> MapQuery:
        """The query of ``body``; MapError for anything the NVR would refuse."""
        if not isinstance(body, dict):
            raise MapError("the body must be a JSON object")
        channels = body.get("ChannelIDs")
        if (
            not isinstance(channels, list)
            or not 1 <= len(channels) <= MAX_CHANNELS
            or not all(_is_int(c) and 1 <= c <= channel_count for c in channels)
        ):
            raise MapError(
                f"ChannelIDs must list 1 to {MAX_CHANNELS} channels of 1..{channel_count}, "
                f"not {channels!r}"
            )
        start, end = body.get("StartTime"), body.get("EndTime")
        if not _is_int(start) or not _is_int(end) or start < 0 or end < start:
            raise MapError(
                f"StartTime and EndTime must be epoch seconds with StartTime <= EndTime, "
                f"not {start!r} and {end!r}"
            )
        if start % shape.align:
            unit = "day" if shape.align == DAY else "hour"
            raise MapError(f"StartTime must be at a {unit} boundary (UTC), not {start}")
        mainsub = body.get("mainsub", 1)
        if mainsub not in (1, 2) or not _is_int(mainsub):
            raise MapError(f"mainsub must be 1 (main) or 2 (sub), not {mainsub!r}")
        # A longer query is cut to the longest the NVR maps (guide notes).
        end = min(end, start + shape.slot * shape.max_slots - 1)
        return cls(tuple(dict.fromkeys(channels)), start, end, mainsub)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def recording_spans(
    events: Iterable[EventRecord], metas: Iterable[MetaRecord], channel: int, now_s: int
) -> list[Span]:
    """The spans (inclusive seconds) in which ``channel`` recorded, by the history."""
    spans: list[Span] = []
    opened: dict[str, int] = {}
    for event in sorted((e for e in events if e.channel == channel), key=lambda e: e.time_ms):
        second = event.time_ms // 1000
        if event.state == "active":
            opened.setdefault(event.type, second)
        elif event.state in ("inactive", "once"):
            began = opened.pop(event.type, second) if event.state == "inactive" else second
            spans.append((began - PRE_RECORD_S, second + POST_RECORD_S))
    spans.extend((began - PRE_RECORD_S, now_s) for began in opened.values())
    manual: int | None = None
    for meta in sorted((m for m in metas if m.channel == channel), key=lambda m: m.time_ms):
        if meta.type == "manualStart" and manual is None:
            manual = meta.time_ms // 1000
        elif meta.type == "manualStop" and manual is not None:
            spans.append((manual, meta.time_ms // 1000))
            manual = None
    if manual is not None:
        spans.append((manual, now_s))
    return spans


def map_string(spans: Iterable[Span], start: int, slot: int, count: int) -> str:
    """``count`` slots of ``slot`` seconds from ``start``: ``+`` where any span touches."""
    marks = bytearray(b"-" * count)
    last = start + slot * count - 1
    for began, ended in spans:
        if ended < start or began > last:
            continue
        first_slot = max(0, (began - start) // slot)
        last_slot = min(count - 1, (ended - start) // slot)
        marks[first_slot : last_slot + 1] = b"+" * (last_slot - first_slot + 1)
    return marks.decode("ascii")


def record_map(
    resolution: Resolution,
    query: MapQuery,
    spans_of: dict[int, list[Span]],
) -> dict[str, Any]:
    """The getMapBy* answer: ``StartTime``, ``EndTime`` and one ``CH{n}`` map per channel."""
    shape = SHAPES[resolution]
    count = (query.end - query.start) // shape.slot + 1
    answer: dict[str, Any] = {"StartTime": query.start, "EndTime": query.end}
    for channel in query.channels:
        marks = map_string(spans_of[channel], query.start, shape.slot, count)
        if shape.per_string is None:
            answer[f"CH{channel}"] = marks
        else:
            size = shape.per_string
            answer[f"CH{channel}"] = [marks[i : i + size] for i in range(0, len(marks), size)]
    return answer
