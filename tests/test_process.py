"""The bridge as users run it: ``python -m bridge`` processes, signals, exit codes, output."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from bridge.sim import SimulatedNvr
from tests.conftest import POLL_INTERVAL, all_streams_connected, eventually, free_port, watch

pytestmark = pytest.mark.asyncio

SECRET = "s3cr3t-Pa55word!"


def bridge_env(broker_url: str, nvr_url: str, base_topic: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        {
            "BRIDGE_NVR_URL": nvr_url,
            "BRIDGE_NVR_USERNAME": "admin",
            "BRIDGE_NVR_PASSWORD": SECRET,
            "BRIDGE_NVR_ID": "nvr1",
            "BRIDGE_MQTT_URL": broker_url,
            "BRIDGE_MQTT_CLIENT_ID": f"proc-{base_topic}",
            "BRIDGE_BASE_TOPIC": base_topic,
            "BRIDGE_HTTP_PORT": str(free_port()),
            "BRIDGE_BACKOFF_INITIAL": "0.05",
            "BRIDGE_BACKOFF_MAX": "0.5",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def start_process(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", *(args or ("run",))],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"process still running after {timeout} s")
        await asyncio.sleep(POLL_INTERVAL)  # inside a deadline
    return process.returncode


async def test_sigterm_shuts_down_cleanly_within_5_seconds(broker, base_topic):
    """SIGTERM: offline published, sockets closed, exit 0 within 5 s; JSON logs on stdout."""
    async with SimulatedNvr(password=SECRET) as sim, watch(broker, f"{base_topic}/#") as w:
        process = start_process(bridge_env(broker.url, sim.url, base_topic))
        try:
            await w.wait_for(
                lambda: (
                    [m.text for m in w.on(f"{base_topic}/nvr1/availability")][-1:] == ["online"]
                ),
                timeout=20,
                what="online",
            )
            await all_streams_connected(sim)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = await wait_exit(process, 5)
            elapsed = time.monotonic() - started
        finally:
            if process.poll() is None:
                process.kill()
        await w.wait_for(
            lambda: [m.text for m in w.on(f"{base_topic}/bridge/state")][-1:] == ["offline"],
            what="bridge offline",
        )
        await eventually(lambda: sim.clients("event") == 0, what="websockets closed")
    assert code == 0
    assert elapsed < 5
    assert w.on(f"{base_topic}/nvr1/availability")[-1].text == "offline"
    output = process.stdout.read().decode() if process.stdout else ""
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, "the bridge logged nothing"
    for line in lines:
        record = orjson.loads(line)
        assert "event" in record and "level" in record and "timestamp" in record
    assert any(orjson.loads(line).get("stream") for line in lines)
    assert SECRET not in output


async def test_last_will_marks_the_bridge_offline_when_killed(broker, base_topic):
    """SIGKILL leaves no chance to say goodbye: the broker publishes the Last Will."""
    async with (
        SimulatedNvr(password=SECRET) as sim,
        watch(broker, f"{base_topic}/bridge/state") as w,
    ):
        process = start_process(bridge_env(broker.url, sim.url, base_topic))
        try:
            await w.wait_for(lambda: [m.text for m in w.messages][-1:] == ["online"], timeout=20)
            process.kill()
            process.wait(5)
            await w.wait_for(lambda: [m.text for m in w.messages][-1:] == ["offline"], timeout=10)
        finally:
            if process.poll() is None:
                process.kill()


async def test_check_config_masks_secrets_and_reports_problems(tmp_path: Path):
    """check-config prints the config with secrets masked; bad values exit 2, a line each."""
    env = bridge_env(
        "mqtts://broker:8883", "http://10.0.0.5", "everfocus", BRIDGE_MQTT_PASSWORD=SECRET
    )
    good = subprocess.run(
        [sys.executable, "-m", "bridge", "check-config"],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert good.returncode == 0, good.stderr.decode()
    assert SECRET not in good.stdout.decode() + good.stderr.decode()
    assert "**********" in good.stdout.decode()
    config = tmp_path / "bridge.yaml"
    config.write_text(
        "nvrs:\n"
        "  - {id: 'bad/id', url: 'http://10.0.0.1'}\n"
        "  - {id: twin, url: 'ftp://10.0.0.2'}\n"
        "  - {id: twin, url: 'http://10.0.0.3', pasword: x}\n"
        "commands: [buzzer, self_destruct]\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    bad = subprocess.run(
        [sys.executable, "-m", "bridge", "--config", str(config), "check-config"],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode == 2
    errors = bad.stderr.decode().strip().splitlines()
    text = "\n".join(errors)
    assert "nvrs[0].id" in text and "bad/id" in text
    assert "nvrs[1].url" in text and "ftp://" in text
    assert "nvrs[2].pasword" in text
    assert "self_destruct" in text
    assert all(line.startswith("config error: ") for line in errors)


async def test_refused_login_logs_one_clear_line_without_the_password(broker, base_topic):
    """A wrong password: a clear 'login refused' line, never the password, no crash."""
    async with SimulatedNvr(password="the-right-one") as sim:
        process = start_process(bridge_env(broker.url, sim.url, base_topic))
        try:
            await eventually(lambda: sim.login_attempts >= 2, timeout=20, what="login retries")
        finally:
            process.send_signal(signal.SIGTERM)
            code = await wait_exit(process, 5)
    output = process.stdout.read().decode() if process.stdout else ""
    assert code == 0
    assert SECRET not in output
    refusals = [orjson.loads(line) for line in output.splitlines() if '"login refused"' in line]
    assert refusals
    assert refusals[0]["level"] == "error"
    assert refusals[0]["username"] == "admin"
    assert "reason" in refusals[0]


async def test_config_option_works_before_and_after_the_command(tmp_path: Path):
    """`nvr-bridge --config F check-config` and `nvr-bridge check-config --config F` agree."""
    config = tmp_path / "bridge.yaml"
    config.write_text("nvrs:\n  - {id: lobby, url: 'http://10.0.0.9'}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    outputs = []
    for args in (
        ["--config", str(config), "check-config"],
        ["check-config", "--config", str(config)],
    ):
        run = subprocess.run(
            [sys.executable, "-m", "bridge", *args],
            env=env,
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert run.returncode == 0, run.stderr.decode()
        outputs.append(run.stdout.decode())
    assert outputs[0] == outputs[1]
    assert "lobby" in outputs[0]


async def test_the_run_process_freezes_startup_objects_and_collects_young_ones_less_often() -> None:
    import gc

    from bridge.cli import GC_THRESHOLDS, _tune_gc

    before = gc.get_threshold()
    try:
        _tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
