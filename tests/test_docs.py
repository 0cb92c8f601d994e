"""The user's reference documentation stays true to the code.

docs/configuration.md is what ``tools.configdoc`` generates from the configuration models;
docs/mqtt.md names every topic of ``bridge.topics.TOPICS``, every command of
``bridge.commands.COMMANDS`` and every metric the bridge registers, and nothing that is not
one; and no user document points into the development-only shared folder.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

from bridge.commands import COMMANDS
from bridge.config import BridgeConfig, MqttConfig, NvrConfig, _Environment, load_config
from bridge.observability import Metrics
from bridge.topics import TOPICS
from tests.certs import make_pki
from tools import asyncapi, configdoc

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONFIG_DOC = DOCS / "configuration.md"
MQTT_DOC = DOCS / "mqtt.md"
# A topic written as a template in backticks: `{base}/{nvr}/info`, `{haPrefix}/status`.
TOPIC = re.compile(r"`(\{(?:base|haPrefix)\}/[^`]+)`")
COMMAND_ROW = re.compile(r"^\| `([a-z_]+)` \|", re.MULTILINE)
METRIC_ROW = re.compile(r"^\| (counter|gauge|histogram) \| `(nvr_bridge_[a-z_]+)` \|", re.MULTILINE)
TOPIC_HEADING = re.compile(r"^### `([^`]+)`\n\nRetained: (yes|no)\.", re.MULTILINE)
USER_DOCUMENTS = [*sorted(p for p in DOCS.rglob("*") if p.is_file()), ROOT / "README.md"]


@functools.cache
def mqtt_doc() -> str:
    return MQTT_DOC.read_text(encoding="utf-8")


def documented_topics() -> set[str]:
    return set(TOPIC.findall(mqtt_doc()))


# --- docs/configuration.md ------------------------------------------------------------------


def test_configuration_doc_is_what_the_generator_writes() -> None:
    """docs/configuration.md is generated from today's models, variables and CLI."""
    problem = configdoc.stale(CONFIG_DOC, configdoc.render())
    assert problem is None, (
        f"{problem}\nrun `python -m tools.configdoc > docs/configuration.md` from {ROOT}"
    )


def test_check_option_exits_1_and_names_the_command_on_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--check FILE`` passes on the generated text and tells how to regenerate a stale one."""
    current = tmp_path / "configuration.md"
    current.write_text(configdoc.render(), encoding="utf-8")
    assert configdoc.main(["--check", str(current)]) == 0
    current.write_text(configdoc.render().replace("9108", "9109"), encoding="utf-8")
    assert configdoc.main(["--check", str(current)]) == 1
    assert configdoc.REGENERATE in capsys.readouterr().err


def test_every_config_key_and_variable_is_in_the_configuration_doc() -> None:
    """Each key of BridgeConfig, MqttConfig and NvrConfig has its row; each variable is named."""
    text = CONFIG_DOC.read_text(encoding="utf-8")
    missing = [
        f"{model.__name__}.{name}"
        for model in (BridgeConfig, MqttConfig, NvrConfig)
        for name in model.model_fields
        if f"| `{name}` |" not in text
    ]
    assert not missing, f"keys without a row in {CONFIG_DOC.name}: {missing}"
    variables = [f"BRIDGE_{name.upper()}" for name in _Environment.model_fields]
    assert not [v for v in variables if f"`{v}`" not in text]


# A value per key for the check below: (section, key) -> (text in the variable, loaded value).
SAMPLES = {
    ("nvr", "id"): ("lobby", "lobby"),
    ("nvr", "username"): ("someone", "someone"),
    ("nvr", "verify_tls"): ("false", False),
    ("nvr", "max_inflight_commands"): ("3", 3),
    ("mqtt", "keepalive"): ("45", 45),
    ("mqtt", "protocol"): ("3.1.1", "3.1.1"),
    ("mqtt", "qos"): ("0", 0),
    ("bridge", "ha_prefix"): ("ha", "ha"),
    ("bridge", "commands"): ("buzzer,snapshot", ("buzzer", "snapshot")),
    ("bridge", "status_stale_after"): ("5", 5),
}


def test_variables_set_the_keys_their_rows_name() -> None:
    """Setting the variable of a row changes that row's key in the loaded configuration."""
    bindings = configdoc.environment_bindings()
    for (section, key), (text, expected) in SAMPLES.items():
        variable = bindings[(section, key)]
        config = load_config(environ={"BRIDGE_NVR_URL": "http://127.0.0.1:8080", variable: text})
        owner = {"bridge": config, "mqtt": config.mqtt, "nvr": config.nvrs[0]}[section]
        assert getattr(owner, key) == expected, variable


def test_example_config_file_is_valid(tmp_path: Path) -> None:
    """The documented example file loads, once its secret and CA files exist."""
    pki = make_pki(tmp_path)
    text = configdoc.EXAMPLE_CONFIG
    for path in sorted(set(re.findall(r"(/(?:run|etc)/\S+)", text))):
        if path.endswith(".pem"):
            target = pki.ca.cert
        else:
            target = tmp_path / Path(path).name
            target.write_text("secret\n", encoding="utf-8")
        text = text.replace(path, str(target))
    config_file = tmp_path / "bridge.yaml"
    config_file.write_text(text, encoding="utf-8")
    config = load_config(str(config_file), environ={})
    assert [nvr.id for nvr in config.nvrs] == ["lobby", "yard"]
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "secret"
    assert configdoc.EXAMPLE_CONFIG in CONFIG_DOC.read_text(encoding="utf-8")


# --- docs/mqtt.md ---------------------------------------------------------------------------


def test_every_topic_is_in_the_mqtt_doc() -> None:
    """Each address of TOPICS appears in docs/mqtt.md, in backticks, exactly as written there."""
    missing = [spec.address for spec in TOPICS.values() if spec.address not in documented_topics()]
    assert not missing, f"topics docs/mqtt.md does not describe: {missing}"


def test_every_topic_in_the_mqtt_doc_is_a_topic_of_the_bridge() -> None:
    """No backticked `{base}/...` topic of docs/mqtt.md is unknown to the bridge."""
    documented = documented_topics()
    assert len(documented) > 20
    unknown = sorted(t for t in documented if asyncapi.topic_spec(t) is None)
    assert not unknown, f"docs/mqtt.md names topics the bridge does not know: {unknown}"


def test_topic_sections_say_whether_the_topic_is_retained() -> None:
    """Each topic's section states its retain flag as TOPICS has it."""
    sections = TOPIC_HEADING.findall(mqtt_doc())
    assert sections
    for topic, retained in sections:
        spec = asyncapi.topic_spec(topic)
        assert spec is not None, topic
        assert (retained == "yes") is spec.retained, f"{topic}: Retained: {retained}"
    published = {spec.address for spec in TOPICS.values() if spec.direction != "receive"}
    assert published <= {topic for topic, _ in sections}


def test_command_table_rows_are_the_commands() -> None:
    """The rows of the command table are exactly COMMANDS, each once."""
    assert sorted(COMMAND_ROW.findall(mqtt_doc())) == sorted(COMMANDS)


def test_every_metric_is_in_the_mqtt_doc() -> None:
    """The metrics table lists every registered metric by its exposed name and type."""
    registered = {}
    for family in Metrics().registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        registered[name] = family.type
    documented = {name: kind for kind, name in METRIC_ROW.findall(mqtt_doc())}
    assert documented == registered


# --- every user document ----------------------------------------------------------------------


@pytest.mark.parametrize("path", USER_DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_user_document_points_into_the_shared_folder(path: Path) -> None:
    """Users never see the shared folder: no document links to ../shared or CONTRACT.md."""
    text = path.read_text(encoding="utf-8", errors="replace")
    for needle in ("../shared", "CONTRACT.md"):
        lines = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
        assert not lines, f"{path.relative_to(ROOT)} mentions {needle!r} on lines {lines}"
