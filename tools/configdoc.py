"""The configuration reference, docs/configuration.md, generated from the code: a development tool.

The tables come from the models the bridge validates its configuration with
(``bridge.config``: ``BridgeConfig``, ``MqttConfig``, ``NvrConfig``: their keys, defaults,
descriptions and bounds) and from the function that maps the flat ``BRIDGE_*``
environment variables onto them (``_environment_overrides``, asked rather than restated);
the command-line section comes from the parser of ``bridge.cli``. Written here is only
what no table holds: the introduction, the example file and a few rules that live in
validators (``NOTES``). ``tests/test_docs.py`` fails when the committed file is stale.

    python -m tools.configdoc > docs/configuration.md     # regenerate (from the repository)
    python -m tools.configdoc --check                      # exit 1 when the file is stale
"""

from __future__ import annotations

import argparse
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from bridge import cli
from bridge.config import (
    COMMAND_NAMES,
    BridgeConfig,
    MqttConfig,
    NvrConfig,
    _Environment,
    _environment_overrides,
)
from tools import generated

ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = ROOT / "docs" / "configuration.md"
REGENERATE = "python -m tools.configdoc > docs/configuration.md"

Section = Literal["bridge", "mqtt", "nvr"]
SECTIONS: dict[Section, type[BaseModel]] = {
    "bridge": BridgeConfig,
    "mqtt": MqttConfig,
    "nvr": NvrConfig,
}

# Variables that set no key of a model: what the loader does with each.
SPECIAL_VARIABLES: dict[str, str] = {
    "config_file": "The configuration file to read (YAML or JSON); `--config FILE` on the "
    "command line wins over it.",
    "shard_index": "With `BRIDGE_SHARD_COUNT`: this replica's shard, the same as "
    "`BRIDGE_SHARD=index/count` (what a Kubernetes StatefulSet gives as the pod ordinal and "
    "the replica count). `BRIDGE_SHARD` wins when both are set; one without the other is an "
    "error.",
    "shard_count": "With `BRIDGE_SHARD_INDEX`: the number of replicas sharing the NVRs.",
}

# Defaults computed when the configuration is loaded, shown as what they will be.
FACTORY_DEFAULTS: dict[tuple[Section, str], str] = {
    ("bridge", "mqtt"): "(see [mqtt](#mqtt-the-broker))",
    ("mqtt", "client_id"): "`nvr-bridge-<hostname>`",
}
# Defaults better said in words than as a value.
SPOKEN_DEFAULTS: dict[tuple[Section, str], str] = {
    ("bridge", "commands"): f"all {len(COMMAND_NAMES)} commands",
    ("bridge", "snapshot_events"): "(empty: none)",
    ("mqtt", "max_packet"): "(the broker's, else 268435455)",
    ("nvr", "commands"): "(the top-level `commands`)",
}

# Rules the validators enforce and what a value means beyond its description.
NOTES: dict[tuple[Section, str], str] = {
    ("bridge", "nvrs"): "Only a file lists several; the `BRIDGE_NVR_*` variables describe "
    "one. Ids must be unique.",
    ("bridge", "base_topic"): "No `+`, `#` or NUL, no leading `/`; a trailing `/` is dropped.",
    ("bridge", "http_port"): "`0` takes any free port.",
    ("bridge", "commands"): "A request for a command not listed gets an error response and "
    "makes no REST call. An empty list turns every command off (a warning says so).",
    ("bridge", "command_max_age"): "Requests without a `timestamp` never expire.",
    ("bridge", "spool_dir"): "A message read from an NVR is on disk within a second and "
    "survives a crash until the broker confirmed it. Availability and the bridge's state "
    "are not spooled (they are published afresh). An unusable folder stops the start "
    "(exit 2).",
    ("bridge", "buffer_size"): "While the broker is away, retained state is coalesced to "
    "its latest value; past the bound the oldest other messages are dropped and counted.",
    ("bridge", "backoff_max"): "At least `backoff_initial`. Streams, logins and the broker "
    "all back off with full jitter.",
    ("bridge", "shard"): "0 <= i < N, e.g. `0/3`; every replica needs its own MQTT `client_id`.",
    ("bridge", "ha_discovery"): "See [Home Assistant](../README.md#home-assistant).",
    ("bridge", "snapshot_events"): "Compared case-insensitively.",
    ("bridge", "status_stale_after"): "The NVR sends the status stream once per second.",
    ("mqtt", "url"): "Port 1883 unless the URL names one, 8883 for `mqtts://`. No "
    "credentials, path, query or fragment in it.",
    ("mqtt", "password"): "Set it or `password_file`, not both.",
    ("mqtt", "password_file"): "Trailing whitespace stripped (Kubernetes and Docker secrets).",
    ("mqtt", "ca_file"): "A readable PEM file.",
    ("mqtt", "cert_file"): "Goes with `key_file`: set both or neither.",
    ("mqtt", "verify_tls"): "`false` with an `mqtts://` URL accepts any certificate and "
    "logs a warning at start.",
    ("mqtt", "client_id"): "The bridge never asks for a clean start.",
    ("mqtt", "qos"): "2 is refused: delivery is at least once with 1, at most once with 0.",
    ("mqtt", "session_expiry"): "The broker keeps the bridge's subscriptions and the QoS 1 "
    "requests queued for it that long (MQTT 5).",
    ("nvr", "id"): "It becomes a topic level; `bridge` is reserved.",
    ("nvr", "url"): "The websockets use `ws://` or `wss://` on the same host and port. No "
    "credentials, path, query or fragment in it.",
    ("nvr", "username"): "Without one the bridge does not log in.",
    ("nvr", "password"): "Set it or `password_file`, not both.",
    ("nvr", "password_file"): "For Kubernetes and Docker secrets.",
    ("nvr", "verify_tls"): "`false` with an `https://` URL accepts any certificate and logs "
    "a warning at start.",
    ("nvr", "ca_file"): "A readable PEM file.",
    ("nvr", "commands"): "In a file only, as a list.",
}

INTRO = """\
# Configuration

<!-- Generated from bridge/config.py and bridge/cli.py: do not edit. Regenerate with
     `{regenerate}`. -->

nvr-bridge reads its configuration from `BRIDGE_*` environment variables and, optionally, a
configuration file. `nvr-bridge check-config` validates both together and prints the result
with every password masked, or one `config error:` line per problem and exit code 2. The
topics, payloads, commands and metrics are in [mqtt.md](mqtt.md).

- [Where the configuration comes from](#where-the-configuration-comes-from)
- [Secrets](#secrets)
- [An example file](#an-example-file)
- [bridge: the top level](#bridge-the-top-level)
- [mqtt: the broker](#mqtt-the-broker)
- [nvrs: one entry per NVR](#nvrs-one-entry-per-nvr)
- [Other environment variables](#other-environment-variables)
- [The command line](#the-command-line)
- [Exit codes](#exit-codes)

## Where the configuration comes from

- **Environment variables**, prefix `BRIDGE_`, flat: `BRIDGE_MQTT_URL`, `BRIDGE_NVR_URL`,
  `BRIDGE_BASE_TOPIC`. They describe at most one NVR, which is enough for most
  installations: `BRIDGE_NVR_URL` alone (with its account) is a complete configuration.
- **A file**, named by `--config FILE` or by `BRIDGE_CONFIG_FILE` (`--config` wins when
  both are given). `--config` may come before or after the command:
  `nvr-bridge --config bridge.yaml run` and `nvr-bridge run --config bridge.yaml` are the
  same. The file is YAML; JSON is YAML too, so a JSON file works as well. Its top level
  holds the bridge's own settings, `mqtt:` the broker's and `nvrs:` a list of NVRs. **More
  than one NVR needs a file.**

**Precedence: the environment wins over the file**, key by key; what neither sets takes
its default.

- `BRIDGE_MQTT_*` replace the matching keys under the file's `mqtt:`; the other keys there
  stay.
- `BRIDGE_NVR_*` change one NVR: the file's only NVR, or the one whose `id` is
  `BRIDGE_NVR_ID` (required when the file lists several). When the file lists none, they
  make one. A `BRIDGE_NVR_ID` that names none of the file's NVRs is an error; it does not
  add an NVR.

Everything is strict, so a typo never passes silently: an unknown key in the file is an
error, and so is a `BRIDGE_*` variable that is no setting (the error names the closest
one). An error in a value set by a variable names the variable; one in the file names its
place (`nvrs[1].url`).

Values in the environment are text: booleans are `true` or `false`, lists are
comma-separated (`BRIDGE_COMMANDS=buzzer,snapshot`). In the file, `commands` and
`snapshot_events` may be a YAML list or such a string; an NVR's own `commands` is a list.
Durations are in seconds and may have decimals.

## Secrets

Passwords come from the environment, from the file, or best from a file of their own:
`password_file` (`BRIDGE_NVR_PASSWORD_FILE`, `BRIDGE_MQTT_PASSWORD_FILE`) reads the
password from that file, trailing whitespace (the final newline) stripped, which suits
Kubernetes and Docker secrets mounted as files. Giving both a password and its file is an
error, and so is a file that cannot be read. Passwords never appear in logs, metrics,
`check-config` output or error messages, and whatever the bridge publishes has them (and
any value under a key like `password`) replaced by `***`.

## An example file

Two NVRs (one over HTTPS) and a broker over TLS, both with certificates from a private CA;
every key the file does not set keeps its default.

```yaml
{example}```

Check it with `nvr-bridge check-config --config bridge.yaml`, then run it with
`nvr-bridge run --config bridge.yaml`.
"""

EXAMPLE_CONFIG = """\
base_topic: everfocus
log_format: json
commands: [add_event, manual_alarm, manual_record, set_pin, ptz, buzzer, snapshot,
           event_search, pin_status, system_info, camera_list, storage]
command_max_age: 30
ha_discovery: true
snapshot_events: [Motion, InputAlarm]
mqtt:
  url: mqtts://broker.example:8883
  username: nvr-bridge
  password_file: /run/secrets/mqtt-password
  ca_file: /etc/ssl/private-ca.pem         # the broker's certificate is from a private CA
  client_id: nvr-bridge-site1
  protocol: auto
  qos: 1
nvrs:
  - id: lobby
    url: http://192.168.1.20
    username: admin
    password_file: /run/secrets/nvr-lobby-password
  - id: yard
    url: https://192.168.1.21
    username: admin
    password_file: /run/secrets/nvr-yard-password
    ca_file: /etc/ssl/nvr-ca.pem           # and so is this NVR's
    commands: [manual_alarm, buzzer]       # this NVR obeys only these
    max_inflight_commands: 4
"""

SECTION_HEADINGS: dict[Section, tuple[str, str]] = {
    "bridge": (
        "bridge: the top level",
        "The keys at the top of the file. The environment variable of each is "
        "`BRIDGE_` and the key in capitals.",
    ),
    "mqtt": (
        "mqtt: the broker",
        "The keys under `mqtt:`; each variable is `BRIDGE_MQTT_` and the key in capitals.",
    ),
    "nvr": (
        "nvrs: one entry per NVR",
        "The keys of each entry of the `nvrs:` list. The `BRIDGE_NVR_*` variables set "
        "these keys of one NVR (see [precedence](#where-the-configuration-comes-from)).",
    ),
}


def _escape(text: str) -> str:
    """Text safe in a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _code(value: Any) -> str:
    return f"`{value}`"


def environment_bindings() -> dict[tuple[Section, str], str]:
    """The variable that sets each key, as the loader maps them (every variable set once)."""
    every = _Environment.model_construct(None, **dict.fromkeys(_Environment.model_fields, "x"))
    top, mqtt, nvr = _environment_overrides(every)
    bindings: dict[tuple[Section, str], str] = {}
    sources: list[tuple[Section, dict[str, Any], str]] = [
        ("bridge", top, "BRIDGE_"),
        ("mqtt", mqtt, "BRIDGE_MQTT_"),
        ("nvr", nvr, "BRIDGE_NVR_"),
    ]
    for section, keys, prefix in sources:
        model = SECTIONS[section]
        for key in keys:
            if key not in model.model_fields:
                raise ValueError(f"{prefix}{key.upper()} sets {key!r}, no key of {model.__name__}")
            bindings[(section, key)] = f"{prefix}{key.upper()}"
    return bindings


def special_variables() -> dict[str, str]:
    """The variables that set no key, each with what it does."""
    bindings = set(environment_bindings().values())
    names = [n for n in _Environment.model_fields if f"BRIDGE_{n.upper()}" not in bindings]
    undescribed = sorted(set(names) - set(SPECIAL_VARIABLES))
    if undescribed:
        raise ValueError(f"describe the variables {undescribed} in SPECIAL_VARIABLES")
    return {f"BRIDGE_{name.upper()}": SPECIAL_VARIABLES[name] for name in names}


def _without_none(annotation: Any) -> tuple[Any, bool]:
    """The annotation without ``None``, and whether ``None`` was allowed."""
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0], len(rest) != len(get_args(annotation))
    return annotation, False


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _kind(annotation: Any) -> str:
    """What values a key takes, in words: its type and its closed choices."""
    annotation, _ = _without_none(annotation)
    if get_origin(annotation) is Literal:
        return "One of " + ", ".join(_code(_value(c)) for c in get_args(annotation)) + "."
    if get_origin(annotation) is tuple:
        item = get_args(annotation)[0]
        if get_origin(item) is Literal:
            choices = ", ".join(_code(c) for c in get_args(item))
            return f"A list of: {choices}."
        if isinstance(item, type) and issubclass(item, BaseModel):
            return "A list of NVRs (see [nvrs](#nvrs-one-entry-per-nvr))."
        return "A list of names."
    if annotation is bool:
        return "`true` or `false`."
    if annotation is SecretStr:
        return "Secret: masked in every output."
    if annotation is int:
        return "An integer."
    if annotation is float:
        return "A number."
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "A mapping (see [mqtt](#mqtt-the-broker))."
    return ""


def _bounds(info: FieldInfo) -> str:
    """The key's numeric bounds in words (``ge``/``gt``/``le``/``lt`` of its Field)."""
    lower = upper = ""
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            lower = f"at least {_value(item.ge)}"
        elif isinstance(item, annotated_types.Gt):
            lower = f"more than {_value(item.gt)}"
        elif isinstance(item, annotated_types.Le):
            upper = f"at most {_value(item.le)}"
        elif isinstance(item, annotated_types.Lt):
            upper = f"less than {_value(item.lt)}"
    text = ", ".join(part for part in (lower, upper) if part)
    return f"{text[:1].upper()}{text[1:]}." if text else ""


def _default(section: Section, name: str, info: FieldInfo) -> str:
    key = (section, name)
    if key in SPOKEN_DEFAULTS:
        return SPOKEN_DEFAULTS[key]
    if info.is_required():
        return "(required)"
    if info.default_factory is not None:
        if key not in FACTORY_DEFAULTS:
            raise ValueError(f"{section}.{name}: say its computed default in FACTORY_DEFAULTS")
        return FACTORY_DEFAULTS[key]
    default = info.default
    if default is None:
        return "(none)"
    if isinstance(default, tuple):
        return _code(",".join(_value(item) for item in default)) if default else "(empty)"
    return _code(_value(default))


def _meaning(section: Section, name: str, info: FieldInfo) -> str:
    parts = [
        (info.description or "").strip(),
        _kind(info.annotation),
        _bounds(info),
        NOTES.get((section, name), ""),
    ]
    return " ".join(part for part in parts if part)


def _variable(section: Section, name: str, bindings: dict[tuple[Section, str], str]) -> str:
    if (section, name) in bindings:
        return _code(bindings[(section, name)])
    if (section, name) == ("bridge", "nvrs"):
        return "`BRIDGE_NVR_*` (one NVR)"
    if (section, name) == ("bridge", "mqtt"):
        return "`BRIDGE_MQTT_*`"
    return "file only"


def section_rows(section: Section) -> Iterator[tuple[str, str, str, str]]:
    """(key, variable, default, meaning) of every key of one section, in the model's order."""
    bindings = environment_bindings()
    for name, info in SECTIONS[section].model_fields.items():
        yield (
            _code(name),
            _variable(section, name, bindings),
            _default(section, name, info),
            _meaning(section, name, info),
        )


def _table(header: Sequence[str], rows: Iterator[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_escape(cell) for cell in row) + " |" for row in rows]
    return lines


def _check_notes() -> None:
    """Every hand-written note names a key that exists (a renamed key fails here)."""
    for section, name in [*NOTES, *SPOKEN_DEFAULTS, *FACTORY_DEFAULTS]:
        if name not in SECTIONS[section].model_fields:
            raise ValueError(f"a note names {section}.{name}, which is no key")


# --- the command line -----------------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            choices: dict[str, argparse.ArgumentParser] = action.choices
            return choices
    return {}


def _option_default(action: argparse.Action) -> str:
    if isinstance(action, argparse._StoreTrueAction) or action.default in (
        None,
        argparse.SUPPRESS,
    ):
        return ""
    return _code(action.default)


def _options(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, str]]:
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        names = ", ".join(action.option_strings)
        if action.metavar is not None or action.nargs != 0:
            names += f" {action.metavar or action.dest.upper()}"
        help_text = action.help or ""
        if action.choices is not None:
            help_text += "; one of " + ", ".join(_code(c) for c in action.choices)
        yield _code(names), _option_default(action), help_text


def command_line() -> list[str]:
    """The command-line section: every sub-command with its options, from ``bridge.cli``."""
    parser = cli.build_parser()
    lines = [
        "## The command line",
        "",
        "`nvr-bridge COMMAND [options]`, or `python -m bridge COMMAND [options]`, the same. "
        "Every command has `--help`, which shows each option's default.",
        "",
        *_table(("option", "default", "meaning"), iter(_options(parser))),
        "",
    ]
    for name, sub in _subcommands(parser).items():
        lines += [f"### `nvr-bridge {name}`", "", (sub.description or "").strip(), ""]
        options = list(_options(sub))
        if options:
            lines += [*_table(("option", "default", "meaning"), iter(options)), ""]
    return lines


def exit_codes() -> list[str]:
    """The exit codes, by the constants of ``bridge.cli``."""
    rows = [
        ("0", "Success; also `run` after a clean shutdown on SIGTERM or SIGINT."),
        (str(cli.EXIT_NOTHING_FOUND), "`discover`: no NVR answered."),
        (
            str(cli.EXIT_CONFIG),
            "The configuration is invalid (one `config error:` line per problem on "
            "stderr), the bridge cannot start (one `start error:` line: the HTTP port is "
            "taken, the spool folder is unusable), or the command line is wrong (a usage "
            "message).",
        ),
    ]
    return ["## Exit codes", "", *_table(("code", "meaning"), iter(rows))]


def render() -> str:
    """The text of docs/configuration.md (deterministic)."""
    _check_notes()
    lines = [INTRO.format(regenerate=REGENERATE, example=EXAMPLE_CONFIG)]
    for section, (heading, text) in SECTION_HEADINGS.items():
        header = ("YAML key", "environment variable", "default", "meaning")
        lines += [f"## {heading}", "", text, "", *_table(header, section_rows(section)), ""]
    lines += [
        "## Other environment variables",
        "",
        "These set no key of the file.",
        "",
        *_table(
            ("variable", "meaning"),
            iter((_code(name), text) for name, text in special_variables().items()),
        ),
        "",
        *command_line(),
        *exit_codes(),
    ]
    return "\n".join(lines) + "\n"


def stale(path: Path, text: str) -> str | None:
    """Why the file at ``path`` is not ``text`` (None when it is): a diff and the remedy."""
    return generated.stale(path, text, REGENERATE)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the reference, or with ``--check [FILE]`` say whether FILE is current."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.configdoc",
        description="Print the configuration reference (docs/configuration.md), generated "
        "from bridge/config.py and bridge/cli.py.",
    )
    parser.add_argument(
        "--check",
        metavar="FILE",
        type=Path,
        nargs="?",
        const=DOC_PATH,
        help=f"exit 1 with a diff when FILE (default {DOC_PATH.relative_to(ROOT)}) differs "
        "from the generated text",
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check is None:
        sys.stdout.write(text)
        return 0
    problem = stale(args.check, text)
    if problem is not None:
        sys.stderr.write(problem + "\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
