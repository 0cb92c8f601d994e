"""The bridge as a first-class Home Assistant integration, proven in a real Home Assistant core.

Real parts only, all on 127.0.0.1: a private mosquitto (no persistence, so a restart loses
every retained message), a simulated NVR (four cameras, PTZ on channels 1 and 2, input pins
1-4 and output pins 5-8, snapshots; no generated traffic: the tests push the events), the
bridge as users run it (``python -m bridge run`` with ``BRIDGE_*`` variables, discovery on,
Motion snapshots, a fast pin poll) and Home Assistant with its MQTT integration on that
broker (``tests/ha/harness.py``). Everything is checked through Home Assistant itself: its
entity and device registries, its state machine (a websocket records every state change of
the module), service calls, its websocket API (device triggers) and its log. CONTRACT.md
sections 7 and 8.

One Home Assistant, broker, simulator and bridge serve the whole module; the tests run in
the order of the file and each leaves the world as the next expects it (the lifecycle tests
last). The module skips when Home Assistant is not installed (scripts/install-home-assistant.sh)
and fails instead under ``NVR_BRIDGE_REQUIRE_HA=1``; ``NVR_BRIDGE_HA_PYTHON`` picks another
install (e.g. the ``NVR_BRIDGE_HA_FLAVOR=trixie`` one).

What happened is written to ``ha-real*/record.json`` in pytest's temporary directory (and
the path printed): the Home Assistant version and Python, its install and start times, every
entity with its states through the test, and the lines of its log that matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
import pytest_asyncio

from bridge.sim import SimulatedNvr
from bridge.sim.device import ALARM_IN_PINS, ALARM_OUT_PINS
from bridge.sim.ptz import DEFAULT_PTZ_CHANNELS, PRESET_NAMES
from tests.conftest import BrokerProcess, Watcher, free_port, watch
from tests.ha.harness import HomeAssistant, home_assistant_python

pytestmark = pytest.mark.asyncio(loop_scope="module")

NVR = "nvr1"
PREFIX = "homeassistant"  # Home Assistant's discovery prefix (the harness's and the bridge's)
CHANNELS = (1, 2, 3, 4)
PTZ_CHANNELS = tuple(DEFAULT_PTZ_CHANNELS)
UNAVAILABLE = "unavailable"
# Home Assistant's words when it rejects a discovery config or frowns upon a key in it
# (notes/ha-mqtt-discovery.md); the last is 2026.2's warning for `object_id`.
REJECTIONS = (
    "when processing MQTT discovery message",
    "Invalid config",
    "deprecated",
    "Unable to parse origin",
    "does not generate unique IDs",
    "Invalid option",
    "uses the deprecated option `object_id`",
)
# Home Assistant's words when a template of a config does not fit what the bridge publishes.
TEMPLATE_PROBLEMS = ("Template variable warning", "Template variable error", "TemplateError")
# How long Home Assistant may take to show what the bridge published (it batches
# subscriptions and discovery; its own MQTT reconnect runs every 10 s).
SETTLE = 30.0
# The bridge says this when Home Assistant's birth message made it publish every config.
BIRTH_LINE = "home assistant is online, publishing discovery again"


# --- what section 8 promises -------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """One entity of CONTRACT section 8 as Home Assistant must show it."""

    key: str  # this test's name for it
    domain: str
    name: str | None  # the entity's own name (has_entity_name); None: the device's name
    channel: int | None  # the camera device it belongs to; None: the NVR's device
    category: str | None = None
    device_class: str | None = None


def expected_entities(sim: SimulatedNvr) -> list[Expected]:
    """Every entity the bridge owes Home Assistant for this simulator."""
    found: list[Expected] = []
    for ch in CHANNELS:
        found += [
            Expected(f"ch{ch}_motion", "binary_sensor", "Motion", ch, None, "motion"),
            Expected(f"ch{ch}_input_alarm", "binary_sensor", "Input alarm", ch),
            Expected(
                f"ch{ch}_online", "binary_sensor", "Connected", ch, "diagnostic", "connectivity"
            ),
            Expected(f"ch{ch}_recording", "binary_sensor", "Recording", ch, "diagnostic"),
            Expected(f"ch{ch}_manual_alarm", "switch", "Manual alarm", ch),
            Expected(f"ch{ch}_manual_record", "switch", "Manual recording", ch),
            Expected(f"ch{ch}_camera", "camera", None, ch),
            Expected(f"ch{ch}_take_snapshot", "button", "Take snapshot", ch),
        ]
        if ch in PTZ_CHANNELS:
            found.append(Expected(f"ch{ch}_ptz_preset", "select", "PTZ preset", ch))
    found += [Expected(f"input_{p}", "binary_sensor", f"Input {p}", None) for p in ALARM_IN_PINS]
    found += [Expected(f"output_{p}", "switch", f"Output {p}", None) for p in ALARM_OUT_PINS]
    found += [
        Expected(f"disk_{disk['slot']}", "sensor", f"Disk {disk['slot']}", None, "diagnostic")
        for disk in sim.storage.disks()
    ]
    found += [
        Expected("buzzer", "button", "Buzzer", None),
        Expected("firmware", "sensor", "Firmware", None, "diagnostic"),
        Expected("connection", "binary_sensor", "Connection", None, "diagnostic", "connectivity"),
    ]
    return found


# --- the bridge as a subprocess ----------------------------------------------------------------


class BridgeProcess:
    """``python -m bridge run`` with a fixed environment; each run logs to its own file."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.runs = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"bridge.{self.runs}.log"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.runs += 1
        env = {**self.env, "BRIDGE_HTTP_PORT": str(free_port())}
        with self.log_path.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    async def wait_exit(self, timeout: float) -> int:
        process = self.process
        assert process is not None
        deadline = time.monotonic() + timeout
        while process.poll() is None:
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"the bridge still runs {timeout} s after SIGTERM")
            await asyncio.sleep(0.05)  # polling a subprocess, bounded by the deadline
        return process.returncode

    async def terminate(self, timeout: float = 10.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await self.wait_exit(timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                await self.terminate()
            except AssertionError:
                self.kill()

    def log_text(self) -> str:
        return "".join(
            (self.log_dir / f"bridge.{n}.log").read_text(errors="replace")
            for n in range(1, self.runs + 1)
            if (self.log_dir / f"bridge.{n}.log").exists()
        )


# --- Home Assistant's websocket: every state change, and trigger subscriptions -----------------


class HaEvents:
    """One websocket to Home Assistant that records every ``state_changed`` of the module.

    Also carries ``subscribe_trigger`` subscriptions (``fired[id]``). Detached before Home
    Assistant stops and attached again after it started.
    """

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.changes: list[tuple[float, str, str | None]] = []  # (seconds, entity_id, state)
        self.fired: dict[int, list[dict[str, Any]]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._id = 0
        self._states_id: int | None = None

    async def attach(self, ha: HomeAssistant) -> None:
        self._session = aiohttp.ClientSession()
        self._socket = await self._session.ws_connect(f"{ha.base_url}/api/websocket")
        hello = await self._socket.receive_json()
        assert hello["type"] == "auth_required", hello
        await self._socket.send_json({"type": "auth", "access_token": ha.token})
        auth = await self._socket.receive_json()
        assert auth["type"] == "auth_ok", auth
        self._reader = asyncio.create_task(self._read(), name="ha-events")
        self._states_id = await self.command(
            {"type": "subscribe_events", "event_type": "state_changed"}
        )

    async def detach(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._session is not None:
            await self._session.close()
        self._socket = self._reader = self._session = None

    async def command(self, message: dict[str, Any]) -> int:
        """Send one command; its id once Home Assistant answered it with success."""
        assert self._socket is not None
        self._id += 1
        future = asyncio.get_running_loop().create_future()
        self._pending[self._id] = future
        await self._socket.send_json({"id": self._id, **message})
        async with asyncio.timeout(10):
            answer = await future
        if not answer.get("success"):
            raise AssertionError(f"websocket {message['type']}: {answer.get('error')}")
        return self._id

    async def _read(self) -> None:
        assert self._socket is not None
        async for message in self._socket:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = message.json()
            for item in data if isinstance(data, list) else [data]:
                self._take(item)

    def _take(self, item: dict[str, Any]) -> None:
        if item.get("type") == "result":
            future = self._pending.pop(item.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(item)
        elif item.get("type") == "event" and item.get("id") == self._states_id:
            data = item["event"]["data"]
            new = data.get("new_state")
            self.changes.append(
                (
                    round(time.monotonic() - self.t0, 3),
                    data["entity_id"],
                    new["state"] if new else None,
                )
            )
        elif item.get("type") == "event":
            self.fired.setdefault(item["id"], []).append(item["event"])

    def history(self, entity_id: str, since: float = 0.0) -> list[str | None]:
        """The states ``entity_id`` went through since ``since`` (seconds of the module)."""
        return [s for t, e, s in self.changes if e == entity_id and t >= since]

    def timeline(self, entity_id: str) -> list[tuple[float, str | None]]:
        """(seconds of the module, state) of every change of ``entity_id``."""
        return [(t, s) for t, e, s in self.changes if e == entity_id]

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 3)


# --- the world of the module -------------------------------------------------------------------


@dataclass
class World:
    tmp: Path
    broker: BrokerProcess
    sim: SimulatedNvr
    ha: HomeAssistant
    events: HaEvents
    bridge: BridgeProcess
    base: str
    http: aiohttp.ClientSession
    expected: dict[str, Expected]
    entity_ids: dict[str, str] = field(default_factory=dict)  # key -> entity_id
    device_ids: dict[int | None, str] = field(default_factory=dict)  # channel -> device id
    phases: dict[str, dict[str, str]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def eid(self, key: str) -> str:
        return self.entity_ids[key]

    def topic(self, rest: str) -> str:
        return f"{self.base}/{NVR}/{rest}"

    async def states(self) -> dict[str, str]:
        """The state of every expected entity found so far (absent ones left out)."""
        wanted = set(self.entity_ids.values())
        return {
            s["entity_id"]: s["state"] for s in await self.ha.states() if s["entity_id"] in wanted
        }

    async def state(self, key: str) -> dict[str, Any]:
        found = await self.ha.state(self.eid(key))
        assert found is not None, f"{self.eid(key)} is not in Home Assistant's state machine"
        return found

    async def snapshot(self, phase: str) -> dict[str, str]:
        """Record (and return) every entity's state at this point of the module."""
        states = await self.states()
        self.phases[phase] = states
        return states

    async def settle(
        self,
        want: Callable[[dict[str, str]], dict[str, Any]],
        what: str,
        timeout: float = SETTLE,
    ) -> dict[str, str]:
        """Wait until ``want(states)`` names no entity in the wrong state; the states then.

        ``want`` returns {entity_id: (state, expected)} for the entities not as expected.
        """
        deadline = time.monotonic() + timeout
        wrong: dict[str, Any] = {}
        while True:
            states = await self.states()
            wrong = want(states)
            if not wrong:
                return states
            if not self.ha.running:
                raise AssertionError(f"Home Assistant exited while waiting for {what}")
            if time.monotonic() > deadline:
                shown = dict(sorted(wrong.items())[:20])
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; {len(wrong)} entities "
                    f"not as expected (state, wanted): {shown}"
                )
            await asyncio.sleep(0.1)  # polling Home Assistant, bounded by the deadline

    async def settle_like(self, before: dict[str, str], what: str, timeout: float = SETTLE) -> None:
        """Wait until every entity is back in the state it had in ``before``."""

        def wrong(states: dict[str, str]) -> dict[str, Any]:
            return {e: (states.get(e), want) for e, want in before.items() if states.get(e) != want}

        await self.settle(wrong, what, timeout)

    async def settle_unavailable(self, what: str, keep: dict[str, str] | None = None) -> None:
        """Wait until every entity is unavailable (but those in ``keep``, in their state)."""
        keep = keep or {}

        def wrong(states: dict[str, str]) -> dict[str, Any]:
            out = {}
            for entity_id in self.entity_ids.values():
                want = keep.get(entity_id, UNAVAILABLE)
                if states.get(entity_id) != want:
                    out[entity_id] = (states.get(entity_id), want)
            return out

        await self.settle(wrong, what)

    async def until(self, predicate: Callable[[], Any], what: str, timeout: float = SETTLE) -> Any:
        return await self.ha.wait_for(predicate, timeout=timeout, what=what)

    async def is_state(self, key: str, value: str) -> bool:
        found = await self.ha.state(self.eid(key))
        return found is not None and found["state"] == value

    async def camera_image(self, key: str) -> bytes | None:
        """``GET /api/camera_proxy/<entity>``: the image Home Assistant serves, or None."""
        async with self.http.get(
            f"{self.ha.base_url}/api/camera_proxy/{self.eid(key)}",
            headers={"Authorization": f"Bearer {self.ha.token}"},
        ) as response:
            if response.status != 200:
                return None
            assert response.content_type == "image/jpeg", response.content_type
            return await response.read()

    async def shows_image(self, key: str, image: bytes | None, timeout: float = 10.0) -> bool:
        """Whether Home Assistant's camera serves ``image`` within ``timeout`` seconds."""

        async def shown() -> bool:
            return await self.camera_image(key) == image

        with contextlib.suppress(AssertionError):
            return bool(await self.until(shown, f"{key} showing its image", timeout))
        return False

    async def retained(self) -> dict[str, bytes]:
        """Every retained message on the broker under the bridge's base and HA's prefix.

        A marker published after subscribing comes after every retained message.
        """
        marker = f"{self.base}/test/marker/{uuid.uuid4().hex[:8]}"
        async with watch(self.broker, "#") as watcher:
            await watcher.publish(marker, b"marker", qos=1)
            await watcher.wait_topic(marker)
        return {
            m.topic: m.payload
            for m in watcher.messages
            if m.retain and m.payload and m.topic.startswith((f"{self.base}/", f"{PREFIX}/"))
        }

    async def publish(self, topic: str, payload: Any, *, retain: bool = False) -> None:
        """A plain MQTT client publishing one message, as another program would."""
        body = payload if isinstance(payload, str | bytes) else json.dumps(payload)
        async with aiomqtt.Client(
            "127.0.0.1", self.broker.port, identifier=f"ha-real-pub-{uuid.uuid4().hex[:8]}"
        ) as client:
            await client.publish(topic, body, qos=1, retain=retain)

    def rejections(self) -> list[str]:
        return self.ha.log_lines(*REJECTIONS)

    def template_problems(self) -> list[str]:
        return self.ha.log_lines(*TEMPLATE_PROBLEMS)

    async def fresh_ha(self, change: Callable[[], Awaitable[None]]) -> None:
        """Run ``change`` (a restart of Home Assistant) with the event websocket detached."""
        await self.events.detach()
        await change()
        await self.events.attach(self.ha)


def bridge_env(broker: BrokerProcess, sim: SimulatedNvr, base: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        {
            "BRIDGE_NVR_URL": sim.url,
            "BRIDGE_NVR_USERNAME": "admin",
            "BRIDGE_NVR_PASSWORD": "admin",
            "BRIDGE_NVR_ID": NVR,
            "BRIDGE_MQTT_URL": broker.url,
            "BRIDGE_MQTT_CLIENT_ID": f"ha-real-{base}",
            "BRIDGE_BASE_TOPIC": base,
            "BRIDGE_HA_DISCOVERY": "true",
            "BRIDGE_SNAPSHOT_EVENTS": "Motion",
            "BRIDGE_SNAPSHOT_MIN_INTERVAL": "0",
            "BRIDGE_PIN_POLL_INTERVAL": "0.5",
            "BRIDGE_BACKOFF_INITIAL": "0.05",
            "BRIDGE_BACKOFF_MAX": "0.5",
            "BRIDGE_LOG_LEVEL": "info",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def install_record(python: Path) -> dict[str, Any]:
    """What the install script left: its env file (version, Python) and when it finished."""
    venv = python.parent.parent
    record: dict[str, Any] = {"python_executable": str(python)}
    env_file = venv.parent / "env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            key, _, value = line.partition("=")
            record[key] = value
    stamp = venv / ".stamp"
    if stamp.exists():
        record["installed_at"] = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp.stat().st_mtime)
        )
    return record


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    python = home_assistant_python()  # skips the module (fails under NVR_BRIDGE_REQUIRE_HA=1)
    t0 = time.monotonic()
    tmp = tmp_path_factory.mktemp("ha-real")
    (tmp / "broker").mkdir()
    kind = "mosquitto" if shutil.which("mosquitto") else "embedded"
    broker = BrokerProcess(kind, free_port(), tmp / "broker")
    base = f"hareal{uuid.uuid4().hex[:6]}"
    record: dict[str, Any] = {"install": install_record(python), "broker": kind, "base": base}
    world: World | None = None
    async with contextlib.AsyncExitStack() as stack:
        broker.start()
        stack.callback(broker.stop)
        sim = await stack.enter_async_context(SimulatedNvr(channels=len(CHANNELS), traffic=False))
        ha = await stack.enter_async_context(HomeAssistant(python, tmp / "ha"))
        await ha.start("127.0.0.1", broker.port)
        config = await ha.request("GET", "/api/config")
        record["home_assistant"] = {
            "version": config["version"],
            "python": subprocess.run(
                [str(python), "-c", "import platform; print(platform.python_version())"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip(),
        }
        # Recording from before the bridge starts: every state an entity ever showed.
        events = HaEvents(t0)
        await events.attach(ha)
        stack.push_async_callback(events.detach)
        bridge = BridgeProcess(bridge_env(broker, sim, base), tmp)
        bridge.start()
        stack.push_async_callback(bridge.stop)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        world = World(
            tmp=tmp,
            broker=broker,
            sim=sim,
            ha=ha,
            events=events,
            bridge=bridge,
            base=base,
            http=http,
            expected={e.key: e for e in expected_entities(sim)},
        )
        try:
            yield world
        finally:
            _write_record(world, record, t0)


def _write_record(world: World, record: dict[str, Any], t0: float) -> None:
    ha = world.ha
    record["home_assistant"]["start_seconds"] = ha.start_seconds
    record["module_seconds"] = round(time.monotonic() - t0, 1)
    timelines: dict[str, list[Any]] = {}
    for when, entity_id, state in world.events.changes:
        timelines.setdefault(entity_id, []).append([when, state])
    record["entities"] = {
        key: {
            "entity_id": world.entity_ids.get(key),
            "domain": expected.domain,
            "name": expected.name,
            "device": "nvr" if expected.channel is None else f"camera {expected.channel}",
            "states": timelines.get(world.entity_ids.get(key, ""), []),
        }
        for key, expected in world.expected.items()
    }
    others = sorted(set(timelines) - set(world.entity_ids.values()))
    record["other_entities"] = {e: timelines[e] for e in others}
    record["phases"] = world.phases
    record["notes"] = world.notes
    record["ha_log_rejections"] = world.rejections()
    record["ha_log_template_problems"] = world.template_problems()
    record["ha_log_mqtt_warnings"] = [
        line
        for line in ha.log_text().splitlines()
        if "homeassistant.components.mqtt" in line and (" WARNING " in line or " ERROR " in line)
    ]
    record["logs"] = {"home_assistant": str(ha.config_dir), "bridge": str(world.tmp)}
    path = world.tmp / "record.json"
    path.write_text(json.dumps(record, indent=1, sort_keys=True))
    summary = {
        "home_assistant": record["home_assistant"],
        "module_seconds": record["module_seconds"],
    }
    print(f"\nHome Assistant run recorded in {path}: {json.dumps(summary)}")


# --- 0. Home Assistant is there --------------------------------------------------------------


async def test_home_assistant_is_installed() -> None:
    """Skips without an install; a failure (not a fixture error) under NVR_BRIDGE_REQUIRE_HA=1."""
    assert home_assistant_python().is_file()


# --- 1. every entity, on its device, none rejected ---------------------------------------------


async def _find_devices(world: World) -> dict[int | None, dict[str, Any]]:
    """The NVR's device (by its serial from getSystemInfo) and its cameras' (via_device)."""
    devices = await world.ha.device_registry()
    serial = world.sim.identity.serial
    nvr = [d for d in devices if d.get("serial_number") == serial]
    if len(nvr) != 1:
        return {}
    found: dict[int | None, dict[str, Any]] = {None: nvr[0]}
    names = world.sim.device.camera_names
    for device in devices:
        if device.get("via_device_id") == nvr[0]["id"]:
            for ch in CHANNELS:
                if device.get("name") == names[ch]:
                    found[ch] = device
    return found


async def test_every_entity_exists_on_its_device(world: World) -> None:
    ha, sim = world.ha, world.sim

    async def all_there() -> list[dict[str, Any]] | None:
        devices = await _find_devices(world)
        if len(devices) != 1 + len(CHANNELS):
            return None
        world.device_ids = {ch: d["id"] for ch, d in devices.items()}
        channel_of = {d: ch for ch, d in world.device_ids.items()}
        entries = [
            e
            for e in await ha.entity_registry()
            if e.get("platform") == "mqtt" and e.get("device_id") in channel_of
        ]
        keys = {(e.channel, e.domain, e.name): e.key for e in world.expected.values()}
        world.entity_ids = {}
        for entry in entries:
            key = keys.get(
                (
                    channel_of[entry["device_id"]],
                    entry["entity_id"].split(".")[0],
                    entry.get("original_name"),
                )
            )
            if key is not None:
                world.entity_ids[key] = entry["entity_id"]
        return entries if len(world.entity_ids) == len(world.expected) else None

    try:
        entries = await ha.wait_for(all_there, timeout=60, what="every entity of section 8")
    except AssertionError:
        missing = sorted(set(world.expected) - set(world.entity_ids))
        raise AssertionError(
            f"entities missing in Home Assistant: {missing}; rejections: {world.rejections()}"
        ) from None

    # Nothing more than section 8: no output switch for the input pins 1-4, no input sensor
    # for the outputs 5-8, no stray entity on the bridge's devices.
    extra = sorted(
        e["entity_id"] for e in entries if e["entity_id"] not in world.entity_ids.values()
    )
    assert extra == [], f"entities section 8 does not name: {extra}"

    # The devices: the NVR's identity from getSystemInfo, each camera under it.
    devices = {d["id"]: d for d in await ha.device_registry()}
    nvr = devices[world.device_ids[None]]
    identity = sim.identity
    assert (nvr["name"], nvr["manufacturer"], nvr["model"], nvr["sw_version"]) == (
        identity.name,
        "EverFocus",
        identity.model,
        identity.software_version,
    )
    assert nvr["via_device_id"] is None
    assert nvr["configuration_url"] == sim.url
    for ch in CHANNELS:
        camera = devices[world.device_ids[ch]]
        listed = identity.camera(ch, sim.device.camera_names[ch])  # its cameraList entry
        assert camera["via_device_id"] == nvr["id"]
        assert (camera["name"], camera["manufacturer"], camera["model"]) == (
            listed["DeviceName"],
            listed["Manufacturer"],
            listed["Model"],
        )
    # The pins are exactly those GetGPIOInfo reports for the NVR itself (its entry ch 0).
    own = next(entry for entry in sim.device.gpio_info() if entry["ch"] == 0)
    assert (tuple(own["alarmIn"]), tuple(own["alarmOut"])) == (ALARM_IN_PINS, ALARM_OUT_PINS)

    # Each entity: its domain, name, device and category; named without its device's name.
    by_id = {e["entity_id"]: e for e in entries}
    states = {s["entity_id"]: s for s in await ha.states()}
    for key, expected in world.expected.items():
        entry = by_id[world.eid(key)]
        # 2026.2 lists has_entity_name; 2026.11 lists the name part that comes first instead.
        assert entry.get("has_entity_name", True) is True, key
        assert entry.get("next_name_part", "device") == "device", key
        assert entry["entity_category"] == expected.category, key
        device = devices[world.device_ids[expected.channel]]
        friendly = states[world.eid(key)]["attributes"].get("friendly_name")
        assert friendly == " ".join(filter(None, (device["name"], expected.name))), key
        if expected.device_class is not None:
            attributes = states[world.eid(key)]["attributes"]
            assert attributes.get("device_class") == expected.device_class, key

    # The PTZ presets are the select's options, on the PTZ channels only.
    for ch in PTZ_CHANNELS:
        options = states[world.eid(f"ch{ch}_ptz_preset")]["attributes"]["options"]
        assert options == list(PRESET_NAMES[ch])

    # Available, with the NVR's state: never guessed, never stuck unknown. (Not listed: the
    # manual alarm switches, unknown until the NVR reports an alarm, for it has no query
    # for the state, section 7.4; the buttons, and the preset selects, which have no state.)
    await world.settle(
        lambda s: {e: s.get(e) for e in world.entity_ids.values() if s.get(e) == UNAVAILABLE},
        "every entity available",
    )
    want = {
        **{f"ch{ch}_{kind}": "off" for ch in CHANNELS for kind in ("motion", "input_alarm")},
        **{f"ch{ch}_online": "on" for ch in CHANNELS},
        **{f"ch{ch}_recording": "off" for ch in CHANNELS},
        **{f"ch{ch}_manual_record": "off" for ch in CHANNELS},
        **{f"ch{ch}_camera": "idle" for ch in CHANNELS},
        **{f"input_{p}": "off" for p in ALARM_IN_PINS},
        **{f"output_{p}": "off" for p in ALARM_OUT_PINS},
        **{f"disk_{d['slot']}": "active" for d in sim.storage.disks()},
        "firmware": identity.software_version,
        "connection": "on",
    }
    settled = await world.settle(
        lambda s: {
            world.eid(k): (s.get(world.eid(k)), v)
            for k, v in want.items()
            if s.get(world.eid(k)) != v
        },
        "the NVR's initial state in Home Assistant",
    )
    world.phases["discovered"] = settled
    # The disks' details are their attributes.
    for disk in sim.storage.disks():
        attributes = (await world.state(f"disk_{disk['slot']}"))["attributes"]
        assert attributes.get("serial") == disk["serial"]
    assert world.rejections() == []


async def test_no_device_trigger_before_an_event(world: World) -> None:
    """Device triggers come from traffic: camera 3 has shown nothing, so it has none."""
    triggers = await world.ha.ws("device_automation/trigger/list", device_id=world.device_ids[3])
    assert [t for t in triggers if t.get("domain") == "mqtt"] == []


# --- 2. motion, input alarm and the camera image -----------------------------------------------


async def test_motion_starts_off_and_follows_the_nvr(world: World) -> None:
    events, sim = world.events, world.sim
    # Before any event the bridge published a baseline "inactive" from the status stream:
    # once available, the sensor is "off". Home Assistant itself may show "unknown" for
    # the instant between the retained availability and the retained state (they come in
    # one subscription batch, availability first); it must never last.
    timelines = {ch: events.timeline(world.eid(f"ch{ch}_motion")) for ch in CHANNELS}
    world.notes["motion states before any event"] = timelines
    for ch, timeline in timelines.items():
        states = [state for _, state in timeline]
        assert states, f"camera {ch}: no state recorded"
        assert states[-1] == "off", (ch, timeline)
        assert "on" not in states, (ch, timeline)
        for (when, state), (after, _) in itertools.pairwise(timeline):
            if state == "unknown":
                assert after - when < 0.5, f"camera {ch} motion unknown for {after - when} s"
    motion = "ch2_motion"
    await sim.push("event", {"ChannelID": 2, "Type": "Motion", "State": "active"})
    await world.until(lambda: world.is_state(motion, "on"), "motion on")
    await sim.push("event", {"ChannelID": 2, "Type": "Motion", "State": "inactive"})
    await world.until(lambda: world.is_state(motion, "off"), "motion off")
    # The input alarm sensor follows the InputAlarm events the same way.
    await sim.push("event", {"ChannelID": 2, "Type": "InputAlarm", "State": "active"})
    await world.until(lambda: world.is_state("ch2_input_alarm", "on"), "input alarm on")
    await sim.push("event", {"ChannelID": 2, "Type": "InputAlarm", "State": "inactive"})
    await world.until(lambda: world.is_state("ch2_input_alarm", "off"), "input alarm off")


async def test_device_triggers_appear_once_seen_and_fire(world: World) -> None:
    ha, sim, events = world.ha, world.sim, world.events
    device_id = world.device_ids[3]

    async def motion_triggers() -> dict[str, dict[str, Any]] | None:
        found = await ha.ws("device_automation/trigger/list", device_id=device_id)
        mine = {t["subtype"]: t for t in found if t.get("domain") == "mqtt"}
        return mine if {"active", "inactive"} <= set(mine) else None

    await sim.push("event", {"ChannelID": 3, "Type": "Motion", "State": "active"})
    await sim.push("event", {"ChannelID": 3, "Type": "Motion", "State": "inactive"})
    triggers = await world.until(motion_triggers, "camera 3's Motion device triggers")
    assert {t["type"] for t in triggers.values()} == {"Motion"}
    assert all(t["device_id"] == device_id for t in triggers.values())
    # The trigger works: an automation's view of it (subscribe_trigger) fires on motion.
    trigger = {k: v for k, v in triggers["active"].items() if k != "metadata"}
    subscription = await events.command({"type": "subscribe_trigger", "trigger": trigger})
    # Home Assistant subscribes the trigger's topic a moment later (its subscribe debouncer):
    # motion again until the trigger fires, within a deadline.
    deadline = time.monotonic() + SETTLE
    while not events.fired.get(subscription):
        assert time.monotonic() < deadline, "the Motion trigger never fired"
        await sim.push("event", {"ChannelID": 3, "Type": "Motion", "State": "active"})
        with contextlib.suppress(AssertionError):
            await world.until(lambda: events.fired.get(subscription), "fired", timeout=1)
        await sim.push("event", {"ChannelID": 3, "Type": "Motion", "State": "inactive"})
    fired = events.fired[subscription][0]["variables"]["trigger"]
    assert fired["topic"] == world.topic("channel/3/event/Motion")
    assert json.loads(fired["payload"])["state"] == "active"
    await world.until(lambda: world.is_state("ch3_motion", "off"), "camera 3 motion off")
    # Matching a live event must not make Home Assistant complain about the trigger.
    assert world.template_problems() == []
    # Other cameras learned nothing from camera 3.
    other = await ha.ws("device_automation/trigger/list", device_id=world.device_ids[4])
    assert [t for t in other if t.get("domain") == "mqtt"] == []
    assert world.rejections() == []


async def _new_image(world: World, watcher: Watcher, topic: str, seen: int, what: str) -> bytes:
    """The next snapshot published on ``topic`` after ``seen`` of them, and that HA shows it."""
    images = await watcher.wait_topic(topic, seen + 1, timeout=15)
    image = images[-1].payload
    assert image[:2] == b"\xff\xd8"

    async def shown() -> bool:
        return await world.camera_image("ch1_camera") == image

    await world.until(shown, f"Home Assistant's camera shows {what}")
    return image


async def test_camera_shows_the_latest_snapshot(world: World) -> None:
    sim, ha = world.sim, world.ha
    topic = world.topic("channel/1/snapshot")
    async with watch(world.broker, topic) as watcher:
        seen = len(watcher.on(topic))  # a retained one, if camera 1 had one
        await sim.push("event", {"ChannelID": 1, "Type": "Motion", "State": "active"})
        motion_image = await _new_image(world, watcher, topic, seen, "the Motion snapshot")
        assert sim.calls_to("/device/getSnapshot")[-1].query == {"ChannelID": "1"}
        await sim.push("event", {"ChannelID": 1, "Type": "Motion", "State": "inactive"})
        # The take-snapshot button asks the NVR for a new one, which becomes the image.
        calls = len(sim.calls_to("/device/getSnapshot"))
        await ha.call_service("button", "press", {"entity_id": world.eid("ch1_take_snapshot")})
        button_image = await _new_image(world, watcher, topic, seen + 1, "the button's snapshot")
    assert button_image != motion_image
    assert [c.query for c in sim.calls_to("/device/getSnapshot")[calls:]] == [{"ChannelID": "1"}]
    world.notes["camera 1 image bytes"] = len(button_image)
    await world.until(lambda: world.is_state("ch1_motion", "off"), "camera 1 motion off")


# --- 3. commands reach the NVR; switches show the NVR's state ----------------------------------


async def test_manual_alarm_switch_is_on_only_once_the_nvr_confirmed(world: World) -> None:
    sim, ha, events = world.sim, world.ha, world.events
    switch = world.eid("ch1_manual_alarm")
    before = len(sim.calls_to("/record/manualAlarm"))
    # The NVR takes its time to answer: Home Assistant must not show "on" meanwhile.
    sim.set_fault("/record/manualAlarm", "slow", delay=2.0)
    try:
        started = events.now()
        await ha.call_service("switch", "turn_on", {"entity_id": switch})
        await world.until(
            lambda: len(sim.calls_to("/record/manualAlarm")) > before, "the NVR asked"
        )
        assert (await ha.state(switch))["state"] != "on"
        assert "on" not in events.history(switch, started)
    finally:
        sim.set_fault("/record/manualAlarm", None)
    await world.until(lambda: world.is_state("ch1_manual_alarm", "on"), "manual alarm on")
    assert sim.calls_to("/record/manualAlarm")[-1].body == {"channel": 1, "command": "start"}
    assert 1 in sim.device.manual_alarm
    assert "assumed_state" not in (await ha.state(switch))["attributes"]
    await ha.call_service("switch", "turn_off", {"entity_id": switch})
    await world.until(lambda: world.is_state("ch1_manual_alarm", "off"), "manual alarm off")
    assert sim.calls_to("/record/manualAlarm")[-1].body == {"channel": 1, "command": "stop"}
    assert 1 not in sim.device.manual_alarm


async def test_refused_manual_alarm_leaves_the_switch_off(world: World) -> None:
    sim, ha, events = world.sim, world.ha, world.events
    switch = world.eid("ch1_manual_alarm")
    assert (await ha.state(switch))["state"] == "off"
    before = len(sim.calls_to("/record/manualAlarm"))
    response = world.topic("response/manual_alarm")
    sim.set_fault("/record/manualAlarm", "http500")
    try:
        async with watch(world.broker, response) as watcher:
            started = events.now()
            await ha.call_service("switch", "turn_on", {"entity_id": switch})
            answers = await watcher.wait_topic(response, timeout=15)
    finally:
        sim.set_fault("/record/manualAlarm", None)
    assert answers[-1].json()["status"] == "error"
    assert sim.calls_to("/record/manualAlarm")[before:][0].body == {
        "channel": 1,
        "command": "start",
    }
    assert 1 not in sim.device.manual_alarm
    assert (await ha.state(switch))["state"] == "off"
    assert events.history(switch, started) == []


async def test_alarm_started_outside_home_assistant_shows_on(world: World) -> None:
    request = world.topic("request/manual_alarm")
    await world.publish(request, {"channel": 3, "command": "start"})
    await world.until(lambda: world.is_state("ch3_manual_alarm", "on"), "camera 3 alarm on")
    assert 3 in world.sim.device.manual_alarm
    await world.publish(request, {"channel": 3, "command": "stop"})
    await world.until(lambda: world.is_state("ch3_manual_alarm", "off"), "camera 3 alarm off")


async def test_manual_record_switch_follows_the_nvr(world: World) -> None:
    sim, ha = world.sim, world.ha
    switch = world.eid("ch4_manual_record")
    await ha.call_service("switch", "turn_on", {"entity_id": switch})
    await world.until(lambda: world.is_state("ch4_manual_record", "on"), "manual record on")
    assert sim.calls_to("/record/manualRecord")[-1].body == {"channel": 4, "command": "start"}
    await world.until(lambda: world.is_state("ch4_recording", "on"), "camera 4 recording")
    await ha.call_service("switch", "turn_off", {"entity_id": switch})
    await world.until(lambda: world.is_state("ch4_manual_record", "off"), "manual record off")
    await world.until(lambda: world.is_state("ch4_recording", "off"), "camera 4 not recording")


async def test_output_pin_switches_set_the_nvr_pins(world: World) -> None:
    sim, ha = world.sim, world.ha
    before = len(sim.calls_to("/dio/pinManualSetting"))
    for pin in ALARM_OUT_PINS:
        await ha.call_service("switch", "turn_on", {"entity_id": world.eid(f"output_{pin}")})
        await world.until(lambda p=pin: world.is_state(f"output_{p}", "on"), f"output {pin} on")
        assert sim.device.pins[pin] == 1
    bodies = [c.body for c in sim.calls_to("/dio/pinManualSetting")[before:]]
    assert bodies == [{"pinID": pin, "pinValue": 1} for pin in ALARM_OUT_PINS]
    for pin in ALARM_OUT_PINS:
        await ha.call_service("switch", "turn_off", {"entity_id": world.eid(f"output_{pin}")})
    await world.settle(
        lambda s: {
            world.eid(f"output_{p}"): s.get(world.eid(f"output_{p}"))
            for p in ALARM_OUT_PINS
            if s.get(world.eid(f"output_{p}")) != "off"
        },
        "every output off",
    )
    assert all(sim.device.pins[pin] == 0 for pin in ALARM_OUT_PINS)
    # The inputs follow the world's pins (polled).
    sim.set_input_pin(2, 1)
    await world.until(lambda: world.is_state("input_2", "on"), "input 2 on")
    sim.set_input_pin(2, 0)
    await world.until(lambda: world.is_state("input_2", "off"), "input 2 off")


def _gotos(sim: SimulatedNvr) -> list[Any]:
    """The NVR's goto_preset calls, oldest first."""
    return [
        c
        for c in sim.calls_to("/device/ptzControl")
        if isinstance(c.body, dict) and c.body.get("command") == "goto_preset"
    ]


async def test_preset_select_runs_goto_preset(world: World) -> None:
    sim, ha = world.sim, world.ha
    presets = sim.rest.ptz.channels[2].presets  # token -> name
    token = next(t for t, n in presets.items() if n == "Fence")
    before = len(_gotos(sim))
    await ha.call_service(
        "select", "select_option", {"entity_id": world.eid("ch2_ptz_preset"), "option": "Fence"}
    )
    await world.until(lambda: len(_gotos(sim)) > before, "a goto_preset call")
    call = _gotos(sim)[before]
    assert call.query == {"ChannelID": "2"}
    assert call.body == {"command": "goto_preset", "parameters": {"preset_token": token}}
    await world.until(lambda: sim.rest.ptz.channels[2].at_preset == token, "camera 2 moved")
    assert (await world.state("ch2_ptz_preset"))["state"] == "Fence"


async def test_preset_select_with_two_presets_of_one_name(world: World) -> None:
    """NVRs allow two presets of one name; the select must still reach the second."""
    sim, ha = world.sim, world.ha
    presets = world.topic("channel/1/ptz/presets")
    async with watch(world.broker, presets) as watcher:
        seen = len(watcher.on(presets))
        await world.publish(
            world.topic("request/ptz"),
            {"channel": 1, "command": "set_preset", "parameters": {"preset_name": "Entrance"}},
        )
        await watcher.wait_topic(presets, seen + 1, timeout=15)
    tokens = [t for t, n in sim.rest.ptz.channels[1].presets.items() if n == "Entrance"]
    assert len(tokens) == 2

    async def options() -> list[str] | None:
        found = (await world.state("ch1_ptz_preset"))["attributes"]["options"]
        return found if len(found) == 3 else None

    shown = await world.until(options, "the new preset among the select's options")
    second = shown[2]
    assert second != "Entrance"
    before = len(_gotos(sim))
    await ha.call_service(
        "select", "select_option", {"entity_id": world.eid("ch1_ptz_preset"), "option": second}
    )
    try:
        await world.until(
            lambda: len(_gotos(sim)) > before,
            f"a PTZ call for the option {second!r}",
            timeout=10,
        )
    except AssertionError:
        refused = [line for line in world.bridge.log_text().splitlines() if "refused" in line]
        raise AssertionError(
            f"choosing {second!r} made no PTZ call; the bridge logged: {refused[-1:]}"
        ) from None
    call = _gotos(sim)[before]
    assert call.query == {"ChannelID": "1"}
    assert call.body == {"command": "goto_preset", "parameters": {"preset_token": tokens[1]}}


async def test_buzzer_button_sounds_the_buzzer(world: World) -> None:
    sim, ha = world.sim, world.ha
    before = len(sim.calls_to("/system/callBuzzer"))
    await ha.call_service("button", "press", {"entity_id": world.eid("buzzer")})
    await world.until(lambda: len(sim.calls_to("/system/callBuzzer")) > before, "callBuzzer")
    call = sim.calls_to("/system/callBuzzer")[before]
    assert (call.method, call.query) == ("GET", {"timeout": "5"})
    assert sim.rest.buzzer_until > time.time()
    assert world.rejections() == []


# --- 4. lifecycle ------------------------------------------------------------------------------


async def test_sigterm_makes_everything_unavailable_and_a_restart_brings_it_back(
    world: World,
) -> None:
    """SIGTERM: the bridge publishes ``offline`` on bridge/state and the NVR's availability.

    Every entity requires bridge/state; the connection sensor requires only bridge/state
    (it must stay available while the NVR is down, to say so), so it too is unavailable.
    """
    before = await world.snapshot("before SIGTERM")
    assert UNAVAILABLE not in before.values()
    assert await world.bridge.terminate() == 0
    await world.settle_unavailable("every entity unavailable after SIGTERM")
    await world.snapshot("after SIGTERM")
    world.bridge.start()
    await world.settle_like(before, "every entity back, in its state, after a restart")


async def test_nvr_outage_leaves_only_the_connection_sensor_available(world: World) -> None:
    """The NVR unreachable while the bridge runs: the connection sensor says so (``off``)."""
    sim = world.sim
    before = await world.states()
    sim.login_mode = "error500"
    sim.expire_sessions()
    await sim.drop_websockets()
    try:
        await world.settle_unavailable(
            "every entity but the connection sensor unavailable",
            keep={world.eid("connection"): "off"},
        )
        await world.snapshot("NVR unreachable")
    finally:
        sim.login_mode = "ok"
    await world.settle_like(before, "every entity back once the NVR answers again")


async def test_sigkill_makes_everything_unavailable_through_the_last_will(world: World) -> None:
    before = await world.snapshot("before SIGKILL")
    world.bridge.kill()
    await world.settle_unavailable("every entity unavailable after SIGKILL (Last Will)")
    await world.snapshot("after SIGKILL")
    world.bridge.start()
    await world.settle_like(before, "every entity back, in its state, after SIGKILL")


async def test_home_assistant_restart_finds_everything_again(world: World) -> None:
    ha = world.ha
    before = await world.snapshot("before Home Assistant restart")
    registry = {e["unique_id"]: e["entity_id"] for e in await ha.entity_registry()}
    image = await world.camera_image("ch1_camera")
    await world.fresh_ha(ha.restart)
    await world.settle_like(before, "every entity, in its state, after Home Assistant restarted")
    assert {e["unique_id"]: e["entity_id"] for e in await ha.entity_registry()} == registry
    assert await world.shows_image("ch1_camera", image)
    assert world.rejections() == []


async def test_broker_restart_without_persistence_then_home_assistant_restart(
    world: World,
) -> None:
    """The broker forgets every retained message; the bridge publishes them all again."""
    ha, broker = world.ha, world.broker
    before = await world.snapshot("before broker restart")
    image = await world.camera_image("ch1_camera")
    assert image is not None
    births = world.bridge.log_text().count(BIRTH_LINE)
    retained = await world.retained()
    assert not broker.persistent
    broker.restart()
    # The bridge reconnects and republishes its retained topics; Home Assistant reconnects
    # (its loop retries every 10 s), sends its birth message and gets every config again.
    await world.settle_like(before, "every entity back after the broker restart", timeout=45)
    await world.until(
        lambda: world.bridge.log_text().count(BIRTH_LINE) > births,
        "the bridge republishing discovery on Home Assistant's birth message",
    )
    await world.settle_like(before, "every entity back once Home Assistant reconnected")
    # Every retained topic the broker had is there again (the bridge's run that published
    # it may be an earlier one: the bridge was restarted twice above).
    again = await world.retained()
    lost = sorted(set(retained) - set(again))
    world.notes["retained topics not republished after the broker restart"] = lost
    problems = [f"retained topics not republished after the broker restart: {lost}"] if lost else []
    await world.fresh_ha(ha.restart)
    try:
        await world.settle_like(before, "every entity, in its state, after broker and HA restarts")
    except AssertionError as error:
        problems.append(str(error))
    if not await world.shows_image("ch1_camera", image):
        shown = await world.camera_image("ch1_camera")
        problems.append(
            f"camera 1 shows {len(shown or b'')} bytes, not the last snapshot's {len(image)}"
        )
    await world.snapshot("after broker and Home Assistant restarts")
    assert problems == []


# --- 5. nothing rejected, in any launch --------------------------------------------------------


async def test_home_assistant_rejected_nothing(world: World) -> None:
    assert world.ha.launches == 3
    assert world.rejections() == []
    assert world.template_problems() == []
    triggers = await world.ha.ws("device_automation/trigger/list", device_id=world.device_ids[3])
    assert {t["subtype"] for t in triggers if t.get("domain") == "mqtt"} == {
        "active",
        "inactive",
    }
