"""Runs the command requests of one NVR and answers every one of them.

Requests are parsed at once on arrival (``commands.parse_request``, pure); refusals are
answered at once, valid requests wait in a queue for one of ``max_inflight_commands``
workers, so a flood queues instead of overwhelming the NVR and a slow answer holds only
its own worker. Nothing here touches the event streams.

What a client sends is bounded and checked (CONTRACT section 9):

- an MQTT 5 Response Topic starting with ``$``, lying under the bridge's own base topic
  or Home Assistant's prefix, outside ``BRIDGE_RESPONSE_TOPIC_PREFIX`` when that is set,
  or not a valid topic, is refused: the request is not executed and the error goes to
  the normal response topic (the bridge never writes its own namespace for a client);
- a request is executed at most once: a QoS 1 redelivery (DUP) of one already received,
  or a request repeating the non-null ``transaction`` of one executed in the last
  ``REPEAT_WINDOW`` seconds, gets the first response again instead;
- every response is masked (``Redactor``) and bounded: a result larger than
  ``response_max_bytes`` becomes an error saying so.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import structlog

from bridge.commands import (
    COMMANDS,
    ParsedRequest,
    Refusal,
    convenience_request,
    parse_request,
    transaction_json,
)
from bridge.limits import InputLimits, topic_problem
from bridge.normalize import compact_json
from bridge.nvr.client import NvrAnswer, NvrClient, NvrError, NvrHttpError, NvrRejected
from bridge.observability import Metrics
from bridge.publishing import InboundMessage, Publication, Publisher
from bridge.redaction import NO_SECRETS, Redactor
from bridge.topics import NvrTopics

log = structlog.get_logger("bridge.commands")

MAX_QUEUED = 10_000
# Requests remembered for the at-most-once rule: how long, and how many at most.
REPEAT_WINDOW = 600.0
REPEAT_MEMORY = 10_000
# Bytes of first responses kept for repeats, per NVR: past it the oldest are forgotten (a
# forgotten query runs again if repeated; actions answer in a few hundred bytes).
REPEAT_BYTES = 16 * 1024 * 1024

Route = tuple[str | None, bytes | None]
AfterCommand = Callable[[ParsedRequest, NvrAnswer], Awaitable[None]]


class _Job(NamedTuple):
    parsed: ParsedRequest
    reply_to: str | None
    correlation: bytes | None
    answered: _Answered | None


@dataclass(slots=True)
class _Answered:
    """What a remembered request was answered (None while it runs), and who else waits."""

    at: float
    payload: bytes | None = None
    waiting: list[Route] = field(default_factory=list)
    keys: int = 0  # the keys it is remembered under (its bytes count until none is left)


class CommandRunner:
    """Receives, validates, executes and answers one NVR's requests (see module doc)."""

    def __init__(
        self,
        *,
        topics: NvrTopics,
        client: NvrClient,
        link: Publisher,
        metrics: Metrics,
        allowed: frozenset[str],
        max_age: float,
        max_inflight: int,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        redactor: Redactor = NO_SECRETS,
        limits: InputLimits | None = None,
        reserved_prefixes: tuple[str, ...] = (),
        response_topic_prefix: str | None = None,
        allowed_by: str = "BRIDGE_COMMANDS",
        after: AfterCommand | None = None,
    ) -> None:
        self._topics = topics
        self._client = client
        self._link = link
        self._metrics = metrics
        self._allowed = allowed
        self._allowed_by = allowed_by
        self._max_age = max_age
        self._max_inflight = max_inflight
        self._timeout = timeout
        self._clock = clock
        self._redactor = redactor
        self._limits = limits or InputLimits()
        self._reserved = (f"{topics.base}/", *reserved_prefixes)
        self._response_prefix = response_topic_prefix
        self._after = after
        self._queue: deque[_Job] = deque()
        self._idle: deque[asyncio.Future[None]] = deque()
        self._answered: OrderedDict[tuple[Any, ...], _Answered] = OrderedDict()
        self._answered_bytes = 0
        self.inflight = 0
        self.peak_inflight = 0
        # A channel's preset token by the preset's name or token (the presets poller's).
        self.preset_token: Callable[[int, str], str | None] = lambda _channel, _name: None

    @property
    def nvr(self) -> str:
        """The NVR's id."""
        return self._topics.nvr

    def subscriptions(self) -> list[str]:
        """The topic filters this NVR's requests arrive on."""
        return self._topics.subscriptions()

    def _count(self, command: str, outcome: str) -> None:
        self._metrics.child(self._metrics.commands, self.nvr, command, outcome).inc()

    def handle(self, message: InboundMessage, levels: list[str]) -> None:
        """Take one received message; ``levels`` are the topic levels after the NVR id."""
        parsed = self._parse(message, levels)
        if parsed is None:
            return
        route, route_error = self._reply_route(message)
        if route_error is not None and parsed.refusal is None:
            parsed = parsed._replace(call=None, refusal=Refusal("refused", route_error))
        if parsed.refusal is not None:
            self._refuse(parsed, route)
            return
        if self._answered_before(parsed, message, route):
            return
        if len(self._queue) >= MAX_QUEUED:
            error = f"busy: {MAX_QUEUED} requests are already waiting for this NVR; retry later"
            self._count(parsed.command, "error")
            self._respond(parsed, route, status="error", result=None, error=error)
            return
        answered = self._remember(parsed, message)
        self._queue.append(_Job(parsed, *route, answered))
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    def _refuse(self, parsed: ParsedRequest, route: Route) -> None:
        assert parsed.refusal is not None  # noqa: S101 - only refusals come here
        command = parsed.command if parsed.command in COMMANDS else "unknown"
        self._count(command, parsed.refusal.outcome)
        log.warning(
            "command refused",
            nvr=self.nvr,
            command=parsed.command[:100],
            outcome=parsed.refusal.outcome,
            error=parsed.refusal.error,
            transaction=_short(parsed.transaction),
        )
        self._respond(parsed, route, status="error", result=None, error=parsed.refusal.error)

    # --- at most once ----------------------------------------------------------------------

    def _keys(self, parsed: ParsedRequest, message: InboundMessage) -> list[tuple[Any, ...]]:
        """The identities of a request: its QoS 1 delivery, and its transaction."""
        keys: list[tuple[Any, ...]] = []
        if message.packet_id:
            digest = hashlib.blake2b(message.payload, digest_size=16).digest()
            keys.append(("delivery", message.packet_id, message.topic, digest))
        if parsed.transaction is not None:
            keys.append(("transaction", parsed.command, transaction_json(parsed.transaction)))
        return keys

    def _expire_answered(self, now: float) -> None:
        """Forget the oldest answers: past the window, the count or the bytes bound."""
        answered = self._answered
        while answered:
            key, record = next(iter(answered.items()))
            if (
                now - record.at <= REPEAT_WINDOW
                and len(answered) <= REPEAT_MEMORY
                and self._answered_bytes <= REPEAT_BYTES
            ):
                break
            del answered[key]
            record.keys -= 1
            if not record.keys and record.payload is not None:
                self._answered_bytes -= len(record.payload)

    def _answered_before(
        self, parsed: ParsedRequest, message: InboundMessage, route: Route
    ) -> bool:
        """Answer a repeated request from its first outcome; True when it was one."""
        self._expire_answered(time.monotonic())
        for key in self._keys(parsed, message):
            if key[0] == "delivery" and not message.duplicate:
                continue  # packet ids are reused: only a DUP redelivery repeats one
            record = self._answered.get(key)
            if record is None:
                continue
            log.info(
                "command repeated, answered again",
                nvr=self.nvr,
                command=parsed.command,
                by=key[0],
                transaction=_short(parsed.transaction),
            )
            self._metrics.child(self._metrics.commands_repeated, self.nvr, parsed.command).inc()
            if record.payload is None:
                record.waiting.append(route)
            else:
                self._send(parsed.command, record.payload, route)
            return True
        return False

    def _remember(self, parsed: ParsedRequest, message: InboundMessage) -> _Answered | None:
        keys = self._keys(parsed, message)
        if not keys:
            return None
        record = _Answered(time.monotonic())
        for key in keys:
            earlier = self._answered.pop(key, None)
            if earlier is not None:
                earlier.keys -= 1
                if not earlier.keys and earlier.payload is not None:
                    self._answered_bytes -= len(earlier.payload)
            self._answered[key] = record
            record.keys += 1
        return record

    # --- parsing -------------------------------------------------------------------------

    def _parse(self, message: InboundMessage, levels: list[str]) -> ParsedRequest | None:
        now = self._clock()

        def parse(command: str, payload: Any, *, decoded: bool) -> ParsedRequest:
            return parse_request(
                command,
                payload,
                allowed=self._allowed,
                retained=message.retain,
                now=now,
                max_age=self._max_age,
                decoded=decoded,
                max_depth=self._limits.json_max_depth,
                allowed_by=self._allowed_by,
            )

        route = self._topics.route(levels)
        if route is None:
            return None
        if not message.payload:
            # An empty payload is how MQTT clears a retained message (a request published
            # with retain by mistake); it is no request: nothing to run or answer. MQTT
            # 3.1.1 loses the retain flag on the way, so the payload alone decides.
            log.debug("empty payload ignored", nvr=self.nvr, topic=message.topic[:200])
            return None
        if route.kind == "request":
            return parse(route.name, message.payload, decoded=False)
        convenience = convenience_request(
            route, message.payload[:1024], preset_token=self.preset_token
        )
        if convenience.request is not None:
            return parse(convenience.command, convenience.request, decoded=True)
        # A bad plain value: still refused first when the command may not run at all.
        checked = parse(convenience.command, {}, decoded=True)
        if checked.refusal is not None and checked.refusal.outcome == "refused":
            return checked
        return ParsedRequest(
            convenience.command, None, refusal=Refusal("invalid", convenience.error or "")
        )

    def _reply_route(self, message: InboundMessage) -> tuple[Route, str | None]:
        """Where the reply also goes (MQTT 5 Response Topic), or why that is refused."""
        topic = message.response_topic
        if topic is None:
            return (None, None), None
        shown = topic if len(topic) <= 100 else topic[:97] + "..."
        problem = topic_problem(topic)
        if problem is not None:
            return (None, None), f"refused: the Response Topic {shown!r} is not valid: {problem}"
        if topic.startswith("$"):
            return (None, None), (
                f"refused: the Response Topic {shown!r} starts with '$', the broker's own "
                "topics; choose a topic of your client's"
            )
        for prefix in self._reserved:
            if topic.startswith(prefix) or topic == prefix.rstrip("/"):
                return (None, None), (
                    f"refused: the Response Topic {shown!r} lies under {prefix!r}, where "
                    "the bridge publishes only its own messages; choose a topic of your "
                    "client's"
                )
        if self._response_prefix is not None and not topic.startswith(self._response_prefix):
            return (None, None), (
                f"refused: the Response Topic {shown!r} does not start with "
                f"{self._response_prefix!r} (BRIDGE_RESPONSE_TOPIC_PREFIX)"
            )
        return (topic, message.correlation_data), None

    # --- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the workers until cancelled."""
        async with asyncio.TaskGroup() as group:
            for index in range(self._max_inflight):
                group.create_task(self._worker(), name=f"commands[{self.nvr}]#{index}")

    async def _worker(self) -> None:
        while True:
            if not self._queue:
                waiter = asyncio.get_running_loop().create_future()
                self._idle.append(waiter)
                await waiter
                continue
            job = self._queue.popleft()
            self.inflight += 1
            self.peak_inflight = max(self.peak_inflight, self.inflight)
            try:
                await self._execute(job)
            finally:
                self.inflight -= 1

    async def _execute(self, job: _Job) -> None:
        parsed = job.parsed
        call = parsed.call
        assert call is not None  # noqa: S101 - only valid requests are queued
        route = (job.reply_to, job.correlation)
        try:
            answer = await self._client.call(
                call.method, call.path, params=call.params, body=call.body, timeout=self._timeout
            )
        except NvrError as exc:
            result = exc.body if isinstance(exc, NvrRejected | NvrHttpError) else None
            self._count(parsed.command, "error")
            log.warning(
                "command failed",
                nvr=self.nvr,
                command=parsed.command,
                error=exc.reason,
                transaction=_short(parsed.transaction),
            )
            payload = self._respond(parsed, route, status="error", result=result, error=exc.reason)
        else:
            self._count(parsed.command, "ok")
            log.info(
                "command done",
                nvr=self.nvr,
                command=parsed.command,
                transaction=_short(parsed.transaction),
            )
            if self._after is not None:
                # What the command changed is published before its response (a snapshot's
                # image, for one): a client that sees "ok" finds it there.
                try:
                    await self._after(parsed, answer)
                except NvrError as exc:
                    log.warning("after command failed", command=parsed.command, error=exc.reason)
            payload = self._respond(parsed, route, status="ok", result=answer.body, error=None)
        answered = job.answered
        if answered is not None:
            answered.payload = payload
            if answered.keys:
                self._answered_bytes += len(payload)
                self._expire_answered(time.monotonic())
            for waiting in answered.waiting:
                self._send(parsed.command, payload, waiting)
            answered.waiting.clear()

    def _respond(
        self,
        parsed: ParsedRequest,
        route: Route,
        *,
        status: str,
        result: Any,
        error: str | None,
    ) -> bytes:
        """Publish a response (masked and bounded) to the response topic and the route."""
        redact = self._redactor
        document = {
            "status": status,
            "command": parsed.command,
            "transaction": redact.value(parsed.transaction),
            "result": redact.value(result),
            "error": None if error is None else redact.text(error),
        }
        payload = _encode(document)
        limit = self._limits.response_max_bytes
        broker_limit = self._link.max_payload
        if len(payload) > min(limit, broker_limit):
            setting = (
                "BRIDGE_RESPONSE_MAX_BYTES"
                if limit <= broker_limit
                else "the broker's Maximum Packet Size"
            )
            document["status"], document["result"] = "error", None
            document["error"] = (
                f"result too large: the response would be {len(payload)} bytes, more than "
                f"{min(limit, broker_limit)} ({setting}); narrow the request (a shorter "
                "time range, fewer channels)"
            )
            payload = _encode(document)
        self._send(parsed.command, payload, route)
        return payload

    def _send(self, command: str, payload: bytes, route: Route) -> None:
        self._link.publish(Publication(self._topics.response(command), payload, False, self.nvr))
        reply_to, correlation = route
        if reply_to is not None:
            self._link.publish(
                Publication(reply_to, payload, False, self.nvr, correlation_data=correlation)
            )


def _encode(document: dict[str, Any]) -> bytes:
    """The response as compact JSON; integers beyond 64 bits stay exact."""
    try:
        return compact_json(document, default=str)
    except TypeError:
        # orjson refuses integers beyond 64 bits (a client's transaction may hold one).
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _short(value: Any) -> Any:
    text = repr(value) if not isinstance(value, str | int | float | type(None)) else value
    if isinstance(text, int) and not -(2**63) <= text < 2**63:
        text = repr(text)
    if isinstance(text, str) and len(text) > 100:
        return text[:97] + "..."
    return text
