"""A new user's first hour: the version, help that names the fix, diagnostics that do not
mislead, and a broker that keeps no trace of an NVR removed from the configuration."""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from bridge import __version__
from bridge.cli import build_parser
from bridge.config import COMMAND_NAMES, MqttConfig
from bridge.sim import SimulatedNvr
from tests.conftest import (
    all_streams_connected,
    eventually,
    free_port,
    make_config,
    metric_value,
    nvr_config,
    watch,
)

pytestmark = pytest.mark.asyncio


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


async def test_the_version_is_everywhere(broker, base_topic, sim, start_bridge):
    """--version, the start-up line, nvr_bridge_build_info and the retained bridge/info."""
    done = run_cli("--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"nvr-bridge {__version__}")
    with capture_logs() as logs:
        running = await start_bridge(make_config(broker, base_topic, [nvr_config(sim)]))
        await running.wait_online()
        await eventually(lambda: running.bridge.link.depth == 0, what="everything confirmed")
    async with watch(broker, f"{base_topic}/bridge/info") as w:  # a late subscriber
        (info,) = await w.wait_topic(f"{base_topic}/bridge/info")
    assert any(e.get("event") == "bridge starting" and e.get("version") for e in logs)
    assert metric_value(running.bridge, "nvr_bridge_build_info", version=__version__) == 1
    payload = info.json()
    assert info.retain
    assert payload["version"] == __version__
    assert payload["nvrs"] == ["nvr1"]
    assert payload["commands"] == sorted(COMMAND_NAMES)
    assert payload["protocol"] in ("5", "3.1.1")
    assert payload["shard"] is None
    assert payload["timestamp"].endswith("Z")


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (group,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(group.choices)


@pytest.mark.parametrize("command", ["run", "check-config", "simulate", "demo", "discover"])
async def test_every_option_has_help_and_its_default(command: str):
    """Each option of each command says what it does, and its default when it has one."""
    sub = _subcommands()[command]
    assert sub.description, command
    for action in sub._actions:
        assert action.help, (command, action.dest)
    text = run_cli(command, "--help").stdout
    for action in sub._actions:
        default = action.default
        if default not in (None, False, argparse.SUPPRESS) and action.dest != "help":
            assert f"(default: {default})" in " ".join(text.split()), (command, action.dest)
    if command in ("run", "check-config"):
        assert "docs/configuration.md" in " ".join(text.split())


async def test_a_port_that_is_not_mqtt_is_named_as_such(base_topic, sim, start_bridge):
    """An HTTP server where the broker should be: 'answered, but not in MQTT', the URL."""

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"mqtt://127.0.0.1:{port}"
    try:
        with capture_logs() as logs:
            config = make_config(
                None,  # type: ignore[arg-type]
                base_topic,
                [nvr_config(sim)],
                mqtt=MqttConfig(url=url, client_id=f"c-{base_topic}", protocol="5"),
            )
            await start_bridge(config)
            await eventually(
                lambda: [e for e in logs if e.get("event") == "mqtt connect failed"],
                what="a connect failure",
            )
        (first, *_) = [e for e in logs if e.get("event") == "mqtt connect failed"]
        assert "answered, but not in MQTT" in first["error"]
        assert url in first["error"]
        assert "BRIDGE_MQTT_URL" in first["hint"]
        assert "code 32" not in first["error"]
    finally:
        server.close()


async def test_a_wrong_nvr_password_is_one_line_and_named_by_readyz(
    broker, base_topic, start_bridge
):
    """A refused login: one error line however many streams wait, and /readyz names it."""
    async with SimulatedNvr(password="right") as sim:
        config = make_config(
            broker, base_topic, [nvr_config(sim, password=_secret("wrong"))], backoff_max=0.2
        )
        with capture_logs(processors=[merge_contextvars]) as logs:
            running = await start_bridge(config)
            await eventually(lambda: sim.login_attempts >= 5, what="several login attempts")
        errors = [e for e in logs if e.get("log_level") == "error"]
        assert [e["event"] for e in errors] == ["login refused"]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{running.bridge.http.port}/readyz") as answer,
        ):
            body = await answer.json()
        assert answer.status == 503
        (reason,) = [r for r in body["reasons"] if r.startswith("nvr nvr1")]
        assert "refused the login" in reason


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


async def test_a_per_nvr_command_list_is_named_in_the_refusal(
    broker, base_topic, sim, start_bridge
):
    """A command left out of an NVR's own 'commands' list: the refusal names that list."""
    nvr = nvr_config(sim, commands=("buzzer",))
    async with watch(broker, f"{base_topic}/nvr1/response/#") as w:
        running = await start_bridge(make_config(broker, base_topic, [nvr]))
        await running.wait_online()
        await w.publish(f"{base_topic}/nvr1/request/snapshot", b'{"channel": 1}', qos=1)
        (answer,) = await w.wait_topic(f"{base_topic}/nvr1/response/snapshot")
    error = answer.json()["error"]
    assert "the 'commands' list of NVR 'nvr1' in the configuration file" in error
    assert "BRIDGE_COMMANDS" not in error


async def test_an_nvr_removed_from_the_configuration_leaves_no_retained_topic(
    broker, base_topic, start_bridge
):
    """The next start without it clears its availability, status and event states."""
    async with SimulatedNvr() as gate, SimulatedNvr() as yard:
        first = await start_bridge(
            make_config(broker, base_topic, [nvr_config(gate, "gate"), nvr_config(yard, "yard")])
        )
        await first.wait_online()
        await all_streams_connected(gate)
        await gate.push("event", {"ChannelID": 1, "Type": "Motion", "State": "active"})
        async with watch(broker, f"{base_topic}/gate/#") as w:
            await w.wait_topic(f"{base_topic}/gate/channel/1/event/Motion/state")
            await w.wait_topic(f"{base_topic}/gate/channel/1/status")
        await first.stop()
        second = await start_bridge(make_config(broker, base_topic, [nvr_config(yard, "yard")]))
        await second.wait_online()

        async def retained_of_gate() -> set[str]:
            async with watch(broker, f"{base_topic}/gate/#") as late:
                # Retained messages come right after the subscription; give them a moment,
                # bounded, by waiting for a marker published after subscribing.
                marker = f"{base_topic}/gate-marker-{time.monotonic_ns()}"
                await late.client.subscribe(marker, qos=1)
                await late.publish(marker, b"x", qos=1)
                await late.wait_for(lambda: late.on(marker), what="the marker")
                return {m.topic for m in late.messages if m.retain and m.payload}

        async with asyncio.timeout(20):
            while await retained_of_gate():
                await asyncio.sleep(0.1)  # re-check until cleared, inside the deadline
        async with watch(broker, f"{base_topic}/yard/availability") as y:
            (online,) = await y.wait_topic(f"{base_topic}/yard/availability")
        assert online.text == "online"


async def test_a_busy_http_port_is_one_start_error_line(tmp_path):
    """The metrics port taken: 'start error:' naming the address and the fix, exit 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "BRIDGE_NVR_URL": "http://127.0.0.1:1",
            "BRIDGE_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",
            "BRIDGE_HTTP_HOST": "127.0.0.1",
            "BRIDGE_HTTP_PORT": str(port),
            "PATH": "/usr/bin:/bin",
        }
        done = await asyncio.to_thread(run_cli, "run", env=env)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        f"start error: cannot serve /metrics, /healthz and /readyz on 127.0.0.1:{port}"
    )
    assert "BRIDGE_HTTP_PORT" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout
