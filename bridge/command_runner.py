"""Runs the command requests of one NVR and answers every one of them.

Requests are parsed at once on arrival (``commands.parse_request``, pure); refusals are
answered at once, valid requests wait in a queue for one of ``max_inflight_commands``
workers, so a flood queues instead of overwhelming the NVR and a slow answer holds only
its own worker. Nothing here touches the event streams.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

import structlog

from bridge.commands import (
    COMMANDS,
    ParsedRequest,
    Refusal,
    convenience_request,
    parse_request,
)
from bridge.mqtt import InboundMessage, MqttLink
from bridge.normalize import Publication, Topics, compact_json
from bridge.nvr.client import NvrClient, NvrError, NvrHttpError, NvrRejected
from bridge.observability import Metrics

log = structlog.get_logger("bridge.commands")

MAX_QUEUED = 10_000


class _Job(NamedTuple):
    parsed: ParsedRequest
    reply_to: str | None
    correlation: bytes | None


class CommandRunner:
    """Receives, validates, executes and answers one NVR's requests (see module doc)."""

    def __init__(
        self,
        *,
        topics: Topics,
        client: NvrClient,
        link: MqttLink,
        metrics: Metrics,
        allowed: frozenset[str],
        max_age: float,
        max_inflight: int,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._topics = topics
        self._client = client
        self._link = link
        self._metrics = metrics
        self._allowed = allowed
        self._max_age = max_age
        self._max_inflight = max_inflight
        self._timeout = timeout
        self._clock = clock
        self._queue: deque[_Job] = deque()
        self._idle: deque[asyncio.Future[None]] = deque()
        self.inflight = 0
        self.peak_inflight = 0

    @property
    def nvr(self) -> str:
        """The NVR's id."""
        return self._topics.nvr

    def subscriptions(self) -> list[str]:
        """The topic filters this NVR's requests arrive on."""
        prefix = f"{self._topics.base}/{self._topics.nvr}"
        return [
            self._topics.request_filter(),
            f"{prefix}/pin/+/set",
            f"{prefix}/channel/+/alarm/set",
            f"{prefix}/channel/+/record/set",
        ]

    def _count(self, command: str, outcome: str) -> None:
        self._metrics.child(self._metrics.commands, self.nvr, command, outcome).inc()

    def handle(self, message: InboundMessage, levels: list[str]) -> None:
        """Take one received message; ``levels`` are the topic levels after the NVR id."""
        parsed = self._parse(message, levels)
        if parsed is None:
            return
        route = _reply_route(message)
        if parsed.refusal is not None:
            command = parsed.command if parsed.command in COMMANDS else "unknown"
            self._count(command, parsed.refusal.outcome)
            log.warning(
                "command refused",
                nvr=self.nvr,
                command=parsed.command,
                outcome=parsed.refusal.outcome,
                error=parsed.refusal.error,
                transaction=_short(parsed.transaction),
            )
            self._respond(parsed, route, status="error", result=None, error=parsed.refusal.error)
            return
        if len(self._queue) >= MAX_QUEUED:
            error = f"busy: {MAX_QUEUED} requests are already waiting for this NVR; retry later"
            self._count(parsed.command, "error")
            self._respond(parsed, route, status="error", result=None, error=error)
            return
        self._queue.append(_Job(parsed, *route))
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

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
            )

        if len(levels) == 2 and levels[0] == "request":
            return parse(levels[1], message.payload, decoded=False)
        convenience = convenience_request(levels, message.payload)
        if convenience is None:
            return None
        if convenience.request is not None:
            return parse(convenience.command, convenience.request, decoded=True)
        # A bad plain value: still refused first when the command may not run at all.
        checked = parse(convenience.command, {}, decoded=True)
        if checked.refusal is not None and checked.refusal.outcome == "refused":
            return checked
        return ParsedRequest(
            convenience.command, None, refusal=Refusal("invalid", convenience.error or "")
        )

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
            self._respond(parsed, route, status="error", result=result, error=exc.reason)
            return
        self._count(parsed.command, "ok")
        log.info(
            "command done",
            nvr=self.nvr,
            command=parsed.command,
            transaction=_short(parsed.transaction),
        )
        self._respond(parsed, route, status="ok", result=answer.body, error=None)

    def _respond(
        self,
        parsed: ParsedRequest,
        route: tuple[str | None, bytes | None],
        *,
        status: str,
        result: Any,
        error: str | None,
    ) -> None:
        payload = compact_json(
            {
                "status": status,
                "command": parsed.command,
                "transaction": parsed.transaction,
                "result": result,
                "error": error,
            },
            default=str,
        )
        self._link.publish(
            Publication(self._topics.response(parsed.command), payload, False, self.nvr)
        )
        reply_to, correlation = route
        if reply_to is not None:
            self._link.publish(
                Publication(reply_to, payload, False, self.nvr, correlation_data=correlation)
            )


def _reply_route(message: InboundMessage) -> tuple[str | None, bytes | None]:
    topic = message.response_topic
    if topic is None:
        return None, None
    if any(c in topic for c in "+#\x00") or len(topic.encode()) > 65535:
        log.warning("response topic ignored", topic=topic[:200], reason="not a valid topic name")
        return None, None
    return topic, message.correlation_data


def _short(value: Any) -> Any:
    text = repr(value) if not isinstance(value, str | int | float | type(None)) else value
    if isinstance(text, str) and len(text) > 100:
        return text[:97] + "..."
    return text
