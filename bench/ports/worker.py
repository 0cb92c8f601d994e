"""One candidate MQTT port doing one workload, in a process of its own (``bench/mqtt_port.py``).

    python bench/ports/worker.py --library own --protocol 5 --workload burst --port P ...

Talks JSON lines with the parent: prints ``ready`` (import and connect times) once
connected (and subscribed), waits for ``go`` on stdin, runs the workload, prints ``done``
with its figures, answers ``cpu`` (its CPU time since ``go``), waits for ``exit`` (the
parent reads this process's CPU and memory from /proc in between), closes and exits. Only the standard library, the event loop and the
candidate's module (``port_<library>.py``) are imported, so that the process's CPU and
memory are the candidate's. Every wait is bounded.

Workloads:

- ``burst``: ``--count`` publishes at ``--qos`` (4 topics ``PREFIX/nvr1/event/<1-4>/motion``,
  ~150-byte JSON payloads made before ``go``), at most ``--window`` (and the broker's
  Receive Maximum, where the library tells it) unconfirmed at QoS 1; at QoS 0 the sender
  yields to the loop every 256 messages. Reports the time of the first publish, of the
  last hand-off and of the last PUBACK (None where the library does not tell);
- ``paced``: ``--rate`` publishes per second for ``--seconds`` at ``--qos``, each payload
  carrying ``time.time_ns()`` at send;
- ``inbound``: subscribes to ``--filter`` at QoS 1, then counts ``--count`` messages;
  reports the time the last arrived;
- ``will``: connects with a Will on ``--will-topic``, then on ``go`` closes the way the
  library offers without DISCONNECT (None: no such way; it then closes normally).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

PAD = b"x" * 200
HANDOFF_YIELD = 256  # QoS 0: yield to the loop every this many publishes (as link.py does)


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def burst_payload(index: int) -> bytes:
    """A ~150-byte JSON event, as the bridge publishes them."""
    head = (
        b'{"nvr":"nvr1","channel":%d,"type":"motion","state":"start","seq":%d,'
        b'"time":"2025-01-01T00:00:00.000Z","source":"bench/mqtt_port.py","pad":"'
        % (1 + index % 4, index)
    )
    return head + PAD[: max(0, 148 - len(head))] + b'"}'


def paced_payload(seq: int) -> bytes:
    head = b'{"t":%d,"seq":%d,"type":"latency","pad":"' % (time.time_ns(), seq)
    return head + PAD[: max(0, 148 - len(head))] + b'"}'


def topics(prefix: str) -> list[tuple[str, bytes]]:
    names = [f"{prefix}/nvr1/event/{channel}/motion" for channel in range(1, 5)]
    return [(name, name.encode()) for name in names]


class Stdin:
    """Lines from the parent, each read with a timeout."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(self.reader)
        await loop.connect_read_pipe(lambda: protocol, sys.stdin)

    async def line(self, timeout: float) -> str:
        assert self.reader is not None
        data = await asyncio.wait_for(self.reader.readline(), timeout)
        return data.decode().strip()


async def burst(port: Any, args: argparse.Namespace, go: Callable[[], Awaitable[None]]):
    count, qos = args.count, args.qos
    topic_list = topics(args.prefix)
    payloads = [burst_payload(i) for i in range(count)]
    await go()
    send = port.send
    t_first = time.time_ns()
    for i in range(count):
        topic, topic_b = topic_list[i & 3]
        await send(topic, topic_b, payloads[i], qos)
        if not qos and i % HANDOFF_YIELD == HANDOFF_YIELD - 1:
            await asyncio.sleep(0)
    t_handed = time.time_ns()
    t_last_ack = await port.drain()
    return {
        "t_first_ns": t_first,
        "t_handed_ns": t_handed,
        "t_last_ack_ns": t_last_ack if qos else None,
        "acked": port.acked,
        "refused": port.refused,
        "spins": getattr(port, "spins", None),
    }


async def paced(port: Any, args: argparse.Namespace, go: Callable[[], Awaitable[None]]):
    rate, qos = args.rate, args.qos
    total = int(rate * args.seconds)
    topic, topic_b = topics(args.prefix)[0]
    await go()
    send = port.send
    # time.monotonic, not loop.time: uvloop's clock has a resolution of 1 ms, and it runs a
    # timer shorter than 1 ms at once (a sleep of 0.3 ms would spin). So the sender sleeps
    # at least 1 ms and then sends everything due (each payload stamped when sent).
    start = time.monotonic()
    t_first = time.time_ns()
    sent = 0
    for _ in range(2 * total + 1000):  # bounded: at most one turn per millisecond
        if sent >= total:
            break
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            await send(topic, topic_b, paced_payload(sent), qos)
            sent += 1
        await asyncio.sleep(max(0.001, start + sent / rate - time.monotonic()))
    send_seconds = time.monotonic() - start
    t_last_ack = await port.drain()
    return {
        "sent": sent,
        "send_seconds": round(send_seconds, 4),
        "t_first_ns": t_first,
        "t_last_ack_ns": t_last_ack if qos else None,
        "acked": port.acked,
        "refused": port.refused,
    }


async def inbound(port: Any, args: argparse.Namespace, go: Callable[[], Awaitable[None]]):
    count = args.count
    state = {"received": 0, "last_ns": 0}
    done = asyncio.Event()

    def on_message(payload: bytes) -> None:
        state["received"] += 1
        if state["received"] == count:
            state["last_ns"] = time.time_ns()
            done.set()

    t0 = time.perf_counter()
    await port.subscribe(args.filter, 1, on_message)
    subscribe_s = time.perf_counter() - t0
    await go(subscribe_s=round(subscribe_s, 4))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), args.timeout)
    await asyncio.sleep(0.05)  # the last acknowledgements go out
    return {"received": state["received"], "t_last_ns": state["last_ns"] or None}


async def will(port: Any, args: argparse.Namespace, go: Callable[[], Awaitable[None]]):
    await go()
    route = await port.abort()
    if route is None:
        await port.close()
    return {"route": route}


WORKLOADS = {"burst": burst, "paced": paced, "inbound": inbound, "will": will}


async def main(args: argparse.Namespace) -> None:
    stdin = Stdin()
    await stdin.open()
    t_start = time.perf_counter()  # the event loop runs already: the same for everyone
    module = importlib.import_module(f"port_{args.library}")
    t_imported = time.perf_counter()
    port = module.Port(args.protocol, args.window)
    will_spec = (args.will_topic, b"offline") if args.workload == "will" else None
    await asyncio.wait_for(port.connect(args.host, args.port, args.client_id, will_spec), 15)
    t_connected = time.perf_counter()
    ready = {
        "import_s": round(t_imported - t_start, 4),
        "connect_s": round(t_connected - t_imported, 4),
    }

    cpu_at_go = [time.process_time()]

    async def go(**extra: Any) -> None:
        emit("ready", **ready, **extra, info=port.info)
        command = await stdin.line(120)
        if command != "go":
            raise RuntimeError(f"expected go, got {command!r}")
        cpu_at_go[0] = time.process_time()

    try:
        async with asyncio.timeout(args.timeout + 30):
            result = await WORKLOADS[args.workload](port, args, go)
    except Exception as exc:
        emit("done", error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc()[-2000:])
    else:
        emit("done", **result, info=port.info, lost=port.lost)
    # "cpu": this process's CPU since "go" (CLOCK_PROCESS_CPUTIME_ID, every thread, finer
    # than /proc's 10 ms ticks), a cross-check; "exit" once the parent has read /proc.
    with contextlib.suppress(TimeoutError):
        for _ in range(100):
            if await stdin.line(180) != "cpu":
                break
            emit("cpu", cpu_s=round(time.process_time() - cpu_at_go[0], 6))
    if not port.closed:
        try:
            async with asyncio.timeout(5):
                await port.close()
        except Exception as exc:
            print(f"close failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", required=True, choices=("own", "gmqtt", "aiomqtt", "mqtt5"))
    parser.add_argument("--protocol", default="5", choices=("5", "3.1.1"))
    parser.add_argument("--workload", required=True, choices=tuple(WORKLOADS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--qos", type=int, default=1, choices=(0, 1))
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--filter", default="bench/#")
    parser.add_argument("--will-topic", default="bench/will")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"))
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    factory = None
    if arguments.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main(arguments))
