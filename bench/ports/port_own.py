"""Candidate ``own``: the project's port, ``bridge.mqtt.connection.MqttConnection``.

Imported alone: ``bridge/__init__.py`` and ``bridge/mqtt/__init__.py`` are skipped (the
first imports structlog, the second ``bridge.mqtt.link`` and with it pydantic, aiohttp and
prometheus-client), so that the import time and memory are the port's (``codec.py`` and
``connection.py``), as for the libraries. ``bench/mqtt_port.py`` reports what the normal
``import bridge.mqtt.connection`` costs beside.

Driven as ``bridge/mqtt/link.py`` drives it: ``publish`` writes now (this loop turn's
writes share one ``send()``), the PUBACK arrives at ``on_ack``, and the sender waits while
``min(window, Receive Maximum)`` publishes are unconfirmed (QoS 0: while the socket's
buffer is above its high-water mark).
"""

from __future__ import annotations

import asyncio
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

NAME = "own"
PROTOCOLS = ("5", "3.1.1")
CAPABILITIES = {
    "puback_observable": "yes: publish() returns the packet id; handler.on_ack(packet_id, "
    "reason_code) when its PUBACK arrives",
    "puback_reason_code": "yes: on_ack's reason_code (>= 0x80: the broker refused it)",
    "receive_maximum_from_connack": "yes: .receive_maximum (the caller keeps its window "
    "below it, as link.py does)",
    "max_packet_size_from_connack": "yes: .maximum_packet_size; a larger PUBLISH raises "
    "PacketTooLarge, never written",
    "abort_without_disconnect": "yes: close(graceful=False) / abort() cut the socket",
    "protocols": "3.1.1 and 5: Connect(version=V311 or V5)",
}


def _import_port() -> tuple[Any, Any]:
    """``bridge.mqtt.codec`` and ``bridge.mqtt.connection`` without their packages' __init__."""
    for name, path in (("bridge", ROOT / "bridge"), ("bridge.mqtt", ROOT / "bridge" / "mqtt")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(path)]
            sys.modules[name] = package
    from bridge.mqtt import codec, connection

    return codec, connection


codec, connection = _import_port()


class Port:
    """One connection through ``MqttConnection`` (it is its own ``ConnectionHandler``)."""

    acks_observable = True

    def __init__(self, protocol: str, window: int) -> None:
        self.protocol = protocol
        self.version = codec.V5 if protocol == "5" else codec.V311
        self.window_limit = window
        self.window = window
        self.receive_maximum: int | None = None
        self.max_packet_size: int | None = None
        self.conn: Any = None
        self.acked = 0
        self.refused = 0
        self.last_ack_ns: int | None = None
        self.lost: str | None = None
        self.closed = False
        self._room = asyncio.Event()
        self._room.set()
        self._drained = asyncio.Event()
        self._drained.set()
        self._on_message: Callable[[bytes], None] = lambda _payload: None
        self.info: dict[str, Any] = {}

    async def connect(
        self, host: str, port: int, client_id: str, will: tuple[str, bytes] | None = None
    ) -> None:
        packet = codec.Connect(
            client_id,
            version=self.version,
            clean_start=True,
            keepalive=60,
            will=None if will is None else codec.Will(will[0], will[1], 1, False),
        )
        self.conn = await connection.MqttConnection.open(
            self, host=host, port=port, connect=packet, timeout=10.0
        )
        if self.version == codec.V5:
            self.receive_maximum = self.conn.receive_maximum
            self.window = max(1, min(self.window_limit, self.receive_maximum))
        self.max_packet_size = self.conn.maximum_packet_size
        self.info = {
            "receive_maximum": self.receive_maximum,
            "maximum_packet_size": self.max_packet_size,
            "window": self.window,
        }

    # --- sending ----------------------------------------------------------------------

    async def send(self, topic: str, topic_b: bytes, payload: bytes, qos: int) -> None:
        conn = self.conn
        conn.publish(topic_b, payload, qos, False)
        if qos:
            self._drained.clear()
            if conn.unconfirmed >= self.window:
                self._room.clear()
                await self._room.wait()
                if self.lost is not None:
                    raise ConnectionError(self.lost)
        elif not conn.writable.is_set():
            await conn.writable.wait()

    async def drain(self) -> int | None:
        """Wait until every publish is confirmed (QoS 0: written); the last PUBACK's time."""
        self.conn.flush()
        if self.conn.unconfirmed:
            await self._drained.wait()
        if not self.conn.writable.is_set():
            await self.conn.writable.wait()
        return self.last_ack_ns

    # --- receiving --------------------------------------------------------------------

    async def subscribe(self, topic_filter: str, qos: int, on_message: Callable[[bytes], None]):
        self._on_message = on_message
        codes = await self.conn.subscribe([codec.Subscription(topic_filter, qos=qos)])
        if codes[0] >= 0x80:
            raise RuntimeError(f"subscription refused: {codes}")

    # --- ConnectionHandler --------------------------------------------------------------

    def on_publish(self, packet: Any) -> None:
        self._on_message(packet.payload)

    def on_ack(self, packet_id: int, reason_code: int) -> None:
        self.acked += 1
        self.last_ack_ns = time.time_ns()
        if reason_code >= 0x80:
            self.refused += 1
        unconfirmed = self.conn.unconfirmed
        if unconfirmed < self.window:
            self._room.set()
        if not unconfirmed:
            self._drained.set()

    def on_oversized(self, skipped: Any) -> None:
        self.info["oversized"] = self.info.get("oversized", 0) + 1

    def on_lost(self, reason: str) -> None:
        self.lost = reason
        self._room.set()
        self._drained.set()

    # --- closing ----------------------------------------------------------------------

    async def close(self) -> None:
        self.closed = True
        self.conn.close(graceful=True)

    async def abort(self) -> str | None:
        """Close without DISCONNECT (the broker publishes the Will); how, or None if impossible."""
        self.closed = True
        self.conn.close(graceful=False)
        return "close(graceful=False): the socket is cut, no DISCONNECT"
