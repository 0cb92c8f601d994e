"""Real TLS on both sides, with throwaway certificates, and secrets that never leak.

(a) mosquitto with a TLS listener (and one requiring a client certificate): the bridge
over ``mqtts://`` trusts a private CA, presents a client certificate, refuses a broker
signed by another CA, and accepts it only with ``verify_tls=False`` (with a warning).
(b) the simulated NVR over https/wss: the same three cases on the NVR side.
(c) a ``python -m bridge`` process reading both passwords from files: neither password
appears in anything it prints, in ``/metrics``, in ``check-config`` or on the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config import MqttConfig
from bridge.sim import SimulatedNvr
from tests.certs import TestPki, make_pki, readable_folder
from tests.conftest import (
    Watcher,
    all_streams_connected,
    eventually,
    free_port,
    make_config,
    metric_value,
    nvr_config,
    watch,
    watch_port,
)
from tests.test_faults import captured_logs, http_get, logged
from tests.test_process import bridge_env, wait_exit

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto"),
]


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki() -> Iterator[TestPki]:
    """A CA, a server cert (127.0.0.1, localhost), a client cert and an unrelated CA."""
    with readable_folder() as folder:
        yield make_pki(folder)


@contextlib.contextmanager
def mosquitto(folder: Path, settings: str) -> Iterator[int]:
    """A mosquitto on a free loopback port with ``settings`` for its listener; yields the port."""
    port = free_port()
    conf = folder / f"mosquitto-{port}.conf"
    conf.write_text(f"listener {port} 127.0.0.1\npersistence false\n{settings}")
    conf.chmod(0o644)
    log_file = folder / f"mosquitto-{port}.log"
    with log_file.open("wb") as output:
        process = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start: {log_file.read_text()}")
            time.sleep(0.02)  # a sync helper polling a subprocess's port, bounded by the deadline
        yield port
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def tls_listener(pki: TestPki, *, require_certificate: bool = False) -> str:
    return (
        "allow_anonymous true\n"
        f"cafile {pki.ca.cert}\ncertfile {pki.server.cert}\nkeyfile {pki.server.key}\n"
        f"require_certificate {'true' if require_certificate else 'false'}\n"
    )


@pytest.fixture
def tls_broker(pki: TestPki) -> Iterator[int]:
    """A TLS-only mosquitto with the test CA's server certificate; yields its port."""
    with mosquitto(pki.folder, tls_listener(pki)) as port:
        yield port


@pytest.fixture
def mtls_broker(pki: TestPki) -> Iterator[int]:
    """A TLS mosquitto that requires a client certificate signed by the test CA."""
    with mosquitto(pki.folder, tls_listener(pki, require_certificate=True)) as port:
        yield port


def tls_watch(
    port: int, topic_filter: str, context: ssl.SSLContext | None, **credentials: Any
) -> contextlib.AbstractAsyncContextManager[Watcher]:
    """Like conftest's ``watch``, over TLS (or with credentials) to one of these brokers."""
    return watch_port(port, topic_filter, v5=True, tls_context=context, **credentials)


def mqtts(port: int, **settings: Any) -> MqttConfig:
    return MqttConfig(
        url=f"mqtts://127.0.0.1:{port}", client_id=f"bridge-{uuid.uuid4().hex[:8]}", **settings
    )


async def assert_alive(running: Any) -> None:
    """Nothing crashed: the bridge task runs and /healthz says ok."""
    assert running.task is not None and not running.task.done()
    assert await http_get(running.bridge.http.port, "/healthz") == (200, {"status": "ok"})


async def publishes_over_tls(
    port: int, pki: TestPki, base_topic: str, sim: SimulatedNvr, **tls: Any
) -> None:
    """A TLS subscriber sees the bridge's retained state and a fresh event."""
    topic = f"{base_topic}/nvr1/channel/1/event/Motion"
    async with tls_watch(port, f"{base_topic}/#", pki.client_context(**tls)) as w:
        await w.wait_for(
            lambda: [m.text for m in w.on(f"{base_topic}/bridge/state")] == ["online"],
            what="bridge/state online",
        )
        await sim.push("event", {"ChannelID": 1, "Type": "Motion", "State": "once"})
        (event,) = await w.wait_topic(topic)
    assert event.json()["nvr"] == "nvr1"


# --- (a) the broker over TLS ----------------------------------------------------------------


async def test_bridge_connects_to_a_tls_broker_with_a_private_ca(
    tls_broker, pki, base_topic, sim, start_bridge
):
    """mqtts:// with ca_file: connected, and publishing what a TLS subscriber receives."""
    config = make_config(
        None, base_topic, [nvr_config(sim)], mqtt=mqtts(tls_broker, ca_file=str(pki.ca.cert))
    )
    with captured_logs() as logs:
        running = await start_bridge(config)
        await running.wait_online()
    assert metric_value(running.bridge, "nvr_bridge_mqtt_connected") == 1
    assert not logged(logs, "tls verification disabled")
    (connected,) = logged(logs, "mqtt connected")
    assert connected["url"] == f"mqtts://127.0.0.1:{tls_broker}"
    await publishes_over_tls(tls_broker, pki, base_topic, sim)


async def test_bridge_presents_its_client_certificate_when_the_broker_requires_one(
    mtls_broker, pki, base_topic, sim, start_bridge
):
    """require_certificate: the bridge with cert_file and key_file connects and publishes."""
    # The broker really does turn away a client without a certificate.
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", mtls_broker, ssl=pki.client_context()
    )
    try:
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
            async with asyncio.timeout(5):
                await reader.read(1)
    finally:
        writer.close()
    certified = mqtts(
        mtls_broker,
        ca_file=str(pki.ca.cert),
        cert_file=str(pki.client.cert),
        key_file=str(pki.client.key),
    )
    running = await start_bridge(make_config(None, base_topic, [nvr_config(sim)], mqtt=certified))
    await running.wait_online()
    assert metric_value(running.bridge, "nvr_bridge_mqtt_connected") == 1
    await publishes_over_tls(mtls_broker, pki, base_topic, sim, with_client_cert=True)


async def test_a_broker_signed_by_another_ca_is_refused_with_a_ca_hint(
    tls_broker, pki, base_topic, sim, start_bridge
):
    """Wrong CA: never connected, 'mqtt connect failed' naming the CA setting, no crash."""
    config = make_config(
        None, base_topic, [nvr_config(sim)], mqtt=mqtts(tls_broker, ca_file=str(pki.other_ca.cert))
    )
    with captured_logs() as logs:
        running = await start_bridge(config)
        failures = await eventually(
            lambda: (
                len(logged(logs, "mqtt connect failed")) >= 3
                and logged(logs, "mqtt connect failed")
            ),
            what="three refused connection attempts",
        )
        await assert_alive(running)
        assert metric_value(running.bridge, "nvr_bridge_mqtt_connected") == 0
        status, body = await http_get(running.bridge.http.port, "/readyz")
    assert not logged(logs, "mqtt connected")
    first = failures[0]
    assert first["log_level"] == "warning"
    assert first["url"] == f"mqtts://127.0.0.1:{tls_broker}"
    assert "certificate verify failed" in first["error"].lower()
    assert "BRIDGE_MQTT_CA_FILE" in first["hint"]
    assert status == 503
    assert f"mqtt broker mqtts://127.0.0.1:{tls_broker} not connected" in body["reasons"]
    # It shuts down cleanly although it never reached the broker.
    await asyncio.wait_for(running.stop(), 10)


async def test_verify_tls_false_accepts_any_broker_certificate_with_a_warning(
    tls_broker, pki, base_topic, sim, start_bridge
):
    """verify_tls=False: the wrong-CA broker is accepted, and the start logs a warning."""
    config = make_config(
        None,
        base_topic,
        [nvr_config(sim)],
        mqtt=mqtts(tls_broker, ca_file=str(pki.other_ca.cert), verify_tls=False),
    )
    with captured_logs() as logs:
        running = await start_bridge(config)
        await running.wait_online()
    (warning,) = logged(logs, "tls verification disabled")
    assert warning["log_level"] == "warning"
    assert warning["peer"] == "mqtt broker"
    assert warning["url"] == f"mqtts://127.0.0.1:{tls_broker}"
    assert logs.index(warning) < logs.index(logged(logs, "mqtt connected")[0])
    assert metric_value(running.bridge, "nvr_bridge_mqtt_connected") == 1
    await publishes_over_tls(tls_broker, pki, base_topic, sim)


# --- (b) the NVR over https and wss ---------------------------------------------------------


@pytest.fixture
async def tls_sim(pki: TestPki) -> AsyncIterator[SimulatedNvr]:
    """A simulated NVR on https/wss with the test CA's server certificate."""
    async with SimulatedNvr(channels=4, ssl_context=pki.server_context()) as nvr:
        yield nvr


async def test_bridge_logs_in_and_streams_over_https_and_wss(
    broker, pki, base_topic, tls_sim, start_bridge
):
    """https:// with ca_file: login over https, five streams over wss, events published."""
    assert tls_sim.url.startswith("https://127.0.0.1:")
    config = make_config(broker, base_topic, [nvr_config(tls_sim, ca_file=str(pki.ca.cert))])
    with captured_logs() as logs:
        running = await start_bridge(config)
        await running.wait_online()
        await all_streams_connected(tls_sim)
    assert tls_sim.logins == 1
    assert not logged(logs, "tls verification disabled")
    assert not logged(logs, "login failed")
    async with watch(broker, f"{base_topic}/nvr1/channel/2/event/#") as w:
        await tls_sim.push("event", {"ChannelID": 2, "Type": "Motion", "State": "once"})
        (event,) = await w.wait_topic(f"{base_topic}/nvr1/channel/2/event/Motion")
    assert event.json()["channel"] == 2


async def test_an_nvr_signed_by_another_ca_is_never_trusted(
    broker, pki, base_topic, tls_sim, start_bridge
):
    """Wrong CA for the NVR: a clear 'login failed' naming the certificate; never online."""
    config = make_config(broker, base_topic, [nvr_config(tls_sim, ca_file=str(pki.other_ca.cert))])
    with captured_logs() as logs:
        running = await start_bridge(config)
        failures = await eventually(
            lambda: len(logged(logs, "login failed")) >= 3 and logged(logs, "login failed"),
            what="three failed logins",
        )
        await assert_alive(running)
        assert not running.bridge.nvrs["nvr1"].online
    first = failures[0]
    assert first["log_level"] == "warning"
    assert first["url"] == tls_sim.url
    assert "certificate verify failed" in first["reason"].lower()
    # The TLS handshake failed: no HTTP request ever reached the NVR.
    assert tls_sim.login_attempts == 0
    assert tls_sim.calls == []
    assert all(tls_sim.clients(s) == 0 for s in ("event", "meta", "exception", "status", "message"))
    assert metric_value(running.bridge, "nvr_bridge_nvr_online", nvr="nvr1") == 0
    await asyncio.wait_for(running.stop(), 10)


async def test_verify_tls_false_accepts_the_nvr_with_a_warning(
    broker, pki, base_topic, tls_sim, start_bridge
):
    """verify_tls=False on the NVR: online over wss despite the unknown CA, with a warning."""
    config = make_config(
        broker, base_topic, [nvr_config(tls_sim, ca_file=str(pki.other_ca.cert), verify_tls=False)]
    )
    with captured_logs() as logs:
        running = await start_bridge(config)
        await running.wait_online()
    (warning,) = logged(logs, "tls verification disabled")
    assert warning["log_level"] == "warning"
    assert (warning["peer"], warning["nvr"], warning["url"]) == ("nvr", "nvr1", tls_sim.url)
    assert tls_sim.logins == 1


# --- (c) secrets from files never leak ------------------------------------------------------


async def test_passwords_from_files_reach_online_and_never_leak(base_topic, tmp_path):
    """Passwords read from files log in to both sides; none appears in any output."""
    nvr_secret = f"nvr-Pa55-{uuid.uuid4().hex}"
    mqtt_secret = f"mqtt-Pa55-{uuid.uuid4().hex}"
    with readable_folder() as folder:
        passwd = folder / "passwd"
        subprocess.run(
            ["mosquitto_passwd", "-b", "-c", str(passwd), "bridge", mqtt_secret],
            check=True,
            capture_output=True,
            timeout=10,
        )
        passwd.chmod(0o644)
        nvr_file, mqtt_file = tmp_path / "nvr-password", tmp_path / "mqtt-password"
        # Trailing whitespace, as a Kubernetes secret or an editor leaves it, is stripped.
        nvr_file.write_text(nvr_secret + "\n")
        mqtt_file.write_text(mqtt_secret + " \n")
        settings = f"allow_anonymous false\npassword_file {passwd}\n"
        with mosquitto(folder, settings) as port:
            async with SimulatedNvr(password=nvr_secret) as sim:
                outputs = await run_bridge_with_password_files(
                    port, sim, base_topic, nvr_file, mqtt_file, mqtt_secret, tmp_path
                )
    for where, text in outputs.items():
        assert text, f"{where} is empty"
        for secret in (nvr_secret, mqtt_secret):
            assert secret not in text, f"a password leaked into {where}"


async def run_bridge_with_password_files(
    port: int,
    sim: SimulatedNvr,
    base_topic: str,
    nvr_file: Path,
    mqtt_file: Path,
    mqtt_secret: str,
    tmp_path: Path,
) -> dict[str, str]:
    """Run the bridge process until online; return everything it said, by where it said it."""
    env = bridge_env(
        f"mqtt://127.0.0.1:{port}",
        sim.url,
        base_topic,
        BRIDGE_NVR_PASSWORD_FILE=str(nvr_file),
        BRIDGE_MQTT_USERNAME="bridge",
        BRIDGE_MQTT_PASSWORD_FILE=str(mqtt_file),
        BRIDGE_LOG_LEVEL="debug",
    )
    del env["BRIDGE_NVR_PASSWORD"]
    http_port = int(env["BRIDGE_HTTP_PORT"])
    output_file = tmp_path / "bridge-output.txt"
    credentials = {"username": "bridge", "password": mqtt_secret}
    async with tls_watch(port, f"{base_topic}/#", None, **credentials) as w:
        with output_file.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run"],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            await w.wait_for(
                lambda: (
                    [m.text for m in w.on(f"{base_topic}/nvr1/availability")][-1:] == ["online"]
                ),
                timeout=20,
                what="nvr1 online",
            )
            await w.wait_topic(f"{base_topic}/nvr1/info")
            await all_streams_connected(sim)
            ready = await http_get(http_port, "/readyz")
            metrics = await http_get(http_port, "/metrics")
            process.send_signal(signal.SIGTERM)
            code = await wait_exit(process, 10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(5)
    assert ready == (200, {"ready": True})
    assert code == 0
    assert sim.logins == 1
    check = subprocess.run(
        [sys.executable, "-m", "bridge", "check-config"],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stderr.decode()
    check_output = check.stdout.decode() + check.stderr.decode()
    assert check_output.count("**********") == 2  # both passwords, masked
    assert str(nvr_file) in check_output and str(mqtt_file) in check_output
    printed = output_file.read_text()
    assert '"logged in"' in printed and '"mqtt connected"' in printed
    broker_payloads = "\n".join(
        f"{m.topic} {m.payload.decode(errors='replace')}" for m in w.messages
    )
    return {
        "the process output": printed,
        "/metrics": metrics[1],
        "check-config": check_output,
        "the MQTT messages": broker_payloads,
        "the environment given": "\n".join(
            f"{k}={v}" for k, v in env.items() if k.startswith("BRIDGE_")
        ),
    }
