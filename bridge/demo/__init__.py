"""``nvr-bridge demo``: broker, simulated NVR, bridge and a live view in one process.

Nothing else needs installing: the embedded broker (``bridge.demo.broker``, MQTT 3.1.1
and 5, on the bridge's own codec) takes port 1883 when it is free. The live view
(``bridge.demo.view``) subscribes to everything under the base topic and prints each
message as it flows; images show as ``<jpeg 14,213 bytes>``, never as raw bytes. This
package is for the demo only: the container image leaves it out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Literal

from pydantic import SecretStr

from bridge.app import Bridge
from bridge.config import BridgeConfig, MqttConfig, NvrConfig
from bridge.demo.broker import EmbeddedBroker, start_embedded_broker
from bridge.demo.view import LiveView
from bridge.observability import configure_logging

__all__ = ["EmbeddedBroker", "LiveView", "port_if_free", "run_demo", "start_embedded_broker"]

DEMO_NVR = "demo"
BASE = "everfocus"


def port_if_free(preferred: int, host: str = "127.0.0.1") -> int:
    """``preferred`` when nothing listens on it, else a free ephemeral port."""
    for candidate in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, candidate))
            except OSError:
                continue
            port: int = probe.getsockname()[1]
            return port
    raise OSError("no free TCP port on " + host)


def _banner(broker_url: str, host: str, port: int, sim_url: str, http_port: int) -> str:
    return "\n".join(
        [
            "",
            "nvr-bridge demo: a simulated NVR bridged to MQTT. Ctrl-C stops it.",
            f"  MQTT broker     {broker_url}",
            f"  simulated NVR   {sim_url}  (user admin, password admin)",
            f"  metrics/health  http://127.0.0.1:{http_port}/metrics  /healthz  /readyz",
            f"  watch it with   mosquitto_sub -h {host} -p {port} -t '{BASE}/#' -v",
            f"  or MQTT Explorer at {host}:{port}",
            "  try a command   "
            f"mosquitto_pub -h {host} -p {port} -t '{BASE}/{DEMO_NVR}/request/buzzer' "
            '-m \'{"timeout": 3, "transaction": "t1"}\'',
            "  break a stream  "
            f'curl -X POST {sim_url}/_sim/drop -d \'{{"stream": "event"}}\''
            f"   (then watch {BASE}/{DEMO_NVR}/gap)",
            "",
        ]
    )


async def run_demo(
    stop: asyncio.Event,
    *,
    broker: str | None = None,
    channels: int = 4,
    duration: float | None = None,
) -> None:
    """Run the whole demo until ``stop`` is set or ``duration`` seconds pass."""
    from bridge.sim import SimulatedNvr  # noqa: PLC0415

    configure_logging("console", "warning")
    embedded = None
    if broker is None:
        port = port_if_free(1883)
        embedded = await start_embedded_broker(port)
        broker_url = f"mqtt://127.0.0.1:{port}"
        note = "embedded broker" + ("" if port == 1883 else ", 1883 was busy")
        protocol: Literal["5", "3.1.1", "auto"] = "5"
    else:
        broker_url = broker
        note = "existing broker"
        protocol = "auto"
    mqtt = MqttConfig(url=broker_url, client_id=f"nvr-bridge-demo-{os.getpid()}", protocol=protocol)
    simulator = SimulatedNvr(channels=channels, traffic=True, traffic_rate=1.0)
    await simulator.start()
    config = BridgeConfig(
        nvrs=(
            NvrConfig(
                id=DEMO_NVR, url=simulator.url, username="admin", password=SecretStr("admin")
            ),
        ),
        mqtt=mqtt,
        base_topic=BASE,
        http_port=port_if_free(9108),
        http_host="127.0.0.1",
        log_format="console",
        log_level="warning",
        # Show the images too: a snapshot of a channel when it sees motion or an alarm.
        snapshot_events=("Motion", "InputAlarm"),
        snapshot_min_interval=10,
        ha_discovery=True,
    )
    bridge = Bridge(config)
    print(
        _banner(f"{broker_url}  ({note})", mqtt.host, mqtt.port, simulator.url, config.http_port),
        flush=True,
    )
    view = LiveView(mqtt.host, mqtt.port, base=BASE)
    try:
        async with asyncio.TaskGroup() as group:
            bridge_task = group.create_task(bridge.run(), name="bridge")
            view_task = group.create_task(view.run(), name="live-view")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(duration):
                    await stop.wait()
            bridge.stop()
            await bridge_task
            view_task.cancel()
    finally:
        await simulator.stop()
        if embedded is not None:
            with contextlib.suppress(Exception):
                await embedded.shutdown()
    print(f"\ndemo stopped after {view.count} messages", flush=True)
