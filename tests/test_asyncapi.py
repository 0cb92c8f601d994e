"""The published AsyncAPI contract (docs/asyncapi.yaml) against the code it describes.

The document is generated from the bridge's models (``bridge.asyncapi``). These tests fail
when the file is stale, when it is not a well-formed AsyncAPI 3 document, when a topic of
CONTRACT.md or a command has no channel, and when a payload the bridge really builds
(through ``Normalizer``, ``CommandRunner``, ``NvrSupervisor`` and the Home Assistant
registry) does not fit the schema, the retain flag or the topic the document publishes.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator, Draft202012Validator
from pydantic import BaseModel, ValidationError

from bridge import __version__, payloads
from bridge.asyncapi import (
    REGENERATE,
    REQUEST_EXAMPLES,
    build_document,
    check_file,
    main,
    render_yaml,
)
from bridge.command_runner import CommandRunner
from bridge.commands import _ON_OFF, _START_STOP, COMMANDS, Convenience, convenience_request
from bridge.config import BridgeConfig, NvrConfig
from bridge.homeassistant import DiscoveryRegistry
from bridge.mqtt import InboundMessage
from bridge.normalize import Normalizer, Publication, format_timestamp, validate_item
from bridge.nvr.client import NvrAnswer, NvrHttpError, NvrRejected, NvrTimeout
from bridge.nvr.models import STREAM_NAMES, StreamName
from bridge.observability import Metrics
from bridge.sim.device import DeviceIdentity
from bridge.supervisor import NvrSupervisor
from bridge.topics import NvrTopics
from tests.conftest import POLL_INTERVAL


def convenience_of(levels: list[str], payload: bytes) -> Convenience | None:
    """The convenience request of topic levels after the NVR id; None for other topics."""
    route = NvrTopics("b", "n").route(levels)
    if route is None or route.kind == "request":
        return None
    return convenience_request(route, payload)


ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = ROOT / "docs" / "asyncapi.yaml"
CONTRACT_PATH = ROOT.parent / "shared" / "CONTRACT.md"
README_PATH = ROOT / "README.md"
BASE = "everfocus"
NVR = "nvr1"
TOPICS = NvrTopics(BASE, NVR)
NOW = 1_714_564_800.0
TS = format_timestamp(NOW)
COMPONENT_KEY = re.compile(r"^[A-Za-z0-9.\-_]+$")


# --- the document and how to read it ----------------------------------------------------


@functools.cache
def generated() -> dict[str, Any]:
    """The document, built once per test run (the tests only read it)."""
    return build_document()


@pytest.fixture
def doc() -> dict[str, Any]:
    return generated()


def resolve(doc: dict[str, Any], ref: str) -> Any:
    """The object a local JSON reference (``#/a/b``) points at; KeyError when none."""
    assert ref.startswith("#/"), f"only local references are used, got {ref!r}"
    node: Any = doc
    for raw in ref[2:].split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node


def refs(node: Any, where: str = "#") -> Iterator[tuple[str, str]]:
    """Every ``$ref`` in ``node`` with the place it sits at."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield where, value
            else:
                yield from refs(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from refs(item, f"{where}/{index}")


def validators(doc: dict[str, Any], schema: dict[str, Any]) -> list[Any]:
    """Validators of ``schema`` whose references resolve in the document's components.

    Draft 7 is the dialect of AsyncAPI's schemas; 2020-12 is the one pydantic writes.
    """
    rooted = {**schema, "components": doc["components"]}
    return [Draft7Validator(rooted), Draft202012Validator(rooted)]


def schema_errors(doc: dict[str, Any], schema: dict[str, Any], value: Any) -> list[str]:
    return [
        f"{type(v).__name__}: {e.message} at {list(e.absolute_path)}"
        for v in validators(doc, schema)
        for e in v.iter_errors(value)
    ]


def address_pattern(doc: dict[str, Any], channel: dict[str, Any]) -> re.Pattern[str]:
    """A regex matching the concrete topics of a channel (a parameter is one level)."""
    parts = re.split(r"(\{\w+\})", channel["address"])
    regex = ""
    for part in parts:
        name = part[1:-1] if part.startswith("{") else None
        if name is None:
            regex += re.escape(part)
            continue
        parameter = resolve(doc, channel["parameters"][name]["$ref"])
        if "enum" in parameter:
            regex += "(?:" + "|".join(re.escape(v) for v in parameter["enum"]) + ")"
        else:
            regex += "[^/]+"
    return re.compile(regex)


def operations_on(doc: dict[str, Any], channel_id: str, action: str) -> list[dict[str, Any]]:
    return [
        op
        for op in doc["operations"].values()
        if op["action"] == action and op["channel"]["$ref"] == f"#/channels/{channel_id}"
    ]


def channel_message(doc: dict[str, Any], channel_id: str) -> dict[str, Any]:
    (message_ref,) = doc["channels"][channel_id]["messages"].values()
    return resolve(doc, message_ref["$ref"])


def payload_model(message: dict[str, Any]) -> type[BaseModel] | None:
    """The pydantic model behind a message's payload (None for plain text)."""
    ref = message["payload"].get("$ref")
    if ref is None:
        return None
    name = ref.rsplit("/", 1)[-1]
    model = getattr(payloads, name, None)
    if model is None:
        spec = next((s for s in COMMANDS.values() if s.model.__name__ == name), None)
        model = spec.model if spec is not None else None
    assert model is not None, f"{ref} is no model of bridge.payloads or bridge.commands"
    return model


def decode(message: dict[str, Any], raw: bytes) -> Any:
    if message["contentType"] == "application/json":
        return orjson.loads(raw)
    assert message["contentType"] == "text/plain"
    return raw.decode()


def check_publication(doc: dict[str, Any], publication: Publication) -> str:
    """Assert that one real publication fits the document; returns its channel id.

    Its topic matches exactly one channel the bridge sends on, the retain flag is that
    operation's, and the payload validates against the message's JSON schema and model.
    """
    sent_on = {
        op["channel"]["$ref"].rsplit("/", 1)[-1]
        for op in doc["operations"].values()
        if op["action"] == "send"
    }
    matches = [
        cid
        for cid in sorted(sent_on)
        if address_pattern(doc, doc["channels"][cid]).fullmatch(publication.topic)
    ]
    assert len(matches) == 1, f"{publication.topic!r} matches the send channels {matches}"
    (channel_id,) = matches
    (operation,) = operations_on(doc, channel_id, "send")
    assert operation["bindings"]["mqtt"]["retain"] is publication.retain, (
        f"{publication.topic!r} is published with retain={publication.retain}, "
        f"the document says {operation['bindings']['mqtt']['retain']}"
    )
    check_payload(doc, channel_message(doc, channel_id), publication.payload)
    return channel_id


def check_payload(doc: dict[str, Any], message: dict[str, Any], raw: bytes) -> None:
    value = decode(message, raw)
    errors = schema_errors(doc, message["payload"], value)
    assert not errors, f"{message['name']} payload {value!r} breaks its schema: {errors}"
    model = payload_model(message)
    if model is not None:
        model.model_validate(value)


# --- (a) the file is what the code generates ----------------------------------------------


def test_docs_file_is_the_generated_document(doc: dict[str, Any]) -> None:
    """docs/asyncapi.yaml equals build_document(): a model change needs a regeneration."""
    assert DOC_PATH.exists(), f"{DOC_PATH} is missing; generate it with: {REGENERATE}"
    written = yaml.safe_load(DOC_PATH.read_text(encoding="utf-8"))
    assert written == doc, (
        f"{DOC_PATH.relative_to(ROOT)} is stale: the code's models changed. Regenerate it "
        f"with `{REGENERATE}` (from {ROOT}) and review the diff.\n{check_file(DOC_PATH, doc)}"
    )


def test_generation_is_deterministic(doc: dict[str, Any]) -> None:
    """Two builds render to the same text, so regeneration gives no spurious diff."""
    assert render_yaml(build_document()) == render_yaml(doc)
    assert yaml.safe_load(render_yaml(doc)) == doc


def test_check_option_reports_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: dict[str, Any]
) -> None:
    """--check exits 0 for the generated text and 1, with the remedy, for a changed one."""
    current = tmp_path / "asyncapi.yaml"
    current.write_text(render_yaml(doc), encoding="utf-8")
    assert main(["--check", str(current)]) == 0
    stale = tmp_path / "stale.yaml"
    stale.write_text(render_yaml({**doc, "info": {**doc["info"], "version": "0"}}), "utf-8")
    assert main(["--check", str(stale)]) == 1
    err = capsys.readouterr().err
    assert REGENERATE in err
    assert "version" in err
    assert main(["--check", str(tmp_path / "missing.yaml")]) == 1


# --- (b) every reference resolves -------------------------------------------------------------


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    """Every $ref in the document points at something in it (pydantic's $defs hoisted)."""
    found = list(refs(doc))
    assert len(found) > 50
    broken = []
    for where, ref in found:
        try:
            resolve(doc, ref)
        except (KeyError, IndexError, ValueError):
            broken.append(f"{where}: {ref}")
    assert not broken, "unresolved references:\n" + "\n".join(broken)
    assert "$defs" not in orjson.dumps(doc).decode()


# --- (c) the structure of an AsyncAPI 3 document ----------------------------------------------


def test_document_is_structurally_asyncapi_3(doc: dict[str, Any]) -> None:
    """Required keys, component names, channel parameters and operation references.

    No JSON schema of AsyncAPI 3 is installed (and nothing is downloaded), so the rules
    of the specification that matter here are checked by hand.
    """
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] == "nvr-bridge"
    assert doc["info"]["version"] == __version__
    assert "ignore unknown fields" in doc["info"]["description"]
    assert set(doc) <= {
        "asyncapi",
        "id",
        "info",
        "servers",
        "defaultContentType",
        "channels",
        "operations",
        "components",
    }
    server = doc["servers"]["broker"]
    assert server["protocol"] == "mqtt"
    for variable in re.findall(r"\{(\w+)\}", server["host"]):
        assert variable in server["variables"], f"server variable {variable} undefined"
    for section in ("schemas", "messages", "parameters"):
        for key in doc["components"][section]:
            assert COMPONENT_KEY.match(key), f"components/{section}/{key}: invalid key"
    for channel_id, channel in doc["channels"].items():
        assert COMPONENT_KEY.match(channel_id)
        in_address = re.findall(r"\{(\w+)\}", channel["address"])
        assert sorted(in_address) == sorted(channel.get("parameters", {})), (
            f"channel {channel_id}: address parameters {in_address} vs "
            f"declared {sorted(channel.get('parameters', {}))}"
        )
        assert channel["messages"], f"channel {channel_id} has no message"
        for message_ref in channel["messages"].values():
            message = resolve(doc, message_ref["$ref"])
            assert {"payload", "contentType", "name"} <= set(message)
    for operation_id, operation in doc["operations"].items():
        assert COMPONENT_KEY.match(operation_id)
        assert operation["action"] in {"send", "receive"}
        channel_ref = operation["channel"]["$ref"]
        assert channel_ref.startswith("#/channels/")
        resolve(doc, channel_ref)
        for message_ref in operation["messages"]:
            # A message of an operation must be one of its channel's messages.
            assert message_ref["$ref"].startswith(channel_ref + "/messages/"), (
                f"operation {operation_id}: {message_ref['$ref']} is not on {channel_ref}"
            )
            resolve(doc, message_ref["$ref"])
        mqtt = operation["bindings"]["mqtt"]
        assert mqtt["qos"] in {0, 1, 2}
        assert isinstance(mqtt["retain"], bool)
        if "reply" in operation:
            reply_channel = operation["reply"]["channel"]["$ref"]
            resolve(doc, reply_channel)
            for message_ref in operation["reply"]["messages"]:
                assert message_ref["$ref"].startswith(reply_channel + "/messages/")
    used = {op["channel"]["$ref"].rsplit("/", 1)[-1] for op in doc["operations"].values()}
    assert used == set(doc["channels"]), (
        f"channels without operation: {set(doc['channels']) - used}"
    )


def test_component_schemas_are_valid_json_schema(doc: dict[str, Any]) -> None:
    """Every schema is well formed (draft 7 and 2020-12) and has no pydantic-only keyword."""
    for name, schema in doc["components"]["schemas"].items():
        Draft7Validator.check_schema(schema)
        Draft202012Validator.check_schema(schema)
        text = orjson.dumps(schema).decode()
        for keyword in ('"ge":', '"le":', '"gt":', '"lt":'):
            assert keyword not in text, f"{name} uses {keyword}, which JSON Schema ignores"


def test_retain_flags_follow_the_contract(doc: dict[str, Any]) -> None:
    """Retained: bridge state, availability, event state, status, info; requests never."""
    retained = {
        doc["channels"][op["channel"]["$ref"].rsplit("/", 1)[-1]]["address"]
        for op in doc["operations"].values()
        if op["action"] == "send" and op["bindings"]["mqtt"]["retain"]
    }
    assert {
        "{base}/bridge/state",
        "{base}/{nvr}/availability",
        "{base}/{nvr}/channel/{ch}/event/{type}/state",
        "{base}/{nvr}/channel/{ch}/status",
        "{base}/{nvr}/info",
    } <= retained
    for address in (
        "{base}/{nvr}/channel/{ch}/event/{type}",
        "{base}/{nvr}/channel/{ch}/meta/{type}",
        "{base}/{nvr}/exception/{exception}",
        "{base}/{nvr}/message/{message}",
        "{base}/{nvr}/response/{command}",
    ):
        assert address not in retained


# --- (d) the real payloads fit the published schemas -----------------------------------------


def normalized(
    stream: StreamName, item: dict[str, Any], history_ms: int | None = None
) -> list[Publication]:
    normalizer = Normalizer(TOPICS)
    return normalizer.normalize(stream, validate_item(stream, item), TS, history_ms=history_ms)


STREAM_ITEMS: list[tuple[StreamName, dict[str, Any]]] = [
    ("event", {"ChannelID": 3, "Type": "Motion", "State": "active"}),
    ("event", {"ChannelID": "4", "Type": "InputAlarm", "State": "inactive", "Extra": 1}),
    ("event", {"Type": "Video/Loss #1", "State": "once"}),
    ("event", {"ChannelID": None, "Type": "", "State": "weird"}),
    ("meta", {"ChannelID": 2, "Type": "LPR", "Data": "ABC-123"}),
    ("meta", {"Type": "Count", "Data": ""}),
    ("exception", {"exception": "diskFull", "target": {"disk": 1}, "time": 1700000000000}),
    ("exception", {"exception": "network down", "time": 1}),
    ("status", {"ChannelID": 1, "Online": True, "Recording": False, "Event": True}),
    (
        "status",
        {"ChannelID": 2, "Online": False, "Recording": True, "Event": False, "Manual": True},
    ),
    (
        "message",
        {
            "message": "cameraDetail",
            "time": 1700000000000,
            "target": 2,
            "content": {"UserName": "admin", "Password": "secret", "Nested": [{"pwd": "x"}]},
        },
    ),
    ("message", {"message": "reboot", "time": 5}),
]


@pytest.mark.parametrize(
    ("stream", "item"),
    STREAM_ITEMS,
    ids=[f"{stream}-{index}" for index, (stream, _) in enumerate(STREAM_ITEMS)],
)
def test_stream_payloads_fit_the_document(
    doc: dict[str, Any], stream: StreamName, item: dict[str, Any]
) -> None:
    """Each Normalizer publication: right channel and retain flag, schema and model valid."""
    publications = normalized(stream, item)
    assert publications
    channels = [check_publication(doc, p) for p in publications]
    assert channels[0] == stream


@pytest.mark.parametrize("stream", ["event", "meta"])
def test_replayed_payloads_fit_the_document(doc: dict[str, Any], stream: StreamName) -> None:
    """Items replayed from history (history_ms) carry replayed/time and fit the schema."""
    item = (
        {"ChannelID": 1, "Type": "Motion", "State": "active"}
        if stream == "event"
        else {"ChannelID": 1, "Type": "LPR", "Data": "X"}
    )
    (publication,) = normalized(stream, item, history_ms=1_700_000_000_123)
    assert check_publication(doc, publication) == stream
    value = orjson.loads(publication.payload)
    assert value["replayed"] is True
    assert value["time"] == 1_700_000_000_123


@settings(max_examples=60, deadline=None)
@given(
    channel=st.none() | st.integers(min_value=1, max_value=2**31 - 1),
    kind=st.text(max_size=20),
    state=st.sampled_from(["active", "inactive", "once"]) | st.text(max_size=8),
    history=st.none() | st.integers(min_value=0, max_value=2**53),
)
def test_any_event_fits_the_document(
    channel: int | None, kind: str, state: str, history: int | None
) -> None:
    """Whatever type, state and channel the NVR sends, the event fits the published schema."""
    doc = generated()
    item = {"ChannelID": channel, "Type": kind, "State": state}
    for publication in normalized("event", item, history_ms=history):
        check_publication(doc, publication)


def test_payload_models_reject_what_the_schemas_reject(doc: dict[str, Any]) -> None:
    """Model and schema agree on drift: an unknown field, a null where a field is left out."""
    (publication,) = normalized("meta", {"ChannelID": 2, "Type": "LPR", "Data": "A"})
    good = orjson.loads(publication.payload)
    message = channel_message(doc, "meta")
    bad_values = [
        {**good, "surprise": 1},
        {**good, "replayed": None, "time": None},
        {**good, "replayed": True},
        {**good, "timestamp": "2024-05-01T12:00:00Z"},
        {**good, "channel": "2"},
    ]
    for bad in bad_values:
        assert schema_errors(doc, message["payload"], bad), f"schema accepts {bad}"
        with pytest.raises(ValidationError):
            payloads.MetaPayload.model_validate(bad)


@dataclass
class CapturingLink:
    """Stands in for MqttLink: keeps what the code publishes."""

    publications: list[Publication] = field(default_factory=list)

    def publish(self, publication: Publication) -> None:
        self.publications.append(publication)


@dataclass
class ScriptedNvr:
    """Stands in for NvrClient: answers every REST call with ``answers[path]``."""

    answers: dict[str, Any]
    calls: list[tuple[str, str]] = field(default_factory=list)

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        timeout: float = 10.0,
    ) -> NvrAnswer:
        self.calls.append((method, path))
        answer = self.answers.get(path, NvrHttpError("HTTP 404", 404, None))
        if isinstance(answer, Exception):
            raise answer
        return answer


async def wait_for(link: CapturingLink, count: int) -> None:
    async with asyncio.timeout(2):
        while len(link.publications) < count:
            await asyncio.sleep(POLL_INTERVAL)  # inside a deadline


async def run_requests(
    nvr: ScriptedNvr, requests: list[InboundMessage], expected: int
) -> list[Publication]:
    """Feed requests to a real CommandRunner; return what it published."""
    link = CapturingLink()
    runner = CommandRunner(
        topics=TOPICS,
        client=nvr,  # type: ignore[arg-type]
        link=link,  # type: ignore[arg-type]
        metrics=Metrics(),
        allowed=frozenset(COMMANDS) - {"buzzer"},
        max_age=30,
        max_inflight=2,
        clock=lambda: NOW,
    )
    task = asyncio.create_task(runner.run())
    try:
        for message in requests:
            runner.handle(message, message.topic.split("/")[2:])
        await wait_for(link, expected)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return link.publications


def request(command: str, payload: Any, **kwargs: Any) -> InboundMessage:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return InboundMessage(TOPICS.request(command), raw, kwargs.pop("retain", False), **kwargs)


async def test_response_payloads_fit_the_document(doc: dict[str, Any]) -> None:
    """Responses of the real CommandRunner (ok, refused, invalid, failed) fit the schema."""
    ok = NvrAnswer(200, {"Result": "OK"})
    nvr = ScriptedNvr(
        {
            "/meta/addEvent": ok,
            "/dio/pinManualSetting": NvrAnswer(200, "plain text answer"),
            "/device/getSnapshot": NvrRejected("the NVR refused: busy", {"Result": "Error"}),
            "/record/manualAlarm": NvrTimeout("no answer within 10 s"),
            "/record/manualRecord": NvrHttpError("HTTP 500", 500, {"error": "boom"}),
            "/device/ptzControl": NvrAnswer(200, {"PresetToken": "t1"}),
        }
    )
    requests = [
        request(
            "add_event",
            {"channel": 1, "type": "Motion", "state": "active", "transaction": {"id": [1, 2]}},
        ),
        request(
            "ptz",
            {
                "channel": 1,
                "command": "set_preset",
                "parameters": {"preset_name": "door"},
                "transaction": 7,
            },
        ),
        request("snapshot", {"channel": 3, "transaction": "s1"}),
        request("manual_alarm", {"channel": 2, "command": "start"}),
        request("manual_record", {"channel": 2, "command": "stop", "timestamp": NOW * 1000}),
        request("set_pin", {"pin": "1", "value": 1}),
        request("set_pin", b"not json"),
        request("add_meta", {"channel": 1, "type": "LPR", "data": "A", "timestamp": 1}),
        request("buzzer", {"timeout": 5}),
        request("reboot", {"transaction": "x"}),
        request("add_event", {"channel": 1, "type": "Motion", "state": "once"}, retain=True),
        InboundMessage(f"{BASE}/{NVR}/pin/2/set", b" On ", False),
        InboundMessage(f"{BASE}/{NVR}/channel/1/alarm/set", b"maybe", False),
        request("snapshot", {"channel": 1}, response_topic="my/replies", correlation_data=b"42"),
    ]
    publications = await run_requests(nvr, requests, expected=len(requests) + 1)
    statuses = set()
    for publication in publications:
        if publication.topic == "my/replies":
            check_payload(doc, channel_message(doc, "response"), publication.payload)
            continue
        assert check_publication(doc, publication) == "response"
        statuses.add(orjson.loads(publication.payload)["status"])
    assert statuses == {"ok", "error"}


async def test_info_and_availability_fit_the_document(doc: dict[str, Any]) -> None:
    """The supervisor's info (served, partly served) and availability fit the document."""
    identity = DeviceIdentity(name="Lobby", channels=2)
    config = BridgeConfig(nvrs=(NvrConfig(id=NVR, url="http://127.0.0.1:9"),), base_topic=BASE)
    served = {
        "/system/getSystemInfo": NvrAnswer(200, identity.system_info()),
        "/device/cameraList": NvrAnswer(
            200, [{**identity.camera(1), "Password": "x"}, identity.camera(2)]
        ),
    }
    for answers in (served, {"/system/getSystemInfo": served["/system/getSystemInfo"]}, {}):
        link = CapturingLink()
        supervisor = NvrSupervisor(
            config,
            config.nvrs[0],
            link=link,  # type: ignore[arg-type]
            metrics=Metrics(),
            login_gate=asyncio.Semaphore(1),
        )
        supervisor.client = ScriptedNvr(answers)  # type: ignore[assignment]
        for stream in STREAM_NAMES:
            supervisor._stream_state(stream, True)
        supervisor._login_seen.set()
        task = asyncio.create_task(supervisor._publish_info())
        try:
            async with asyncio.timeout(2):
                while not any(p.topic == TOPICS.info for p in link.publications):
                    await asyncio.sleep(POLL_INTERVAL)  # inside a deadline
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        supervisor._stream_state("event", False)
        channels = [check_publication(doc, p) for p in link.publications]
        # offline (first stream up), online (all five up), info, offline (one went down)
        assert channels == ["availability", "availability", "info", "availability"]
        states = [p.payload for p in link.publications if p.topic == TOPICS.availability]
        assert states == [b"offline", b"online", b"offline"]
        info = orjson.loads(link.publications[2].payload)
        if answers is served:
            assert info["cameras"][0]["Password"] == "***"


def test_bridge_state_and_last_will_fit_the_document(doc: dict[str, Any]) -> None:
    """bridge/state carries online/offline, retained, and is the server's Last Will."""
    for state in (b"online", b"offline"):
        publication = Publication(f"{BASE}/bridge/state", state, True, NVR)
        assert check_publication(doc, publication) == "bridgeState"
    will = doc["servers"]["broker"]["bindings"]["mqtt"]["lastWill"]
    assert will["message"] == "offline"
    assert will["retain"] is True


def test_discovery_payloads_fit_the_document(doc: dict[str, Any]) -> None:
    """Home Assistant configs and the registry list of the real DiscoveryRegistry fit."""
    link = CapturingLink()
    registry = DiscoveryRegistry(
        base=BASE, prefix="homeassistant", enabled_nvrs=frozenset({NVR}), publish=link.publish
    )
    identity = DeviceIdentity(name="Lobby", channels=2)
    registry.announce(TOPICS, {"system": identity.system_info(), "cameras": None})
    registry.announce(TOPICS, {"system": None, "cameras": [identity.camera(1)]})
    checked = {check_publication(doc, p) for p in link.publications if p.payload}
    assert checked == {"discoveryConfig", "discoveryRegistry"}


def test_request_examples_and_models_agree_with_the_schemas(doc: dict[str, Any]) -> None:
    """Request examples validate; the request models and their schemas reject the same."""
    for command, examples in REQUEST_EXAMPLES.items():
        message = channel_message(doc, f"request{command.title().replace('_', '')}")
        for example in examples:
            assert not schema_errors(doc, message["payload"], example)
            COMMANDS[command].model.model_validate(example)
    rejected = {
        "set_pin": [{"pin": "1", "value": 1}, {"pin": 0, "value": 1}, {"pin": 1, "value": 2}],
        "ptz": [
            {"channel": 1, "command": "pan_left", "speed": 2},
            {"channel": 1, "command": "fly"},
            {"channel": 0, "command": "stop"},
        ],
        "buzzer": [{"timeout": 61}, {"timeout": 5, "extra": 1}, {"timeout": True}],
        "add_event": [{"channel": 1, "type": "", "state": "active"}],
    }
    for command, values in rejected.items():
        message = channel_message(doc, f"request{command.title().replace('_', '')}")
        for value in values:
            assert schema_errors(doc, message["payload"], value), f"{command}: schema takes {value}"
            with pytest.raises(ValidationError):
                COMMANDS[command].model.model_validate(value)


def test_every_message_example_fits_its_schema(doc: dict[str, Any]) -> None:
    """The examples in the document validate against their own payload schemas."""
    count = 0
    for name, message in doc["components"]["messages"].items():
        assert message.get("examples"), f"message {name} has no example"
        for example in message["examples"]:
            errors = schema_errors(doc, message["payload"], example["payload"])
            assert not errors, f"{name} example {example['name']}: {errors}"
            count += 1
    assert count > 20


def test_convenience_payload_patterns_match_the_parser(doc: dict[str, Any]) -> None:
    """The plain values the document allows are exactly those convenience_request takes."""
    cases = [("pinSet", ["pin", "1", "set"], _ON_OFF)]
    cases += [
        ("channelAlarmSet", ["channel", "1", "alarm", "set"], _START_STOP),
        ("channelRecordSet", ["channel", "1", "record", "set"], _START_STOP),
    ]
    for channel_id, levels, accepted in cases:
        schema = channel_message(doc, channel_id)["payload"]
        for value in [*accepted, *(v.upper() for v in accepted), " On ", "yes", "", "2", "onn"]:
            parsed = convenience_of(levels, value.encode())
            assert parsed is not None
            takes = parsed.error is None
            assert (not schema_errors(doc, schema, value)) == takes, (channel_id, value)


# --- (e) commands and request channels --------------------------------------------------------


def test_every_command_has_its_request_channel(doc: dict[str, Any]) -> None:
    """One request channel per command of COMMANDS, with that model's schema, and no other."""
    request_channels = {
        channel["address"].removeprefix("{base}/{nvr}/request/"): channel_id
        for channel_id, channel in doc["channels"].items()
        if channel["address"].startswith("{base}/{nvr}/request/")
    }
    assert set(request_channels) == set(COMMANDS)
    for command, channel_id in request_channels.items():
        message = channel_message(doc, channel_id)
        assert payload_model(message) is COMMANDS[command].model
        (operation,) = operations_on(doc, channel_id, "receive")
        assert operation["reply"]["channel"]["$ref"] == "#/channels/response"
        schema = resolve(doc, message["payload"]["$ref"])
        assert {"transaction", "timestamp"} <= set(schema["properties"])
        assert not operations_on(doc, channel_id, "send")


# --- (f) every topic of the contract is a channel ---------------------------------------------


def contract_table_topics(text: str, section: str) -> list[str]:
    """The backquoted first cells of the table rows of one ``## N.`` section."""
    match = re.search(rf"^## {section}\..*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"section {section} not found"
    return re.findall(r"^\| `([^`]+)` \|", match.group(0), re.MULTILINE)


def test_every_contract_topic_is_a_channel(doc: dict[str, Any]) -> None:
    """Every topic of CONTRACT.md section 4's table is a channel address."""
    if not CONTRACT_PATH.exists():
        pytest.skip(f"{CONTRACT_PATH} is not there (the shared folder is not checked out)")
    topics = contract_table_topics(CONTRACT_PATH.read_text(encoding="utf-8"), "4")
    assert len(topics) >= 10
    addresses = {channel["address"] for channel in doc["channels"].values()}
    missing = [t for t in topics if t not in addresses]
    assert not missing, f"CONTRACT.md section 4 topics without a channel: {missing}"


def test_every_contract_command_has_a_request_channel(doc: dict[str, Any]) -> None:
    """Every command of CONTRACT.md section 5's table has its request channel."""
    if not CONTRACT_PATH.exists():
        pytest.skip(f"{CONTRACT_PATH} is not there (the shared folder is not checked out)")
    commands = contract_table_topics(CONTRACT_PATH.read_text(encoding="utf-8"), "5")
    assert set(commands) == set(COMMANDS)
    addresses = {channel["address"] for channel in doc["channels"].values()}
    for command in commands:
        assert f"{{base}}/{{nvr}}/request/{command}" in addresses


def test_readme_convenience_topics_are_channels(doc: dict[str, Any]) -> None:
    """The README's convenience topics (pin/{n}/set, channel/{ch}/.../set) are channels."""
    text = README_PATH.read_text(encoding="utf-8")
    topics = re.findall(r"^\| `(\{base\}/\{nvr\}/[^`]+/set)` \|", text, re.MULTILINE)
    assert len(topics) == 3
    addresses = {channel["address"] for channel in doc["channels"].values()}
    for topic in topics:
        # The README names the pin level {n}; the document's parameter is {pin}.
        assert topic.replace("{n}", "{pin}") in addresses, topic


def test_every_outgoing_model_is_a_message_payload(doc: dict[str, Any]) -> None:
    """Each model of bridge.payloads is the payload of a message the bridge sends."""
    sent = {
        payload_model(channel_message(doc, op["channel"]["$ref"].rsplit("/", 1)[-1]))
        for op in doc["operations"].values()
        if op["action"] == "send"
    }
    assert set(payloads.OUTGOING_MODELS) <= sent
