"""``nvr-bridge discover``: find NVRs by the SDK's UDP inquiry (guide section 1).

The bridge sends the 22-byte inquiry to UDP port 31501 (broadcast by default, or one
address) and parses each ``<DeviceInfo>`` XML answer with defusedxml, which refuses
entity-expansion and external-entity tricks from whatever answers on the network.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import asdict, dataclass
from typing import Any

import defusedxml.ElementTree as SafeTree
from defusedxml import DefusedXmlException

DISCOVERY_PORT = 31501
MAGIC = bytes((0x26, 0x98, 0x23, 0x34))
CMD_INQUIRY = bytes((0x04, 0x01))
MAX_REPLY = 8192


def inquiry(sender_mac: bytes = bytes(6)) -> bytes:
    """The 22-byte inquiry: magic, command 0x0401, MACs, XML format 1, zero payload."""
    return MAGIC + CMD_INQUIRY + sender_mac + b"\xff" * 6 + bytes((1, 0)) + bytes(2)


def is_inquiry(data: bytes) -> bool:
    """Whether a datagram is the discovery inquiry (used by the simulator)."""
    return len(data) == 22 and data[:4] == MAGIC and data[4:6] == CMD_INQUIRY


@dataclass(frozen=True, slots=True)
class DiscoveredNvr:
    """One NVR's answer to the inquiry."""

    address: str
    http_port: int | None
    name: str | None
    model: str | None
    firmware: str | None
    category: str | None
    ipv4: str | None
    mac: str | None
    ip_channels: int | None
    analog_channels: int | None

    @property
    def url(self) -> str:
        """The URL to configure the bridge with."""
        host = self.ipv4 or self.address
        return f"http://{host}:{self.http_port or 80}"

    def as_dict(self) -> dict[str, Any]:
        """Plain data, with the URL, for JSON output."""
        return {**asdict(self), "url": self.url}


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def parse_device_info(data: bytes, address: str) -> DiscoveredNvr | None:
    """Parse a DeviceInfo XML answer; None when it is not one (or is malicious)."""
    start = data.find(b"<DeviceInfo")
    if start < 0:
        return None
    try:
        root = SafeTree.fromstring(data[start:].rstrip(b"\x00"))
    except (SafeTree.ParseError, DefusedXmlException, ValueError):
        return None

    def text(path: str) -> str | None:
        node = root.find(path)
        return node.text.strip() if node is not None and node.text else None

    return DiscoveredNvr(
        address=address,
        http_port=_int(text("HttpPort")),
        name=text("DeviceName"),
        model=text("ModelName"),
        firmware=text("FwVer"),
        category=text("Category"),
        ipv4=text("Ipv4/Addr"),
        mac=text("MacAddr"),
        ip_channels=_int(text("IPChannels")),
        analog_channels=_int(text("AnalogChannels")),
    )


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.found: dict[tuple[str, str | None], DiscoveredNvr] = {}

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        device = parse_device_info(data[:MAX_REPLY], str(addr[0]))
        if device is not None:
            self.found[(device.address, device.mac)] = device


async def discover(
    *,
    target: str = "255.255.255.255",
    port: int = DISCOVERY_PORT,
    timeout: float = 3.0,
    interface: str | None = None,
) -> list[DiscoveredNvr]:
    """Send the inquiry to ``target`` and collect answers for ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.bind((interface or "0.0.0.0", 0))  # noqa: S104 - answers come back to any address
    transport, protocol = await loop.create_datagram_endpoint(_Collector, sock=sock)
    try:
        transport.sendto(inquiry(), (target, port))
        await asyncio.sleep(timeout)
    finally:
        transport.close()
    return sorted(protocol.found.values(), key=lambda d: (d.address, d.mac or ""))


def format_table(devices: list[DiscoveredNvr], port: int = DISCOVERY_PORT) -> str:
    """A readable table of what was found."""
    if not devices:
        return f"no NVR answered (is UDP port {port} reachable, and are you on its LAN?)"
    rows = [("URL", "NAME", "MODEL", "FIRMWARE", "MAC", "CHANNELS")]
    rows += [
        (
            d.url,
            d.name or "-",
            d.model or "-",
            d.firmware or "-",
            d.mac or "-",
            str((d.ip_channels or 0) + (d.analog_channels or 0)),
        )
        for d in devices
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )
