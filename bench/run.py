"""Issue 6's benchmark: the bridge against a minimal pass-through and Node-RED, one command.

    python bench/run.py [--quick] [--json bench/results/latest.json] [--profile DIR]

Starts a private mosquitto on a free 127.0.0.1 port and one simulated NVR in this process
(the load generator), then measures, for the bridge (``python -m bridge run``) and for
the reference (``bench/reference.py``), each a fresh subprocess per measurement, run one
after the other (interleaved bridge, reference, bridge, ...):

- event burst throughput at QoS 0 and QoS 1: N events (``State: once``, so the bridge
  publishes exactly one message per event) pushed one per websocket frame; the time from
  the first push until a ``mosquitto_sub -C N`` (a C subscriber, at the same QoS) has
  received the N-th message (its ``%U`` receive timestamp); without ``--quick`` also QoS 1
  published to a QoS 0 subscriber;
- latency at 1,000 msg/s: metaHook items ``Data = str(time.time_ns())`` pushed at a paced
  1,000/s; a ``mosquitto_sub -F '%U %p'`` stamps each arrival; this process computes
  arrival minus send (p50/p99/max);
- CPU per 1,000 messages at 1,000 msg/s: utime+stime of the subprocess
  (``/proc/<pid>/stat``) over that window, divided by thousands of messages;
- RSS idle (1 s after ready) and peak during each burst (``VmRSS`` every 50 ms);
- commands: 5,000 buzzer requests ``{"timeout":1,"transaction":i}`` published at QoS 1
  as fast as ``mosquitto_pub -l`` goes; rate = 5,000 / time until the 5,000th response;
  latency per transaction = response arrival - request arrival (both stamped by one
  ``mosquitto_sub``); peak RSS; the simulator's peak concurrent REST calls, also with
  400 requests to an NVR taking 20 ms per call (with instant answers calls never overlap).

With Node-RED installed (``npm install --prefix bench/.node-red node-red@4``, or
``--node-red PATH``), the same measurements run a third system, Node-RED with issue 6's
flow (``bench/nodered.py``: websocket-in -> mqtt-out, mqtt-in -> http request), so that
every "x Node-RED" target is a ratio from this run; the issue's printed Node-RED figures
stay in the table as a second, estimated comparison.

``--profile DIR`` adds py-spy profiles of the bridge (an extra QoS 1 burst, latency run and
command burst, not among the measured runs).

Also measured, to calibrate this machine against the issue's: the broker limit
(``mosquitto_pub -l`` -> mosquitto -> ``mosquitto_sub``) and the generator ceiling (the
simulator pushing frames to a websocket client that only counts them).

Throughput, latency and CPU figures are medians of 3 runs (1 with ``--quick``). Prints a
table (bridge, reference, their ratio, Node-RED measured here and the bridge's ratio to
it, Node-RED from the issue, the estimated and the direct bridge vs Node-RED ratios, the
target) and writes every raw figure to JSON. Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nodered
import orjson

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
NVR_ID = "nvr1"
CHANNELS = 4

# Issue 6's table (this machine, 2 cores, medians of 3, local mosquitto).
NODE_RED = {
    "burst_qos0": 49_000,
    "burst_qos1": 29_000,
    "latency_p50_ms": 0.32,
    "latency_p99_ms": 2.7,
    "cpu_ms_per_1000": 130,
    "rss_idle_mb": 115,
    "rss_burst_mb": 200,  # "160-200"
    "commands_rate": 1_420,
    "commands_p99_s": 3.0,
    "commands_rss_mb": 310,
}
REFERENCE_ISSUE = {
    "burst_qos0": 16_000,
    "burst_qos1": 13_500,
    "latency_p50_ms": 0.47,
    "latency_p99_ms": 2.1,
    "cpu_ms_per_1000": 310,
    "rss_idle_mb": 39,
    "rss_burst_mb": 41,
    "commands_rate": 4_200,
    "commands_p99_s": 0.5,
}
BROKER_ISSUE = {"qos0": 82_000, "qos1": 25_000}
FLAT_MB = 10.0
# The in-flight check: requests to an NVR that takes this long per call.
SLOW_REQUESTS = 400
SLOW_NVR_SECONDS = 0.02  # "flat under a burst": peak RSS at most this much above idle


# --- processes and /proc ---------------------------------------------------------------


def source_revision() -> str | None:
    """The checked-out commit, read from .git without running git."""
    with contextlib.suppress(OSError, IndexError):
        git = ROOT / ".git"
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).exists():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    return None


def source_fingerprint() -> str:
    """A hash of the bridge's source files: which code ran, committed or not."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((ROOT / "bridge").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def library_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in ("aiomqtt", "paho-mqtt", "mqtt5", "websockets", "aiohttp", "orjson", "uvloop"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def machine_cpu_seconds() -> float:
    """CPU-seconds all CPUs spent busy since boot (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def own_cpu_seconds() -> float:
    """This process's CPU plus that of its reaped children (targets, mosquitto, tools)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def machine_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over ``seconds`` (from /proc/stat), before we start."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(1, total1 - total0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    """VmRSS of a process every 50 ms while running (bounded by the caller's ``stop``)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:  # cancelled by stop()
            self.samples.append(rss_mb(self.pid))
            await asyncio.sleep(self.interval)

    async def stop(self) -> float:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.samples.append(rss_mb(self.pid))
        return max(self.samples)


class Broker:
    """A private mosquitto on a free loopback port, no persistence."""

    def __init__(self, work: Path, max_inflight: int | None = None) -> None:
        self.port = free_port()
        self.conf = work / "mosquitto.conf"
        # Unbounded queues: a slow subscriber must not lose messages (mosquitto drops
        # QoS 1 messages above max_queued_messages, 1000 by default). Everything else,
        # max_inflight_messages (20) among it, is mosquitto's default.
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            "persistence false\nmax_queued_messages 0\n"
            # Also the Receive Maximum mosquitto announces to MQTT 5 clients (20 by default).
            + ("" if max_inflight is None else f"max_inflight_messages {max_inflight}\n")
        )
        self.log = work / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


# --- the subscriber: mosquitto_sub with receive timestamps -----------------------------


@dataclass
class Arrival:
    ns: int
    topic: str
    payload: bytes


class Subscriber:
    """``mosquitto_sub -C count -F '%U %t %p'`` into a file, started only once subscribed.

    Readiness: a retained sentinel (on a topic of its own) is published before the
    subscriber starts; the broker delivers it when the subscription is in place, so its
    line means "subscribed". It counts in ``-C`` (hence ``count + 1``) and is left in
    place (clearing it would deliver a second, empty message).
    """

    def __init__(self, ctx: Context, filters: list[str], count: int, qos: int) -> None:
        self.ctx, self.filters, self.count, self.qos = ctx, filters, count, qos
        self.sentinel = f"bench-ready/{uuid.uuid4().hex[:10]}"
        self.out = ctx.work / f"sub-{uuid.uuid4().hex[:8]}.txt"
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Subscriber:
        await self.ctx.pub(self.sentinel, b"ready", retain=True)
        args = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.ctx.broker.port)]
        args += ["-q", str(self.qos), "-C", str(self.count + 1), "-F", "%U %t %p"]
        args += ["-W", "300", "-i", f"bench-sub-{uuid.uuid4().hex[:8]}"]
        for topic_filter in [self.sentinel, *self.filters]:
            args += ["-t", topic_filter]
        self.process = await asyncio.create_subprocess_exec(
            *args, stdout=self.out.open("wb"), stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not self.out.stat().st_size:
            if time.monotonic() > deadline or self.process.returncode is not None:
                raise RuntimeError("mosquitto_sub did not subscribe")
            await asyncio.sleep(0.01)
        return self

    async def wait(self, timeout: float) -> bool:
        """Wait until all ``count`` messages arrived (True) or ``timeout`` (False)."""
        assert self.process is not None
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def __aexit__(self, *exc: object) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    def arrivals(self) -> list[Arrival]:
        """Every message but the sentinel, in arrival order."""
        result = []
        for line in self.out.read_bytes().splitlines():
            stamp, _, rest = line.partition(b" ")
            topic, _, payload = rest.partition(b" ")
            if topic.decode() == self.sentinel:
                continue
            seconds, _, fraction = stamp.partition(b".")
            ns = int(seconds) * 1_000_000_000 + int(fraction.ljust(9, b"0")[:9])
            result.append(Arrival(ns, topic.decode(), payload))
        return result


# --- the systems under test --------------------------------------------------------------


@dataclass
class Target:
    """A bridge or reference subprocess; ``base`` is its topic base."""

    kind: str
    base: str
    process: subprocess.Popen[bytes]
    log: Path
    http_port: int | None = None
    idle_rss_mb: float = 0.0
    ready_s: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


@dataclass
class Context:
    work: Path
    broker: Broker
    sim: Any
    quick: bool
    runs: int
    node_red: Path | None = None
    node_red_flow: str = "raw"
    sequence: int = 0
    notes: list[str] = field(default_factory=list)

    def stream_filter(self, target: Target, kind: str, item_type: str = "+") -> str:
        """Where ``target`` publishes the items of ``kind`` (``event`` or ``meta``)."""
        prefix = f"{target.base}/{NVR_ID}"
        if target.kind == "node-red" and self.node_red_flow == "raw":
            return nodered.raw_topic(prefix, kind)
        return f"{prefix}/channel/+/{kind}/{item_type}"

    async def pub(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish one message with mosquitto_pub."""
        args = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.broker.port), "-q", "1"]
        args += ["-t", topic, "-s"] + (["-r"] if retain else [])
        process = await asyncio.create_subprocess_exec(
            *args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
        )
        await asyncio.wait_for(process.communicate(payload), 10)
        if process.returncode:
            raise RuntimeError(f"mosquitto_pub to {topic} failed ({process.returncode})")

    def next_id(self) -> int:
        self.sequence += 1
        return self.sequence


async def http_status(url: str) -> int | None:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response,
        ):
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def nvr_cookie(url: str) -> str:
    """Log in to the simulated NVR as the reference does; the session's Cookie header."""
    from reference import login  # bench/ is this script's directory

    async with aiohttp.ClientSession(
        base_url=url, cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as http:
        return await login(http, "admin", "admin")


async def start_target(ctx: Context, kind: str, qos: int) -> Target:
    """A fresh bridge, reference or Node-RED process at ``qos``, ready (connected, subscribed)."""
    run = ctx.next_id()
    started = time.monotonic()
    log = ctx.work / f"{kind}-{run}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["PYTHONUNBUFFERED"] = "1"
    if kind == "bridge":
        base, http_port = f"bench{run}", free_port()
        env.update(
            {
                "BRIDGE_NVR_URL": ctx.sim.url,
                "BRIDGE_NVR_USERNAME": "admin",
                "BRIDGE_NVR_PASSWORD": "admin",
                "BRIDGE_NVR_ID": NVR_ID,
                "BRIDGE_MQTT_URL": f"mqtt://127.0.0.1:{ctx.broker.port}",
                "BRIDGE_MQTT_QOS": str(qos),
                "BRIDGE_MQTT_CLIENT_ID": f"bench-bridge-{run}",
                # No session left behind in the broker after the process is gone.
                "BRIDGE_MQTT_SESSION_EXPIRY": "0",
                "BRIDGE_BASE_TOPIC": base,
                "BRIDGE_HTTP_PORT": str(http_port),
                "BRIDGE_HTTP_HOST": "127.0.0.1",
                "BRIDGE_LOG_LEVEL": "warning",
            }
        )
        command = [PYTHON, "-m", "bridge", "run"]
    elif kind == "reference":
        base, http_port = f"ref{run}", None
        command = [PYTHON, str(ROOT / "bench" / "reference.py"), "--nvr-url", ctx.sim.url]
        command += ["--nvr-id", NVR_ID, "--mqtt-port", str(ctx.broker.port), "--qos", str(qos)]
        command += ["--base", base, "--client-id", f"bench-ref-{run}"]
    else:
        assert ctx.node_red is not None
        base, http_port = f"nr{run}", None
        user_dir = ctx.work / f"node-red-{run}"
        spec = nodered.Flow(
            nvr_url=ctx.sim.url,
            cookie=await nvr_cookie(ctx.sim.url),
            mqtt_port=ctx.broker.port,
            qos=qos,
            prefix=f"{base}/{NVR_ID}",
            client_id=f"bench-nr-{run}",
            mapped=ctx.node_red_flow == "mapped",
        )
        nodered.write_user_dir(user_dir, spec, free_port())
        command = ["node", str(ctx.node_red), "--settings", str(user_dir / "settings.js")]
        command += ["--userDir", str(user_dir)]
        # Readiness counts the simulator's websockets: an earlier process's must be gone.
        gone_by = time.monotonic() + 5
        while ctx.sim.clients("event") + ctx.sim.clients("meta") and time.monotonic() < gone_by:
            await asyncio.sleep(0.02)
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    target = Target(kind, base, process, log, http_port)
    deadline = time.monotonic() + 30
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{kind} exited with {process.returncode}: see {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} not ready within 30 s: see {log}")
            if kind == "bridge":
                ready = await http_status(f"http://127.0.0.1:{http_port}/readyz") == 200
            elif kind == "reference":
                ready = b"ready" in log.read_bytes()
            else:
                # Broker connected and both websockets open.
                ready = (
                    nodered.READY_LINE in log.read_bytes()
                    and ctx.sim.clients("event") >= 1
                    and ctx.sim.clients("meta") >= 1
                )
            if ready:
                break
            await asyncio.sleep(0.05)
        target.ready_s = time.monotonic() - started
        await asyncio.sleep(1.0)  # settle: info published, first camera status seen
        target.idle_rss_mb = rss_mb(process.pid)
    except BaseException:
        target.stop()
        raise
    return target


# --- the measurements ------------------------------------------------------------------


def event_frames() -> list[bytes]:
    return [
        orjson.dumps({"ChannelID": ch, "Type": "Motion", "State": "once"})
        for ch in range(1, CHANNELS + 1)
    ]


async def burst(
    ctx: Context, kind: str, qos: int, count: int, sub_qos: int | None = None
) -> dict[str, Any]:
    """One event burst on a fresh process: throughput and RSS.

    The subscriber subscribes at ``qos`` too, unless ``sub_qos`` says otherwise.
    """
    sub_qos = qos if sub_qos is None else sub_qos
    target = await start_target(ctx, kind, qos)
    try:
        filters = [ctx.stream_filter(target, "event")]
        frames = event_frames()
        async with Subscriber(ctx, filters, count, sub_qos) as sub:
            sampler = RssSampler(target.pid)
            sampler.start()
            cpu_target, cpu_self = cpu_seconds(target.pid), time.process_time()
            cpu_broker = cpu_seconds(ctx.broker.process.pid)  # type: ignore[union-attr]
            t0 = time.time_ns()
            for i in range(count):
                await ctx.sim.push("event", frames[i % CHANNELS])
            pushed_ns = time.time_ns()
            complete = await sub.wait(60)
            peak = await sampler.stop()
            cpu = {
                "target_s": round(cpu_seconds(target.pid) - cpu_target, 3),
                "bench_process_s": round(time.process_time() - cpu_self, 3),
                "broker_s": round(cpu_seconds(ctx.broker.process.pid) - cpu_broker, 3),  # type: ignore[union-attr]
            }
            arrivals = sub.arrivals()
    finally:
        code = target.stop()
    received = len(arrivals)
    end_ns = arrivals[-1].ns if arrivals else time.time_ns()
    seconds = (end_ns - t0) / 1e9
    return {
        "qos": qos,
        "subscriber_qos": sub_qos,
        "events": count,
        "received": received,
        "complete": complete and received == count,
        "seconds": round(seconds, 4),
        "rate": round(received / seconds) if seconds > 0 else 0,
        "push_seconds": round((pushed_ns - t0) / 1e9, 4),
        "rss_idle_mb": round(target.idle_rss_mb, 1),
        "rss_peak_mb": round(peak, 1),
        "cpu_during_burst": cpu,
        "ready_s": round(target.ready_s, 2),
        "exit_code": code,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def latency(
    ctx: Context,
    kind: str,
    qos: int,
    seconds: float,
    idle_seconds: float = 3.0,
    on_start: Callable[[Target], Any] | None = None,
) -> dict[str, Any]:
    """Paced 1,000 msg/s of metaHook items carrying their send time; latency and CPU."""
    rate = 1000
    total = int(rate * seconds)
    target = await start_target(ctx, kind, qos)
    if on_start is not None:
        await on_start(target)
    try:
        filters = [ctx.stream_filter(target, "meta", "Lat")]
        async with Subscriber(ctx, filters, total, qos) as sub:
            loop = asyncio.get_running_loop()
            # The process's own cost with no traffic (keepalives, camera status every
            # second), so that the per-message figure can be read with and without it.
            idle0, idle_wall = cpu_seconds(target.pid), time.monotonic()
            await asyncio.sleep(idle_seconds)
            idle_fraction = (cpu_seconds(target.pid) - idle0) / (time.monotonic() - idle_wall)
            cpu0 = cpu_seconds(target.pid)
            wall0 = time.monotonic()
            start = loop.time()
            sent = 0
            while sent < total:
                due = min(total, int((loop.time() - start) * rate) + 1)
                while sent < due:
                    frame = orjson.dumps(
                        {
                            "ChannelID": 1 + sent % CHANNELS,
                            "Type": "Lat",
                            "Data": str(time.time_ns()),
                        }
                    )
                    await ctx.sim.push("meta", frame)
                    sent += 1
                await asyncio.sleep(max(0.0, start + sent / rate - loop.time()))
            send_seconds = loop.time() - start
            complete = await sub.wait(30)
            cpu = cpu_seconds(target.pid) - cpu0
            window = time.monotonic() - wall0
            rss = rss_mb(target.pid)
            arrivals = sub.arrivals()
    finally:
        code = target.stop()
    # "data" in a mapped item; "Data" in a raw frame (Node-RED's raw flow).
    items = [(a.ns, orjson.loads(a.payload)) for a in arrivals if a.payload]
    delays_ms = [(ns - int(item.get("data", item.get("Data")))) / 1e6 for ns, item in items]
    return {
        "qos": qos,
        "sent": total,
        "received": len(arrivals),
        "complete": complete and len(arrivals) == total,
        "send_rate": round(total / send_seconds, 1),
        "p50_ms": round(percentile(delays_ms, 50), 3),
        "p90_ms": round(percentile(delays_ms, 90), 3),
        "p99_ms": round(percentile(delays_ms, 99), 3),
        "max_ms": round(max(delays_ms), 3) if delays_ms else None,
        "mean_ms": round(statistics.fmean(delays_ms), 3) if delays_ms else None,
        "cpu_s": round(cpu, 3),
        "window_s": round(window, 3),
        "cpu_ms_per_1000": round(cpu * 1000 / (total / 1000), 1),
        "idle_cpu_fraction_of_core": round(idle_fraction, 4),
        "cpu_ms_per_1000_above_idle": round(
            (cpu - idle_fraction * window) * 1000 / (total / 1000), 1
        ),
        "cpu_fraction_of_core": round(cpu / window, 3),
        "rss_mb": round(rss, 1),
        "rss_idle_mb": round(target.idle_rss_mb, 1),
        "exit_code": code,
    }


async def commands(
    ctx: Context,
    kind: str,
    count: int,
    on_start: Callable[[Target], Any] | None = None,
    nvr_delay: float = 0.0,
) -> dict[str, Any]:
    """A QoS 1 burst of buzzer requests; rate, per-request latency, RSS, REST in flight.

    ``nvr_delay`` makes the simulated NVR take that long per buzzer call (its ``slow``
    fault), so that concurrent REST calls overlap and the in-flight bound shows: with
    instant answers the simulator never sees two calls at once.
    """
    target = await start_target(ctx, kind, 1)
    if on_start is not None:
        await on_start(target)
    lines = ctx.work / f"requests-{count}.txt"
    lines.write_bytes(
        b"\n".join(orjson.dumps({"timeout": 1, "transaction": i}) for i in range(count)) + b"\n"
    )
    prefix = f"{target.base}/{NVR_ID}"
    ctx.sim.peak_inflight = 0
    calls_before = len(ctx.sim.calls_to("/system/callBuzzer"))
    if nvr_delay:
        ctx.sim.set_fault("/system/callBuzzer", "slow", nvr_delay)
    try:
        async with Subscriber(
            ctx, [f"{prefix}/request/+", f"{prefix}/response/+"], 2 * count, 1
        ) as sub:
            sampler = RssSampler(target.pid)
            sampler.start()
            cpu0, cpu_self = cpu_seconds(target.pid), time.process_time()
            cpu_broker = cpu_seconds(ctx.broker.process.pid)  # type: ignore[union-attr]
            t0 = time.time_ns()
            publisher = await asyncio.create_subprocess_exec(
                "mosquitto_pub", "-h", "127.0.0.1", "-p", str(ctx.broker.port), "-q", "1",
                "-t", f"{prefix}/request/buzzer", "-l",
                stdin=lines.open("rb"), stdout=subprocess.DEVNULL,
            )  # fmt: skip
            await asyncio.wait_for(publisher.wait(), 60)
            published_ns = time.time_ns()
            complete = await sub.wait(60)
            peak = await sampler.stop()
            cpu = cpu_seconds(target.pid) - cpu0
            cpu_bench = time.process_time() - cpu_self
            cpu_broker = cpu_seconds(ctx.broker.process.pid) - cpu_broker  # type: ignore[union-attr]
            arrivals = sub.arrivals()
    finally:
        code = target.stop()
        ctx.sim.set_fault("/system/callBuzzer", None)
    requests: dict[Any, int] = {}
    responses: dict[Any, tuple[int, str]] = {}
    for arrival in arrivals:
        body = orjson.loads(arrival.payload)
        if "/request/" in arrival.topic:
            requests.setdefault(body["transaction"], arrival.ns)
        else:
            responses.setdefault(body["transaction"], (arrival.ns, body.get("status")))
    delays = [responses[t][0] - requests[t] for t in responses if t in requests]
    delays_s = [d / 1e9 for d in delays]
    last = max((ns for ns, _ in responses.values()), default=time.time_ns())
    seconds = (last - t0) / 1e9
    calls = len(ctx.sim.calls_to("/system/callBuzzer")) - calls_before
    return {
        "requests": count,
        "nvr_delay_s": nvr_delay,
        "responses": len(responses),
        "ok": sum(1 for _, status in responses.values() if status == "ok"),
        "complete": complete and len(responses) == count,
        "seconds": round(seconds, 3),
        "rate": round(len(responses) / seconds) if seconds > 0 else 0,
        "publish_seconds": round((published_ns - t0) / 1e9, 3),
        "p50_s": round(percentile(delays_s, 50), 4),
        "p99_s": round(percentile(delays_s, 99), 4),
        "max_s": round(max(delays_s), 4) if delays_s else None,
        "rest_calls": calls,
        "peak_inflight_rest": ctx.sim.peak_inflight,
        "rss_idle_mb": round(target.idle_rss_mb, 1),
        "rss_peak_mb": round(peak, 1),
        "cpu_s": round(cpu, 3),
        "cpu_us_per_command": round(cpu / count * 1e6),
        "bench_process_cpu_s": round(cpu_bench, 3),
        "broker_cpu_s": round(cpu_broker, 3),
        "exit_code": code,
    }


async def broker_limit(ctx: Context, qos: int, count: int) -> dict[str, Any]:
    """mosquitto_pub -l -> mosquitto -> mosquitto_sub: the broker path alone."""
    lines = ctx.work / f"broker-{count}.txt"
    lines.write_bytes(b"\n".join(b'{"n":%d}' % i for i in range(count)) + b"\n")
    topic = f"calibrate/{uuid.uuid4().hex[:6]}"
    async with Subscriber(ctx, [topic], count, qos) as sub:
        t0 = time.time_ns()
        publisher = await asyncio.create_subprocess_exec(
            "mosquitto_pub", "-h", "127.0.0.1", "-p", str(ctx.broker.port), "-q", str(qos),
            "-t", topic, "-l", stdin=lines.open("rb"), stdout=subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.wait_for(publisher.wait(), 60)
        complete = await sub.wait(60)
        arrivals = sub.arrivals()
    seconds = (arrivals[-1].ns - t0) / 1e9 if arrivals else float("nan")
    return {
        "qos": qos,
        "messages": count,
        "received": len(arrivals),
        "complete": complete,
        "rate": round(len(arrivals) / seconds) if arrivals else 0,
    }


async def generator_ceiling(ctx: Context, count: int) -> dict[str, Any]:
    """The simulator pushing ``count`` frames to a websocket client that only counts them."""
    out = ctx.work / "sink.txt"
    process = subprocess.Popen(
        [PYTHON, str(Path(__file__).resolve()), "--sink", ctx.sim.url, "--count", str(count)],
        cwd=ROOT,
        stdout=out.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while ctx.sim.clients("event") < 1:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the sink did not connect: {out.read_text()}")
            await asyncio.sleep(0.02)
        frames = event_frames()
        cpu_self = time.process_time()
        t0 = time.time_ns()
        for i in range(count):
            await ctx.sim.push("event", frames[i % CHANNELS])
        bench_cpu = time.process_time() - cpu_self
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    text = out.read_text().strip().splitlines()
    end_ns = int(text[-1]) if text and text[-1].isdigit() else None
    seconds = (end_ns - t0) / 1e9 if end_ns else float("nan")
    return {
        "frames": count,
        "rate": round(count / seconds) if end_ns else 0,
        "bench_process_cpu_s": round(bench_cpu, 3),
        "bench_process_cpu_us_per_frame": round(bench_cpu / count * 1e6, 1),
    }


async def sink(url: str, count: int) -> None:
    """``--sink``: log in, open eventHook, read ``count`` frames, print the time of the last."""
    import websockets

    sys.path.insert(0, str(ROOT / "bench"))
    from reference import login

    async with aiohttp.ClientSession(
        base_url=url, cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as http:
        cookie = await login(http, "admin", "admin")
    ws_url = url.replace("http", "ws", 1) + "/meta/eventHook"
    async with websockets.connect(
        ws_url, additional_headers={"Cookie": cookie}, compression=None
    ) as ws:
        async with asyncio.timeout(120):
            for _ in range(count):
                await ws.recv()
        print(time.time_ns(), flush=True)


def py_spy_path() -> str | None:
    found = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    return found if Path(found).exists() else None


async def spy_on(target: Target, raw: Path) -> asyncio.subprocess.Process:
    """Start py-spy on ``target`` (by function, 1 kHz, non-blocking); give it 1 s to attach."""
    spy = await asyncio.create_subprocess_exec(
        py_spy_path() or "py-spy", "record", "--pid", str(target.pid), "--rate", "1000",
        "--function", "--nonblocking", "--format", "raw", "-o", str(raw),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.sleep(1.0)
    return spy


async def spy_off(spy: asyncio.subprocess.Process | None) -> None:
    """Stop py-spy (it writes its file on SIGINT, or when the target exits)."""
    if spy is None:
        return
    if spy.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            spy.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(spy.wait(), 30)
    except TimeoutError:
        spy.kill()


async def profile_bridge(
    ctx: Context, count: int, requests: int, latency_s: float, out_dir: Path
) -> dict[str, Any]:
    """py-spy on the bridge through an extra QoS 1 event burst, latency run and command burst.

    Not among the measured runs (the profiler takes CPU from the same 2 cores). Writes
    the collapsed stacks (``*.raw.txt``, flame graph input) and top lists (``*.top.txt``).
    The samples include the second py-spy takes to attach (the loop waiting in select).
    """
    if py_spy_path() is None:
        return {"error": "py-spy not installed (pip install py-spy)"}
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    # Events: a burst twice the measured size, so that there are enough samples.
    events = 2 * count
    target = await start_target(ctx, "bridge", 1)
    raw = out_dir / "bridge-qos1-burst.raw.txt"
    spy = None
    try:
        filters = [ctx.stream_filter(target, "event")]
        frames = event_frames()
        async with Subscriber(ctx, filters, events, 1) as sub:
            spy = await spy_on(target, raw)
            t0 = time.time_ns()
            for i in range(events):
                await ctx.sim.push("event", frames[i % CHANNELS])
            await sub.wait(120)
            arrivals = sub.arrivals()
            await spy_off(spy)
    finally:
        target.stop()
        await spy_off(spy)
    seconds = (arrivals[-1].ns - t0) / 1e9 if arrivals else float("nan")
    parts: list[tuple[str, str, str, int]] = []
    parts.append(("burst", raw.name, f"the bridge during a QoS 1 burst of {events:,} events",
                  round(len(arrivals) / seconds)))  # fmt: skip
    spies: dict[str, asyncio.subprocess.Process] = {}

    def hook(name: str, path: Path) -> Callable[[Target], Any]:
        async def start(target: Target) -> None:
            spies[name] = await spy_on(target, path)

        return start

    # Latency: the paced 1,000 msg/s run (where CPU per message is measured).
    raw = out_dir / "bridge-latency-1000.raw.txt"
    try:
        run = await latency(ctx, "bridge", 1, latency_s, 1.0, on_start=hook("latency", raw))
    finally:
        await spy_off(spies.get("latency"))
    title = f"the bridge at a paced 1,000 msg/s for {latency_s:g} s (QoS 1)"
    parts.append(("latency", raw.name, title, run["received"]))
    # Commands: one extra QoS 1 burst of requests.
    raw = out_dir / "bridge-commands.raw.txt"
    try:
        run = await commands(ctx, "bridge", requests, on_start=hook("commands", raw))
    finally:
        await spy_off(spies.get("commands"))
    title = f"the bridge during a QoS 1 burst of {requests:,} buzzer requests"
    parts.append(("commands", raw.name, title, run["rate"]))
    for name, file, title, rate in parts:
        summary = summarize_raw(out_dir / file)
        top = out_dir / file.replace(".raw.txt", ".top.txt")
        top.write_text(format_profile(summary, title))
        result[name] = {"rate_under_profiler": rate, "title": title, "raw": file, **summary}
    return result


def summarize_raw(raw: Path) -> dict[str, Any]:
    """Own and total samples per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        n = int(number)
        samples += n
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for name in set(frames):
            total[name] = total.get(name, 0) + n
    top_own = sorted(own.items(), key=lambda kv: -kv[1])[:25]
    top_total = sorted(
        ((name, n) for name, n in total.items() if not name.startswith(ROOT_FRAMES)),
        key=lambda kv: -kv[1],
    )[:40]
    return {
        "samples": samples,
        "top_own": [[name, n, round(100 * n / samples, 1)] for name, n in top_own],
        "top_total": [[name, n, round(100 * n / samples, 1)] for name, n in top_total],
    }


# Frames every sample passes through (interpreter start, the event loop itself): left out
# of the "total" list, which is then about the bridge's own work.
ROOT_FRAMES = (
    "<module> (bridge/__main__.py", "_run_module_as_main (", "_run_code (", "main (bridge/cli.py",
    "run_until_signal (", "cmd_run (", "run (asyncio/runners.py", "Runner.run (",
    "BaseEventLoop.run_until_complete (", "BaseEventLoop.run_forever (",
    "BaseEventLoop._run_once (", "Handle._run (",
)  # fmt: skip


def format_profile(summary: dict[str, Any], title: str, lines: int = 15) -> str:
    out = [f"py-spy, {summary['samples']} samples of {title}", ""]
    out.append(f"top {lines} by own time (%own  function (file:line))")
    out += [
        f"{pct:6.1f}%  {name}"
        + ("  <- the event loop waiting for I/O" if "select (" in name else "")
        for name, _, pct in summary["top_own"][:lines]
    ]
    out += ["", f"top {lines} by total time, below the event loop (%total  function (file:line))"]
    out += [f"{pct:6.1f}%  {name}" for name, _, pct in summary["top_total"][:lines]]
    return "\n".join(out) + "\n"


# --- the run and the table -------------------------------------------------------------


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from bridge.observability import configure_logging
    from bridge.sim import SimulatedNvr

    configure_logging("console", "warning")
    started = time.monotonic()
    machine0, own0 = machine_cpu_seconds(), own_cpu_seconds()
    work = Path(tempfile.mkdtemp(prefix="nvr-bench-"))
    work.chmod(0o777)
    broker = Broker(work, args.broker_max_inflight)
    broker.start()
    sim = SimulatedNvr(channels=CHANNELS, name="bench NVR")
    await sim.start()
    runs = 1 if args.quick else 3
    ctx = Context(work, broker, sim, args.quick, runs, nodered.find_node_red(args.node_red))
    ctx.node_red_flow = args.node_red_flow
    count = args.events
    kinds: tuple[str, ...] = ("bridge", "reference")
    if ctx.node_red is not None:
        kinds += ("node-red",)
        print(f"Node-RED {nodered.version(ctx.node_red)} ({ctx.node_red_flow} flow): "
              f"{ctx.node_red}", flush=True)  # fmt: skip
    else:
        print(f"Node-RED not found (to measure it too: {nodered.INSTALL_HINT})", flush=True)
    result: dict[str, Any] = {
        "meta": {
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "quick": args.quick,
            "runs": runs,
            "events_per_burst": count,
            "latency_seconds": args.latency_seconds,
            "latency_qos": args.latency_qos,
            "commands": args.commands,
            "broker_max_inflight": args.broker_max_inflight,
            "node_red": None
            if ctx.node_red is None
            else {
                "path": str(ctx.node_red),
                "version": nodered.version(ctx.node_red),
                "flow": ctx.node_red_flow,
            },
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_at_start": os.getloadavg(),
            "cpu_busy_before_start": getattr(args, "busy_before", None),
            "source_commit": source_revision(),
            "source_fingerprint": source_fingerprint(),
            "libraries": library_versions(),
            "mosquitto": subprocess.run(
                ["mosquitto", "-h"], capture_output=True, text=True, check=False
            ).stdout.splitlines()[:1],
        }
    }
    try:
        result["calibration"] = {
            "broker_limit": [
                await broker_limit(ctx, qos, count) for qos in (0, 1) for _ in range(runs)
            ],
            "generator_ceiling": [await generator_ceiling(ctx, count) for _ in range(runs)],
        }
        raw: dict[str, dict[str, Any]] = {k: {} for k in kinds}
        # (publish QoS, subscriber QoS): the third variant shows the publishing side
        # without the broker's QoS 1 handshake with the subscriber.
        variants = [(0, 0, "burst_qos0"), (1, 1, "burst_qos1")]
        if not args.quick:
            variants.append((1, 0, "burst_qos1_sub0"))
        for qos, sub_qos, key in variants:
            for _ in range(runs):
                for kind in kinds:
                    run = await burst(ctx, kind, qos, count, sub_qos)
                    raw[kind].setdefault(key, []).append(run)
                    print(f"  burst qos{qos} (sub qos{sub_qos}) {kind:9}: {run['rate']:>7,}/s "
                          f"rss {run['rss_idle_mb']}->{run['rss_peak_mb']} MB"
                          f"{'' if run['complete'] else '  INCOMPLETE'}", flush=True)  # fmt: skip
        for _ in range(runs):
            for kind in kinds:
                run = await latency(
                    ctx, kind, args.latency_qos, args.latency_seconds, 2.0 if args.quick else 3.0
                )
                raw[kind].setdefault("latency_runs", []).append(run)
                print(f"  latency {kind:9}: p50 {run['p50_ms']} p99 {run['p99_ms']} ms, "
                      f"cpu {run['cpu_ms_per_1000']} ms/1000", flush=True)  # fmt: skip
        for kind in kinds:
            # The run of median CPU stands for the rest; the figures are medians of each.
            by_cpu = sorted(raw[kind]["latency_runs"], key=lambda r: r["cpu_ms_per_1000"])
            raw[kind]["latency"] = by_cpu[len(by_cpu) // 2]
        for kind in kinds:
            raw[kind]["commands"] = []
            for _ in range(runs):
                run = await commands(ctx, kind, args.commands)
                raw[kind]["commands"].append(run)
                print(f"  commands {kind:9}: {run['rate']:,}/s p99 {run['p99_s']} s "
                      f"peak REST in flight {run['peak_inflight_rest']}", flush=True)  # fmt: skip
        for kind in kinds:
            run = await commands(ctx, kind, SLOW_REQUESTS, nvr_delay=SLOW_NVR_SECONDS)
            raw[kind]["commands_slow_nvr"] = run
            print(f"  commands, NVR answering in {SLOW_NVR_SECONDS * 1000:g} ms, {kind:9}: "
                  f"{run['rate']:,}/s, peak REST in flight {run['peak_inflight_rest']}",
                  flush=True)  # fmt: skip
        result.update(raw)
        if args.profile:
            try:
                result["profile"] = await profile_bridge(
                    ctx, count, args.commands, args.latency_seconds, Path(args.profile)
                )
            except Exception as exc:
                result["profile"] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        await sim.stop()
        broker.stop()
        elapsed = time.monotonic() - started
        result["meta"]["seconds"] = round(elapsed, 1)
        result["meta"]["loadavg_at_end"] = os.getloadavg()
        result["meta"]["source_commit_at_end"] = source_revision()
        result["meta"]["source_fingerprint_at_end"] = source_fingerprint()
        if result["meta"]["source_fingerprint_at_end"] != result["meta"]["source_fingerprint"]:
            print("warning: the bridge's source changed during the run", flush=True)
        # Every child is reaped by now: what the machine did beyond this benchmark.
        # Approximate (kernel work for our loopback traffic is charged to nobody; children
        # are charged when reaped): small negative values mean "nothing else ran".
        other = max(0.0, (machine_cpu_seconds() - machine0) - (own_cpu_seconds() - own0))
        result["meta"]["other_cpu_seconds_during_run"] = round(other, 1)
        result["meta"]["other_cpu_fraction_of_machine"] = round(
            other / (elapsed * (os.cpu_count() or 1)), 3
        )
        if args.keep:
            result["meta"]["work_dir"] = str(work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    result["figures"] = figures(result)
    return result


def figures(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The headline number of each figure per system (medians where there are runs)."""
    out: dict[str, dict[str, Any]] = {}
    for kind in ("bridge", "reference", "node-red"):
        if kind not in result:
            continue  # Node-RED when not installed
        raw = result[kind]
        bursts = raw["burst_qos0"] + raw["burst_qos1"] + raw.get("burst_qos1_sub0", [])
        out[kind] = {
            "burst_qos0": median_of(raw["burst_qos0"], "rate"),
            "burst_qos1": median_of(raw["burst_qos1"], "rate"),
            "burst_qos1_sub0": median_of(raw["burst_qos1_sub0"], "rate")
            if "burst_qos1_sub0" in raw
            else None,
            "latency_p50_ms": median_of(raw["latency_runs"], "p50_ms"),
            "latency_p99_ms": median_of(raw["latency_runs"], "p99_ms"),
            "cpu_ms_per_1000": median_of(raw["latency_runs"], "cpu_ms_per_1000"),
            "rss_idle_mb": statistics.median(r["rss_idle_mb"] for r in bursts),
            "rss_burst_mb": max(r["rss_peak_mb"] for r in bursts),
            "rss_growth_mb": round(max(r["rss_peak_mb"] - r["rss_idle_mb"] for r in bursts), 1),
            "commands_rate": median_of(raw["commands"], "rate"),
            "commands_p99_s": median_of(raw["commands"], "p99_s"),
            "commands_rss_mb": max(r["rss_peak_mb"] for r in raw["commands"]),
            "commands_peak_inflight": max(
                r["peak_inflight_rest"] for r in [*raw["commands"], raw["commands_slow_nvr"]]
            ),
            "commands_slow_nvr_rate": raw["commands_slow_nvr"]["rate"],
            "all_complete": all(r["complete"] for r in bursts + raw["commands"])
            and all(r["complete"] for r in raw["latency_runs"]),
        }
    cal = result["calibration"]
    out["calibration"] = {
        "broker_qos0": median_of([r for r in cal["broker_limit"] if r["qos"] == 0], "rate"),
        "broker_qos1": median_of([r for r in cal["broker_limit"] if r["qos"] == 1], "rate"),
        "generator": median_of(cal["generator_ceiling"], "rate"),
    }
    return out


@dataclass
class Row:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    target: str
    # (bridge, reference, vs Node-RED: estimated, direct, same run; bridge figures) -> verdict
    verdict: Callable[..., str]


def relative(limit: float, higher: bool) -> Callable[..., str]:
    """Against Node-RED: measured in this run when it was, else the issue's (est/direct)."""

    def check(
        b: float, r: float, est: float | None, direct: float | None, same: float | None, f: Any
    ) -> str:
        def ok(x: float | None) -> str:
            if x is None:
                return "-"
            return "yes" if (x >= limit if higher else x <= limit) else "NO"

        if same is not None:
            return f"{ok(same)} (this run)"
        return f"{ok(est)} (est) / {ok(direct)} (direct)"

    return check


def absolute(limit: float) -> Callable[..., str]:
    return lambda b, r, est, direct, same, f: "yes" if b <= limit else "NO"


ROWS = [
    Row("burst_qos0", "event burst QoS 0", "msg/s", True, ">= 1.0x Node-RED", relative(1.0, True)),
    Row("burst_qos1", "event burst QoS 1", "msg/s", True, ">= 1.2x Node-RED", relative(1.2, True)),
    Row("burst_qos1_sub0", "event burst QoS 1, QoS 0 subscriber", "msg/s", True, "-",
        lambda *a: "-"),
    Row("latency_p50_ms", "latency p50 @1,000/s", "ms", False, "-", lambda *a: "-"),
    Row("latency_p99_ms", "latency p99 @1,000/s", "ms", False, "<= 3 ms", absolute(3.0)),
    Row("cpu_ms_per_1000", "CPU per 1,000 msgs @1,000/s", "ms", False, "<= 0.8x Node-RED",
        relative(0.8, False)),
    Row("rss_idle_mb", "RSS idle", "MB", False, "<= 50 MB", absolute(50.0)),
    Row("rss_burst_mb", "RSS peak under event bursts", "MB", False,
        f"flat (<= idle + {FLAT_MB:g} MB)",
        lambda b, r, e, d, s, f: "yes" if f["rss_growth_mb"] <= FLAT_MB else "NO"),
    Row("commands_rate", "commands, QoS 1 burst of 5,000", "req/s", True, ">= 3x Node-RED",
        relative(3.0, True)),
    Row("commands_p99_s", "commands p99 request->response", "s", False, "<= 0.5 s",
        absolute(0.5)),
    Row("commands_rss_mb", "commands peak RSS", "MB", False, "-", lambda *a: "-"),
    Row("commands_slow_nvr_rate", f"commands, NVR answering in {SLOW_NVR_SECONDS * 1000:g} ms",
        "req/s", True, "-", lambda *a: "-"),
    Row("commands_peak_inflight", "peak concurrent REST calls at the NVR", "", False, "<= 8",
        lambda b, r, e, d, s, f: "yes" if b <= 8 else "NO"),
]  # fmt: skip


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return text


def table(result: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    figs = result["figures"]
    bridge, ref, node_red = figs["bridge"], figs["reference"], figs.get("node-red")
    header = [
        "figure", "unit", "bridge", "reference", "bridge/ref", "Node-RED (this run)",
        "bridge/NR (this run)", "Node-RED (issue)", "ref (issue)", "bridge vs NR est.",
        "bridge vs NR direct", "target", "met?",
    ]  # fmt: skip
    rows_out = []
    text_rows = [header]
    for row in ROWS:
        b, r = bridge[row.key], ref[row.key]
        if b is None:
            continue  # a figure this mode (--quick) does not measure
        ratio = b / r if r else None
        nr, ref_issue = NODE_RED.get(row.key), REFERENCE_ISSUE.get(row.key)
        est = ratio * ref_issue / nr if (ratio is not None and nr and ref_issue) else None
        direct = b / nr if nr else None
        nr_here = None if node_red is None else node_red[row.key]
        same = b / nr_here if nr_here else None
        verdict = row.verdict(b, r, est, direct, same, bridge)
        rows_out.append(
            {
                "figure": row.label,
                "key": row.key,
                "unit": row.unit,
                "bridge": b,
                "reference": r,
                "bridge_over_reference": None if ratio is None else round(ratio, 3),
                "node_red_this_run": nr_here,
                "bridge_over_node_red_this_run": None if same is None else round(same, 3),
                "node_red_issue": nr,
                "reference_issue": ref_issue,
                "bridge_vs_node_red_estimated": None if est is None else round(est, 3),
                "bridge_vs_node_red_direct": None if direct is None else round(direct, 3),
                "target": row.target,
                "met": verdict,
            }
        )
        text_rows.append(
            [
                row.label, row.unit, fmt(b), fmt(r),
                "-" if ratio is None else f"{ratio:.2f}x",
                fmt(nr_here), "-" if same is None else f"{same:.2f}x",
                "-" if nr is None else fmt(nr), "-" if ref_issue is None else fmt(ref_issue),
                "-" if est is None else f"{est:.2f}x", "-" if direct is None else f"{direct:.2f}x",
                row.target, verdict,
            ]
        )  # fmt: skip
    widths = [max(len(str(r[i])) for r in text_rows) for i in range(len(header))]
    lines = []
    for index, cells in enumerate(text_rows):
        lines.append(" | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)))
        if index == 0:
            lines.append("-+-".join("-" * w for w in widths))
    cal = figs["calibration"]
    lines += [
        "",
        "bridge/ref: bridge figure / reference figure, both measured in this run.",
        "bridge/NR (this run): bridge figure / Node-RED figure, both measured in this run"
        + ("" if node_red is None else f" ({result['meta']['node_red']['flow']} flow)")
        + "; when present, the target is judged on it.",
        "bridge vs NR est.: (bridge/ref) x (ref (issue) / Node-RED (issue)), i.e. the Node-RED",
        "  figure rescaled to this machine through the reference (the issue's way to compare).",
        "bridge vs NR direct: bridge figure / Node-RED figure as printed in the issue",
        "  (assumes this machine and run conditions equal the issue's).",
        "For msg/s and req/s higher is better; for ms, s, MB lower is better.",
        f"Calibration: broker limit (mosquitto_pub -> mosquitto -> mosquitto_sub) "
        f"QoS 0 {cal['broker_qos0']:,.0f}/s (issue {BROKER_ISSUE['qos0']:,}), "
        f"QoS 1 {cal['broker_qos1']:,.0f}/s (issue {BROKER_ISSUE['qos1']:,}); "
        f"generator ceiling (simulator -> counting websocket client) "
        f"{cal['generator']:,.0f} frames/s.",
        f"All runs complete (every message received): bridge {bridge['all_complete']}, "
        f"reference {ref['all_complete']}"
        + ("." if node_red is None else f", Node-RED {node_red['all_complete']}."),
    ]
    return "\n".join(lines), rows_out


def write_json(path: Path, result: dict[str, Any]) -> None:
    """Write a benchmark's raw figures (indented JSON) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"raw figures: {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run per figure, shorter latency")
    parser.add_argument("--json", default=None, help="write every raw figure here")
    parser.add_argument("--events", type=int, default=20_000, help="events per burst")
    parser.add_argument("--commands", type=int, default=5_000, help="requests per command burst")
    parser.add_argument("--latency-seconds", type=float, default=None,
                        help="length of the paced 1,000 msg/s run (10; 5 with --quick)")  # fmt: skip
    parser.add_argument("--latency-qos", type=int, default=1, choices=(0, 1),
                        help="QoS of the latency and CPU run (default 1)")  # fmt: skip
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="also py-spy the bridge through an extra QoS 1 burst, latency run "
                        "and command burst; profiles written to DIR")  # fmt: skip
    parser.add_argument("--broker-max-inflight", type=int, default=None, metavar="N",
                        help="mosquitto's max_inflight_messages (default: its own, 20), "
                        "also the Receive Maximum it announces to MQTT 5 clients")  # fmt: skip
    parser.add_argument("--node-red", default="auto", metavar="auto|off|PATH",
                        help="also measure the Node-RED flow (bench/nodered.py): auto finds "
                        f"it in bench/.node-red or on PATH ({nodered.INSTALL_HINT})")  # fmt: skip
    parser.add_argument("--node-red-flow", default="raw", choices=nodered.FLOWS,
                        help="raw: websocket-in -> mqtt-out, the issue's flow (default); "
                        "mapped: a function node splits items into per-channel topics, "
                        "the reference's work")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--sink", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        asyncio.run(sink(args.sink, args.count))
        return 0
    if args.latency_seconds is None:
        args.latency_seconds = 5.0 if args.quick else 10.0
    print(f"nvr-bridge benchmark ({'quick' if args.quick else 'full'}), "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    busy = machine_busy()
    args.busy_before = round(busy, 3)
    print(f"other load before starting: {busy:.0%} of the machine's CPU", flush=True)
    if busy > 0.15:
        print("warning: the machine is busy: figures will be low and noisy", flush=True)
    result = asyncio.run(benchmark(args))
    text, rows = table(result)
    result["table"] = rows
    print()
    print(text)
    for part in ("burst", "latency", "commands"):
        profile = result.get("profile", {}).get(part)
        if profile:
            print()
            if part != "latency":
                print(f"rate under the profiler: {profile['rate_under_profiler']:,}/s")
            print(format_profile(profile, profile["title"]), end="")
    print(f"bridge source: commit {str(result['meta']['source_commit'])[:10]}, "
          f"files {result['meta']['source_fingerprint']}")  # fmt: skip
    print(f"\ntook {result['meta']['seconds']} s; other processes used "
          f"{result['meta']['other_cpu_fraction_of_machine']:.0%} of the machine meanwhile "
          f"({result['meta']['other_cpu_seconds_during_run']} CPU-s)")  # fmt: skip
    if args.json:
        write_json(Path(args.json), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
