"""Run the embedded Python broker (amqtt) on 127.0.0.1:PORT until terminated.

Used by the test fixtures when mosquitto is not installed.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from bridge.demo import start_embedded_broker


async def main(port: int) -> None:
    broker = await start_embedded_broker(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
