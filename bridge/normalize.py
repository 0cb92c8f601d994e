"""NVR stream messages to MQTT publications: pure functions, no I/O.

A websocket frame becomes a list of validated messages (``parse_frame``,
``validate_item``) and each message becomes ``(topic, payload, retain)`` publications
(``Normalizer``) as CONTRACT.md section 4 describes. Everything here is deterministic
given its inputs, so it is tested without sockets.

Errors::

    RejectedInput          a frame or an item that cannot be published
     +-- FrameRejected     the whole frame (not JSON, not an object or array, too large)
     +-- ItemRejected      one item of a frame (missing or mistyped fields)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from bridge.limits import DEFAULT_JSON_MAX_DEPTH, MAX_CHANNELS, MAX_LEVEL_CHARS, json_depth_exceeds
from bridge.nvr.models import (
    STREAM_MODELS,
    CameraStatusMessage,
    EventHookMessage,
    ExceptionMessage,
    MetaHookMessage,
    NvrMessage,
    StreamName,
    SystemMessage,
)
from bridge.publishing import Publication
from bridge.redaction import NO_SECRETS, Redactor
from bridge.topics import NvrTopics, sanitize_level

__all__ = ["MAX_LEVEL_CHARS", "Normalizer", "Publication", "sanitize_level"]

MAX_FRAME_BYTES = 1024 * 1024
TOPIC_CACHE_SIZE = 4096  # event/meta topics remembered per NVR (channel x type)
STATE_VALUES = frozenset({"active", "inactive"})
# metaHook types that say a manual alarm or recording started or stopped (guide 9.27-28).
MANUAL_META: dict[str, tuple[Literal["alarm", "record"], bool]] = {
    "manualAlarmStart": ("alarm", True),
    "manualAlarmStop": ("alarm", False),
    "manualStart": ("record", True),
    "manualStop": ("record", False),
}
# Rejection reasons kept per frame for the log line; every rejection is still counted.
MAX_REASONS = 10


class RejectedInput(Exception):
    """Input from the NVR that cannot be published; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FrameRejected(RejectedInput):
    """A whole websocket frame was rejected."""


class ItemRejected(RejectedInput):
    """One item of a frame was rejected; the frame's other items still count."""


@lru_cache(maxsize=1)
def _format_second(epoch_second: int) -> str:
    return datetime.fromtimestamp(epoch_second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def format_timestamp(epoch_seconds: float) -> str:
    """UTC ISO 8601 with milliseconds and ``Z``, as every payload's ``timestamp``.

    The date and time of day are formatted once per second; each call only adds its
    milliseconds (this runs for every message).
    """
    # Rounded to the microsecond as datetime.fromtimestamp does, then cut to the ms.
    fraction, whole = math.modf(epoch_seconds)
    second = int(whole)
    millisecond = round(fraction * 1_000_000) // 1000
    if millisecond >= 1000:  # 0.9999996 s rounds up to the next second
        second += 1
        millisecond -= 1000
    return _format_millisecond(second, millisecond)


@lru_cache(maxsize=1)
def _format_millisecond(second: int, millisecond: int) -> str:
    return f"{_format_second(second)}.{millisecond:03d}Z"


def truncate_for_log(raw: str | bytes, limit: int = 1024) -> str:
    """The first ``limit`` bytes of a frame as text, for a log line."""
    data = raw.encode("utf-8", "replace") if isinstance(raw, str) else raw
    text = data[:limit].decode("utf-8", "replace")
    return text + "..." if len(data) > limit else text


def parse_frame(raw: str | bytes) -> list[Any]:
    """The JSON items of one text frame: an object is one item, an array its elements.

    The items' depth is checked by ``validate_item``, so one deep item leaves the frame's
    other items valid.
    """
    size = len(raw)
    if isinstance(raw, str) and size * 4 > MAX_FRAME_BYTES:
        # Only text that might exceed the limit is measured in UTF-8 bytes.
        size = len(raw.encode("utf-8", "replace"))
    if size > MAX_FRAME_BYTES:
        raise FrameRejected(f"frame of {size} bytes exceeds the limit of {MAX_FRAME_BYTES}")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FrameRejected(f"frame is not valid JSON: {exc}") from None
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list):
        return document
    raise FrameRejected(
        f"frame must be a JSON object or an array of objects, not {type(document).__name__}"
    )


def _describe_validation(error: ValidationError) -> str:
    problems = []
    for detail in error.errors(include_url=False):
        where = ".".join(str(part) for part in detail["loc"]) or "item"
        if detail["type"] == "missing":
            problems.append(f"missing field {where!r}")
        else:
            got = repr(detail.get("input"))
            if len(got) > 80:
                got = got[:77] + "..."
            problems.append(f"field {where!r}: {detail['msg']} (got {got})")
    return "; ".join(problems)


def validate_item(
    stream: StreamName, item: Any, max_depth: int = DEFAULT_JSON_MAX_DEPTH
) -> NvrMessage:
    """Check one item against its stream's model; ItemRejected says what is wrong."""
    if not isinstance(item, dict):
        raise ItemRejected(f"item must be a JSON object, not {type(item).__name__}")
    if json_depth_exceeds(item, max_depth):
        raise ItemRejected(f"item nests JSON deeper than the limit of {max_depth} levels")
    try:
        return STREAM_MODELS[stream].model_validate(item)
    except ValidationError as exc:
        raise ItemRejected(_describe_validation(exc)) from None


def compact_json(payload: Any, **options: Any) -> bytes:
    """``orjson.dumps``, copied to its exact size.

    orjson returns short results inside a 4 KiB allocation; a queue of 20,000 of them
    would hold 80 MB. The copy keeps about 100 bytes each.
    """
    return bytes(memoryview(orjson.dumps(payload, **options)))


def _dumps(payload: Mapping[str, Any]) -> bytes:
    return compact_json(payload, option=orjson.OPT_NON_STR_KEYS)


StatusKey = tuple[bool, bool, bool, bool | None]
TopicKind = Literal["event", "event_state", "meta"]


@dataclass(slots=True)
class Normalizer:
    """Maps one NVR's validated messages to publications, remembering camera status.

    The NVR repeats every channel's status each second; only the first sight of a channel
    and a change of one of its four fields are published. ``forget_status`` makes the next
    report of every channel count as a first sight (after the stream reconnects). Every
    string taken from the NVR goes through the ``redactor`` before it reaches a payload
    or a topic level. At most ``MAX_CHANNELS`` distinct channels are remembered: a status
    stream naming more is refused item by item.
    """

    topics: NvrTopics
    redactor: Redactor = NO_SECRETS
    max_depth: int = DEFAULT_JSON_MAX_DEPTH
    # Event types whose state starts as inactive when the status says no event is active
    # (Home Assistant's motion and input alarm sensors, never "unknown").
    baseline_events: tuple[str, ...] = ()
    _status: dict[int, StatusKey] = field(default_factory=dict)
    _dispatch: dict[str, Callable[[Any, str, int | None], list[Publication]]] = field(
        default_factory=dict
    )
    _topic_cache: dict[tuple[int | None, str, str], str] = field(default_factory=dict)
    # Manual alarm and manual record state per channel (CONTRACT section 7.4).
    _alarm: dict[int, bool] = field(default_factory=dict)
    _record: dict[int, bool] = field(default_factory=dict)
    _record_from_status: set[int] = field(default_factory=set)
    # (channel, event type) whose state topic was published in this run.
    _event_state_known: set[tuple[int | None, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._dispatch = {
            "event": self.event,
            "meta": self.meta,
            "exception": self.exception,
            "status": self.status,
            "message": self.message,
        }

    def _channel_topic(self, channel: int | None, kind: TopicKind, name: str) -> str:
        """An event, event state or meta topic, built once per channel and name."""
        key = (channel, kind, name)
        topic = self._topic_cache.get(key)
        if topic is None:
            if len(self._topic_cache) >= TOPIC_CACHE_SIZE:
                self._topic_cache.clear()  # names from the NVR are few; this bounds them
            build = {
                "event": self.topics.event,
                "event_state": self.topics.event_state,
                "meta": self.topics.meta,
            }[kind]
            topic = self._topic_cache[key] = build(channel, sanitize_level(name))
        return topic

    def forget_status(self) -> None:
        """Treat every channel as unseen, so its next status is published."""
        self._status.clear()

    @property
    def channels_seen(self) -> frozenset[int]:
        """The channels whose status the NVR reported since the last ``forget_status``."""
        return frozenset(self._status)

    def normalize(
        self,
        stream: StreamName,
        message: NvrMessage,
        timestamp: str,
        *,
        history_ms: int | None = None,
    ) -> list[Publication]:
        """The publications of one validated message from ``stream``.

        ``history_ms`` marks an item replayed from the NVR's history after an outage: its
        payload gets ``"replayed": true`` and ``"time"`` (when it happened, epoch ms), and
        it sets no retained state (it is not the current state).
        """
        return self._dispatch[stream](message, timestamp, history_ms)

    def event(
        self, msg: EventHookMessage, timestamp: str, history_ms: int | None
    ) -> list[Publication]:
        """An event, plus its retained state topic for ``active``/``inactive``."""
        nvr = self.topics.nvr
        text = self.redactor.text
        kind = text(msg.type)
        topic = self._channel_topic(msg.channel, "event", kind)
        payload: dict[str, Any] = {
            "nvr": nvr,
            "channel": msg.channel,
            "type": kind,
            "state": text(msg.state),
            "timestamp": timestamp,
        }
        if history_ms is not None:
            payload["replayed"] = True
            payload["time"] = history_ms
        out = [Publication(topic, _dumps(payload), False, nvr, "event")]
        if msg.state in STATE_VALUES and history_ms is None:
            state_topic = self._channel_topic(msg.channel, "event_state", kind)
            out.append(Publication(state_topic, msg.state.encode(), True, nvr, "event"))
            if len(self._event_state_known) < TOPIC_CACHE_SIZE:
                self._event_state_known.add((msg.channel, kind))
        return out

    def meta(
        self, msg: MetaHookMessage, timestamp: str, history_ms: int | None
    ) -> list[Publication]:
        """A metadata item, its data as the NVR sent it (secrets masked)."""
        nvr = self.topics.nvr
        kind = self.redactor.text(msg.type)
        topic = self._channel_topic(msg.channel, "meta", kind)
        payload: dict[str, Any] = {
            "nvr": nvr,
            "channel": msg.channel,
            "type": kind,
            "data": self.redactor.text(msg.data),
            "timestamp": timestamp,
        }
        if history_ms is not None:
            payload["replayed"] = True
            payload["time"] = history_ms
        out = [Publication(topic, _dumps(payload), False, nvr, "meta")]
        manual = MANUAL_META.get(msg.type)
        if manual is not None and msg.channel is not None and history_ms is None:
            kind, active = manual
            if kind == "alarm":
                out += self._manual_state(
                    self._alarm, self.topics.alarm_state, msg.channel, active, "meta"
                )
            elif msg.channel not in self._record_from_status:
                # The status stream's Manual field, when the NVR sends it, is the authority.
                out += self._manual_state(
                    self._record, self.topics.record_state, msg.channel, active, "meta"
                )
        return out

    def _manual_state(
        self,
        known: dict[int, bool],
        topic_of: Callable[[int], str],
        channel: int,
        active: bool,
        stream: StreamName,
    ) -> list[Publication]:
        """The retained ``alarm/state`` or ``record/state`` of a channel, on change only."""
        if known.get(channel) == active:
            return []
        if channel not in known and len(known) >= MAX_CHANNELS:
            return []
        known[channel] = active
        state = b"active" if active else b"inactive"
        return [Publication(topic_of(channel), state, True, self.topics.nvr, stream)]

    def exception(
        self, msg: ExceptionMessage, timestamp: str, history_ms: int | None
    ) -> list[Publication]:
        """A disk or system exception."""
        nvr = self.topics.nvr
        name = self.redactor.text(msg.exception)
        topic = self.topics.exception(name)
        payload = {
            "nvr": nvr,
            "exception": name,
            "target": self.redactor.value(msg.target),
            "time": msg.time,
            "timestamp": timestamp,
        }
        return [Publication(topic, _dumps(payload), False, nvr, "exception")]

    def status(
        self, msg: CameraStatusMessage, timestamp: str, history_ms: int | None
    ) -> list[Publication]:
        """A channel's status, only when first seen or changed."""
        key: StatusKey = (msg.online, msg.recording, msg.event, msg.manual)
        previous = self._status.get(msg.channel)
        if previous == key:
            return []
        record: list[Publication] = []
        if msg.manual is not None and (previous is not None or len(self._status) < MAX_CHANNELS):
            self._record_from_status.add(msg.channel)
            record = self._manual_state(
                self._record, self.topics.record_state, msg.channel, msg.manual, "status"
            )
        if previous is None and len(self._status) >= MAX_CHANNELS:
            raise ItemRejected(
                f"channel {msg.channel} is one more than the {MAX_CHANNELS} channels an NVR "
                "may have"
            )
        self._status[msg.channel] = key
        nvr = self.topics.nvr
        payload = {
            "nvr": nvr,
            "channel": msg.channel,
            "online": msg.online,
            "recording": msg.recording,
            "event": msg.event,
            "manual": msg.manual,
            "timestamp": timestamp,
        }
        topic = self.topics.status(msg.channel)
        return [
            Publication(topic, _dumps(payload), True, nvr, "status"),
            *record,
            *self._baseline(msg.channel, event_active=msg.event),
        ]

    def _baseline(self, channel: int, *, event_active: bool) -> list[Publication]:
        """``inactive`` for the baseline event types of a channel with no state yet."""
        if event_active or not self.baseline_events:
            return []
        out = []
        for kind in self.baseline_events:
            key = (channel, kind)
            if key in self._event_state_known or len(self._event_state_known) >= TOPIC_CACHE_SIZE:
                continue
            self._event_state_known.add(key)
            topic = self._channel_topic(channel, "event_state", kind)
            out.append(Publication(topic, b"inactive", True, self.topics.nvr, "status"))
        return out

    def message(
        self, msg: SystemMessage, timestamp: str, history_ms: int | None
    ) -> list[Publication]:
        """A system notification, with every secret in it masked (CONTRACT section 9)."""
        nvr = self.topics.nvr
        name = self.redactor.text(msg.message)
        topic = self.topics.message(name)
        payload = {
            "nvr": nvr,
            "message": name,
            "target": self.redactor.value(msg.target),
            "content": self.redactor.value(msg.content),
            "time": msg.time,
            "timestamp": timestamp,
        }
        return [Publication(topic, _dumps(payload), False, nvr, "message")]


@dataclass(slots=True)
class FrameOutcome:
    """What one frame produced: publications, items read, and the rejections.

    ``rejected`` counts every rejected item; ``rejections`` keeps the first
    ``MAX_REASONS`` reasons for the log line.
    """

    publications: list[Publication] = field(default_factory=list)
    received: int = 0
    rejected: int = 0
    rejections: list[str] = field(default_factory=list)
    messages: list[NvrMessage] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        """Count one rejected item, keeping its reason while there is room."""
        self.rejected += 1
        if len(self.rejections) < MAX_REASONS:
            self.rejections.append(reason)


def process_items(
    normalizer: Normalizer,
    stream: StreamName,
    items: list[Any],
    timestamp: str,
    outcome: FrameOutcome,
    *,
    first_index: int = 0,
    total: int | None = None,
) -> None:
    """Validate and normalize frame items into ``outcome``; never raises for bad input.

    ``first_index`` and ``total`` place a slice of a long frame within it (for the
    reasons' item numbers).
    """
    numbered = (total if total is not None else len(items)) > 1
    for offset, item in enumerate(items):
        index = first_index + offset
        try:
            message = validate_item(stream, item, normalizer.max_depth)
            publications = normalizer.normalize(stream, message, timestamp)
        except ItemRejected as exc:
            outcome.reject((f"item {index}: " if numbered else "") + exc.reason)
            continue
        except (TypeError, ValueError) as exc:
            # Text JSON cannot carry (lone surrogates) or numbers it cannot encode.
            outcome.reject(f"item {index}: cannot be encoded as JSON ({exc})")
            continue
        outcome.messages.append(message)
        outcome.publications.extend(publications)


def process_frame(
    normalizer: Normalizer, stream: StreamName, raw: str | bytes, timestamp: str
) -> FrameOutcome:
    """Parse, validate and normalize one frame; never raises for bad input."""
    outcome = FrameOutcome()
    try:
        items = parse_frame(raw)
    except FrameRejected as exc:
        outcome.received = 1
        outcome.reject(exc.reason)
        return outcome
    outcome.received = len(items)
    process_items(normalizer, stream, items, timestamp, outcome)
    return outcome
