"""The yardstick: a minimal Python pass-through, NVR websockets -> MQTT, MQTT -> NVR REST.

This is the "minimal Python pass-through (websockets + aiomqtt, 50 publishes in flight)"
of issue 6's reference table, shipped so that every benchmark figure of the bridge is a
ratio measured in the same run as this. It is deliberately small and does no more than
a hand-written flow would:

- log in once (``GET``/``POST /admin/login``, digest body from ``bridge.nvr.auth``),
  keep the session cookie;
- open ``/meta/eventHook`` and ``/meta/metaHook`` with that cookie (``websockets``);
  every text frame is JSON-parsed (an object or an array of them) and each item
  published with ``aiomqtt`` as ``{channel,type,state}`` to
  ``{base}/{nvr}/channel/{ch}/event/{type}`` (eventHook) or ``{channel,type,data}`` to
  ``{base}/{nvr}/channel/{ch}/meta/{type}`` (metaHook), at most 50 publishes in flight
  (a task each, bounded by a semaphore, which also stops reading while it is full);
- subscribe ``{base}/{nvr}/request/+`` (QoS 1); each request becomes its REST call
  (``aiohttp``; only ``buzzer`` and ``add_event`` are mapped) and a response
  ``{status,command,transaction,result,error}`` on ``{base}/{nvr}/response/{cmd}``.

No validation, no metrics, no reconnects, no retained state, no logging per message.
It prints ``ready`` on stdout once the websockets are open and the subscription is
acknowledged. Run it as its own process:

    python bench/reference.py --nvr-url http://127.0.0.1:8080 --mqtt-port 1883 --qos 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

import aiohttp
import aiomqtt
import orjson
import websockets

from bridge.nvr.auth import LOGIN_PATH, LoginChallenge, login_body

IN_FLIGHT = 50
# command -> (method, path, query or body from the request)
COMMANDS: dict[str, tuple[str, str]] = {
    "buzzer": ("GET", "/system/callBuzzer"),
    "add_event": ("POST", "/meta/addEvent"),
}


async def login(http: aiohttp.ClientSession, username: str, password: str) -> str:
    """Log in; returns the Cookie header value for the websockets."""
    async with http.get(LOGIN_PATH) as response:
        challenge = LoginChallenge.from_json(await response.json(content_type=None))
    body = login_body(username, password, challenge, 1)
    async with http.post(LOGIN_PATH, json=body) as response:
        answer = await response.json(content_type=None)
        if response.status != 200 or str(answer.get("Result", "")).upper() != "OK":
            raise SystemExit(f"login refused: {answer}")
    return "; ".join(f"{c.key}={c.value}" for c in http.cookie_jar)


class Reference:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.prefix = f"{args.base}/{args.nvr_id}"
        self.slots = asyncio.Semaphore(IN_FLIGHT)
        self.tasks: set[asyncio.Task[None]] = set()
        self.opened = asyncio.Semaphore(0)

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def publish(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        try:
            await client.publish(topic, payload, qos=self.args.qos)
        finally:
            self.slots.release()

    async def stream(self, client: aiomqtt.Client, url: str, cookie: str, kind: str) -> None:
        """eventHook or metaHook -> MQTT, 50 publishes in flight at most."""
        field = "state" if kind == "event" else "data"
        key = "State" if kind == "event" else "Data"
        async with websockets.connect(
            url, additional_headers={"Cookie": cookie}, max_size=2**24, compression=None
        ) as ws:
            self.opened.release()
            async for frame in ws:
                try:
                    document = orjson.loads(frame)
                except orjson.JSONDecodeError:
                    continue
                for item in document if isinstance(document, list) else [document]:
                    channel, kind_type = item.get("ChannelID"), item.get("Type")
                    payload = orjson.dumps(
                        {"channel": channel, "type": kind_type, field: item.get(key)}
                    )
                    topic = f"{self.prefix}/channel/{channel}/{kind}/{kind_type}"
                    await self.slots.acquire()
                    self.spawn(self.publish(client, topic, payload))

    async def command(
        self, client: aiomqtt.Client, http: aiohttp.ClientSession, message: aiomqtt.Message
    ) -> None:
        """One request -> its REST call -> one response."""
        command = message.topic.value.rsplit("/", 1)[1]
        transaction = None
        try:
            request = orjson.loads(message.payload)  # type: ignore[arg-type]
            transaction = request.pop("transaction", None)
            request.pop("timestamp", None)
            method, path = COMMANDS[command]
            kwargs = {"params": request} if method == "GET" else {"json": request}
            async with http.request(method, path, **kwargs) as response:
                result = await response.json(content_type=None)
            ok = response.status < 300 and result.get("Result") != "Error"
            answer = {"status": "ok" if ok else "error", "result": result, "error": None}
        except Exception as exc:
            answer = {"status": "error", "result": None, "error": str(exc)}
        payload = orjson.dumps({"command": command, "transaction": transaction, **answer})
        await client.publish(f"{self.prefix}/response/{command}", payload, qos=self.args.qos)

    async def run(self) -> None:
        args = self.args
        ws_base = args.nvr_url.replace("http", "ws", 1)
        async with (
            aiohttp.ClientSession(
                base_url=args.nvr_url, cookie_jar=aiohttp.CookieJar(unsafe=True)
            ) as http,
            aiomqtt.Client(
                "127.0.0.1",
                args.mqtt_port,
                identifier=args.client_id,
                max_inflight_messages=IN_FLIGHT,
            ) as client,
        ):
            # aiomqtt warns once per publish above 10 pending calls: a log flood, not work.
            client.pending_calls_threshold = 1_000_000
            cookie = await login(http, args.username, args.password)
            await client.subscribe(f"{self.prefix}/request/+", qos=1)
            streams = [
                asyncio.create_task(self.stream(client, ws_base + path, cookie, kind))
                for kind, path in (("event", "/meta/eventHook"), ("meta", "/meta/metaHook"))
            ]
            for _ in streams:
                await self.opened.acquire()
            print("ready", flush=True)
            async for message in client.messages:
                self.spawn(self.command(client, http, message))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nvr-url", required=True)
    parser.add_argument("--nvr-id", default="nvr1")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default="admin")
    parser.add_argument("--mqtt-port", type=int, required=True)
    parser.add_argument("--qos", type=int, default=1, choices=(0, 1, 2))
    parser.add_argument("--base", default="ref")
    parser.add_argument("--client-id", default="bench-reference")
    args = parser.parse_args()

    # SIGTERM's default action ends the process at once: the yardstick needs no goodbye.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(Reference(args).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
