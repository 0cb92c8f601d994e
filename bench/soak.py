"""Soak: hours of traffic and faults compressed into minutes; counts every message.

Runs a private mosquitto (with persistence), several simulated NVRs in this process, and
the bridge as a subprocess (so its memory is its own). Traffic: metadata items carrying a
sequence number, on every NVR. Faults at random: websockets dropped, sessions expired, an
NVR unreachable for a while (it keeps recording: the bridge must replay the gap), the
broker restarted. A subscriber with a persistent session counts what arrives.

    python bench/soak.py --minutes 10 [--nvrs 4] [--rate 100] [--json out.json]

Prints sent, received, lost, duplicated, the bridge's RSS at start and end, reconnects,
and writes the same as JSON. Exit code 1 when anything was lost. Loopback only; every
loop is bounded by the duration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import aiomqtt
import orjson
import yaml

from bridge.observability import configure_logging
from bridge.sim import SimulatedNvr

BASE = "soak"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Broker:
    """mosquitto with persistence on a free port, restartable."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="soak-broker-"))
        self.dir.chmod(0o777)  # mosquitto drops root to its own user
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {self.dir}/\nmax_queued_messages 10000000\n"
        )
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Counter:
    """A persistent-session subscriber that records every sequence number it receives."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[int] = []
        self.client_id = f"soak-counter-{uuid.uuid4().hex[:6]}"
        self.ready = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    self.port,
                    identifier=self.client_id,
                    protocol=aiomqtt.ProtocolVersion.V311,
                    clean_session=False,
                ) as client:
                    await client.subscribe(f"{BASE}/+/channel/+/meta/Seq", qos=1)
                    self.ready.set()
                    async for message in client.messages:
                        body = orjson.loads(message.payload)  # type: ignore[arg-type]
                        self.received.append(int(body["data"]))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)


async def metrics_text(port: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=5)
        ) as response,
    ):
        return await response.text()


def metric_sum(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " "))
    )


async def soak(
    minutes: float, nvr_count: int, rate: float, seed: int, tracemalloc_dir: str | None = None
) -> dict[str, object]:
    rng = random.Random(seed)
    broker = Broker()
    broker.start()
    sims = [SimulatedNvr(channels=4, name=f"soak-{i}") for i in range(nvr_count)]
    for sim in sims:
        await sim.start()
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    http_port = free_port()
    config = {
        "base_topic": BASE,
        "mqtt": {"url": f"mqtt://127.0.0.1:{broker.port}", "client_id": "soak-bridge"},
        "log_level": "warning",
        "nvrs": [
            {"id": f"nvr{i}", "url": sim.url, "username": "admin", "password": "admin"}
            for i, sim in enumerate(sims)
        ],
        "http_port": http_port,
        "http_host": "127.0.0.1",
    }
    (work / "bridge.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["BRIDGE_CONFIG_FILE"] = str(work / "bridge.yaml")
    command = [sys.executable, "-m", "bridge", "run"]
    if tracemalloc_dir:
        traced = Path(__file__).with_name("traced_bridge.py")
        command = [sys.executable, str(traced), tracemalloc_dir, "run"]
    bridge = subprocess.Popen(
        command,
        env=env,
        stdout=(work / "bridge.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    counter = Counter(broker.port)
    counter_task = asyncio.create_task(counter.run())
    sent = 0
    faults: dict[str, int] = {}
    try:
        await asyncio.wait_for(counter.ready.wait(), 10)
        deadline = time.monotonic() + 60
        while not all(sim.clients("meta") == 1 for sim in sims):
            if time.monotonic() > deadline:
                raise RuntimeError("the bridge did not connect to every NVR")
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)
        rss_start = rss_mb(bridge.pid)
        rss_series = [round(rss_start, 1)]
        next_sample = time.monotonic() + 60
        end = time.monotonic() + minutes * 60
        next_fault = time.monotonic() + rng.uniform(5, 15)
        interval = 1.0 / rate
        while time.monotonic() < end:
            # A frame of a few items on a random NVR, at the target rate overall.
            sim = rng.choice(sims)
            batch = rng.randint(1, 5)
            items = [
                {"ChannelID": rng.randint(1, 4), "Type": "Seq", "Data": str(sent + k)}
                for k in range(batch)
            ]
            sent += batch
            await sim.push("meta", items if batch > 1 else items[0])
            await asyncio.sleep(interval * batch)
            if time.monotonic() >= next_sample:
                rss_series.append(round(rss_mb(bridge.pid), 1))
                next_sample += 60
            if time.monotonic() >= next_fault:
                kind = await inject_fault(rng, sims, broker)
                faults[kind] = faults.get(kind, 0) + 1
                next_fault = time.monotonic() + rng.uniform(5, 15)
        # Let everything drain.
        drain_until = time.monotonic() + 60
        while len(set(counter.received)) < sent and time.monotonic() < drain_until:
            await asyncio.sleep(0.5)
        text = await metrics_text(http_port)
        rss_end = rss_mb(bridge.pid)
    finally:
        bridge.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            bridge.wait(10)
        if bridge.poll() is None:
            bridge.kill()
        counter_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await counter_task
        for sim in sims:
            await sim.stop()
        broker.cleanup()
    unique = set(counter.received)
    lost = sorted(set(range(sent)) - unique)
    return {
        "minutes": minutes,
        "nvrs": nvr_count,
        "rate_per_s": rate,
        "sent": sent,
        "received": len(counter.received),
        "lost": len(lost),
        "lost_first": lost[:10],
        "duplicated": len(counter.received) - len(unique),
        "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_per_minute_mb": rss_series,
        # Flat or not: growth over the second half of the run, after tables have filled.
        "rss_growth_second_half_mb": round(rss_series[-1] - rss_series[len(rss_series) // 2], 1),
        "stream_reconnects": metric_sum(text, "nvr_bridge_stream_reconnects_total"),
        "replayed": metric_sum(text, "nvr_bridge_messages_replayed_total"),
        "invalid": metric_sum(text, "nvr_bridge_messages_invalid_total"),
        "dropped": metric_sum(text, "nvr_bridge_messages_dropped_total"),
        "faults": faults,
        "bridge_log": str(work / "bridge.log"),
    }


async def inject_fault(rng: random.Random, sims: list[SimulatedNvr], broker: Broker) -> str:
    """One random fault, recovered within a few seconds (traffic keeps flowing meanwhile)."""
    kind = rng.choice(["drop", "expire", "unreachable", "broker", "garbage"])
    sim = rng.choice(sims)
    if kind == "drop":
        await sim.drop_websockets()
    elif kind == "expire":
        sim.expire_sessions()
        await sim.drop_websockets()
    elif kind == "unreachable":
        # The link to the NVR is down for a while; the NVR keeps recording.
        sim.login_mode = "error500"
        sim.expire_sessions()
        await sim.drop_websockets()
        asyncio.get_running_loop().call_later(rng.uniform(2, 6), _restore_login, sim)
    elif kind == "broker":
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(rng.uniform(1, 4))
        await asyncio.to_thread(broker.start)
    else:
        await sim.push("meta", "{truncated garbage")
    return kind


def _restore_login(sim: SimulatedNvr) -> None:
    sim.login_mode = "ok"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--nvrs", type=int, default=4)
    parser.add_argument("--rate", type=float, default=100.0, help="messages per second in all")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--tracemalloc",
        default=None,
        metavar="DIR",
        help="run the bridge with tracemalloc; write its heap size and top growth to DIR",
    )
    args = parser.parse_args()
    configure_logging("console", "warning")
    result = asyncio.run(soak(args.minutes, args.nvrs, args.rate, args.seed, args.tracemalloc))
    for key, value in result.items():
        print(f"{key:>18}: {value}")
    if args.json:
        Path(args.json).write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 1 if result["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
