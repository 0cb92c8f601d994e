"""The bounded outbound buffer between the NVR listeners and the MQTT publisher.

Listeners ``put`` publications without ever waiting; the publisher ``take``s them in
order, and ``ack``s each once the broker confirmed it (QoS 1/2) or it was written
(QoS 0). On a broker disconnect, ``requeue_inflight`` puts the unconfirmed ones back in
front, so nothing accepted is lost and the order per topic holds.

While ``coalesce`` is on (the link turns it on while the broker is away), retained state
topics (camera status, event state, availability) are coalesced: only the latest value of
a topic waits. While the broker is connected every value is published, so subscribers
see each transition. When more non-retained messages wait than the bound, the
oldest one is dropped and reported to ``on_drop``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.normalize import Publication


@dataclass(slots=True, eq=False)
class Entry:
    """A publication waiting in the buffer, with its position and liveness."""

    seq: int
    publication: Publication
    alive: bool = True
    inflight: bool = False


@dataclass(slots=True)
class Outbox:
    """Bounded FIFO of publications with retained-topic coalescing (see module doc)."""

    bound: int
    on_drop: Callable[[Publication], None] = lambda _: None
    on_discard: Callable[[Entry], None] = lambda _: None
    coalesce: bool = True
    _queue: deque[Entry] = field(default_factory=deque)
    _non_retained: deque[Entry] = field(default_factory=deque)
    _latest_retained: dict[str, Entry] = field(default_factory=dict)
    _inflight: dict[int, Entry] = field(default_factory=dict)
    _next_seq: int = 0
    _depth: int = 0
    _non_retained_alive: int = 0

    @property
    def depth(self) -> int:
        """Messages accepted and not yet confirmed (queued plus in flight)."""
        return self._depth

    @property
    def queued(self) -> int:
        """Messages waiting to be sent (not in flight)."""
        return self._depth - len(self._inflight)

    def put(self, publication: Publication) -> Entry:
        """Accept a publication; never blocks. May drop the oldest non-retained one.

        ``on_discard`` hears of every entry that leaves the buffer for good: confirmed,
        dropped, or superseded by a newer value of its retained topic.
        """
        entry = Entry(self._next_seq, publication)
        self._next_seq += 1
        self._queue.append(entry)
        self._depth += 1
        if publication.retain:
            previous = self._latest_retained.get(publication.topic)
            if self.coalesce and previous is not None and previous.alive and not previous.inflight:
                previous.alive = False
                self._depth -= 1
                self.on_discard(previous)
            self._latest_retained[publication.topic] = entry
            return entry
        self._non_retained.append(entry)
        self._non_retained_alive += 1
        while self._non_retained_alive > self.bound:
            victim = self._pop_oldest_droppable()
            if victim is None:
                break
            victim.alive = False
            self._depth -= 1
            self._non_retained_alive -= 1
            self.on_drop(victim.publication)
            self.on_discard(victim)
        return entry

    def _pop_oldest_droppable(self) -> Entry | None:
        """Remove and return the oldest non-retained entry that is not being sent."""
        line = self._non_retained
        while line and not line[0].alive:
            line.popleft()
        for index, entry in enumerate(line):
            # Only the in-flight window (a few dozen entries) can stand before it.
            if entry.alive and not entry.inflight:
                del line[index]
                return entry
        return None

    def take(self) -> Entry | None:
        """The next publication to send, marked in flight; None when nothing waits."""
        while self._queue:
            entry = self._queue.popleft()
            if entry.alive:
                entry.inflight = True
                self._inflight[entry.seq] = entry
                return entry
        return None

    def ack(self, entry: Entry) -> None:
        """The broker confirmed the entry: it leaves the buffer."""
        if self._inflight.pop(entry.seq, None) is None:
            return
        entry.alive = False
        entry.inflight = False
        self._depth -= 1
        self.on_discard(entry)
        if entry.publication.retain:
            # The (now dead) latest entry stays recorded: an older value of the topic
            # still in flight must count as stale if the connection drops.
            return
        self._non_retained_alive -= 1
        line = self._non_retained
        while line and not line[0].alive:
            line.popleft()

    def requeue_inflight(self) -> int:
        """Put every unconfirmed entry back in front, oldest first; returns how many."""
        entries = sorted(self._inflight.values(), key=lambda e: e.seq, reverse=True)
        self._inflight.clear()
        requeued = 0
        for entry in entries:
            entry.inflight = False
            latest = self._latest_retained.get(entry.publication.topic)
            if entry.publication.retain and latest is not None and latest is not entry:
                # A newer value of this retained topic waits already: this one is stale.
                entry.alive = False
                self._depth -= 1
                self.on_discard(entry)
                continue
            self._queue.appendleft(entry)
            requeued += 1
        return requeued
