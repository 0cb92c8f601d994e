"""Flood and outage benchmark: the bridge's memory against its configured bounds (issue 11).

    python bench/flood.py [--events 1000000] [--json bench/results/flood.json]

Each scenario runs a private mosquitto, a simulator PROCESS (``python -m bridge
simulate --quiet``, driven through its ``/_sim/`` control API) and the bridge as a
subprocess, and reports the bridge's resident memory (VmRSS) before and after, with what
its metrics counted:

- outage: the broker is stopped, then ``--events`` events are pushed (100 per frame)
  while the bridge cannot publish; with BRIDGE_BUFFER_SIZE 1,000 and 100,000. The
  outbox keeps at most the bound and counts the rest as dropped, so RSS must follow
  the bound, not the flood. When the broker is back, what the buffer held is published.
- retained: ``--types`` distinct event types turn active (each a retained state topic),
  with BRIDGE_RETAINED_MAX 10,000 and 100,000 (default): the retained state kept for
  republishing is bounded, evictions counted.
- channels: a status stream naming 200,000 channels: the bridge keeps 4,096 and refuses
  the rest (counted invalid).

Loopback only; every load loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Broker, free_port, rss_mb, source_revision

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DEADLINE = 600.0  # seconds any one scenario may take


def metric(text: str, name: str, needle: str = "") -> float:
    """The sum of a metric's samples whose line holds ``needle``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and needle in line and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Rig:
    """A broker, a simulator process and a bridge process for one scenario."""

    def __init__(self, work: Path, settings: dict[str, str]) -> None:
        self.work = work
        self.broker = Broker(work)
        self.sim_port = free_port()
        self.http_port = free_port()
        self.settings = settings
        self.sim: subprocess.Popen[bytes] | None = None
        self.bridge: subprocess.Popen[bytes] | None = None
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Rig:
        self.broker.start()
        self.sim = subprocess.Popen(
            [PYTHON, "-m", "bridge", "simulate", "--port", str(self.sim_port), "--quiet",
             "--channels", "4", "--discovery-port", "0", "--log-format", "json"],
            cwd=ROOT, stdout=(self.work / "sim.log").open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        env |= {
            "BRIDGE_NVR_URL": f"http://127.0.0.1:{self.sim_port}",
            "BRIDGE_NVR_USERNAME": "admin",
            "BRIDGE_NVR_PASSWORD": "admin",
            "BRIDGE_MQTT_URL": f"mqtt://127.0.0.1:{self.broker.port}",
            "BRIDGE_MQTT_CLIENT_ID": f"flood-{self.http_port}",
            "BRIDGE_HTTP_HOST": "127.0.0.1",
            "BRIDGE_HTTP_PORT": str(self.http_port),
            "BRIDGE_LOG_LEVEL": "warning",
            "BRIDGE_BACKOFF_MAX": "1",
            "BRIDGE_PIN_POLL_INTERVAL": "0",
            "BRIDGE_STORAGE_POLL_INTERVAL": "0",
            **self.settings,
        }
        self.session = aiohttp.ClientSession()
        await self._wait_sim()
        self.bridge = subprocess.Popen(
            [PYTHON, "-m", "bridge", "run"],
            env=env, cwd=ROOT, stdout=(self.work / "bridge.log").open("wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        await self.wait(lambda text: metric(text, "nvr_bridge_nvr_online") >= 1, "online")
        return self

    async def __aexit__(self, *_: object) -> None:
        for process in (self.bridge, self.sim):
            if process is not None and process.poll() is None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(20)
                if process.poll() is None:
                    process.kill()
        self.broker.stop()
        if self.session is not None:
            await self.session.close()

    async def _wait_sim(self) -> None:
        assert self.session is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with self.session.get(f"http://127.0.0.1:{self.sim_port}/_sim/state") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.2)
        raise RuntimeError("the simulator did not start")

    async def control(self, name: str, body: Any) -> None:
        assert self.session is not None
        url = f"http://127.0.0.1:{self.sim_port}/_sim/{name}"
        async with self.session.post(url, data=orjson.dumps(body)) as answer:
            if answer.status != 200:
                raise RuntimeError(f"{name}: {answer.status} {await answer.text()}")

    async def metrics(self) -> str:
        assert self.session is not None
        async with self.session.get(f"http://127.0.0.1:{self.http_port}/metrics") as answer:
            return await answer.text()

    async def wait(self, done: Any, what: str, timeout: float = DEADLINE) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.bridge is None or self.bridge.poll() is None, "the bridge exited"
            with contextlib.suppress(aiohttp.ClientError):
                text = await self.metrics()
                if done(text):
                    return text
            await asyncio.sleep(0.5)
        raise RuntimeError(f"timed out waiting for {what}")

    @property
    def rss(self) -> float:
        assert self.bridge is not None
        return round(rss_mb(self.bridge.pid), 1)


async def outage(events: int, buffer_size: int, work: Path) -> dict[str, Any]:
    """The broker away while ``events`` events come: RSS follows the buffer's bound."""
    async with Rig(work, {"BRIDGE_BUFFER_SIZE": str(buffer_size)}) as rig:
        idle = rig.rss
        rig.broker.stop()
        await rig.wait(lambda t: metric(t, "nvr_bridge_mqtt_connected") == 0, "disconnected")
        started = time.monotonic()
        sent = 0
        peak = idle
        while sent < events and time.monotonic() - started < DEADLINE:
            chunk = min(100_000, events - sent)
            await rig.control("burst", {"stream": "event", "count": chunk, "per_frame": 100})
            sent += chunk
            text = await rig.wait(
                lambda t, s=sent: metric(t, "nvr_bridge_messages_received_total", "event") >= s,
                "the burst read",
            )
            peak = max(peak, rig.rss)
        text = await rig.metrics()
        result = {
            "buffer_size": buffer_size,
            "events": sent,
            "seconds": round(time.monotonic() - started, 1),
            "rss_idle_mb": idle,
            "rss_peak_mb": peak,
            "rss_after_mb": rig.rss,
            "queued": metric(text, "nvr_bridge_publish_queue_depth"),
            "dropped": metric(text, "nvr_bridge_messages_dropped_total", "event"),
        }
        rig.broker.start()
        text = await rig.wait(
            lambda t: metric(t, "nvr_bridge_publish_queue_depth") == 0, "the buffer drained"
        )
        result["published_after"] = metric(text, "nvr_bridge_messages_published_total", "event")
        result["rss_drained_mb"] = rig.rss
        return result


async def retained(types: int, retained_max: int, work: Path) -> dict[str, Any]:
    """Many distinct retained state topics: the state kept for republishing is bounded."""
    async with Rig(work, {"BRIDGE_RETAINED_MAX": str(retained_max)}) as rig:
        idle = rig.rss
        for start in range(0, types, 1000):
            items = [
                {"ChannelID": 1 + i % 4, "Type": f"Kind{i}", "State": "active"}
                for i in range(start, min(start + 1000, types))
            ]
            await rig.control("push", {"stream": "event", "payload": items})
        text = await rig.wait(
            lambda t: metric(t, "nvr_bridge_messages_received_total", "event") >= types
            and metric(t, "nvr_bridge_publish_queue_depth") == 0,
            "every event published",
        )
        return {
            "retained_max": retained_max,
            "types": types,
            "rss_idle_mb": idle,
            "rss_after_mb": rig.rss,
            "evicted": metric(text, "nvr_bridge_retained_evicted_total"),
        }


async def channels(count: int, work: Path) -> dict[str, Any]:
    """A status stream naming ``count`` channels: 4,096 kept, the rest refused."""
    async with Rig(work, {}) as rig:
        idle = rig.rss
        for start in range(0, count, 2000):
            items = [
                {"ChannelID": c, "Online": True, "Recording": False, "Event": False}
                for c in range(start + 1, min(start + 2001, count + 1))
            ]
            await rig.control("push", {"stream": "status", "payload": items})
        text = await rig.wait(
            lambda t: metric(t, "nvr_bridge_messages_received_total", "status") >= count,
            "every status read",
        )
        return {
            "channels": count,
            "rss_idle_mb": idle,
            "rss_after_mb": rig.rss,
            "invalid": metric(text, "nvr_bridge_messages_invalid_total", "status"),
        }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "revision": source_revision(),
        "python": sys.version.split()[0],
        "outage": [],
        "retained": [],
    }
    with tempfile.TemporaryDirectory(prefix="nvr-flood-") as tmp:
        work = Path(tmp)
        work.chmod(0o777)
        for size in args.buffer_sizes:
            print(f"outage: {args.events:,} events, BRIDGE_BUFFER_SIZE={size:,}", flush=True)
            results["outage"].append(await outage(args.events, size, work))
            print(f"  {results['outage'][-1]}", flush=True)
        for size in args.retained_max:
            print(f"retained: {args.types:,} types, BRIDGE_RETAINED_MAX={size:,}", flush=True)
            results["retained"].append(await retained(args.types, size, work))
            print(f"  {results['retained'][-1]}", flush=True)
        print(f"channels: {args.channels:,} status channels", flush=True)
        results["channels"] = await channels(args.channels, work)
        print(f"  {results['channels']}", flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the outage")
    parser.add_argument("--buffer-sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--types", type=int, default=300_000, help="distinct event types")
    parser.add_argument("--retained-max", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--channels", type=int, default=200_000, help="status channels")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
