"""The demo's live view: every MQTT message under the base topic, one readable line each.

It connects with the bridge's own MQTT port (``bridge.mqtt.connection``), so the demo
needs no other client library. A payload that is an image shows as its kind and size
(``<jpeg 14,213 bytes>``), other binary data as ``<binary N bytes>``: raw bytes never
reach the terminal.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import TextIO

from bridge.mqtt.codec import V5, Connect, Oversized, Publish, Subscription
from bridge.mqtt.connection import MqttConnection, MqttError

JPEG_MARKER = b"\xff\xd8"
LINE_CHARS = 140


def describe_payload(payload: bytes) -> str:
    """A payload as one printable line: text (cut), or the kind and size of binary data."""
    if payload.startswith(JPEG_MARKER):
        return f"<jpeg {len(payload):,} bytes>"
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return f"<binary {len(payload):,} bytes>"
    if not text.isprintable():
        text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= LINE_CHARS else text[: LINE_CHARS - 3] + "..."


class LiveView:
    """Prints every message under ``base/#`` as it arrives; reconnects if the broker blips."""

    def __init__(self, host: str, port: int, *, base: str, out: TextIO = sys.stdout) -> None:
        self._host = host
        self._port = port
        self._base = base
        self._out = out
        self._lost = asyncio.Event()
        self.count = 0

    async def run(self) -> None:
        """Subscribe and print until cancelled."""
        while True:
            self._lost.clear()
            try:
                connection = await MqttConnection.open(
                    self,
                    host=self._host,
                    port=self._port,
                    connect=Connect(f"nvr-bridge-demo-view-{os.getpid()}", V5, keepalive=30),
                )
                await connection.subscribe([Subscription(f"{self._base}/#", qos=0)])
                await self._lost.wait()
            except (MqttError, OSError, TimeoutError):
                pass
            await asyncio.sleep(1)

    # --- ConnectionHandler ----------------------------------------------------------------

    def on_publish(self, packet: Publish) -> None:
        """Print one message."""
        self.count += 1
        clock = time.strftime("%H:%M:%S")
        flag = " (retained)" if packet.retain else ""
        print(
            f"{clock}  {packet.topic}{flag}\n          {describe_payload(packet.payload)}",
            file=self._out,
            flush=True,
        )

    def on_ack(self, packet_id: int, reason_code: int) -> None:
        """The view publishes nothing."""

    def on_oversized(self, skipped: Oversized) -> None:
        """A message too large to show."""
        print(f"          <message of {skipped.size:,} bytes skipped>", file=self._out)

    def on_lost(self, reason: str) -> None:
        """The broker went away: reconnect."""
        self._lost.set()
