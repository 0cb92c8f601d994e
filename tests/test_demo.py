"""`nvr-bridge demo` as a new user runs it: the banner's own commands work, and its broker
behaves like a real one (retained messages only for matching subscriptions, QoS 0
requests answered)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import shutil
import sys
import time
from collections.abc import AsyncIterator

import pytest

from tests.conftest import watch_port

pytestmark = pytest.mark.asyncio

CLIENTS = shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub")
needs_clients = pytest.mark.skipif(
    not CLIENTS, reason="needs mosquitto-clients (mosquitto_pub/mosquitto_sub)"
)


class Demo:
    """A running `nvr-bridge demo` subprocess and the lines it printed so far."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    async def line_matching(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """The first printed line matching ``pattern`` (waits for it)."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                match = compiled.search(line)
                if match:
                    return match
            await asyncio.sleep(0.05)  # polling the subprocess output, inside a deadline
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines))

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), 15)
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        return self.process.returncode or 0


@contextlib.asynccontextmanager
async def demo(*args: str) -> AsyncIterator[Demo]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "demo",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    running = Demo(process)
    try:
        yield running
    finally:
        await running.stop()


async def run(command: list[str], timeout: float = 15) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    return out.decode(errors="replace")


async def test_demo_shows_events_with_nothing_else_installed() -> None:
    """`nvr-bridge demo` runs the embedded broker, simulator and bridge and shows traffic."""
    async with demo("--duration", "6") as running:
        code = await asyncio.wait_for(running.process.wait(), 30)
        await running.stop()
    text = "\n".join(running.lines)
    assert code == 0, text
    assert "everfocus/bridge/state" in text
    assert "everfocus/demo/availability" in text
    assert "everfocus/demo/channel/" in text
    assert "mosquitto_sub -h 127.0.0.1" in text
    assert "Traceback" not in text


@needs_clients
async def test_the_banners_commands_work_on_the_embedded_broker() -> None:
    """The banner's 'watch it with' and 'try a command' lines, run as printed, work."""
    async with demo() as running:
        watch = (await running.line_matching(r"watch it with\s+(mosquitto_sub .*)$")).group(1)
        command = (await running.line_matching(r"try a command\s+(mosquitto_pub .*)$")).group(1)
        watch_args = shlex.split(watch)
        port = watch_args[watch_args.index("-p") + 1]
        # The watch command, as printed, shows the demo's traffic.
        seen = await run([*watch_args, "-C", "3", "-W", "10"])
        assert "everfocus/" in seen
        # The command, as printed (QoS 0), is answered on its response topic.
        async with watch_port(int(port), "everfocus/demo/response/#") as replies:
            await run(shlex.split(command))
            answers = await replies.wait_topic("everfocus/demo/response/buzzer")
        reply = answers[0].topic + " " + answers[0].text
    assert "everfocus/demo/response/buzzer" in reply
    assert '"status":"ok"' in reply
    assert '"transaction":"t1"' in reply


@needs_clients
async def test_the_embedded_broker_sends_retained_messages_only_to_matching_subscriptions() -> None:
    """A subscriber of a topic nothing was published to gets nothing, retained or not."""
    async with demo() as running:
        watch = (await running.line_matching(r"watch it with\s+(mosquitto_sub .*)$")).group(1)
        args = shlex.split(watch)
        port = args[args.index("-p") + 1]
        await running.line_matching(r"everfocus/demo/availability")
        sub = ["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-v"]
        nothing = await run([*sub, "-t", "nonexistent/topic", "-W", "2"])
        retained = await run([*sub, "-t", "everfocus/demo/availability", "-C", "1", "-W", "5"])
    assert "everfocus" not in nothing
    assert retained.strip() == "everfocus/demo/availability online"
