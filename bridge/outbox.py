"""The bounded outbound buffer between the NVR listeners and the MQTT publisher.

Listeners ``put`` publications without ever waiting; the publisher ``take``s them in
order, and ``ack``s each once the broker confirmed it (QoS 1/2) or it was written
(QoS 0). On a broker disconnect, ``requeue_inflight`` puts the unconfirmed ones back in
front, so nothing accepted is lost and the order per topic holds.

While ``coalesce`` is on (the link turns it on while the broker is away), retained state
topics (camera status, event state, availability) are coalesced: only the latest value of
a topic waits. While the broker is connected every value is published, so subscribers
see each transition. When more non-retained messages wait than ``bound``, the oldest one
is dropped and reported to ``on_drop``; likewise when more distinct retained topics wait
than ``retained_bound``.

Memory is proportional to the bounds, whatever the input: entries that left the buffer
(dropped, superseded) are swept out of the internal queues once they outnumber the live
ones, and a retained topic is forgotten once nothing of it waits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.publishing import Publication


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
    retained_bound: int = 100_000
    _queue: deque[Entry] = field(default_factory=deque)
    _non_retained: deque[Entry] = field(default_factory=deque)
    _retained_line: deque[Entry] = field(default_factory=deque)
    _latest_retained: dict[str, Entry] = field(default_factory=dict)
    # Entries of each retained topic still in the buffer (queued or in flight).
    _retained_alive: dict[str, int] = field(default_factory=dict)
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

    def waiting(self, topic: str) -> bool:
        """Whether a value of this retained topic is still in the buffer."""
        return topic in self._retained_alive

    def alive_entries(self) -> list[Entry]:
        """Every entry still in the buffer, oldest first (to write a fresh spool)."""
        entries = {e.seq: e for e in self._queue if e.alive}
        entries.update(self._inflight)
        return [entries[seq] for seq in sorted(entries)]

    def put(self, publication: Publication) -> Entry:
        """Accept a publication; never blocks. May drop the oldest of its kind.

        ``on_discard`` hears of every entry that leaves the buffer for good: confirmed,
        dropped, or superseded by a newer value of its retained topic.
        """
        entry = Entry(self._next_seq, publication)
        self._next_seq += 1
        self._queue.append(entry)
        self._depth += 1
        if len(self._queue) > 2 * self._depth + 1024:
            self._sweep()
        if publication.retain:
            self._put_retained(entry)
            return entry
        self._non_retained.append(entry)
        self._non_retained_alive += 1
        while self._non_retained_alive > self.bound:
            victim = _pop_oldest_droppable(self._non_retained)
            if victim is None:
                break
            self._drop(victim)
        return entry

    def _put_retained(self, entry: Entry) -> None:
        topic = entry.publication.topic
        previous = self._latest_retained.get(topic)
        if self.coalesce and previous is not None and previous.alive and not previous.inflight:
            self._leave(previous)
        self._latest_retained[topic] = entry
        self._retained_alive[topic] = self._retained_alive.get(topic, 0) + 1
        self._retained_line.append(entry)
        if len(self._retained_line) > 2 * len(self._retained_alive) + 1024:
            self._retained_line = deque(e for e in self._retained_line if e.alive)
        while len(self._retained_alive) > self.retained_bound:
            victim = _pop_oldest_droppable(self._retained_line)
            if victim is None:
                break
            self._drop(victim)

    def _drop(self, victim: Entry) -> None:
        """Drop an entry for the bound: it leaves, reported to ``on_drop``."""
        self._leave(victim)
        self.on_drop(victim.publication)

    def _leave(self, entry: Entry) -> None:
        """An entry not in flight leaves the buffer for good (dropped or superseded)."""
        entry.alive = False
        self._depth -= 1
        if entry.publication.retain:
            self._forget_retained(entry)
        else:
            self._non_retained_alive -= 1
        self.on_discard(entry)

    def _forget_retained(self, entry: Entry) -> None:
        topic = entry.publication.topic
        remaining = self._retained_alive.get(topic, 1) - 1
        if remaining > 0:
            self._retained_alive[topic] = remaining
            return
        self._retained_alive.pop(topic, None)
        self._latest_retained.pop(topic, None)

    def _sweep(self) -> None:
        """Take the entries that left the buffer out of the send queue."""
        self._queue = deque(e for e in self._queue if e.alive)

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
            # While an older value of the topic is still in flight, the (now dead) latest
            # entry stays recorded, so that value counts as stale if the connection drops.
            self._forget_retained(entry)
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
                # A newer value of this retained topic exists: this one is stale.
                self._leave(entry)
                continue
            self._queue.appendleft(entry)
            requeued += 1
        return requeued


def _pop_oldest_droppable(line: deque[Entry]) -> Entry | None:
    """Remove and return the oldest live entry of ``line`` that is not being sent."""
    while line and not line[0].alive:
        line.popleft()
    for index, entry in enumerate(line):
        # Only the in-flight window (a few dozen entries) can stand before it.
        if entry.alive and not entry.inflight:
            del line[index]
            return entry
    return None
