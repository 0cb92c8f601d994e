"""The bridge's MQTT port chosen by figures: own, gmqtt, aiomqtt and mqtt5, one command.

    python bench/mqtt_port.py [--quick] [--json bench/results/mqtt_port.json]

Starts a private mosquitto on a free 127.0.0.1 port (``listener <port> 127.0.0.1``,
``allow_anonymous true``, ``persistence false``, unbounded queues; its Receive Maximum is
its default ``max_inflight_messages``, 20) and measures these candidates doing the same
work, each measurement in a fresh subprocess (``bench/ports/worker.py``, which imports only
the candidate), so that CPU (utime+stime from ``/proc/<pid>/stat``) and RSS (``VmRSS``) are
the candidate's alone:

- ``own``: ``bridge.mqtt.connection.MqttConnection`` in MQTT 5, and ``own-3.1.1`` the same
  in MQTT 3.1.1 (``bench/ports/port_own.py``);
- ``gmqtt``: gmqtt 0.8.0 through its public, documented API only (``port_gmqtt.py``). It
  does not tell when a QoS 1 publish was acknowledged: "to last PUBACK" stays empty, and
  its only window is ``publish()`` raising OverflowError at Receive Maximum - 1
  unacknowledged, which the sender polls (its QoS 1 CPU includes that polling);
- ``aiomqtt``: aiomqtt 2.5.1 on paho-mqtt 2.2, MQTT 5; ``await client.publish(qos=1)``
  returns on the PUBACK; the window is a task per message under a semaphore
  (``port_aiomqtt.py``);
- ``mqtt5``: the ``mqtt5`` 0.8.0 Rust sans-I/O codec under a minimal ``asyncio.Protocol``
  written for the bench on the design of ``connection.py`` (``port_mqtt5.py``); MQTT 5
  only (3.1.1 would need its own path).

Every MQTT 5 candidate announces Receive Maximum 64 (the bridge's), connects with a clean
start and keepalive 60. Workloads, interleaved (own, own-3.1.1, gmqtt, aiomqtt, mqtt5, own,
...), medians of 3 runs (``--quick``: 1 run, smaller N):

a. QoS 1 burst: N = 20,000 publishes (``benchK/nvr1/event/<1-4>/motion``, ~150-byte JSON),
   at most min(20, the broker's Receive Maximum) unconfirmed; time from the first publish
   to the last PUBACK (the worker's clock), and to the N-th message at an independent
   ``mosquitto_sub -q 1 -C N`` (its ``%U`` receive stamp); msg/s, CPU ms per 1,000
   messages (from ``go`` until both ended; also on the worker's CLOCK_PROCESS_CPUTIME_ID as
   a cross-check of /proc's 10 ms ticks), peak RSS;
b. QoS 0 burst: the same at QoS 0 (the sender yields to the loop every 256 publishes and
   waits while the library reports a full socket buffer), until ``mosquitto_sub -C N``
   has all; msg/s, CPU per 1,000;
c. paced 1,000 msg/s for 5 s at QoS 1: each payload carries ``time.time_ns()`` at send, a
   ``mosquitto_sub -q 1 -F '%U %t %p'`` stamps arrivals; CPU per 1,000, p50/p99 latency;
d. inbound: the candidate subscribes at QoS 1 and ``mosquitto_pub -l -q 1`` sends 5,000
   messages; time from starting mosquitto_pub until the candidate received the last
   (each library acknowledges as it receives: own and mqtt5 after the handler returned,
   gmqtt before its callback, paho on receipt); msg/s, CPU per 1,000;
e. idle RSS 1 s after connect (in the QoS 1 burst's process, before it starts), and the
   import time (from the running event loop to the candidate imported) and connect time
   (TCP + CONNECT/CONNACK) of every measurement.

Then, once per candidate, a Will probe: connect with a Will, close the way the library
publicly offers without a normal DISCONNECT, and see whether mosquitto publishes the Will.

Prints a table (figure x candidate: the median, and under it the spread min-max across
runs, so that a reader sees whether differences exceed the noise), the public-API
findings, notes, and with ``--json PATH`` every raw figure, the versions (Python, the
libraries, mosquitto) and the machine's busy fraction before the run. Loopback only;
every wait is bounded. A full run takes about 4-5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import run as bench  # bench/run.py (this script's directory is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
PORTS = ROOT / "bench" / "ports"
WORKER = PORTS / "worker.py"
PYTHON = sys.executable
WORKLOADS = ("burst_qos1", "burst_qos0", "paced", "inbound")


@dataclass(frozen=True)
class Candidate:
    key: str
    library: str
    protocol: str


CANDIDATES = [
    Candidate("own", "own", "5"),
    Candidate("own-3.1.1", "own", "3.1.1"),
    Candidate("gmqtt", "gmqtt", "5"),
    Candidate("aiomqtt", "aiomqtt", "5"),
    Candidate("mqtt5", "mqtt5", "5"),
]


# --- one worker process --------------------------------------------------------------


class Worker:
    """A ``bench/ports/worker.py`` subprocess: JSON lines out, commands in."""

    def __init__(self, ctx: Any, cand: Candidate, workload: str, args: list[str]) -> None:
        self.ctx, self.cand, self.workload = ctx, cand, workload
        run = ctx.next_id()
        self.client_id = f"bench-{cand.key}-{run}"
        self.log = ctx.work / f"{cand.key}-{workload}-{run}.log"
        self.args = [
            PYTHON, str(WORKER), "--library", cand.library, "--protocol", cand.protocol,
            "--workload", workload, "--port", str(ctx.broker.port),
            "--client-id", self.client_id, "--loop", ctx.loop, "--window", str(ctx.window),
            *args,
        ]  # fmt: skip
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> dict[str, Any]:
        self.process = await asyncio.create_subprocess_exec(
            *self.args,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.open("wb"),
        )
        return await self.expect("ready", 30)

    async def send(self, line: str) -> None:
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        assert self.process is not None
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        for _ in range(10_000):  # stray lines a library may print are skipped
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                line = await asyncio.wait_for(self.process.stdout.readline(), remaining)
            except TimeoutError:
                break
            if not line:
                raise RuntimeError(f"{self.cand.key} exited before {event!r}: {self.tail()}")
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("event") == event:
                return message
        raise RuntimeError(f"{self.cand.key}: no {event!r} within {timeout:g} s: {self.tail()}")

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-600:]
        except OSError:
            return ""

    async def cpu_since_go(self) -> float | None:
        """The worker's own CPU time since ``go`` (ns clock): a cross-check of /proc's ticks."""
        try:
            await self.send("cpu")
            return float((await self.expect("cpu", 10))["cpu_s"])
        except (RuntimeError, ConnectionError, KeyError, TypeError, ValueError):
            return None

    async def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.returncode is None:
            try:
                await self.send("exit")
                await asyncio.wait_for(self.process.wait(), 10)
            except (TimeoutError, ConnectionError, RuntimeError):
                self.process.kill()
                await asyncio.wait_for(self.process.wait(), 5)
        return self.process.returncode


def broker_cpu(ctx: Any) -> float:
    return bench.cpu_seconds(ctx.broker.process.pid)


def ready_fields(ready: dict[str, Any]) -> dict[str, Any]:
    return {
        "import_s": ready.get("import_s"),
        "connect_s": ready.get("connect_s"),
        "ready_info": ready.get("info"),
    }


def per_1000(cpu: float, messages: int) -> float | None:
    return round(cpu * 1000 / (messages / 1000), 2) if messages else None


# --- the measurements ------------------------------------------------------------------


async def burst(ctx: Any, cand: Candidate, qos: int, count: int, idle_wait: float):
    """a. / b.: ``count`` publishes at ``qos``; to the last PUBACK and to the subscriber."""
    prefix = f"bench{ctx.next_id()}"
    args = ["--prefix", prefix, "--count", str(count), "--qos", str(qos), "--timeout", "90"]
    async with bench.Subscriber(ctx, [f"{prefix}/#"], count, qos) as sub:
        worker = Worker(ctx, cand, "burst", args)
        sampler = None
        try:
            ready = await worker.start()
            await asyncio.sleep(idle_wait)
            rss_idle = bench.rss_mb(worker.pid)
            sampler = bench.RssSampler(worker.pid)
            sampler.start()
            cpu0, broker0 = bench.cpu_seconds(worker.pid), broker_cpu(ctx)
            await worker.send("go")
            done = await worker.expect("done", 150)
            complete = await sub.wait(2 if "error" in done else 90)
            cpu = bench.cpu_seconds(worker.pid) - cpu0
            cpu_broker = broker_cpu(ctx) - broker0
            cpu_fine = await worker.cpu_since_go()
            peak = await sampler.stop()
            sampler = None
        finally:
            if sampler is not None:
                await sampler.stop()
            code = await worker.stop()
        arrivals = sub.arrivals()
    out: dict[str, Any] = {"qos": qos, "messages": count, **ready_fields(ready)}
    if "error" in done:
        return {**out, "complete": False, "error": done["error"], "trace": done.get("trace")}
    t_first = done["t_first_ns"]
    t_ack = done.get("t_last_ack_ns")
    received = len(arrivals)
    sub_seconds = (arrivals[-1].ns - t_first) / 1e9 if arrivals else None
    ack_seconds = (t_ack - t_first) / 1e9 if t_ack else None
    return {
        **out,
        "received": received,
        "complete": complete and received == count,
        "acked": done.get("acked"),
        "refused": done.get("refused"),
        "overflow_retries": done.get("spins"),
        "handoff_s": round((done["t_handed_ns"] - t_first) / 1e9, 4),
        "ack_s": None if ack_seconds is None else round(ack_seconds, 4),
        "ack_rate": round(count / ack_seconds) if ack_seconds else None,
        "sub_s": None if sub_seconds is None else round(sub_seconds, 4),
        "sub_rate": round(received / sub_seconds) if sub_seconds else None,
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_1000": per_1000(cpu, count),
        "cpu_clock_s": cpu_fine,
        "cpu_clock_ms_per_1000": None if cpu_fine is None else per_1000(cpu_fine, count),
        "broker_cpu_s": round(cpu_broker, 3),
        "rss_idle_mb": round(rss_idle, 1),
        "rss_peak_mb": round(peak, 1),
        "lost": done.get("lost"),
        "exit_code": code,
    }


async def paced(ctx: Any, cand: Candidate, seconds: float, rate: int = 1000):
    """c.: ``rate`` QoS 1 publishes per second for ``seconds``; latency and CPU."""
    prefix = f"bench{ctx.next_id()}"
    total = int(rate * seconds)
    args = ["--prefix", prefix, "--qos", "1", "--rate", str(rate), "--seconds", str(seconds)]
    args += ["--timeout", str(seconds + 60)]
    async with bench.Subscriber(ctx, [f"{prefix}/#"], total, 1) as sub:
        worker = Worker(ctx, cand, "paced", args)
        try:
            ready = await worker.start()
            await asyncio.sleep(0.2)
            rss_ready = bench.rss_mb(worker.pid)
            cpu0, wall0 = bench.cpu_seconds(worker.pid), time.monotonic()
            await worker.send("go")
            done = await worker.expect("done", seconds + 90)
            complete = await sub.wait(2 if "error" in done else 30)
            cpu = bench.cpu_seconds(worker.pid) - cpu0
            window = time.monotonic() - wall0
            cpu_fine = await worker.cpu_since_go()
        finally:
            code = await worker.stop()
        arrivals = sub.arrivals()
    out: dict[str, Any] = {"sent": total, **ready_fields(ready)}
    if "error" in done:
        return {**out, "complete": False, "error": done["error"], "trace": done.get("trace")}
    delays_ms = []
    for arrival in arrivals:
        try:
            delays_ms.append((arrival.ns - int(orjson.loads(arrival.payload)["t"])) / 1e6)
        except (ValueError, KeyError, TypeError):
            continue
    return {
        **out,
        "received": len(arrivals),
        "complete": complete and len(arrivals) == total,
        "send_rate": round(done["sent"] / done["send_seconds"], 1),
        "p50_ms": round(bench.percentile(delays_ms, 50), 3),
        "p90_ms": round(bench.percentile(delays_ms, 90), 3),
        "p99_ms": round(bench.percentile(delays_ms, 99), 3),
        "max_ms": round(max(delays_ms), 3) if delays_ms else None,
        "cpu_s": round(cpu, 3),
        "window_s": round(window, 3),
        "cpu_ms_per_1000": per_1000(cpu, total),
        "cpu_clock_ms_per_1000": None if cpu_fine is None else per_1000(cpu_fine, total),
        "cpu_fraction_of_core": round(cpu / window, 3),
        "rss_ready_mb": round(rss_ready, 1),
        "exit_code": code,
    }


def inbound_lines(ctx: Any, count: int) -> Path:
    path = ctx.work / f"inbound-{count}.txt"
    if not path.exists():
        pad = "x" * 100
        lines = (f'{{"timeout":1,"transaction":{i},"pad":"{pad}"}}' for i in range(count))
        path.write_text("\n".join(lines) + "\n")
    return path


async def inbound(ctx: Any, cand: Candidate, count: int):
    """d.: ``mosquitto_pub -l -q 1`` sends ``count`` messages to the subscribed candidate."""
    prefix = f"bench{ctx.next_id()}"
    lines = inbound_lines(ctx, count)
    args = ["--filter", f"{prefix}/#", "--count", str(count), "--timeout", "60"]
    worker = Worker(ctx, cand, "inbound", args)
    publisher = None
    try:
        ready = await worker.start()
        await asyncio.sleep(0.2)
        rss_ready = bench.rss_mb(worker.pid)
        cpu0 = bench.cpu_seconds(worker.pid)
        await worker.send("go")
        t0 = time.time_ns()
        publisher = await asyncio.create_subprocess_exec(
            "mosquitto_pub", "-h", "127.0.0.1", "-p", str(ctx.broker.port), "-q", "1",
            "-t", f"{prefix}/nvr1/request/buzzer", "-l", "-i", f"bench-pub-{uuid.uuid4().hex[:8]}",
            stdin=lines.open("rb"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.wait_for(publisher.wait(), 90)
        published_s = (time.time_ns() - t0) / 1e9
        done = await worker.expect("done", 90)
        cpu = bench.cpu_seconds(worker.pid) - cpu0
        cpu_fine = await worker.cpu_since_go()
    finally:
        if publisher is not None and publisher.returncode is None:
            publisher.kill()
            await publisher.wait()
        code = await worker.stop()
    out: dict[str, Any] = {"messages": count, **ready_fields(ready)}
    if "error" in done:
        return {**out, "complete": False, "error": done["error"], "trace": done.get("trace")}
    received = done["received"]
    seconds = (done["t_last_ns"] - t0) / 1e9 if done.get("t_last_ns") else None
    return {
        **out,
        "received": received,
        "complete": received == count,
        "seconds": None if seconds is None else round(seconds, 4),
        "rate": round(count / seconds) if seconds else None,
        "publisher_exit_s": round(published_s, 4),
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_1000": per_1000(cpu, received),
        "cpu_clock_ms_per_1000": None if cpu_fine is None else per_1000(cpu_fine, received),
        "rss_ready_mb": round(rss_ready, 1),
        "exit_code": code,
    }


async def will_probe(ctx: Any, cand: Candidate) -> dict[str, Any]:
    """Connect with a Will, close without DISCONNECT if the library can: does the Will fire?"""
    topic = f"bench-will/{cand.key}/{uuid.uuid4().hex[:8]}"
    async with bench.Subscriber(ctx, [topic], 1, 1) as sub:
        worker = Worker(ctx, cand, "will", ["--will-topic", topic, "--timeout", "20"])
        try:
            await worker.start()
            await worker.send("go")
            done = await worker.expect("done", 30)
            fired = await sub.wait(3)
        finally:
            await worker.stop()
    if "error" in done:
        return {"error": done["error"], "will_fired": None}
    return {"route": done.get("route"), "will_fired": fired}


async def measure(ctx: Any, cand: Candidate, workload: str, args: argparse.Namespace):
    try:
        if workload == "burst_qos1":
            return await burst(ctx, cand, 1, args.count, 1.0)
        if workload == "burst_qos0":
            return await burst(ctx, cand, 0, args.count, 0.2)
        if workload == "paced":
            return await paced(ctx, cand, args.paced_seconds)
        return await inbound(ctx, cand, args.inbound)
    except Exception as exc:
        return {"complete": False, "error": f"{type(exc).__name__}: {exc}"}


def progress(cand: Candidate, workload: str, run: dict[str, Any]) -> str:
    head = f"  {workload:10} {cand.key:9}: "
    if "error" in run:
        return head + "ERROR " + run["error"][:300]
    if workload.startswith("burst"):
        ack = run["ack_rate"]
        acked = (
            "" if run["qos"] == 0 else f"{'-' if ack is None else f'{ack:,}'}/s to last PUBACK, "
        )
        text = (f"{acked}"
                f"{run['sub_rate'] or 0:,}/s to subscriber, "
                f"cpu {run['cpu_ms_per_1000']} ms/1000, rss {run['rss_idle_mb']}->{run['rss_peak_mb']} MB")  # fmt: skip
    elif workload == "paced":
        text = (f"p50 {run['p50_ms']} p99 {run['p99_ms']} ms, "
                f"cpu {run['cpu_ms_per_1000']} ms/1000")  # fmt: skip
    else:
        text = f"{run['rate'] or 0:,}/s, cpu {run['cpu_ms_per_1000']} ms/1000"
    return head + text + ("" if run["complete"] else "  INCOMPLETE")


# --- context, versions ------------------------------------------------------------------


def port_fingerprint() -> str:
    """A hash of the port's files (codec.py, connection.py): which code ran."""
    digest = hashlib.sha256()
    for name in ("codec.py", "connection.py"):
        path = ROOT / "bridge" / "mqtt" / name
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def versions() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {"python": platform.python_version()}
    for name in ("gmqtt", "aiomqtt", "paho-mqtt", "mqtt5", "uvloop", "orjson"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    mosquitto = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, check=False)
    out["mosquitto"] = (mosquitto.stdout.splitlines() or [""])[0]
    return out


IMPORT_PROBE = """
import json, sys, time
from pathlib import Path
def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
before, modules = rss(), len(sys.modules)
t0 = time.perf_counter()
{statement}
print(json.dumps({{"import_s": round(time.perf_counter() - t0, 4),
                   "rss_before_mb": round(before, 1), "rss_after_mb": round(rss(), 1),
                   "modules_added": len(sys.modules) - modules}}))
"""


def import_costs() -> dict[str, Any]:
    """What importing the port costs alone (as measured) and through ``bridge.mqtt``."""
    statements = {
        "own_port_alone": f"sys.path.insert(0, {str(PORTS)!r}); import port_own",
        "own_via_package": "import bridge.mqtt.connection",
    }
    out: dict[str, Any] = {}
    for key, statement in statements.items():
        probe = subprocess.run(
            [PYTHON, "-c", IMPORT_PROBE.format(statement=statement)],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        try:
            out[key] = json.loads(probe.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            out[key] = {"error": probe.stderr[-300:]}
    return out


def capabilities(cands: list[Candidate]) -> dict[str, dict[str, str]]:
    """Each library's public-API facts, as its bench/ports module records them."""
    sys.path.insert(0, str(PORTS))
    out: dict[str, dict[str, str]] = {}
    for cand in cands:
        if cand.library in out:
            continue
        # The modules import their libraries; this process only reads the constants.
        module = importlib.import_module(f"port_{cand.library}")
        out[cand.library] = dict(module.CAPABILITIES)
    return out


# --- figures and table ------------------------------------------------------------------


# (key, label, unit, workload, field, higher is better)
FIGURES = [
    ("burst_qos1_ack_rate", "a. QoS 1 burst, to last PUBACK", "msg/s", "burst_qos1", "ack_rate", True),
    ("burst_qos1_sub_rate", "a. QoS 1 burst, to subscriber's N-th", "msg/s", "burst_qos1", "sub_rate", True),
    ("burst_qos1_cpu", "a. QoS 1 burst, CPU per 1,000", "ms", "burst_qos1", "cpu_ms_per_1000", False),
    ("burst_qos1_cpu_clock", "   the same, process clock (ns)", "ms", "burst_qos1", "cpu_clock_ms_per_1000", False),
    ("burst_qos1_rss_peak", "a. QoS 1 burst, peak RSS", "MB", "burst_qos1", "rss_peak_mb", False),
    ("burst_qos0_sub_rate", "b. QoS 0 burst, to subscriber's N-th", "msg/s", "burst_qos0", "sub_rate", True),
    ("burst_qos0_cpu", "b. QoS 0 burst, CPU per 1,000", "ms", "burst_qos0", "cpu_ms_per_1000", False),
    ("burst_qos0_cpu_clock", "   the same, process clock (ns)", "ms", "burst_qos0", "cpu_clock_ms_per_1000", False),
    ("paced_cpu", "c. paced 1,000/s QoS 1, CPU per 1,000", "ms", "paced", "cpu_ms_per_1000", False),
    ("paced_cpu_clock", "   the same, process clock (ns)", "ms", "paced", "cpu_clock_ms_per_1000", False),
    ("paced_p50", "c. paced 1,000/s QoS 1, latency p50", "ms", "paced", "p50_ms", False),
    ("paced_p99", "c. paced 1,000/s QoS 1, latency p99", "ms", "paced", "p99_ms", False),
    ("inbound_rate", "d. inbound QoS 1, received", "msg/s", "inbound", "rate", True),
    ("inbound_cpu", "d. inbound QoS 1, CPU per 1,000", "ms", "inbound", "cpu_ms_per_1000", False),
    ("inbound_cpu_clock", "   the same, process clock (ns)", "ms", "inbound", "cpu_clock_ms_per_1000", False),
    ("rss_idle", "e. RSS idle, 1 s after connect", "MB", "burst_qos1", "rss_idle_mb", False),
    ("import_ms", "e. import (candidate alone)", "ms", "*", "import_s", False),
    ("connect_ms", "e. connect (TCP + CONNACK)", "ms", "*", "connect_s", False),
]  # fmt: skip


def summary(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def figures(raw: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, runs in raw.items():
        figs: dict[str, Any] = {}
        for fig, _label, unit, workload, field_name, _higher in FIGURES:
            source = (
                [r for w in WORKLOADS for r in runs.get(w, [])]
                if workload == "*"
                else runs.get(workload, [])
            )
            values = [r[field_name] for r in source if r.get(field_name) is not None]
            scale = 1000 if field_name in ("import_s", "connect_s") else 1
            figs[fig] = summary([v * scale for v in values])
            if figs[fig] is not None:
                figs[fig]["unit"] = unit
        every = [r for w in WORKLOADS for r in runs.get(w, [])]
        figs["all_complete"] = bool(every) and all(r.get("complete") for r in every)
        figs["errors"] = [r["error"] for r in every if "error" in r]
        out[key] = figs
    return out


def grid(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for index, cells in enumerate(rows):
        lines.append(
            " | ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
        if index == 0:
            lines.append("-+-".join("-" * w for w in widths))
    return lines


def table(result: dict[str, Any]) -> str:
    figs = result["figures"]
    keys = list(figs)
    runs = result["meta"]["runs"]
    rows = [["figure", "unit", "better", *keys]]
    for fig, label, unit, _workload, _field, higher in FIGURES:
        cells = []
        for key in keys:
            value = figs[key][fig]
            cells.append("-" if value is None else bench.fmt(value["median"]))
        rows.append([label, unit, "higher" if higher else "lower", *cells])
        if runs > 1:
            spread = []
            for key in keys:
                value = figs[key][fig]
                spread.append(
                    "-" if value is None else f"{bench.fmt(value['min'])}-{bench.fmt(value['max'])}"
                )
            rows.append(["    spread min-max over runs", "", "", *spread])
    rows.append(["every message received, no errors", "", "", *(
        "yes" if figs[k]["all_complete"] and not figs[k]["errors"] else "NO" for k in keys
    )])  # fmt: skip
    lines = grid(rows)

    caps = result["capabilities"]
    probes = result["will_probe"]
    cap_rows = [["public API", *keys]]
    for cap, label in (
        ("puback_observable", "knows when a QoS 1 PUBACK arrived"),
        ("puback_reason_code", "sees a refused PUBACK's reason code"),
        ("receive_maximum_from_connack", "Receive Maximum from CONNACK"),
        ("max_packet_size_from_connack", "Maximum Packet Size from CONNACK"),
        ("abort_without_disconnect", "close without DISCONNECT (Will)"),
    ):
        cap_rows.append(
            [label, *(caps[c.library][cap].split(":")[0] for c in result["candidates"])]
        )
    cap_rows.append(["  probed: broker published the Will", *(
        "-" if probes.get(k) is None or probes[k].get("will_fired") is None
        else ("yes" if probes[k]["will_fired"] else "no") for k in keys
    )])  # fmt: skip
    cap_rows.append(["MQTT versions", *(
        caps[c.library]["protocols"].split(":")[0] for c in result["candidates"]
    )])  # fmt: skip
    lines += ["", *grid(cap_rows), ""]
    for library, facts in caps.items():
        lines.append(f"{library}:")
        lines += [f"  {name}: {text}" for name, text in facts.items()]
    lines += ["", "Notes:", *(f"- {note}" for note in result["notes"])]
    return "\n".join(lines)


def notes(result: dict[str, Any]) -> list[str]:
    out = []
    raw = result["raw"]
    window = result["meta"]["window"]
    rm = None
    for run in raw.get("own", {}).get("burst_qos1", []):
        info = run.get("ready_info") or {}
        rm = info.get("receive_maximum", rm)
    out.append(
        f"The broker's Receive Maximum (CONNACK to MQTT 5 clients) was {rm}; QoS 1 window = "
        f"min({window}, that) where the library tells it, {window} where it does not."
    )
    if "gmqtt" in raw:
        spins = [r.get("overflow_retries") for r in raw["gmqtt"].get("burst_qos1", [])]
        seen = [
            (r.get("ready_info") or {}).get("on_connect_receive_maximum")
            for r in raw["gmqtt"].get("burst_qos1", [])
        ]
        out.append(
            "gmqtt: 'to last PUBACK' cannot be measured through its public API (publish() "
            "returns None, no acknowledgement callback); its QoS 1 window is publish() "
            "raising OverflowError at Receive Maximum - 1 (19) unacknowledged, retried after "
            f"asyncio.sleep(0) ({spins} retries per burst), so its QoS 1 CPU includes that "
            f"polling. on_connect's properties showed receive_maximum {seen[:1]} (the client's "
            "own 64 shadows the broker's 20)."
        )
    if "aiomqtt" in raw:
        out.append(
            "aiomqtt: one task per publish under asyncio.Semaphore(window), at QoS 0 too "
            "(its publish() awaits paho's write); pending_calls_threshold raised so that it "
            "does not log a warning per publish."
        )
    if "own-3.1.1" in raw:
        out.append(
            "own-3.1.1: MQTT 3.1.1 has no Receive Maximum, so the bench's window applies; "
            "inbound, mosquitto sends a 3.1.1 client its max_inflight_messages (20) at once, "
            "an MQTT 5 client its announced Receive Maximum (64)."
        )
    costs = result["meta"].get("import_costs", {})
    alone, package = costs.get("own_port_alone", {}), costs.get("own_via_package", {})
    if "import_s" in alone and "import_s" in package:
        out.append(
            "From a bare interpreter (asyncio and ssl included), own's port alone (codec.py + "
            f"connection.py, as measured here) imports in {alone['import_s'] * 1000:.0f} ms, "
            f"+{alone['rss_after_mb'] - alone['rss_before_mb']:.1f} MB. `import "
            f"bridge.mqtt.connection` through the packages costs {package['import_s'] * 1000:.0f} ms, "
            f"+{package['rss_after_mb'] - package['rss_before_mb']:.1f} MB and "
            f"{package['modules_added']} modules (bridge/__init__ imports structlog, "
            "bridge/mqtt/__init__ imports link -> pydantic, aiohttp, prometheus)."
        )
    out.append(
        "CPU is the candidate process's utime+stime from /proc (10 ms ticks: coarse for short "
        "runs) from 'go' until both it and the subscriber finished; the 'process clock' rows "
        "are the same span on CLOCK_PROCESS_CPUTIME_ID, a cross-check. Latencies compare this machine's clock with "
        "mosquitto_sub's %U stamps. Spreads wider than the differences mean: not significant."
    )
    return out


# --- the run ----------------------------------------------------------------------------


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    machine0, own0 = bench.machine_cpu_seconds(), bench.own_cpu_seconds()
    work = Path(tempfile.mkdtemp(prefix="mqtt-port-bench-"))
    broker = bench.Broker(work)
    broker.start()
    runs = 1 if args.quick else 3
    ctx = bench.Context(work, broker, None, args.quick, runs)
    ctx.loop, ctx.window = args.loop, args.window  # type: ignore[attr-defined]
    cands = [c for c in CANDIDATES if c.key in args.candidates]
    fingerprint = port_fingerprint()
    result: dict[str, Any] = {
        "meta": {
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "quick": args.quick,
            "runs": runs,
            "burst_messages": args.count,
            "paced_seconds": args.paced_seconds,
            "inbound_messages": args.inbound,
            "window": args.window,
            "event_loop": args.loop,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "versions": versions(),
            "loadavg_at_start": os.getloadavg(),
            "cpu_busy_before_start": args.busy_before,
            "source_commit": bench.source_revision(),
            "port_fingerprint": fingerprint,
            "import_costs": import_costs(),
        },
        "candidates": cands,
    }
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {c.key: {} for c in cands}
    try:
        for run_index in range(runs):
            print(f"run {run_index + 1} of {runs}", flush=True)
            for workload in WORKLOADS:
                for cand in cands:
                    run = await measure(ctx, cand, workload, args)
                    run["run"] = run_index
                    raw[cand.key].setdefault(workload, []).append(run)
                    print(progress(cand, workload, run), flush=True)
        probes: dict[str, Any] = {}
        for cand in cands:
            try:
                probes[cand.key] = await will_probe(ctx, cand)
            except Exception as exc:
                probes[cand.key] = {"error": f"{type(exc).__name__}: {exc}", "will_fired": None}
            print(f"  will probe {cand.key:9}: {probes[cand.key]}", flush=True)
    finally:
        broker.stop()
        elapsed = time.monotonic() - started
        meta = result["meta"]
        meta["seconds"] = round(elapsed, 1)
        meta["loadavg_at_end"] = os.getloadavg()
        meta["port_fingerprint_at_end"] = port_fingerprint()
        if meta["port_fingerprint_at_end"] != fingerprint:
            print("warning: bridge/mqtt/codec.py or connection.py changed during the run")
        other = max(
            0.0, (bench.machine_cpu_seconds() - machine0) - (bench.own_cpu_seconds() - own0)
        )
        meta["other_cpu_seconds_during_run"] = round(other, 1)
        meta["other_cpu_fraction_of_machine"] = round(other / (elapsed * (os.cpu_count() or 1)), 3)
        if args.keep:
            meta["work_dir"] = str(work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    result["raw"] = raw
    result["will_probe"] = probes
    result["capabilities"] = capabilities(cands)
    result["figures"] = figures(raw)
    result["notes"] = notes(result)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 run, N 5,000, paced 2 s, inbound 2,000")  # fmt: skip
    parser.add_argument("--json", default=None, metavar="PATH", help="write every raw figure here")
    parser.add_argument("--count", type=int, default=None, help="publishes per burst (20,000)")
    parser.add_argument("--inbound", type=int, default=None, help="inbound messages (5,000)")
    parser.add_argument("--paced-seconds", type=float, default=None,
                        help="length of the paced 1,000 msg/s run (5 s)")  # fmt: skip
    parser.add_argument("--window", type=int, default=20,
                        help="at most this many unconfirmed QoS 1 publishes (and the broker's "
                        "Receive Maximum), default 20")  # fmt: skip
    parser.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"),
                        help="the candidates' event loop (the bridge uses uvloop)")  # fmt: skip
    parser.add_argument("--candidates", default=",".join(c.key for c in CANDIDATES),
                        help="comma-separated subset of: "
                        + ", ".join(c.key for c in CANDIDATES))  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    args.candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    unknown = set(args.candidates) - {c.key for c in CANDIDATES}
    if unknown:
        parser.error(f"unknown candidates: {', '.join(sorted(unknown))}")
    if args.count is None:
        args.count = 5_000 if args.quick else 20_000
    if args.inbound is None:
        args.inbound = 2_000 if args.quick else 5_000
    if args.paced_seconds is None:
        args.paced_seconds = 2.0 if args.quick else 5.0
    print(f"MQTT port benchmark ({'quick' if args.quick else 'full'}), "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    busy = bench.machine_busy()
    args.busy_before = round(busy, 3)
    print(f"other load before starting: {busy:.0%} of the machine's CPU", flush=True)
    if busy > 0.15:
        print("warning: the machine is busy: figures will be low and noisy", flush=True)
    result = asyncio.run(benchmark(args))
    meta = result["meta"]
    text = table(result)
    print()
    print(text)
    v = meta["versions"]
    print(f"\nversions: Python {v['python']}, gmqtt {v['gmqtt']}, aiomqtt {v['aiomqtt']} "
          f"(paho-mqtt {v['paho-mqtt']}), mqtt5 {v['mqtt5']}, uvloop {v['uvloop']}, "
          f"{v['mosquitto']}; own port files {meta['port_fingerprint']}")  # fmt: skip
    print(f"took {meta['seconds']} s; machine busy before: {meta['cpu_busy_before_start']:.0%}; "
          f"other processes used {meta['other_cpu_fraction_of_machine']:.0%} of the machine "
          f"meanwhile ({meta['other_cpu_seconds_during_run']} CPU-s)")  # fmt: skip
    if args.json:
        result["candidates"] = [asdict(c) for c in result["candidates"]]
        result["table"] = text.splitlines()
        bench.write_json(Path(args.json), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
