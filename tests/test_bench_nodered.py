"""The Node-RED flow the benchmark writes (bench/nodered.py): wired as Node-RED expects.

Node-RED itself is not needed here (the benchmark runs it when installed); these checks
catch the mistakes that make Node-RED start a flow that silently does nothing.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    sys.path.insert(0, str(ROOT / "bench"))  # as when bench/run.py runs: it imports reference
    spec = importlib.util.spec_from_file_location("bench_nodered", ROOT / "bench" / "nodered.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


nodered = _load()


def _spec(mapped: bool) -> object:
    return nodered.Flow(
        nvr_url="http://127.0.0.1:8080",
        cookie="session=abc",
        mqtt_port=1883,
        qos=1,
        prefix="nr1/nvr1",
        client_id="bench-nr-1",
        mapped=mapped,
    )


@pytest.mark.parametrize("mapped", [False, True])
def test_every_wire_ends_at_a_node_and_flow_nodes_have_a_position(mapped: bool) -> None:
    nodes = nodered.flow(_spec(mapped))
    ids = [node["id"] for node in nodes]
    assert len(ids) == len(set(ids))
    for node in nodes:
        for output in node.get("wires", []):
            assert set(output) <= set(ids), node["id"]
        if "z" not in node:
            continue  # the tab and the config nodes
        # Without x and y Node-RED takes a node for a config node.
        assert isinstance(node["x"], int) and isinstance(node["y"], int), node["id"]
        for reference in ("broker", "client"):  # config nodes a flow node uses
            if node.get(reference):
                assert node[reference] in ids, node["id"]


def test_the_raw_flow_forwards_each_stream_to_its_topic_and_commands_get_answers() -> None:
    nodes = {node["id"]: node for node in nodered.flow(_spec(False))}
    for kind, path in (("event", "/meta/eventHook"), ("meta", "/meta/metaHook")):
        client = nodes[f"ws-{kind}"]
        assert client["path"] == "ws://127.0.0.1:8080" + path
        assert client["headers"][0]["valueValue"] == "session=abc"
        (target,) = nodes[f"in-{kind}"]["wires"][0]
        assert nodes[target]["type"] == "mqtt out"
        assert nodes[target]["topic"] == nodered.raw_topic("nr1/nvr1", kind)
    chain, node = [], nodes["requests"]
    while node["wires"] and node["wires"][0]:
        node = nodes[node["wires"][0][0]]
        chain.append(node["type"])
    assert chain == ["function", "http request", "function", "mqtt out"]
    assert nodes["requests"]["topic"] == "nr1/nvr1/request/+"
    assert '"session=abc"' in nodes["fn-request"]["func"]


def test_the_user_dir_has_settings_without_an_http_server(tmp_path: Path) -> None:
    nodered.write_user_dir(tmp_path, _spec(True), 18_080)
    settings = (tmp_path / "settings.js").read_text()
    assert settings.startswith("module.exports = ")
    values = json.loads(settings.removeprefix("module.exports = ").rstrip(";\n"))
    assert values["httpAdminRoot"] is False and values["httpNodeRoot"] is False
    assert values["uiHost"] == "127.0.0.1"
    flows = json.loads((tmp_path / "flows.json").read_text())
    assert any(node["type"] == "function" and node["name"] == "event items" for node in flows)
