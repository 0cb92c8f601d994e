"""Node-RED as a third system under test: the flow issue 6 compares the bridge with.

    npm install --prefix bench/.node-red node-red@4      # once; bench/run.py then finds it

Two flows, both as a Node-RED user would wire them with the fewest nodes:

- ``raw`` (the default; issue 6's "websocket-in -> mqtt-out"): ``websocket in`` (client of
  ``/meta/eventHook``, and one of ``/meta/metaHook``) -> ``mqtt out`` at the run's QoS,
  each frame published as it came to one topic per stream, ``{base}/{nvr}/raw/event`` or
  ``{base}/{nvr}/raw/meta``: no parsing, no per-channel topics;
- ``mapped`` (the same work as the reference): ``websocket in`` -> ``function`` (JSON-parse
  the frame, one message per item: ``{base}/{nvr}/channel/{ch}/event/{type}`` with
  ``{channel,type,state}``, or ``.../meta/{type}`` with ``{channel,type,data}``)
  -> ``mqtt out``.

Commands, in both:
``mqtt in`` (``{base}/{nvr}/request/+``, QoS 1, parsed JSON) -> ``function``
  (command -> method and URL, as the reference maps them) -> ``http request`` (keep-alive,
  JSON answer) -> ``function`` (``{status,command,transaction,result,error}``) -> ``mqtt out``
  to ``{base}/{nvr}/response/{cmd}``.

The broker connection is the ``mqtt-broker`` node's default, MQTT 3.1.1 (MQTT.js). The
simulated NVR wants a session cookie: the benchmark logs in once (as the reference does)
and the flow carries the cookie as a websocket upgrade header and a request header, as a
user would paste it. No editor, no HTTP server (``httpAdminRoot`` and ``httpNodeRoot``
off), console log at ``info`` (it says when the broker is connected).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, NamedTuple

from reference import COMMANDS  # bench/ is the benchmark's directory

from bridge.nvr.models import STREAM_PATHS

ROOT = Path(__file__).resolve().parent.parent
LOCAL_INSTALL = ROOT / "bench" / ".node-red" / "node_modules" / "node-red" / "red.js"
INSTALL_HINT = "npm install --prefix bench/.node-red node-red@4"
READY_LINE = b"Connected to broker"

EVENT_FUNCTION = """
const doc = JSON.parse(msg.payload);
const items = Array.isArray(doc) ? doc : [doc];
const out = [];
for (const i of items) {
    out.push({
        topic: `%(prefix)s/channel/${i.ChannelID}/%(kind)s/${i.Type}`,
        payload: JSON.stringify({channel: i.ChannelID, type: i.Type, %(field)s: i.%(key)s}),
    });
}
return [out];
"""

REQUEST_FUNCTION = """
const command = msg.topic.split("/").pop();
const routes = %(routes)s;
const route = routes[command];
if (!route) { return null; }
const request = Object.assign({}, msg.payload);
const transaction = request.transaction;
delete request.transaction;
delete request.timestamp;
msg.command = command;
msg.transaction = transaction;
msg.method = route[0];
msg.headers = {Cookie: %(cookie)s};
if (route[0] === "GET") {
    msg.url = %(nvr)s + route[1] + "?" + new URLSearchParams(request).toString();
    msg.payload = "";
} else {
    msg.url = %(nvr)s + route[1];
    msg.payload = request;
}
return msg;
"""

RESPONSE_FUNCTION = """
const ok = msg.statusCode < 300 && !(msg.payload && msg.payload.Result === "Error");
return {
    topic: `%(prefix)s/response/${msg.command}`,
    payload: JSON.stringify({
        command: msg.command, transaction: msg.transaction,
        status: ok ? "ok" : "error", result: msg.payload, error: null,
    }),
};
"""


FLOWS = ("raw", "mapped")


def raw_topic(prefix: str, kind: str) -> str:
    """Where the raw flow publishes the frames of ``kind`` (``event`` or ``meta``)."""
    return f"{prefix}/raw/{kind}"


def find_node_red(choice: str) -> Path | None:
    """``red.js`` to run: ``choice`` is ``off``, ``auto`` or a path (red.js or its dir)."""
    if choice == "off" or shutil.which("node") is None:
        return None
    if choice != "auto":
        path = Path(choice)
        for candidate in (path, path / "red.js", path / "node_modules" / "node-red" / "red.js"):
            if candidate.is_file():
                return candidate.resolve()
        raise SystemExit(f"no Node-RED at {choice} (red.js not found); try: {INSTALL_HINT}")
    if LOCAL_INSTALL.is_file():
        return LOCAL_INSTALL
    found = shutil.which("node-red")
    if found:
        red = Path(found).resolve()
        return red if red.name == "red.js" else None
    return None


def version(red: Path) -> str | None:
    try:
        return str(json.loads((red.parent / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


class Flow(NamedTuple):
    """What one Node-RED run's flow connects to and publishes."""

    nvr_url: str
    cookie: str  # the Cookie header of a logged-in session
    mqtt_port: int
    qos: int
    prefix: str  # {base}/{nvr}
    client_id: str
    mapped: bool = False


def write_user_dir(directory: Path, spec: Flow, port: int) -> None:
    """settings.js and flows.json of one Node-RED run (``port``: its unused HTTP port)."""
    directory.mkdir(parents=True, exist_ok=True)
    settings = {
        "uiHost": "127.0.0.1",
        "uiPort": port,
        "httpAdminRoot": False,
        "httpNodeRoot": False,
        "flowFile": "flows.json",
        "credentialSecret": False,
        "logging": {"console": {"level": "info", "metrics": False, "audit": False}},
        "editorTheme": {"projects": {"enabled": False}},
        "telemetry": {"enabled": False},
    }
    (directory / "settings.js").write_text(f"module.exports = {json.dumps(settings)};\n")
    (directory / "flows.json").write_text(json.dumps(flow(spec), indent=1))


def flow(spec: Flow) -> list[dict[str, Any]]:
    """The nodes of flows.json (see the module doc)."""
    nvr_url, cookie, mqtt_port, qos, prefix, client_id, mapped = spec
    ws_base = nvr_url.replace("http", "ws", 1)
    tab = "bench-tab"
    nodes: list[dict[str, Any]] = [
        {"id": tab, "type": "tab", "label": "nvr-bridge benchmark"},
        {
            "id": "broker", "type": "mqtt-broker", "name": "mosquitto",
            "broker": "127.0.0.1", "port": str(mqtt_port), "clientid": client_id,
            "autoConnect": True, "usetls": False, "protocolVersion": "4", "keepalive": "60",
            "cleansession": True, "autoUnsubscribe": True,
            "birthTopic": "", "closeTopic": "", "willTopic": "",
        },
        {
            "id": "mqtt-out", "type": "mqtt out", "z": tab, "name": "publish",
            "topic": "", "qos": str(qos), "retain": "false", "broker": "broker", "wires": [],
        },
    ]  # fmt: skip
    streams = (
        ("event", STREAM_PATHS["event"], "state", "State"),
        ("meta", STREAM_PATHS["meta"], "data", "Data"),
    )
    for kind, path, field, key in streams:
        nodes.append(
            {
                "id": f"ws-{kind}", "type": "websocket-client", "path": ws_base + path,
                "tls": "", "wholemsg": "false", "hb": "0", "subprotocol": "",
                "headers": [{"keyType": "other", "keyValue": "Cookie",
                             "valueType": "other", "valueValue": cookie}],
            }
        )  # fmt: skip
        if not mapped:
            nodes += [
                {
                    "id": f"in-{kind}", "type": "websocket in", "z": tab, "name": path,
                    "server": "", "client": f"ws-{kind}", "wires": [[f"out-{kind}"]],
                },
                {
                    "id": f"out-{kind}", "type": "mqtt out", "z": tab, "name": kind,
                    "topic": raw_topic(prefix, kind), "qos": str(qos), "retain": "false",
                    "broker": "broker", "wires": [],
                },
            ]  # fmt: skip
            continue
        code = EVENT_FUNCTION % {"prefix": prefix, "kind": kind, "field": field, "key": key}
        nodes += [
            {
                "id": f"in-{kind}", "type": "websocket in", "z": tab, "name": path,
                "server": "", "client": f"ws-{kind}", "wires": [[f"fn-{kind}"]],
            },
            {
                "id": f"fn-{kind}", "type": "function", "z": tab, "name": f"{kind} items",
                "func": code, "outputs": 1, "wires": [["mqtt-out"]],
            },
        ]  # fmt: skip
    quoted = {
        "cookie": json.dumps(cookie),
        "nvr": json.dumps(nvr_url),
        "prefix": prefix,
        "routes": json.dumps(COMMANDS),  # the reference's mapping: the same REST calls
    }
    nodes += [
        {
            "id": "requests", "type": "mqtt in", "z": tab, "name": "requests",
            "topic": f"{prefix}/request/+", "qos": "1", "datatype": "json", "broker": "broker",
            "nl": False, "rap": True, "rh": 0, "inputs": 0, "wires": [["fn-request"]],
        },
        {
            "id": "fn-request", "type": "function", "z": tab, "name": "to REST",
            "func": REQUEST_FUNCTION % quoted, "outputs": 1, "wires": [["http"]],
        },
        {
            "id": "http", "type": "http request", "z": tab, "name": "NVR", "method": "use",
            "ret": "obj", "paytoqs": "ignore", "url": "", "tls": "", "persist": True,
            "proxy": "", "insecureHTTPParser": False, "authType": "", "senderr": False,
            "headers": [], "wires": [["fn-response"]],
        },
        {
            "id": "fn-response", "type": "function", "z": tab, "name": "response",
            "func": RESPONSE_FUNCTION % quoted, "outputs": 1, "wires": [["mqtt-out"]],
        },
    ]  # fmt: skip
    for index, node in enumerate(nodes):
        if "z" in node:  # a flow node (config nodes have no position)
            node.update(x=200 + 200 * (index % 4), y=60 + 60 * index)
    return nodes
