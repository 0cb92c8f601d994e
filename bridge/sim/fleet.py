"""Many simulated NVRs in one process (benchmarks, demos) and the ``simulate`` entry point."""

from __future__ import annotations

import asyncio
import ssl
from types import TracebackType
from typing import Self

from bridge.sim.discovery import DISCOVERY_PORT, start_responder
from bridge.sim.server import WILDCARD_HOSTS, SimulatedNvr


def fleet_mac(index: int) -> str:
    """A distinct MAC address for the ``index``-th NVR of a fleet (0-based)."""
    number = index + 1
    return f"00:04:4b:53:{number >> 8 & 0xFF:02x}:{number & 0xFF:02x}"


class SimulatedFleet:
    """``count`` simulated NVRs, on ports ``base_port``.. (consecutive) or ephemeral (0)."""

    def __init__(
        self,
        count: int,
        *,
        host: str = "127.0.0.1",
        base_port: int = 0,
        username: str | None = "admin",
        password: str = "admin",  # noqa: S107 - the SDK's factory default, for a simulator
        channels: int = 4,
        traffic: bool = False,
        traffic_rate: float = 2.0,
        seed: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        name: str = "Simulated NVR",
    ) -> None:
        if count < 1:
            raise ValueError(f"a fleet needs at least one NVR, not {count}")
        self.host, self.base_port = host, base_port
        self.nvrs = [
            SimulatedNvr(
                username=username,
                password=password,
                channels=channels,
                traffic=traffic,
                traffic_rate=traffic_rate,
                seed=None if seed is None else seed + i,
                ssl_context=ssl_context,
                name=name if count == 1 else f"{name} {i + 1}",
                mac=fleet_mac(i),
            )
            for i in range(count)
        ]
        self._discovery: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        """Start every NVR; if one cannot bind, stop those already started and re-raise."""
        try:
            for i, nvr in enumerate(self.nvrs):
                await nvr.start(self.host, self.base_port + i if self.base_port else 0)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop every NVR and the discovery responder; safe to call twice."""
        if self._discovery is not None:
            self._discovery.close()
            self._discovery = None
        await asyncio.gather(*(nvr.stop() for nvr in self.nvrs))

    async def start_discovery(self, host: str = "127.0.0.1", port: int = DISCOVERY_PORT) -> int:
        """One UDP responder answering for every NVR (one datagram each); returns its port."""
        if self._discovery is not None:
            self._discovery.close()
        address = host if host not in WILDCARD_HOSTS else "127.0.0.1"
        self._discovery, bound = await start_responder(
            lambda: [nvr.identity.device_info_xml(nvr.port, address) for nvr in self.nvrs],
            host,
            port,
        )
        return bound

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def server_ssl_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A TLS server context from a PEM certificate (chain) and its key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


async def run_simulator(
    *,
    host: str,
    port: int,
    channels: int,
    username: str | None,
    password: str,
    traffic: bool,
    count: int = 1,
    discovery_port: int | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> None:
    """Serve ``count`` simulated NVRs on ``port``.. until cancelled, printing their URLs.

    ``port`` 0 gives each an ephemeral port. ``tls_cert`` and ``tls_key`` go together.
    """
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("give both tls_cert and tls_key, or neither")
    context = None
    if tls_cert is not None and tls_key is not None:
        context = server_ssl_context(tls_cert, tls_key)
    fleet = SimulatedFleet(
        count,
        host=host,
        base_port=port,
        username=username,
        password=password,
        channels=channels,
        traffic=traffic,
        ssl_context=context,
    )
    async with fleet:
        for nvr in fleet.nvrs:
            login = "no login" if username is None else f"username={username} password={password}"
            print(f"{nvr.identity.name}: {nvr.url} {login}", flush=True)
        if discovery_port:
            try:
                bound = await fleet.start_discovery(host, discovery_port)
            except OSError as exc:
                print(
                    f"discovery: udp {host}:{discovery_port} is busy ({exc.strerror}); not "
                    "answering (--discovery-port to pick another, 0 for none)",
                    flush=True,
                )
            else:
                print(
                    f"discovery: answering on udp {host}:{bound} "
                    f"(try: nvr-bridge discover --target {host} --port {bound})",
                    flush=True,
                )
        await asyncio.Event().wait()
