"""Fleet benchmark: one bridge process for many NVRs (issue 6: 500 NVRs, 2,500 websockets).

    python bench/fleet.py --nvrs 500 --channels 16 [--window 30] [--json out.json]
    python bench/fleet.py --nvrs 100 500            # several sizes, one after the other

For each size: a private mosquitto on a free loopback port; a simulator PROCESS serving N
NVRs on N consecutive free ports (``python -m bridge simulate --count N --channels 16
--quiet``: logins, REST, the five websockets each, camera status of every channel every
second, no other traffic); the bridge as a subprocess with a YAML config of the N NVRs.

Measured:

- connect: seconds from starting the bridge until every one of the N x 5 streams is
  connected (``nvr_bridge_stream_connected`` summed from ``/metrics``, polled every 0.5 s;
  the poll itself costs the bridge some CPU with thousands of series), with the curve,
  the logins, and the CPU the bridge and the simulator used meanwhile;
- steady state, after a 5 s settle, over ``--window`` seconds (no /metrics scrape inside
  the window): the bridge's CPU as a fraction of one core (utime+stime from /proc), its
  RSS (sampled every second: mean and max), the simulator's and the broker's CPU, and,
  from scrapes just before and after the window, the camera status items received and
  the messages published per second.

On a 2-core machine the simulator process competes with the bridge for CPU: its own
figures are printed so that a saturated simulator is seen as such. Loopback only; every
wait is bounded.
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
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (
    Broker,
    cpu_seconds,
    free_port,
    machine_busy,
    rss_mb,
    source_fingerprint,
    source_revision,
)

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
STREAMS = 5
TARGET_CONNECT_S = 60.0
TARGET_CPU = 0.5
TARGET_RSS_MB = 500.0


def free_port_run(count: int, attempts: int = 50) -> int:
    """The first of ``count`` consecutive free loopback ports (below the ephemeral range)."""
    rng = random.Random()
    for _ in range(attempts):
        base = rng.randint(12_000, 32_000 - count)
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                probe = socket.socket()
                held.append(probe)
                probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for probe in held:
                probe.close()
    raise RuntimeError(f"no run of {count} free ports found")


def metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def metric_sum_where(text: str, name: str, needle: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and needle in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def scrape(session: aiohttp.ClientSession, port: int) -> str | None:
    try:
        async with session.get(
            f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=10)
        ) as response:
            return await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return None


def stop(process: subprocess.Popen[bytes] | None, timeout: float = 20) -> int | None:
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


async def fleet(nvrs: int, channels: int, window: float, keep: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"nvr-fleet-{nvrs}-"))
    work.chmod(0o777)
    broker = Broker(work)
    broker.start()
    sim: subprocess.Popen[bytes] | None = None
    bridge: subprocess.Popen[bytes] | None = None
    result: dict[str, Any] = {"nvrs": nvrs, "channels": channels, "streams": nvrs * STREAMS}
    try:
        # -- the simulator process --------------------------------------------------------
        base_port = free_port_run(nvrs)
        sim_log = work / "simulator.log"
        started = time.monotonic()
        sim = subprocess.Popen(
            [PYTHON, "-m", "bridge", "simulate", "--count", str(nvrs), "--port",
             str(base_port), "--channels", str(channels), "--quiet", "--log-format", "json"],
            cwd=ROOT, stdout=sim_log.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while sim_log.read_bytes().count(b" username=") < nvrs:
            if sim.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the simulator did not start {nvrs} NVRs: see {sim_log}")
            await asyncio.sleep(0.2)
        result["simulator_start_s"] = round(time.monotonic() - started, 1)
        result["simulator_rss_mb_idle"] = round(rss_mb(sim.pid), 1)
        # -- the bridge ---------------------------------------------------------------------
        http_port = free_port()
        config = {
            "base_topic": "fleet",
            "mqtt": {
                "url": f"mqtt://127.0.0.1:{broker.port}",
                "client_id": f"fleet-bridge-{nvrs}",
                "session_expiry": 0,
            },
            "log_level": "warning",
            "http_port": http_port,
            "http_host": "127.0.0.1",
            "nvrs": [
                {
                    "id": f"nvr{i:03d}",
                    "url": f"http://127.0.0.1:{base_port + i}",
                    "username": "admin",
                    "password": "admin",
                }
                for i in range(nvrs)
            ],
        }
        config_file = work / "bridge.yaml"
        config_file.write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        env["BRIDGE_CONFIG_FILE"] = str(config_file)
        bridge_log = work / "bridge.log"
        sim_cpu0, broker_cpu0 = cpu_seconds(sim.pid), cpu_seconds(broker.process.pid)  # type: ignore[union-attr]
        t0 = time.monotonic()
        bridge = subprocess.Popen(
            [PYTHON, "-m", "bridge", "run"],
            env=env, cwd=ROOT, stdout=bridge_log.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        curve: list[tuple[float, int]] = []
        connected = 0
        connect_s: float | None = None
        async with aiohttp.ClientSession() as session:
            deadline = t0 + 120
            while time.monotonic() < deadline:
                if bridge.poll() is not None:
                    raise RuntimeError(f"the bridge exited ({bridge.returncode}): {bridge_log}")
                text = await scrape(session, http_port)
                if text is not None:
                    connected = int(metric_sum(text, "nvr_bridge_stream_connected"))
                    curve.append((round(time.monotonic() - t0, 2), connected))
                    if connected >= nvrs * STREAMS:
                        connect_s = time.monotonic() - t0
                        break
                await asyncio.sleep(0.5)
            connect_wall = time.monotonic() - t0
            result["connect"] = {
                "all_connected": connect_s is not None,
                "seconds": None if connect_s is None else round(connect_s, 2),
                "connected_streams": connected,
                "bridge_cpu_s": round(cpu_seconds(bridge.pid), 2),
                "bridge_cpu_fraction": round(cpu_seconds(bridge.pid) / connect_wall, 3),
                "simulator_cpu_fraction": round(
                    (cpu_seconds(sim.pid) - sim_cpu0) / connect_wall, 3
                ),
                "broker_cpu_fraction": round(
                    (cpu_seconds(broker.process.pid) - broker_cpu0) / connect_wall,
                    3,  # type: ignore[union-attr]
                ),
                "logins": None if text is None else metric_sum(text, "nvr_bridge_nvr_logins_total"),
                "curve": curve[:: max(1, len(curve) // 40)] + curve[-1:],
            }
            # -- steady state ---------------------------------------------------------------
            await asyncio.sleep(5.0)
            before = await scrape(session, http_port) or ""
            cpu0 = {
                "bridge": cpu_seconds(bridge.pid),
                "simulator": cpu_seconds(sim.pid),
                "broker": cpu_seconds(broker.process.pid),  # type: ignore[union-attr]
            }
            w0 = time.monotonic()
            rss: list[float] = []
            sim_rss: list[float] = []
            while time.monotonic() - w0 < window:
                rss.append(rss_mb(bridge.pid))
                sim_rss.append(rss_mb(sim.pid))
                await asyncio.sleep(1.0)
            elapsed = time.monotonic() - w0
            cpu1 = {
                "bridge": cpu_seconds(bridge.pid),
                "simulator": cpu_seconds(sim.pid),
                "broker": cpu_seconds(broker.process.pid),  # type: ignore[union-attr]
            }
            after = await scrape(session, http_port) or ""
        status_rx = metric_sum_where(after, "nvr_bridge_messages_received_total", 'stream="status"')
        status_rx -= metric_sum_where(
            before, "nvr_bridge_messages_received_total", 'stream="status"'
        )
        published = metric_sum(after, "nvr_bridge_messages_published_total") - metric_sum(
            before, "nvr_bridge_messages_published_total"
        )
        still = int(metric_sum(after, "nvr_bridge_stream_connected"))
        reconnects = metric_sum(after, "nvr_bridge_stream_reconnects_total")
        result["steady"] = {
            "window_s": round(elapsed, 1),
            "bridge_cpu_fraction": round((cpu1["bridge"] - cpu0["bridge"]) / elapsed, 3),
            "simulator_cpu_fraction": round((cpu1["simulator"] - cpu0["simulator"]) / elapsed, 3),
            "broker_cpu_fraction": round((cpu1["broker"] - cpu0["broker"]) / elapsed, 3),
            "bridge_rss_mb_mean": round(sum(rss) / len(rss), 1),
            "bridge_rss_mb_max": round(max(rss), 1),
            "simulator_rss_mb_max": round(max(sim_rss), 1),
            "status_items_per_s": round(status_rx / elapsed, 1),
            "expected_status_items_per_s": nvrs * channels,
            "published_per_s": round(published / elapsed, 1),
            "streams_connected_at_end": still,
            "stream_reconnects_total": reconnects,
            "loadavg": os.getloadavg(),
        }
        steady, connect = result["steady"], result["connect"]
        result["targets"] = {
            "connected_within_60s": connect["seconds"] is not None
            and connect["seconds"] <= TARGET_CONNECT_S,
            "cpu_at_most_half_a_core": steady["bridge_cpu_fraction"] <= TARGET_CPU,
            "rss_at_most_500_mb": steady["bridge_rss_mb_max"] <= TARGET_RSS_MB,
        }
    finally:
        result["bridge_exit_code"] = stop(bridge)
        result["simulator_exit_code"] = stop(sim)
        broker.stop()
        if keep:
            result["work_dir"] = str(work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return result


def report(result: dict[str, Any]) -> str:
    c, s, t = result.get("connect", {}), result.get("steady", {}), result.get("targets", {})

    def yes(flag: bool | None) -> str:
        return "yes" if flag else "NO"

    rows = [
        ("figure", "bridge", "target", "met?"),
        (
            f"all {result['streams']:,} streams connected after",
            f"{c.get('seconds')} s" if c.get("seconds") is not None
            else f"not in 120 s ({c.get('connected_streams')} connected)",
            "<= 60 s",
            yes(t.get("connected_within_60s")),
        ),
        ("steady CPU, fraction of one core", f"{s.get('bridge_cpu_fraction')}", "<= 0.5",
         yes(t.get("cpu_at_most_half_a_core"))),
        ("steady RSS mean / max",
         f"{s.get('bridge_rss_mb_mean')} / {s.get('bridge_rss_mb_max')} MB",
         "<= 500 MB", yes(t.get("rss_at_most_500_mb"))),
    ]  # fmt: skip
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    lines = [f"fleet: {result['nvrs']} NVRs x {result['channels']} channels"]
    for index, row in enumerate(rows):
        lines.append(" | ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))
        if index == 0:
            lines.append("-+-".join("-" * w for w in widths))
    lines += [
        f"during connect: bridge {c.get('bridge_cpu_fraction')} of a core, simulator "
        f"{c.get('simulator_cpu_fraction')}, broker {c.get('broker_cpu_fraction')}; "
        f"logins {c.get('logins')}",
        f"steady: simulator {s.get('simulator_cpu_fraction')} of a core "
        f"(RSS {s.get('simulator_rss_mb_max')} MB), broker {s.get('broker_cpu_fraction')}; "
        f"status items received {s.get('status_items_per_s')}/s "
        f"(simulator sends {s.get('expected_status_items_per_s')}/s), "
        f"published {s.get('published_per_s')}/s; streams still connected "
        f"{s.get('streams_connected_at_end')}, reconnects {s.get('stream_reconnects_total')}; "
        f"load average {s.get('loadavg')}",
        f"simulator started {result['nvrs']} NVRs in {result.get('simulator_start_s')} s",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nvrs", type=int, nargs="+", default=[100], help="fleet size(s)")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--window", type=float, default=30.0, help="steady-state seconds")
    parser.add_argument("--json", default=None, help="write the raw figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    commit, fingerprint = source_revision(), source_fingerprint()
    print(f"bridge source: commit {str(commit)[:10]}, files {fingerprint}", flush=True)
    busy = machine_busy()
    print(f"other load before starting: {busy:.0%} of the machine's CPU", flush=True)
    if busy > 0.15:
        print("warning: the machine is busy: figures will be high and noisy", flush=True)
    started = time.monotonic()
    results = []
    for nvrs in args.nvrs:
        print(f"fleet of {nvrs} NVRs ...", flush=True)
        result = asyncio.run(fleet(nvrs, args.channels, args.window, args.keep))
        results.append(result)
        print(report(result), flush=True)
        print(flush=True)
    took = round(time.monotonic() - started, 1)
    print(f"took {took} s")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cpus": os.cpu_count(),
            "source_commit": commit,
            "source_fingerprint": fingerprint,
            "source_fingerprint_at_end": source_fingerprint(),
            "cpu_busy_before_start": round(busy, 3),
            "seconds": took,
            "runs": results,
        }
        path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        print(f"raw figures: {path}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
