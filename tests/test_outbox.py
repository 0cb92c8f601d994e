"""The bounded outbound buffer: order, confirmation, requeue, coalescing and the bound."""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.normalize import Publication
from bridge.outbox import Entry, Outbox


def pub(topic: str, payload: str = "", *, retain: bool = False) -> Publication:
    return Publication(topic, payload.encode(), retain, "nvr1", "event")


def drain(outbox: Outbox) -> list[Publication]:
    """Take and confirm everything waiting, in order."""
    sent = []
    while (entry := outbox.take()) is not None:
        sent.append(entry.publication)
        outbox.ack(entry)
    return sent


def payloads(publications: list[Publication]) -> list[str]:
    return [p.payload.decode() for p in publications]


def test_fifo_order() -> None:
    """Publications come out in the order they were put."""
    outbox = Outbox(bound=100)
    for index in range(5):
        outbox.put(pub(f"t/{index % 2}", str(index)))
    assert payloads(drain(outbox)) == ["0", "1", "2", "3", "4"]
    assert outbox.depth == 0


def test_empty_take_is_none() -> None:
    """take on an empty buffer returns None."""
    outbox = Outbox(bound=10)
    assert outbox.take() is None
    assert outbox.depth == 0
    assert outbox.queued == 0


def test_take_marks_in_flight_and_ack_removes() -> None:
    """A taken entry counts in depth until acked; ack leaves nothing behind."""
    outbox = Outbox(bound=10)
    outbox.put(pub("a", "1"))
    outbox.put(pub("a", "2"))
    entry = outbox.take()
    assert entry is not None
    assert entry.publication.payload == b"1"
    assert (outbox.depth, outbox.queued) == (2, 1)
    outbox.ack(entry)
    assert (outbox.depth, outbox.queued) == (1, 1)
    outbox.ack(entry)  # a second ack of the same entry changes nothing
    assert (outbox.depth, outbox.queued) == (1, 1)
    assert payloads(drain(outbox)) == ["2"]
    assert outbox.depth == 0


def test_requeue_puts_unconfirmed_back_in_front_in_order() -> None:
    """requeue_inflight returns unconfirmed entries to the front, oldest first."""
    outbox = Outbox(bound=100)
    for index in range(6):
        outbox.put(pub("t", str(index)))
    taken = [outbox.take() for _ in range(4)]
    assert all(taken)
    outbox.ack(taken[1])  # type: ignore[arg-type]
    assert outbox.requeue_inflight() == 3
    assert (outbox.depth, outbox.queued) == (5, 5)
    assert payloads(drain(outbox)) == ["0", "2", "3", "4", "5"]


def test_requeue_with_nothing_in_flight() -> None:
    """requeue_inflight with nothing in flight does nothing."""
    outbox = Outbox(bound=10)
    outbox.put(pub("t", "0"))
    assert outbox.requeue_inflight() == 0
    assert payloads(drain(outbox)) == ["0"]


def test_retained_values_of_one_topic_coalesce() -> None:
    """Two queued values of one retained topic: only the latest is taken."""
    outbox = Outbox(bound=10)
    outbox.put(pub("s", "old", retain=True))
    outbox.put(pub("x", "event"))
    outbox.put(pub("s", "new", retain=True))
    outbox.put(pub("other", "o", retain=True))
    assert outbox.depth == 3
    assert payloads(drain(outbox)) == ["event", "new", "o"]
    assert outbox.depth == 0


def test_retained_in_flight_then_newer_after_requeue_only_newer_sent() -> None:
    """A retained value in flight plus a newer one: after requeue only the newer is sent."""
    outbox = Outbox(bound=10)
    outbox.put(pub("s", "old", retain=True))
    in_flight = outbox.take()
    assert in_flight is not None
    outbox.put(pub("s", "new", retain=True))
    assert outbox.depth == 2
    outbox.requeue_inflight()
    assert outbox.depth == 1
    assert payloads(drain(outbox)) == ["new"]


def test_retained_both_in_flight_requeue_sends_only_newer() -> None:
    """Old and new value of one retained topic both in flight: requeue resends only the new."""
    outbox = Outbox(bound=10)
    outbox.put(pub("s", "old", retain=True))
    assert outbox.take() is not None
    outbox.put(pub("s", "new", retain=True))
    assert outbox.take() is not None
    outbox.requeue_inflight()
    assert payloads(drain(outbox)) == ["new"]
    assert outbox.depth == 0


def test_retained_newer_confirmed_first_older_not_resent() -> None:
    """Once a newer retained value is confirmed, requeue must not resend an older one."""
    outbox = Outbox(bound=10)
    outbox.put(pub("s", "old", retain=True))
    old = outbox.take()
    outbox.put(pub("s", "new", retain=True))
    new = outbox.take()
    assert old is not None
    assert new is not None
    outbox.ack(new)  # the broker's final retained value is now "new"
    outbox.requeue_inflight()
    resent = drain(outbox)
    assert payloads(resent) == [], "a stale retained value would overwrite the newer one"
    assert outbox.depth == 0


def test_retained_confirmed_then_new_value_is_sent() -> None:
    """A retained topic whose value was confirmed accepts and sends a later value."""
    outbox = Outbox(bound=10)
    outbox.put(pub("s", "1", retain=True))
    assert payloads(drain(outbox)) == ["1"]
    outbox.put(pub("s", "2", retain=True))
    assert payloads(drain(outbox)) == ["2"]


def test_retained_every_value_sent_while_coalesce_is_off() -> None:
    """With coalescing off (broker connected) every retained transition is sent in order."""
    outbox = Outbox(bound=10, coalesce=False)
    for value in ("a", "b", "c"):
        outbox.put(pub("s", value, retain=True))
    assert outbox.depth == 3
    assert payloads(drain(outbox)) == ["a", "b", "c"]


def test_bound_drops_oldest_non_retained_and_reports_them() -> None:
    """Putting N+k non-retained into bound N drops the k oldest, each passed to on_drop."""
    dropped: list[Publication] = []
    outbox = Outbox(bound=5, on_drop=dropped.append)
    outbox.put(pub("s", "state", retain=True))
    for index in range(8):
        outbox.put(pub("t", str(index)))
        assert outbox.depth == 1 + min(index + 1, 5)
    assert payloads(dropped) == ["0", "1", "2"]
    assert outbox.depth == 6
    assert outbox.queued == 6
    assert payloads(drain(outbox)) == ["state", "3", "4", "5", "6", "7"]
    assert outbox.depth == 0


def test_bound_never_drops_retained() -> None:
    """Retained entries do not count against the bound and are never dropped."""
    dropped: list[Publication] = []
    outbox = Outbox(bound=2, on_drop=dropped.append)
    for index in range(10):
        outbox.put(pub(f"s/{index}", str(index), retain=True))
    for index in range(4):
        outbox.put(pub("t", f"e{index}"))
    assert all(not p.retain for p in dropped)
    assert payloads(dropped) == ["e0", "e1"]
    assert outbox.depth == 12
    assert payloads(drain(outbox)) == [*(str(i) for i in range(10)), "e2", "e3"]


def test_bound_never_drops_in_flight_entries() -> None:
    """Entries being sent are never dropped; the oldest waiting ones go instead."""
    dropped: list[Publication] = []
    outbox = Outbox(bound=3, on_drop=dropped.append)
    for index in range(3):
        outbox.put(pub("t", str(index)))
    in_flight = [outbox.take(), outbox.take()]
    for index in range(3, 6):
        outbox.put(pub("t", str(index)))
    assert payloads(dropped) == ["2", "3", "4"]
    assert outbox.depth == 3
    for entry in in_flight:
        assert entry is not None
        outbox.ack(entry)
    assert payloads(drain(outbox)) == ["5"]
    assert outbox.depth == 0


def test_bound_with_everything_in_flight_drops_the_newcomer() -> None:
    """When every older entry is in flight, the new one is dropped; in-flight ones stay."""
    dropped: list[Publication] = []
    outbox = Outbox(bound=2, on_drop=dropped.append)
    outbox.put(pub("t", "0"))
    outbox.put(pub("t", "1"))
    first, second = outbox.take(), outbox.take()
    outbox.put(pub("t", "2"))
    assert payloads(dropped) == ["2"]
    assert outbox.depth == 2
    assert first is not None
    assert second is not None
    outbox.requeue_inflight()
    assert payloads(drain(outbox)) == ["0", "1"]
    assert outbox.depth == 0


def test_requeued_entries_can_be_dropped_by_the_bound() -> None:
    """A requeued entry is waiting again, so it is the oldest candidate for a drop."""
    dropped: list[Publication] = []
    outbox = Outbox(bound=2, on_drop=dropped.append)
    outbox.put(pub("t", "0"))
    outbox.put(pub("t", "1"))
    assert outbox.take() is not None
    outbox.requeue_inflight()
    outbox.put(pub("t", "2"))
    assert payloads(dropped) == ["0"]
    assert payloads(drain(outbox)) == ["1", "2"]


# -- randomized sequences --------------------------------------------------------------


@dataclass
class Model:
    """What the test knows from the outside: accepted, dropped, in flight and acked."""

    bound: int
    outbox: Outbox = field(init=False)
    accepted: list[tuple[int, Publication]] = field(default_factory=list)
    dropped: list[Publication] = field(default_factory=list)
    inflight: list[Entry] = field(default_factory=list)
    acked: list[Publication] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.outbox = Outbox(bound=self.bound, on_drop=self.dropped.append)

    def step(self, op: str, topic: str, flag: bool) -> None:
        """Apply one operation; acks confirm the oldest in flight, as QoS 1 PUBACKs do."""
        outbox = self.outbox
        if op == "put":
            number = len(self.accepted) + 1
            publication = pub(f"{topic}/r" if flag else topic, str(number), retain=flag)
            self.accepted.append((number, publication))
            outbox.put(publication)
        elif op == "take":
            entry = outbox.take()
            if entry is not None:
                assert entry not in self.inflight
                self.inflight.append(entry)
        elif op == "ack" and self.inflight:
            entry = self.inflight.pop(0)
            outbox.ack(entry)
            self.acked.append(entry.publication)
        elif op == "requeue":
            outbox.requeue_inflight()
            self.inflight.clear()
        elif op == "coalesce":
            outbox.coalesce = flag

    def check_counts(self) -> None:
        """depth is what would still be sent plus what is in flight; the bound holds."""
        waiting = waiting_count(self.outbox)
        assert self.outbox.depth == waiting + len(self.inflight)
        assert self.outbox.queued == waiting
        assert all(not p.retain for p in self.dropped)
        unconfirmed_non_retained = (
            sum(1 for _, p in self.accepted if not p.retain)
            - len(self.dropped)
            - sum(1 for p in self.acked if not p.retain)
        )
        assert 0 <= unconfirmed_non_retained <= self.bound

    def check_final(self) -> None:
        """After a requeue and a full drain nothing is lost, duplicated or reordered."""
        self.outbox.requeue_inflight()
        self.acked.extend(drain(self.outbox))
        assert self.outbox.depth == 0

        non_retained = [p for _, p in self.accepted if not p.retain]
        expected = [p for p in non_retained if all(p is not d for d in self.dropped)]
        acked_non_retained = [p for p in self.acked if not p.retain]
        assert sorted(payloads(acked_non_retained), key=int) == payloads(expected)
        assert len(self.dropped) + len(acked_non_retained) == len(non_retained)

        by_topic: dict[str, list[int]] = defaultdict(list)
        for publication in acked_non_retained:
            by_topic[publication.topic].append(int(publication.payload))
        for sequence in by_topic.values():
            assert sequence == sorted(sequence)

        latest = {p.topic: number for number, p in self.accepted if p.retain}
        last_acked: dict[str, int] = {}
        for publication in self.acked:
            if publication.retain:
                number = int(publication.payload)
                assert number > last_acked.get(publication.topic, 0)
                last_acked[publication.topic] = number
        assert last_acked == latest


operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(["a", "b", "c"]), st.booleans()),
        st.tuples(st.just("take"), st.just(""), st.just(False)),
        st.tuples(st.just("ack"), st.just(""), st.just(False)),
        st.tuples(st.just("requeue"), st.just(""), st.just(False)),
        st.tuples(st.just("coalesce"), st.just(""), st.booleans()),
    ),
    max_size=60,
)


def waiting_count(outbox: Outbox) -> int:
    """How many entries a copy of the buffer would still hand out (without requeue)."""
    clone = copy.deepcopy(outbox)
    count = 0
    while clone.take() is not None:
        count += 1
    return count


@settings(max_examples=300, deadline=None)
@given(ops=operations, bound=st.integers(min_value=1, max_value=6))
def test_random_operations_keep_depth_and_lose_nothing(
    ops: list[tuple[str, str, bool]], bound: int
) -> None:
    """Any put/take/ack/requeue/coalesce sequence keeps depth exact, loses nothing, keeps order.

    Non-retained messages are confirmed per topic in put order; each retained topic ends on
    its latest value and never goes back to an older one.
    """
    model = Model(bound)
    for op, topic, flag in ops:
        model.step(op, topic, flag)
        model.check_counts()
    model.check_final()
