"""Drive a real Home Assistant core from tests: start, stop, restart, REST and websocket API.

Home Assistant runs in its own interpreter (scripts/install-home-assistant.sh installs it, with
its own Python, into .cache/home-assistant) as a subprocess of the test; the test side talks to
it over HTTP and the websocket API on 127.0.0.1 with aiohttp.

    python = home_assistant_python()          # skips, or fails under NVR_BRIDGE_REQUIRE_HA=1
    async with HomeAssistant(python, tmp_path / "ha") as ha:
        await ha.start("127.0.0.1", broker.port)
        await ha.wait_for(lambda: ha.state("binary_sensor.x"), what="binary_sensor.x")

``start`` writes a minimal configuration.yaml (core settings, ``http`` on 127.0.0.1 and a free
port, ``logger``; no ``default_config``), starts ``hass --skip-pip``, waits for the HTTP API,
onboards an owner user (``/api/onboarding/users``, then ``/auth/token``) and keeps a long-lived
access token in the config directory, waits for the state RUNNING, and adds the MQTT
integration for the given broker through its config flow over the REST API (the broker cannot
be set in YAML), with discovery on and the default prefix ``homeassistant``. The config flow is
used rather than a pre-written ``.storage/core.config_entries``: it is the interface the
frontend uses, checks the broker, and leaves the entry's format (versions, migrations, the
form's fields, which changed in 2026) to Home Assistant. ``start`` returns when that entry is
loaded (the client connected; discovery subscriptions follow within a second, and retained
discovery configs arrive whenever they do).

Before the first start the harness writes two small storage files, and nothing else there: the
network adapters (``lo`` only) and, where Home Assistant has it (2026.11+), a disabled
Marketplace entry; see ``_seed_storage``. With them Home Assistant sends nothing beyond
loopback. Since 2026.11 the ``http:`` YAML is imported once as a *pending* config that must be
promoted (``_confirm_http_config``); later starts then leave ``http:`` out of the YAML.

Everything lives in the config directory, so ``restart`` (and ``stop`` then ``start``, or a new
``HomeAssistant`` on the same directory) keeps the registries, the token and the port.

Home Assistant logs each launch to ``home-assistant.<n>.log`` in the config directory (its
stdout and stderr go to ``hass.<n>.out``); ``log_text`` joins the logs. The
``homeassistant.components.mqtt`` logger is at INFO (``mqtt_log_level``; DEBUG adds a line per
discovery and message), the rest at WARNING. Every start logs one WARNING of its own:
``Skipping pip installation of required modules. This may cause issues`` (``--skip-pip``:
nothing is installed at run time; the install script installs what the loaded integrations
require).

Home Assistant is killed by ``close`` (fixture teardown), at interpreter exit (atexit), and by
the kernel when the test process dies (``setpriv --pdeathsig``, util-linux), so no test leaves
one behind.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO_ROOT / ".cache" / "home-assistant"
DEFAULT_PYTHON = DEFAULT_CACHE / "venv" / "bin" / "python"
PYTHON_ENV = "NVR_BRIDGE_HA_PYTHON"
REQUIRE_ENV = "NVR_BRIDGE_REQUIRE_HA"

USERNAME = "nvr-bridge-test"
PASSWORD = "nvr-bridge-test-password"  # a throwaway owner of a throwaway instance
STATE_FILE = ".nvr-bridge-harness.json"
POLL = 0.05

# Process groups of every Home Assistant started here: killed when the interpreter exits, even
# if a test forgot (or failed before) its teardown.
_LIVE_GROUPS: set[int] = set()


@atexit.register
def _kill_leftovers() -> None:
    for group in list(_LIVE_GROUPS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    _LIVE_GROUPS.clear()


def home_assistant_python() -> Path:
    """The python of the Home Assistant venv; skips the test when there is none.

    ``NVR_BRIDGE_HA_PYTHON`` names it (or ``hass`` beside it); else the install script's default
    place. Under ``NVR_BRIDGE_REQUIRE_HA=1`` (CI) a missing install fails instead of skipping.
    """
    import pytest

    named = os.environ.get(PYTHON_ENV)
    candidate = Path(named) if named else DEFAULT_PYTHON
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    reason = (
        f"no Home Assistant at {candidate} ({PYTHON_ENV}="
        f"{named or 'unset'}); run scripts/install-home-assistant.sh"
    )
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)
    raise AssertionError(reason)  # not reached: pytest.skip raises


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class HomeAssistantError(AssertionError):
    """Home Assistant did not start, answer or behave as the harness expected."""


class HomeAssistant:
    """One Home Assistant instance in ``config_dir``, started as a subprocess on 127.0.0.1."""

    def __init__(
        self,
        python_or_hass: str | os.PathLike[str],
        config_dir: str | os.PathLike[str],
        port: int | None = None,
        *,
        start_timeout: float = 120.0,
        stop_timeout: float = 60.0,
        mqtt_log_level: str = "info",
    ) -> None:
        self.executable = Path(python_or_hass)
        self.config_dir = Path(config_dir)
        # A config directory keeps its port (Home Assistant 2026.11 keeps it in its storage).
        self.port = port or self._load_state().get("port") or free_port()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.mqtt_log_level = mqtt_log_level
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.broker: tuple[str, int] | None = None
        self.token: str | None = None
        self.launches = 0
        # Seconds each successful ``start`` took, from launch to the MQTT entry loaded.
        self.start_seconds: list[float] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._message_id = 0

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log_path(self) -> Path:
        """The log file of the current (or last) launch."""
        return self.config_dir / f"home-assistant.{self.launches}.log"

    async def start(self, broker_host: str = "127.0.0.1", broker_port: int = 1883) -> None:
        """Start Home Assistant and return once it runs with MQTT set up for this broker."""
        if self.running:
            raise HomeAssistantError("Home Assistant is already running")
        self.broker = (broker_host, broker_port)
        self.config_dir.mkdir(parents=True, exist_ok=True)
        saved = self._load_state()
        if saved.get("port", self.port) != self.port:
            raise HomeAssistantError(
                f"{self.config_dir} serves HTTP on port {saved['port']}, not {self.port}"
            )
        self.token = saved.get("token")
        self._write_configuration(http_in_yaml=not saved.get("http_in_storage"))
        self._seed_storage()
        launched = time.monotonic()
        deadline = launched + self.start_timeout
        self._launch()
        try:
            await self._wait_http(deadline)
            if self.token is None:
                await self._onboard()
            await self._wait_running(deadline)
            if "http_in_storage" not in saved:
                await self._confirm_http_config()
            await self._ensure_mqtt_entry(saved, deadline)
        except BaseException:
            await self.kill()
            raise
        self.start_seconds.append(round(time.monotonic() - launched, 2))

    async def stop(self) -> None:
        """SIGTERM, then wait for Home Assistant to shut down (SIGKILL after ``stop_timeout``)."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            while process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(POLL)
        await self.kill()

    async def kill(self) -> None:
        """SIGKILL Home Assistant and anything it started (its process group)."""
        process = self.process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(POLL)
        _LIVE_GROUPS.discard(process.pid)
        self.process = None

    async def restart(self) -> None:
        """Stop gracefully and start again in the same config directory (state survives)."""
        if self.broker is None:
            raise HomeAssistantError("restart() before start()")
        await self.stop()
        await self.start(*self.broker)

    async def close(self) -> None:
        """Kill Home Assistant if it runs and close the HTTP session."""
        await self.kill()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> HomeAssistant:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- REST ------------------------------------------------------------------------------------

    async def request(
        self, method: str, path: str, payload: Any = None, *, expect: tuple[int, ...] = (200, 201)
    ) -> Any:
        """One authenticated REST call; the decoded JSON answer (or text)."""
        session = self._http()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with session.request(
            method, self.base_url + path, json=payload, headers=headers
        ) as response:
            body = await response.text()
            if response.status not in expect:
                raise HomeAssistantError(f"{method} {path}: HTTP {response.status}: {body[:500]}")
            if response.content_type == "application/json":
                return json.loads(body)
            return body

    async def states(self) -> list[dict[str, Any]]:
        return list(await self.request("GET", "/api/states"))

    async def state(self, entity_id: str) -> dict[str, Any] | None:
        """The entity's state object, or None while Home Assistant has no such entity."""
        answer = await self.request("GET", f"/api/states/{entity_id}", expect=(200, 404))
        return answer if isinstance(answer, dict) and "state" in answer else None

    async def call_service(
        self, domain: str, service: str, data: dict[str, Any] | None = None
    ) -> Any:
        return await self.request("POST", f"/api/services/{domain}/{service}", data or {})

    async def config_entries(self, domain: str | None = None) -> list[dict[str, Any]]:
        query = f"?domain={domain}" if domain else ""
        return list(await self.request("GET", f"/api/config/config_entries/entry{query}"))

    # --- websocket API ---------------------------------------------------------------------------

    async def ws(self, command: str, **payload: Any) -> Any:
        """One websocket API command on a fresh connection; its ``result``."""
        session = self._http()
        async with session.ws_connect(f"{self.base_url}/api/websocket") as socket_:
            hello = await socket_.receive_json()
            if hello.get("type") != "auth_required":
                raise HomeAssistantError(f"websocket: expected auth_required, got {hello}")
            await socket_.send_json({"type": "auth", "access_token": self.token})
            auth = await socket_.receive_json()
            if auth.get("type") != "auth_ok":
                raise HomeAssistantError(f"websocket: authentication failed: {auth}")
            self._message_id += 1
            await socket_.send_json({"id": self._message_id, "type": command, **payload})
            while True:
                answer = await socket_.receive_json()
                if answer.get("id") == self._message_id and answer.get("type") == "result":
                    break
            if not answer.get("success"):
                raise HomeAssistantError(f"websocket {command}: {answer.get('error')}")
            return answer.get("result")

    async def entity_registry(self) -> list[dict[str, Any]]:
        return list(await self.ws("config/entity_registry/list"))

    async def device_registry(self) -> list[dict[str, Any]]:
        return list(await self.ws("config/device_registry/list"))

    async def registry_entry(self, unique_id: str, platform: str = "mqtt") -> dict[str, Any] | None:
        """The entity registry entry with this unique_id, or None."""
        for entry in await self.entity_registry():
            if entry.get("unique_id") == unique_id and entry.get("platform") == platform:
                return entry
        return None

    # --- logs and waiting ----------------------------------------------------------------------

    def log_text(self) -> str:
        """Home Assistant's log of every launch in this config directory, oldest first."""
        logs = sorted(
            self.config_dir.glob("home-assistant.*.log"),
            key=lambda path: int(path.stem.rsplit(".", 1)[-1]),
        )
        return "".join(path.read_text(errors="replace") for path in logs)

    def log_lines(self, *needles: str) -> list[str]:
        """The log lines that contain any of ``needles`` (case-sensitive)."""
        return [line for line in self.log_text().splitlines() if any(n in line for n in needles)]

    async def wait_for(
        self,
        predicate: Callable[[], Any],
        timeout: float = 30.0,
        what: str = "",
        interval: float = 0.1,
    ) -> Any:
        """Poll ``predicate`` (sync or async) until it returns something truthy; return that.

        Fails after ``timeout`` seconds, or at once if Home Assistant exits meanwhile.
        """
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            last = predicate()
            if inspect.isawaitable(last):
                last = await last
            if last:
                return last
            if self.process is not None and self.process.poll() is not None:
                raise HomeAssistantError(
                    f"Home Assistant exited ({self.process.returncode}) while waiting for "
                    f"{what or predicate}\n{self._log_tail()}"
                )
            if time.monotonic() >= deadline:
                raise HomeAssistantError(
                    f"timed out after {timeout} s waiting for {what or predicate}; "
                    f"last value: {last!r}\n{self._log_tail()}"
                )
            await asyncio.sleep(interval)  # polling, bounded by the deadline

    # --- internals -----------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self._session

    def _command(self) -> list[str]:
        if self.executable.name.startswith("python"):
            command = [str(self.executable), "-m", "homeassistant"]
        else:
            command = [str(self.executable)]
        # setpriv (util-linux): the kernel SIGKILLs Home Assistant when the test process dies,
        # which covers what no teardown or atexit hook sees (pytest itself killed).
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            command = [setpriv, "--pdeathsig", "KILL", "--", *command]
        return [
            *command,
            "--config",
            str(self.config_dir),
            "--skip-pip",
            "--log-no-color",
            "--log-file",
            str(self.log_path),
        ]

    def _environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        bin_dir = self.executable.parent  # the venv's bin: ffmpeg, hass
        environment["PATH"] = f"{bin_dir}{os.pathsep}{environment.get('PATH', '')}"
        native = bin_dir.parent / "lib" / "native"  # libturbojpeg, for the camera integration
        if native.is_dir():
            environment["LD_LIBRARY_PATH"] = str(native)
        else:
            environment.pop("LD_LIBRARY_PATH", None)
        environment.pop("PYTHONPATH", None)
        environment.pop("PYTHONHOME", None)
        environment.pop("VIRTUAL_ENV", None)
        environment["PYTHONUNBUFFERED"] = "1"
        return environment

    def _launch(self) -> None:
        self.launches = 1 + max(
            (int(p.stem.rsplit(".", 1)[-1]) for p in self.config_dir.glob("home-assistant.*.log")),
            default=0,
        )
        output = self.config_dir / f"hass.{self.launches}.out"
        with output.open("wb") as sink:
            self.process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=self._environment(),
                cwd=self.config_dir,
                start_new_session=True,  # its own process group: kill() takes its children too
            )
        _LIVE_GROUPS.add(self.process.pid)

    def _write_configuration(self, *, http_in_yaml: bool) -> None:
        http = (
            f"http:\n  server_host: 127.0.0.1\n  server_port: {self.port}\n" if http_in_yaml else ""
        )
        (self.config_dir / "configuration.yaml").write_text(
            "# Written by tests/ha/harness.py: the least Home Assistant needs for the tests.\n"
            "homeassistant:\n"
            "  name: nvr-bridge test\n"
            "  latitude: 52.52\n"
            "  longitude: 13.40\n"
            "  elevation: 34\n"
            "  unit_system: metric\n"
            "  time_zone: UTC\n"
            "  country: DE\n"
            "  currency: EUR\n"
            "  language: en\n"
            f"{http}"
            "logger:\n"
            "  default: warning\n"
            "  logs:\n"
            f"    homeassistant.components.mqtt: {self.mqtt_log_level}\n"
        )

    async def _confirm_http_config(self) -> None:
        """Make the ``http:`` YAML of the first start the stored HTTP config, where HA has one.

        Since 2026.11 Home Assistant imports ``http:`` from YAML once, as a *pending* config that
        it reverts (to port 8123 on every interface) and restarts unless it is promoted within
        five minutes, and ignores the YAML afterwards. Older releases have no such store (the
        command is unknown) and read the YAML at every start.
        """
        try:
            config = await self.ws("http/config")
        except HomeAssistantError as error:
            if "unknown_command" not in str(error) and "Unknown command" not in str(error):
                raise
            self._save_state(http_in_storage=False, port=self.port)
            return
        if config.get("pending") is not None:
            await self.ws("http/config/promote")
        stable = (await self.ws("http/config"))["stable"]
        if stable.get("server_port") != self.port or stable.get("server_host") != ["127.0.0.1"]:
            raise HomeAssistantError(f"Home Assistant's stored HTTP config is {stable}")
        self._save_state(http_in_storage=True, port=self.port)

    def _seed_storage(self) -> None:
        """Before the first start: keep Home Assistant off every network but loopback.

        Two settings Home Assistant reads from ``.storage`` at startup, before its API answers:

        - ``core.network``: the enabled network adapters, ``lo`` alone (Settings > System >
          Network). Otherwise the zeroconf instance behind HA's HTTP client sessions (analytics
          makes one at setup) joins the mDNS multicast group on every other interface.
        - ``core.config_entries``: a Marketplace entry disabled by the user (Home Assistant
          2026.11 and later). Otherwise the Marketplace creates its entry itself and fetches its
          catalog from the Internet at every start.

        Nothing is written into a config directory Home Assistant has already started in.
        """
        storage = self.config_dir / ".storage"
        if storage.exists():
            return
        storage.mkdir()
        (storage / "core.network").write_text(
            json.dumps(
                {
                    "version": 1,
                    "minor_version": 1,
                    "key": "core.network",
                    "data": {"configured_adapters": ["lo"]},
                }
            )
        )
        if self._has_component("marketplace"):
            now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
            marketplace = {
                "created_at": now,
                "data": {},
                "disabled_by": "user",
                "discovery_keys": {},
                "domain": "marketplace",
                "entry_id": uuid.uuid4().hex[:26].upper(),
                "minor_version": 1,
                "modified_at": now,
                "options": {},
                "pref_disable_new_entities": False,
                "pref_disable_polling": False,
                "source": "system",
                "subentries": [],
                "title": "",
                "unique_id": None,
                "version": 1,
            }
            (storage / "core.config_entries").write_text(
                json.dumps(
                    {
                        "version": 1,
                        "minor_version": 5,
                        "key": "core.config_entries",
                        "data": {"entries": [marketplace]},
                    }
                )
            )

    def _has_component(self, domain: str) -> bool:
        """Whether the Home Assistant of this venv ships the integration ``domain``."""
        venv = self.executable.parent.parent
        return any(
            venv.glob(f"lib/python3*/site-packages/homeassistant/components/{domain}/manifest.json")
        )

    def _load_state(self) -> dict[str, Any]:
        path = self.config_dir / STATE_FILE
        if path.exists():
            return dict(json.loads(path.read_text()))
        return {}

    def _save_state(self, **values: Any) -> None:
        state = self._load_state()
        state.update(values)
        (self.config_dir / STATE_FILE).write_text(json.dumps(state))

    def _log_tail(self, lines: int = 40) -> str:
        text = self.log_text()
        output = self.config_dir / f"hass.{self.launches}.out"
        if not text.strip() and output.exists():
            text = output.read_text(errors="replace")
        return "--- Home Assistant log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    async def _wait_http(self, deadline: float) -> None:
        """Until the HTTP server answers (``/api/onboarding`` needs no token, logs nothing)."""
        session = self._http()

        async def answers() -> bool:
            try:
                async with session.get(
                    self.base_url + "/api/onboarding", timeout=aiohttp.ClientTimeout(total=2)
                ) as response:
                    return response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        await self.wait_for(answers, deadline - time.monotonic(), f"HTTP on {self.base_url}", POLL)

    async def _onboard(self) -> None:
        """Create the owner user, log in, and keep a long-lived access token."""
        session = self._http()
        client_id = self.base_url + "/"
        async with session.get(self.base_url + "/api/onboarding") as response:
            steps = {step["step"]: step["done"] for step in await response.json()}
        if steps.get("user"):
            raise HomeAssistantError(
                f"{self.config_dir} is onboarded but has no {STATE_FILE} with a token"
            )
        async with session.post(
            self.base_url + "/api/onboarding/users",
            json={
                "client_id": client_id,
                "name": "nvr-bridge test",
                "username": USERNAME,
                "password": PASSWORD,
                "language": "en",
            },
        ) as response:
            if response.status != 200:
                raise HomeAssistantError(
                    f"onboarding: HTTP {response.status}: {await response.text()}"
                )
            auth_code = (await response.json())["auth_code"]
        async with session.post(
            self.base_url + "/auth/token",
            data={"grant_type": "authorization_code", "code": auth_code, "client_id": client_id},
        ) as response:
            if response.status != 200:
                raise HomeAssistantError(
                    f"/auth/token: HTTP {response.status}: {await response.text()}"
                )
            self.token = (await response.json())["access_token"]
        # The access token lasts 30 minutes; a long-lived one survives restarts.
        self.token = str(
            await self.ws(
                "auth/long_lived_access_token", client_name="nvr-bridge tests", lifespan=3650
            )
        )
        self._save_state(token=self.token)

    async def _wait_running(self, deadline: float) -> None:
        async def running() -> bool:
            config = await self.request("GET", "/api/config")
            return config.get("state") == "RUNNING"

        await self.wait_for(running, deadline - time.monotonic(), "state RUNNING", POLL)

    async def _ensure_mqtt_entry(self, saved: dict[str, Any], deadline: float) -> None:
        """The MQTT config entry for ``self.broker``, made by the config flow when missing."""
        assert self.broker is not None
        entries = await self.config_entries("mqtt")
        if entries and saved.get("broker") != list(self.broker):
            for entry in entries:  # made for another broker: replace it
                await self.request(
                    "DELETE", f"/api/config/config_entries/entry/{entry['entry_id']}"
                )
            entries = []
        if not entries:
            host, port = self.broker
            result = await self.request(
                "POST",
                "/api/config/config_entries/flow",
                {"handler": "mqtt", "show_advanced_options": False},
            )
            for _ in range(5):  # the broker form, then whatever Home Assistant asks next
                if result.get("type") != "form":
                    break
                if result.get("errors"):
                    raise HomeAssistantError(f"MQTT config flow: {result}")
                answer = _fill_form(result["data_schema"], {"broker": host, "port": port})
                result = await self.request(
                    "POST", f"/api/config/config_entries/flow/{result['flow_id']}", answer
                )
            if result.get("type") != "create_entry":
                raise HomeAssistantError(f"MQTT config flow did not create an entry: {result}")
            self._save_state(broker=list(self.broker))

        async def loaded() -> bool:
            states = [entry.get("state") for entry in await self.config_entries("mqtt")]
            if any(
                state in ("setup_error", "migration_error", "failed_unload") for state in states
            ):
                raise HomeAssistantError(f"MQTT config entry: {states}\n{self._log_tail()}")
            return states == ["loaded"]

        await self.wait_for(loaded, deadline - time.monotonic(), "MQTT entry loaded", POLL)


def _fill_form(schema: list[dict[str, Any]], values: dict[str, Any]) -> dict[str, Any]:
    """An answer to a data-entry form: ``values``, defaults, and the least for required fields.

    Works from the serialized schema, so new optional fields, defaults and collapsed sections
    (``expandable``, as MQTT's "other_settings" since 2026) need no change here.
    """
    answer: dict[str, Any] = {}
    for field in schema:
        name = field["name"]
        selector = field.get("selector") or {}
        if field.get("type") == "expandable":
            answer[name] = _fill_form(field["schema"], values)
        elif name in values:
            answer[name] = values[name]
        elif "default" in field:
            answer[name] = field["default"]
        elif field.get("required") and "boolean" in selector:
            answer[name] = False
        elif field.get("required") and "select" in selector:
            first = selector["select"]["options"][0]
            answer[name] = first["value"] if isinstance(first, dict) else first
        elif field.get("required"):
            raise HomeAssistantError(f"no value for the required form field {field}")
    return answer


async def wait_until(
    predicate: Callable[[], Awaitable[Any] | Any], timeout: float = 30.0, what: str = ""
) -> Any:
    """``HomeAssistant.wait_for`` without an instance (no exit check)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(0.1)  # polling, bounded by the deadline
