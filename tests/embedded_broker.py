"""Run the demo's embedded broker (MQTT 3.1.1 and 5) on 127.0.0.1:PORT until terminated.

Used by the test fixtures when mosquitto is not installed; ``--only-3.1.1`` makes it a
broker without MQTT 5 (to test the bridge's fallback).
"""

from __future__ import annotations

import asyncio
import signal
import sys

from bridge.demo import start_embedded_broker


async def main(port: int, *, only_311: bool) -> None:
    broker = await start_embedded_broker(port, versions=(4,) if only_311 else (4, 5))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), only_311="--only-3.1.1" in sys.argv[2:]))
