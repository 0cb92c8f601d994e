"""Configuration from BRIDGE_* variables and the YAML file (CONTRACT.md section 2).

Every test passes ``environ`` explicitly so the process's environment never leaks in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import (
    COMMAND_NAMES,
    MASK,
    BridgeConfig,
    ConfigError,
    load_config,
    masked,
    secrets_of,
)
from tests.certs import make_pki

NVR_URL = "http://192.168.1.10:80"


@pytest.fixture(autouse=True)
def _no_bridge_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not depend on BRIDGE_* variables of the shell that runs them."""
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)


def write_yaml(tmp_path: Path, data: Any, name: str = "bridge.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def problems(config_file: str | None = None, **environ: str) -> list[str]:
    """The ConfigError problems of a configuration that must be refused."""
    with pytest.raises(ConfigError) as caught:
        load_config(config_file, environ)
    lines = caught.value.problems
    assert lines
    for line in lines:
        assert "\n" not in line
    return lines


def only_problem(config_file: str | None = None, **environ: str) -> str:
    (line,) = problems(config_file, **environ)
    return line


# -- environment only ------------------------------------------------------------------


def test_env_only_single_nvr_with_defaults() -> None:
    """BRIDGE_NVR_URL alone gives one NVR named 'nvr' and the documented defaults."""
    config = load_config(None, {"BRIDGE_NVR_URL": NVR_URL})
    (nvr,) = config.nvrs
    assert nvr.id == "nvr"
    assert nvr.url == NVR_URL
    assert nvr.username is None
    assert nvr.password is None
    assert nvr.verify_tls is True
    assert config.mqtt.url == "mqtt://localhost:1883"
    assert config.mqtt.host == "localhost"
    assert config.mqtt.port == 1883
    assert config.mqtt.verify_tls is True
    assert config.mqtt.protocol == "auto"
    assert config.mqtt.qos == 1
    assert config.mqtt.session_expiry == 3600
    assert config.mqtt.client_id.startswith("nvr-bridge-")
    assert config.base_topic == "everfocus"
    assert config.http_port == 9108
    assert config.log_format == "json"
    assert config.log_level == "info"
    assert config.command_max_age == 30
    assert config.spool_dir is None
    assert config.commands == COMMAND_NAMES


def test_env_only_all_nvr_and_mqtt_settings(tmp_path: Path) -> None:
    """Every flat BRIDGE_* variable lands on its nested setting, typed."""
    ca_file = str(make_pki(tmp_path).ca.cert)
    config = load_config(
        None,
        {
            "BRIDGE_NVR_URL": "https://nvr.example:8443/",
            "BRIDGE_NVR_ID": "lobby-1",
            "BRIDGE_NVR_USERNAME": "admin",
            "BRIDGE_NVR_PASSWORD": "nvr-secret",
            "BRIDGE_NVR_VERIFY_TLS": "false",
            "BRIDGE_NVR_CA_FILE": ca_file,
            "BRIDGE_MQTT_URL": "mqtts://broker.example",
            "BRIDGE_MQTT_USERNAME": "bridge",
            "BRIDGE_MQTT_PASSWORD": "mqtt-secret",
            "BRIDGE_MQTT_VERIFY_TLS": "0",
            "BRIDGE_MQTT_CLIENT_ID": "me",
            "BRIDGE_MQTT_PROTOCOL": "3.1.1",
            "BRIDGE_MQTT_SESSION_EXPIRY": "60",
            "BRIDGE_BASE_TOPIC": "home/nvr",
            "BRIDGE_HTTP_PORT": "9200",
            "BRIDGE_LOG_FORMAT": "console",
            "BRIDGE_LOG_LEVEL": "debug",
            "BRIDGE_COMMAND_MAX_AGE": "5",
            "BRIDGE_SPOOL_DIR": "/var/spool/bridge",
            "UNRELATED": "x",
        },
    )
    (nvr,) = config.nvrs
    assert nvr.id == "lobby-1"
    assert nvr.url == "https://nvr.example:8443"
    assert nvr.is_tls
    assert nvr.username == "admin"
    assert nvr.password is not None
    assert nvr.password.get_secret_value() == "nvr-secret"
    assert nvr.verify_tls is False
    assert nvr.ca_file == ca_file
    mqtt = config.mqtt
    assert mqtt.is_tls
    assert mqtt.port == 8883
    assert mqtt.host == "broker.example"
    assert mqtt.username == "bridge"
    assert mqtt.password is not None
    assert mqtt.password.get_secret_value() == "mqtt-secret"
    assert mqtt.verify_tls is False
    assert (mqtt.client_id, mqtt.protocol, mqtt.session_expiry) == ("me", "3.1.1", 60)
    assert config.base_topic == "home/nvr"
    assert config.http_port == 9200
    assert (config.log_format, config.log_level) == ("console", "debug")
    assert config.command_max_age == 5
    assert config.spool_dir == "/var/spool/bridge"


@pytest.mark.parametrize("qos", [0, 1])
def test_mqtt_qos_from_env(qos: int) -> None:
    """BRIDGE_MQTT_QOS (text, like every variable) sets the publish QoS."""
    config = load_config(None, {"BRIDGE_NVR_URL": NVR_URL, "BRIDGE_MQTT_QOS": str(qos)})
    assert config.mqtt.qos == qos


@pytest.mark.parametrize("qos", ["2", 2])
def test_mqtt_qos_2_is_refused_with_a_reason(qos: object, tmp_path: Path) -> None:
    """QoS 2 is not offered: a clear configuration error says why and what to set."""
    if isinstance(qos, str):
        file, environ = None, {"BRIDGE_NVR_URL": NVR_URL, "BRIDGE_MQTT_QOS": qos}
    else:
        file, environ = write_yaml(tmp_path, {"nvrs": [{"url": NVR_URL}], "mqtt": {"qos": 2}}), {}
    with pytest.raises(ConfigError) as error:
        load_config(file, environ)
    (problem,) = error.value.problems
    assert "QoS 2 is not offered" in problem
    assert "set 1 or 0" in problem


def test_mqtt_qos_from_yaml(tmp_path: Path) -> None:
    """qos as a YAML integer sets the publish QoS."""
    path = write_yaml(tmp_path, {"nvrs": [{"url": "http://a"}], "mqtt": {"qos": 0}})
    assert load_config(path, {}).mqtt.qos == 0


def test_process_environment_does_not_leak_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """With environ given, the process's BRIDGE_* variables are not read."""
    monkeypatch.setenv("BRIDGE_BASE_TOPIC", "leaked")
    monkeypatch.setenv("BRIDGE_NVR_ID", "leaked")
    config = load_config(None, {"BRIDGE_NVR_URL": NVR_URL})
    assert config.base_topic == "everfocus"
    assert config.nvrs[0].id == "nvr"


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("mqtt://broker", 1883),
        ("mqtts://broker", 8883),
        ("mqtt://broker:1999", 1999),
        ("mqtts://broker:9999", 9999),
    ],
)
def test_mqtt_port_defaults_by_scheme(url: str, port: int) -> None:
    """The broker port is 1883 for mqtt://, 8883 for mqtts://, unless the URL names one."""
    config = load_config(None, {"BRIDGE_NVR_URL": NVR_URL, "BRIDGE_MQTT_URL": url})
    assert config.mqtt.port == port
    assert config.mqtt.is_tls == url.startswith("mqtts://")


# -- the YAML file ---------------------------------------------------------------------


def several_nvrs() -> dict[str, Any]:
    return {
        "nvrs": [
            {"id": "lobby", "url": "http://10.0.0.1", "username": "a", "password": "pw-lobby"},
            {"id": "yard", "url": "https://10.0.0.2:8443", "commands": ["snapshot"]},
            {"id": "gate_3", "url": "http://10.0.0.3:81"},
        ],
        "mqtt": {"url": "mqtt://broker:1884", "username": "u", "password": "pw-mqtt"},
        "base_topic": "site",
        "commands": "add_event, ptz",
    }


def test_yaml_with_several_nvrs(tmp_path: Path) -> None:
    """A nested YAML file describes several NVRs, each with its own settings."""
    config = load_config(write_yaml(tmp_path, several_nvrs()), {})
    assert [n.id for n in config.nvrs] == ["lobby", "yard", "gate_3"]
    assert [n.url for n in config.nvrs] == [
        "http://10.0.0.1",
        "https://10.0.0.2:8443",
        "http://10.0.0.3:81",
    ]
    assert config.mqtt.port == 1884
    assert config.base_topic == "site"
    assert config.commands == ("add_event", "ptz")
    assert config.commands_for(config.nvrs[0]) == {"add_event", "ptz"}
    assert config.commands_for(config.nvrs[1]) == {"snapshot"}


def test_config_file_named_by_environment(tmp_path: Path) -> None:
    """BRIDGE_CONFIG_FILE names the YAML file when no path is passed."""
    path = write_yaml(tmp_path, several_nvrs())
    config = load_config(None, {"BRIDGE_CONFIG_FILE": path})
    assert len(config.nvrs) == 3


def test_env_overrides_the_file(tmp_path: Path) -> None:
    """Environment variables win over the file's values, top level, mqtt and NVR."""
    path = write_yaml(
        tmp_path,
        {
            "nvrs": [{"id": "lobby", "url": "http://10.0.0.1", "username": "file-user"}],
            "mqtt": {"url": "mqtt://file-broker", "username": "file-mqtt"},
            "base_topic": "from-file",
            "log_level": "warning",
        },
    )
    config = load_config(
        path,
        {
            "BRIDGE_NVR_URL": "http://10.9.9.9:8080",
            "BRIDGE_MQTT_URL": "mqtts://env-broker",
            "BRIDGE_BASE_TOPIC": "from-env",
        },
    )
    (nvr,) = config.nvrs
    assert nvr.id == "lobby"
    assert nvr.url == "http://10.9.9.9:8080"
    assert nvr.username == "file-user"
    assert config.mqtt.url == "mqtts://env-broker"
    assert config.mqtt.username == "file-mqtt"
    assert config.base_topic == "from-env"
    assert config.log_level == "warning"


def test_env_nvr_id_selects_the_nvr_it_overrides(tmp_path: Path) -> None:
    """With several NVRs in the file, BRIDGE_NVR_ID picks the one BRIDGE_NVR_* changes."""
    path = write_yaml(tmp_path, several_nvrs())
    config = load_config(path, {"BRIDGE_NVR_ID": "yard", "BRIDGE_NVR_USERNAME": "env-user"})
    by_id = {n.id: n for n in config.nvrs}
    assert by_id["yard"].username == "env-user"
    assert by_id["lobby"].username == "a"
    assert by_id["gate_3"].username is None


def test_env_nvr_override_with_several_nvrs_needs_an_id(tmp_path: Path) -> None:
    """BRIDGE_NVR_* without BRIDGE_NVR_ID against several NVRs is an error that says so."""
    line = only_problem(write_yaml(tmp_path, several_nvrs()), BRIDGE_NVR_USERNAME="x")
    assert "BRIDGE_NVR_ID" in line


def test_empty_yaml_file_with_env_nvr(tmp_path: Path) -> None:
    """An empty file is no settings; the environment still provides the NVR."""
    config = load_config(write_yaml(tmp_path, ""), {"BRIDGE_NVR_URL": NVR_URL})
    assert config.nvrs[0].url == NVR_URL


# -- BRIDGE_COMMANDS -------------------------------------------------------------------


def test_commands_comma_list() -> None:
    """BRIDGE_COMMANDS is a comma list; spaces and empty entries are ignored."""
    config = load_config(
        None, {"BRIDGE_NVR_URL": NVR_URL, "BRIDGE_COMMANDS": " ptz, buzzer ,,snapshot "}
    )
    assert config.commands == ("ptz", "buzzer", "snapshot")
    assert config.commands_for(config.nvrs[0]) == {"ptz", "buzzer", "snapshot"}


def test_commands_empty_allows_nothing() -> None:
    """An empty BRIDGE_COMMANDS obeys no command at all."""
    config = load_config(None, {"BRIDGE_NVR_URL": NVR_URL, "BRIDGE_COMMANDS": ""})
    assert config.commands == ()
    assert config.commands_for(config.nvrs[0]) == frozenset()


def test_commands_unknown_name_is_an_error_naming_it() -> None:
    """An unknown command name is refused, naming the setting and the bad name."""
    line = only_problem(BRIDGE_NVR_URL=NVR_URL, BRIDGE_COMMANDS="ptz,open_door")
    assert line.startswith("BRIDGE_COMMANDS:")
    assert "'open_door'" in line


# -- one-line errors naming the setting ------------------------------------------------


@pytest.mark.parametrize("nvr_id", ["a/b", "a b", "lobby+", "#", ""])
def test_nvr_id_must_be_a_topic_level(nvr_id: str) -> None:
    """An NVR id outside [A-Za-z0-9_-]+ is refused, naming BRIDGE_NVR_ID and the value."""
    line = only_problem(BRIDGE_NVR_URL=NVR_URL, BRIDGE_NVR_ID=nvr_id)
    assert line.startswith("BRIDGE_NVR_ID:")
    assert repr(nvr_id) in line


@pytest.mark.parametrize(
    "url",
    [
        "ftp://10.0.0.1",
        "ws://10.0.0.1",
        "10.0.0.1:80",
        "http://",
        "http://:80",
        "http://10.0.0.1/admin",
        "http://10.0.0.1:80/x?y=1",
        "http://10.0.0.1:99999",
    ],
)
def test_malformed_nvr_url_is_refused(url: str) -> None:
    """A URL that is not http(s)://host[:port] is one error line naming BRIDGE_NVR_URL."""
    line = only_problem(BRIDGE_NVR_URL=url)
    assert line.startswith("BRIDGE_NVR_URL:")
    assert repr(url) in line


@pytest.mark.parametrize("url", ["http://broker", "mqtt://", "mqtt://broker/topic"])
def test_malformed_mqtt_url_is_refused(url: str) -> None:
    """A broker URL that is not mqtt(s)://host[:port] names BRIDGE_MQTT_URL."""
    line = only_problem(BRIDGE_NVR_URL=NVR_URL, BRIDGE_MQTT_URL=url)
    assert line.startswith("BRIDGE_MQTT_URL:")


@pytest.mark.parametrize(
    ("setting", "url"),
    [
        ("BRIDGE_NVR_URL", "http://admin:hunter2@10.0.0.1/admin"),
        ("BRIDGE_NVR_URL", "http://admin:hunter2@10.0.0.1:99999"),
        ("BRIDGE_MQTT_URL", "mqtt://user:hunter2@broker/x"),
    ],
)
def test_url_error_never_shows_a_password_in_the_url(setting: str, url: str) -> None:
    """Secrets never appear in error messages, even one typed into a malformed URL."""
    environ = {"BRIDGE_NVR_URL": NVR_URL, setting: url}
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ)
    assert "hunter2" not in str(caught.value)


def test_url_with_credentials_is_refused_without_echoing_them() -> None:
    """Credentials in an otherwise fine URL are refused with a pointer to the settings."""
    line = only_problem(BRIDGE_NVR_URL="http://admin:hunter2@10.0.0.1")
    assert line.startswith("BRIDGE_NVR_URL:")
    assert "hunter2" not in line


def test_duplicate_nvr_ids_are_refused(tmp_path: Path) -> None:
    """Two NVRs with one id are one error naming the id."""
    path = write_yaml(
        tmp_path,
        {"nvrs": [{"id": "lobby", "url": "http://a"}, {"id": "lobby", "url": "http://b"}]},
    )
    line = only_problem(path)
    assert "'lobby'" in line
    assert "id" in line
    assert "twice" in line


def test_two_nvrs_defaulting_to_the_same_id_are_refused(tmp_path: Path) -> None:
    """Two NVRs without an id both default to 'nvr' and collide."""
    path = write_yaml(tmp_path, {"nvrs": [{"url": "http://a"}, {"url": "http://b"}]})
    assert "'nvr'" in only_problem(path)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"nvrs": [{"url": "http://a", "pasword": "x"}]}, "nvrs[0].pasword"),
        ({"nvrs": [{"url": "http://a"}], "mqtt": {"urll": "mqtt://b"}}, "mqtt.urll"),
        ({"nvrs": [{"url": "http://a"}], "base_topik": "x"}, "base_topik"),
    ],
)
def test_unknown_yaml_key_is_an_error(tmp_path: Path, data: dict[str, Any], where: str) -> None:
    """A typo in the file is an error naming the key, not a silently ignored setting."""
    line = only_problem(write_yaml(tmp_path, data))
    assert line.startswith(f"{where}:")
    assert "not a known setting" in line


def test_several_problems_are_each_one_line(tmp_path: Path) -> None:
    """Every problem of the file is reported, each on its own line."""
    path = write_yaml(
        tmp_path,
        {"nvrs": [{"id": "a/b", "url": "ftp://x"}], "log_level": "loud", "http_port": 70000},
    )
    lines = problems(path)
    assert len(lines) == 4
    assert {line.split(":")[0] for line in lines} == {
        "nvrs[0].id",
        "nvrs[0].url",
        "log_level",
        "http_port",
    }


def test_missing_nvr_is_an_error() -> None:
    """No NVR at all says how to configure one."""
    assert "BRIDGE_NVR_URL" in only_problem()


def test_unreadable_config_file_is_an_error(tmp_path: Path) -> None:
    """A config file that cannot be read is one line naming it."""
    missing = str(tmp_path / "nope.yaml")
    assert missing in only_problem(missing)


def test_config_file_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    """A YAML file holding a list is refused."""
    assert "mapping" in only_problem(write_yaml(tmp_path, "- a\n- b\n"))


# -- passwords and password files ------------------------------------------------------


def test_password_and_password_file_both_set_is_an_error(tmp_path: Path) -> None:
    """Setting a password and its file is one error naming both settings."""
    secret = tmp_path / "pw"
    secret.write_text("from-file")
    line = only_problem(
        BRIDGE_NVR_URL=NVR_URL, BRIDGE_NVR_PASSWORD="x", BRIDGE_NVR_PASSWORD_FILE=str(secret)
    )
    assert line.startswith("nvrs[0]")
    assert "password" in line
    assert "password_file" in line


def test_mqtt_password_and_file_both_set_is_an_error(tmp_path: Path) -> None:
    """The same rule holds for the broker password."""
    secret = tmp_path / "pw"
    secret.write_text("from-file")
    line = only_problem(
        BRIDGE_NVR_URL=NVR_URL, BRIDGE_MQTT_PASSWORD="x", BRIDGE_MQTT_PASSWORD_FILE=str(secret)
    )
    assert line.startswith("mqtt")
    assert "password_file" in line


@pytest.mark.parametrize("kind", ["NVR", "MQTT"])
def test_password_file_trailing_whitespace_stripped(tmp_path: Path, kind: str) -> None:
    """A password file's trailing newline and spaces are stripped (Kubernetes secrets)."""
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t pass \t\n\n")
    config = load_config(
        None, {"BRIDGE_NVR_URL": NVR_URL, f"BRIDGE_{kind}_PASSWORD_FILE": str(secret)}
    )
    holder = config.nvrs[0] if kind == "NVR" else config.mqtt
    assert holder.password is not None
    assert holder.password.get_secret_value() == "s3cr3t pass"


def test_password_file_in_yaml(tmp_path: Path) -> None:
    """password_file works from the YAML file too."""
    secret = tmp_path / "pw"
    secret.write_text("yaml-secret\n")
    path = write_yaml(tmp_path, {"nvrs": [{"url": "http://a", "password_file": str(secret)}]})
    password = load_config(path, {}).nvrs[0].password
    assert password is not None
    assert password.get_secret_value() == "yaml-secret"


def test_unreadable_password_file_is_an_error(tmp_path: Path) -> None:
    """A password file that cannot be read is one line naming the file."""
    missing = tmp_path / "absent"
    line = only_problem(BRIDGE_NVR_URL=NVR_URL, BRIDGE_NVR_PASSWORD_FILE=str(missing))
    assert line.startswith("nvrs[0]")
    assert str(missing) in line
    assert "cannot read" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_password_file_without_permission_is_an_error(tmp_path: Path) -> None:
    """A password file the bridge may not read is an error, not a crash."""
    secret = tmp_path / "pw"
    secret.write_text("x")
    secret.chmod(0)
    line = only_problem(BRIDGE_NVR_URL=NVR_URL, BRIDGE_MQTT_PASSWORD_FILE=str(secret))
    assert line.startswith("mqtt")
    assert str(secret) in line


def test_password_file_that_is_a_directory_is_an_error(tmp_path: Path) -> None:
    """Pointing password_file at a directory is an error naming it."""
    line = only_problem(BRIDGE_NVR_URL=NVR_URL, BRIDGE_NVR_PASSWORD_FILE=str(tmp_path))
    assert str(tmp_path) in line


# -- masking ---------------------------------------------------------------------------


def secret_config(tmp_path: Path) -> BridgeConfig:
    secret = tmp_path / "mqtt-pw"
    secret.write_text("MQTT-FILE-SECRET\n")
    data = several_nvrs()
    data["nvrs"][1]["password"] = "YARD-SECRET"
    data["mqtt"] = {"url": "mqtts://broker", "password_file": str(secret)}
    return load_config(write_yaml(tmp_path, data), {"BRIDGE_NVR_ID": "gate_3", **GATE_ENV})


GATE_ENV = {"BRIDGE_NVR_PASSWORD": "GATE-ENV-SECRET", "BRIDGE_NVR_USERNAME": "gate"}
SECRETS = ("pw-lobby", "YARD-SECRET", "GATE-ENV-SECRET", "MQTT-FILE-SECRET")


def test_masked_contains_no_password_anywhere(tmp_path: Path) -> None:
    """masked() holds no secret value anywhere and shows the mask instead."""
    config = secret_config(tmp_path)
    view = masked(config)
    dumped = json.dumps(view) + yaml.safe_dump(view) + repr(view)
    for secret in SECRETS:
        assert secret not in dumped
    assert [n["password"] for n in view["nvrs"]] == [MASK, MASK, MASK]
    assert view["mqtt"]["password"] == MASK
    assert view["mqtt"]["password_file"].endswith("mqtt-pw")
    assert view["nvrs"][0]["username"] == "a"
    assert view["nvrs"][0]["url"] == "http://10.0.0.1"


def test_masked_leaves_unset_password_as_none() -> None:
    """A password that is not set is shown as null, not as a mask."""
    view = masked(load_config(None, {"BRIDGE_NVR_URL": NVR_URL}))
    assert view["nvrs"][0]["password"] is None
    assert view["mqtt"]["password"] is None


def test_config_repr_does_not_show_secrets(tmp_path: Path) -> None:
    """Neither repr nor str of the configuration shows a password."""
    config = secret_config(tmp_path)
    for text in (repr(config), str(config)):
        for secret in SECRETS:
            assert secret not in text


def test_secrets_of_lists_every_secret(tmp_path: Path) -> None:
    """secrets_of returns every configured password (for redacting logs)."""
    assert sorted(secrets_of(secret_config(tmp_path))) == sorted(SECRETS)


def test_secrets_of_without_passwords_is_empty() -> None:
    """No password configured: nothing to redact."""
    assert secrets_of(load_config(None, {"BRIDGE_NVR_URL": NVR_URL})) == []


# -- the first hour: typos, variables named, NVR ids, warnings -------------------------


def test_a_misspelt_variable_is_an_error_naming_the_closest_setting() -> None:
    """BRIDGE_MQTT_USRNAME never passes silently: it names BRIDGE_MQTT_USERNAME."""
    line = only_problem(BRIDGE_NVR_URL=NVR_URL, BRIDGE_MQTT_USRNAME="u")
    assert line == "BRIDGE_MQTT_USRNAME: is not a known setting; did you mean BRIDGE_MQTT_USERNAME?"


def test_an_unknown_variable_without_a_close_one_points_to_the_reference() -> None:
    """A BRIDGE_* variable like no setting points to the configuration reference."""
    line = only_problem(BRIDGE_NVR_URL=NVR_URL, BRIDGE_ZZZ="1")
    assert line.startswith("BRIDGE_ZZZ: is not a known setting")
    assert "docs/configuration.md" in line


def test_every_setting_has_its_variable() -> None:
    """The environment's variables are exactly the settings of the models (none forgotten)."""
    from bridge.config import BridgeConfig, MqttConfig, NvrConfig, _Environment

    expected = {"config_file", "shard_index", "shard_count"}
    expected |= {n for n in BridgeConfig.model_fields if n not in ("nvrs", "mqtt")}
    expected |= {f"mqtt_{n}" for n in MqttConfig.model_fields}
    expected |= {f"nvr_{n}" for n in NvrConfig.model_fields if n != "commands"}
    assert set(_Environment.model_fields) == expected


def test_an_nvr_id_matching_no_nvr_of_the_file_says_so(tmp_path: Path) -> None:
    """BRIDGE_NVR_ID naming none of the file's NVRs is an error, not a phantom third NVR."""
    path = write_yaml(
        tmp_path, {"nvrs": [{"id": "lobby", "url": "http://a"}, {"id": "yard", "url": "http://b"}]}
    )
    with pytest.raises(ConfigError) as error:
        load_config(path, {"BRIDGE_NVR_ID": "gate", "BRIDGE_NVR_PASSWORD": "x"})
    (line,) = error.value.problems
    assert line.startswith("BRIDGE_NVR_ID: 'gate' is none of the NVRs")
    assert "'lobby'" in line and "'yard'" in line


def test_warnings_for_commands_off_and_a_username_without_password() -> None:
    """Valid but probably not meant: every command off, an account without its password."""
    from bridge.config import config_warnings

    config = load_config(
        None,
        {
            "BRIDGE_NVR_URL": NVR_URL,
            "BRIDGE_NVR_USERNAME": "admin",
            "BRIDGE_COMMANDS": "",
            "BRIDGE_MQTT_USERNAME": "bridge",
        },
    )
    warnings = config_warnings(config)
    assert any("every command is off" in w for w in warnings)
    assert any("username and an empty password" in w and "'nvr'" in w for w in warnings)
    assert any("MQTT account has a username and an empty password" in w for w in warnings)
    assert config_warnings(load_config(None, {"BRIDGE_NVR_URL": NVR_URL})) == []
