"""The bridge's configuration: environment variables and an optional YAML file.

Environment variables (prefix ``BRIDGE_``) are flat, as CONTRACT.md section 2 names them;
the YAML file (``BRIDGE_CONFIG_FILE`` or ``--config``) is nested and is the only way to
describe more than one NVR. The environment wins over the file. Every model forbids
unknown keys so that a typo is an error, not a silently ignored setting.

Errors::

    ConfigError            one or more problems, each a line "where: what (value)"
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import socket
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridge.limits import (
    DEFAULT_JSON_MAX_DEPTH,
    DEFAULT_NVR_MAX_ANSWER_BYTES,
    DEFAULT_RESPONSE_MAX_BYTES,
)

CommandName = Literal[
    "add_event",
    "add_meta",
    "manual_alarm",
    "manual_record",
    "set_pin",
    "ptz",
    "buzzer",
    "snapshot",
    "event_search",
    "meta_search",
    "snapshot_search",
    "record_map",
    "logs",
    "pin_status",
    "system_info",
    "camera_list",
    "storage",
]
COMMAND_NAMES: tuple[CommandName, ...] = get_args(CommandName)
# The eight commands that act on the NVR (CONTRACT section 5); the rest only read it.
ACTING_COMMANDS: tuple[CommandName, ...] = COMMAND_NAMES[:8]
NVR_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
MAX_MQTT_PACKET = 268_435_455
MASK = "**********"


def shard_of(nvr_id: str, count: int) -> int:
    """The shard an NVR belongs to: a stable hash of its id (the same in every process)."""
    digest = hashlib.sha256(nvr_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` holds one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _read_secret_file(path: str, what: str) -> SecretStr:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {what} file {path!r}: {exc.strerror}") from None
    return SecretStr(text.rstrip())


def _check_tls_files(
    ca_file: str | None, cert_file: str | None = None, key_file: str | None = None
) -> None:
    """Load the TLS files as the connection will, so a bad path is a configuration error."""
    for name, path in (("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file)):
        if path is not None and not Path(path).is_file():
            raise ValueError(f"{name} {path!r} is not a readable file")
    try:
        context = ssl.create_default_context(cafile=ca_file)
        if cert_file is not None and key_file is not None:
            context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        what = "cert_file/key_file" if cert_file else "ca_file"
        raise ValueError(f"{what} cannot be loaded as PEM: {exc.reason or exc}") from None
    except OSError as exc:
        raise ValueError(f"a TLS file cannot be read: {exc.strerror or exc}") from None


def _without_credentials(url: str) -> str:
    """The URL with any user:password@ part masked, safe to echo in an error."""
    scheme, sep, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        authority = MASK + "@" + authority.rsplit("@", 1)[1]
    return f"{scheme}{sep}{authority}{slash}{tail}" if sep else url


def _check_url(url: str, schemes: tuple[str, ...], example: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise ValueError(
            "must not carry credentials; use the username and password settings; "
            f"got {_without_credentials(url)!r}"
        )
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"must look like {example} (scheme {' or '.join(schemes)}); got {url!r}")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"has an invalid port; got {url!r}") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"must have no path, query or fragment; got {url!r}")
    return url.rstrip("/")


class NvrConfig(_Model):
    """One NVR to bridge."""

    id: str = Field(
        default="nvr", description="The NVR's name in topics: letters, digits, '_' and '-'."
    )
    url: str = Field(description="http://host:port or https://host:port of the NVR.")
    username: str | None = Field(default=None, description="NVR account; none: no login.")
    password: SecretStr | None = Field(default=None, description="Password of the account.")
    password_file: str | None = Field(
        default=None, description="Read the password from this file (trailing space stripped)."
    )
    verify_tls: bool = Field(default=True, description="Verify the NVR's TLS certificate.")
    ca_file: str | None = Field(default=None, description="CA bundle for a private NVR CA.")
    commands: tuple[CommandName, ...] | None = Field(
        default=None, description="Commands obeyed for this NVR; default: the global list."
    )
    max_inflight_commands: int = Field(
        default=8,
        ge=1,
        le=256,
        description="REST calls in flight at once on this NVR: commands, polls, snapshots, logins.",
    )
    max_answer_bytes: int = Field(
        default=DEFAULT_NVR_MAX_ANSWER_BYTES,
        ge=1024,
        le=1024**3,
        description="A REST answer larger than this is an error; it is never read whole.",
    )

    @field_validator("id")
    @classmethod
    def _id_is_a_topic_level(cls, value: str) -> str:
        if not NVR_ID_PATTERN.fullmatch(value):
            raise ValueError(
                f"must match [A-Za-z0-9_-]+ because it becomes a topic level; got {value!r}"
            )
        if value == "bridge":
            raise ValueError("'bridge' is reserved for the bridge's own topics; pick another id")
        return value

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, value: str) -> str:
        return _check_url(value, ("http", "https"), "http://192.168.1.10:80")

    @model_validator(mode="after")
    def _password_from_file(self) -> Self:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set either password or password_file, not both")
        if self.password_file is not None:
            object.__setattr__(
                self, "password", _read_secret_file(self.password_file, "NVR password")
            )
        if self.ca_file is not None:
            _check_tls_files(self.ca_file)
        return self

    @property
    def is_tls(self) -> bool:
        """Whether the NVR is reached over https/wss."""
        return self.url.startswith("https://")


class MqttConfig(_Model):
    """The MQTT broker and how the bridge talks to it."""

    url: str = Field(default="mqtt://localhost:1883", description="mqtt:// or mqtts:// URL.")
    username: str | None = Field(default=None, description="Broker account.")
    password: SecretStr | None = Field(default=None, description="Broker password.")
    password_file: str | None = Field(default=None, description="Read the password from a file.")
    ca_file: str | None = Field(default=None, description="CA bundle for mqtts://.")
    cert_file: str | None = Field(default=None, description="Client certificate for mqtts://.")
    key_file: str | None = Field(default=None, description="Client key for mqtts://.")
    verify_tls: bool = Field(default=True, description="Verify the broker's certificate.")
    client_id: str = Field(
        default_factory=lambda: f"nvr-bridge-{socket.gethostname()}",
        description="MQTT client id; reused across reconnects for the persistent session.",
    )
    protocol: Literal["5", "3.1.1", "auto"] = Field(
        default="auto", description="MQTT 5, 3.1.1, or auto: 5 falling back to 3.1.1."
    )
    qos: Literal[0, 1] = Field(
        default=1, description="QoS of everything published: 1 (at least once) or 0."
    )
    session_expiry: int = Field(
        default=3600, ge=0, description="Seconds the broker keeps the session while away."
    )
    keepalive: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive seconds.")
    max_packet: int | None = Field(
        default=None,
        ge=128,
        le=MAX_MQTT_PACKET,
        description="Largest packet published: the broker's Maximum Packet Size (MQTT 5 "
        "CONNACK) when it announces one, else this, else 268435455; larger ones are dropped.",
    )

    @field_validator("qos", mode="before")
    @classmethod
    def _qos_from_text(cls, value: Any) -> Any:
        # Environment variables are text: "1" means 1.
        if isinstance(value, str) and value.strip() in ("0", "1", "2"):
            value = int(value)
        if value == 2:
            raise ValueError(
                "QoS 2 is not offered: the bridge delivers every message at least once with "
                "QoS 1 (a message whose acknowledgement was lost is sent again; consumers "
                "that must not see it twice match the payload's timestamp), or at most once "
                "with 0; set 1 or 0"
            )
        return value

    @field_validator("url")
    @classmethod
    def _url_is_mqtt(cls, value: str) -> str:
        return _check_url(value, ("mqtt", "mqtts"), "mqtt://broker:1883")

    @model_validator(mode="after")
    def _password_and_tls_files(self) -> Self:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set either password or password_file, not both")
        if self.password_file is not None:
            object.__setattr__(
                self, "password", _read_secret_file(self.password_file, "MQTT password")
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both or neither")
        if self.ca_file or self.cert_file:
            _check_tls_files(self.ca_file, self.cert_file, self.key_file)
        return self

    @property
    def host(self) -> str:
        """The broker's host name."""
        return urlsplit(self.url).hostname or "localhost"

    @property
    def port(self) -> int:
        """The broker's port (1883, or 8883 for mqtts://, unless the URL names one)."""
        return urlsplit(self.url).port or (8883 if self.is_tls else 1883)

    @property
    def is_tls(self) -> bool:
        """Whether the broker is reached over TLS."""
        return self.url.startswith("mqtts://")


class BridgeConfig(_Model):
    """Everything the bridge needs to run."""

    nvrs: tuple[NvrConfig, ...] = Field(description="The NVRs to bridge (at least one).")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="The broker.")
    base_topic: str = Field(default="everfocus", description="First level of every topic.")
    http_port: int = Field(
        default=9108, ge=0, le=65535, description="Port of /metrics, /healthz, /readyz."
    )
    http_host: str = Field(default="0.0.0.0", description="Address the HTTP server binds.")  # noqa: S104
    log_format: Literal["json", "console"] = Field(default="json", description="Log format.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Lowest level logged."
    )
    commands: tuple[CommandName, ...] = Field(
        default=COMMAND_NAMES, description="Request topics obeyed; anything else is refused."
    )
    command_max_age: float = Field(
        default=30, gt=0, description="Seconds after which a timestamped request is expired."
    )
    command_timeout: float = Field(
        default=10, gt=0, description="Seconds a command's REST call may take before it fails."
    )
    spool_dir: str | None = Field(
        default=None, description="Keep the outbound buffer durable on disk in this folder."
    )
    buffer_size: int = Field(
        default=100_000, ge=10, description="Messages the outbound buffer holds at most."
    )
    backoff_initial: float = Field(
        default=0.5, gt=0, description="First reconnect delay (seconds), doubled each failure."
    )
    backoff_max: float = Field(default=30, gt=0, description="Largest reconnect delay.")
    ws_ping_interval: float = Field(
        default=20, gt=0, description="Seconds between websocket pings to the NVR."
    )
    ws_ping_timeout: float = Field(
        default=20, gt=0, description="Seconds without a pong before a stream is dead."
    )
    login_concurrency: int = Field(
        default=16, ge=1, description="NVR logins in progress at once across the fleet."
    )
    shard: str | None = Field(
        default=None,
        description="'i/N': this replica bridges only the NVRs whose stable hash is i mod N.",
    )
    ha_discovery: bool = Field(default=False, description="Publish Home Assistant discovery.")
    ha_prefix: str = Field(default="homeassistant", description="Home Assistant's prefix.")
    json_max_depth: int = Field(
        default=DEFAULT_JSON_MAX_DEPTH,
        ge=4,
        le=512,
        description="Deeper JSON in a frame item, a request or a REST answer is invalid.",
    )
    response_max_bytes: int = Field(
        default=DEFAULT_RESPONSE_MAX_BYTES,
        ge=1024,
        description="A command result larger than this (as JSON) is not sent: an error instead.",
    )
    response_topic_prefix: str | None = Field(
        default=None, description="When set, MQTT 5 Response Topics must start with it."
    )
    stall_seconds: float = Field(
        default=120,
        gt=0,
        description="/healthz fails when messages waited this long on a connected broker.",
    )
    retained_max: int = Field(
        default=100_000,
        ge=100,
        description="Distinct retained topics remembered (and waiting) at most; more evict.",
    )
    snapshot_events: tuple[str, ...] = Field(
        default=(),
        description="eventHook types (any case) whose active or once item takes a snapshot "
        "of its channel, e.g. Motion,InputAlarm; none by default.",
    )
    snapshot_min_interval: float = Field(
        default=2,
        ge=0,
        description="Seconds: at most one event-triggered snapshot per channel within it.",
    )
    snapshot_max_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="A larger snapshot is not published."
    )
    pin_poll_interval: float = Field(
        default=2, ge=0, description="Seconds between GetPinStatus polls; 0 turns pins off."
    )
    storage_poll_interval: float = Field(
        default=60, ge=0, description="Seconds between getStorages polls; 0 turns it off."
    )
    ptz_presets: bool = Field(
        default=True, description="After each login, read each channel's PTZ presets."
    )
    status_stale_after: float = Field(
        default=30,
        ge=0,
        description="Seconds without a frame after which the status stream is reconnected; 0 off.",
    )

    @field_validator("base_topic")
    @classmethod
    def _base_topic_is_plain(cls, value: str) -> str:
        if not value or any(c in value for c in "+#\x00") or value.startswith("/"):
            raise ValueError(f"must be a non-empty topic without wildcards; got {value!r}")
        return value.rstrip("/")

    @field_validator("shard")
    @classmethod
    def _shard_is_i_of_n(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
        if not match or int(match[2]) < 1 or int(match[1]) >= int(match[2]):
            raise ValueError(f"must be 'i/N' with 0 <= i < N, e.g. '0/3'; got {value!r}")
        return f"{int(match[1])}/{int(match[2])}"

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        if not self.nvrs:
            raise ValueError("no NVR configured: set BRIDGE_NVR_URL or list nvrs in the file")
        seen: set[str] = set()
        for nvr in self.nvrs:
            if nvr.id in seen:
                raise ValueError(f"NVR id {nvr.id!r} is used twice; ids must be unique")
            seen.add(nvr.id)
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be at least backoff_initial")
        return self

    def assigned_nvrs(self) -> tuple[NvrConfig, ...]:
        """The NVRs this replica bridges: all of them, or its shard's share."""
        if self.shard is None:
            return self.nvrs
        index, count = (int(part) for part in self.shard.split("/"))
        return tuple(n for n in self.nvrs if shard_of(n.id, count) == index)

    def commands_for(self, nvr: NvrConfig) -> frozenset[str]:
        """The commands this NVR obeys: its own list, else the global one."""
        return frozenset(nvr.commands if nvr.commands is not None else self.commands)


class _Environment(BaseSettings):
    """The flat ``BRIDGE_*`` environment variables, read as text and mapped below."""

    model_config = SettingsConfigDict(env_prefix="BRIDGE_", extra="ignore")

    config_file: str | None = None
    nvr_url: str | None = None
    nvr_username: str | None = None
    nvr_password: str | None = None
    nvr_password_file: str | None = None
    nvr_id: str | None = None
    nvr_verify_tls: str | None = None
    nvr_ca_file: str | None = None
    nvr_max_inflight_commands: str | None = None
    nvr_max_answer_bytes: str | None = None
    mqtt_url: str | None = None
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_password_file: str | None = None
    mqtt_ca_file: str | None = None
    mqtt_cert_file: str | None = None
    mqtt_key_file: str | None = None
    mqtt_verify_tls: str | None = None
    mqtt_client_id: str | None = None
    mqtt_protocol: str | None = None
    mqtt_qos: str | None = None
    mqtt_session_expiry: str | None = None
    mqtt_keepalive: str | None = None
    mqtt_max_packet: str | None = None
    base_topic: str | None = None
    http_port: str | None = None
    http_host: str | None = None
    log_format: str | None = None
    log_level: str | None = None
    commands: str | None = None
    command_max_age: str | None = None
    command_timeout: str | None = None
    spool_dir: str | None = None
    buffer_size: str | None = None
    backoff_initial: str | None = None
    backoff_max: str | None = None
    login_concurrency: str | None = None
    ws_ping_interval: str | None = None
    ws_ping_timeout: str | None = None
    ha_discovery: str | None = None
    ha_prefix: str | None = None
    json_max_depth: str | None = None
    response_max_bytes: str | None = None
    response_topic_prefix: str | None = None
    stall_seconds: str | None = None
    retained_max: str | None = None
    snapshot_events: str | None = None
    snapshot_min_interval: str | None = None
    snapshot_max_bytes: str | None = None
    pin_poll_interval: str | None = None
    storage_poll_interval: str | None = None
    ptz_presets: str | None = None
    status_stale_after: str | None = None
    shard: str | None = None
    shard_index: str | None = None
    shard_count: str | None = None


def _split_commands(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _environment_overrides(
    env: _Environment,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Split the set environment variables into (top level, mqtt, nvr) overrides."""
    top: dict[str, Any] = {}
    mqtt: dict[str, Any] = {}
    nvr: dict[str, Any] = {}
    for name, value in env.model_dump(exclude_none=True).items():
        if name in ("config_file", "shard_index", "shard_count"):
            continue
        if name.startswith("nvr_"):
            nvr[name.removeprefix("nvr_")] = value
        elif name.startswith("mqtt_"):
            mqtt[name.removeprefix("mqtt_")] = value
        elif name in ("commands", "snapshot_events"):
            top[name] = _split_commands(value)
        else:
            top[name] = value
    return top, mqtt, nvr


def _load_yaml(path: str) -> dict[str, Any]:
    import yaml  # noqa: PLC0415 - only when a configuration file is given

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"config file {path!r}: cannot read it ({exc.strerror})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"config file {path!r}: not valid YAML ({exc})"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"config file {path!r}: must hold a mapping at the top level"])
    for key in ("commands", "snapshot_events"):
        if isinstance(data.get(key), str):
            data[key] = _split_commands(data[key])
    return data


def _merge_nvr_overrides(data: dict[str, Any], nvr_env: dict[str, Any]) -> int | None:
    """Apply ``BRIDGE_NVR_*`` to the file's NVR named by BRIDGE_NVR_ID, or its only one.

    Returns the index of the NVR the variables changed (None when none were set).
    """
    nvrs = data.get("nvrs")
    if nvrs is None:
        nvrs = []
    if not isinstance(nvrs, list):
        raise ConfigError(["nvrs: must be a list of NVRs"])
    data["nvrs"] = nvrs
    if not nvr_env:
        return None
    wanted = nvr_env.get("id")
    if not nvrs:
        nvrs.append(dict(nvr_env))
        return 0
    ids = [n.get("id", "nvr") if isinstance(n, dict) else None for n in nvrs]
    if wanted is not None:
        if wanted in ids:
            index = ids.index(wanted)
            nvrs[index].update(nvr_env)
            return index
        known = ", ".join(repr(i) for i in ids if i is not None)
        raise ConfigError(
            [
                f"BRIDGE_NVR_ID: {wanted!r} is none of the NVRs of the configuration file "
                f"({known}); set it to one of them, or add the NVR to the file"
            ]
        )
    if len(nvrs) == 1 and isinstance(nvrs[0], dict):
        nvrs[0].update(nvr_env)
        return 0
    raise ConfigError(
        [
            "BRIDGE_NVR_*: the configuration file lists several NVRs; set BRIDGE_NVR_ID to "
            "the one the environment variables should change"
        ]
    )


Origins = dict[tuple[str | int, ...], str]


def _describe(error: Any, origins: Origins | None = None) -> str:
    """One problem as a line: the variable that set the value, else its place in the file."""
    loc = tuple(error["loc"])
    location = ""
    for part in loc:
        location += f"[{part}]" if isinstance(part, int) else (f".{part}" if location else part)
    for size in range(len(loc), 0, -1):
        variable = (origins or {}).get(loc[:size])
        if variable is not None:
            location = variable
            break
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing":
        message = "is required"
    elif error["type"] == "extra_forbidden":
        message = "is not a known setting (check its spelling)"
    elif error["type"] == "literal_error" and "input" in error:
        message = f"{message}; got {error['input']!r}"
    return f"{location or 'config'}: {message}"


def _unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A line per BRIDGE_* variable that is no setting, naming the closest one."""
    known = {f"BRIDGE_{name.upper()}" for name in _Environment.model_fields}
    problems = []
    for key in sorted(environ):
        if not key.startswith("BRIDGE_") or key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.7)
        hint = f"; did you mean {close[0]}?" if close else "; see docs/configuration.md"
        problems.append(f"{key}: is not a known setting{hint}")
    return problems


def load_config(
    config_file: str | None = None, environ: Mapping[str, str] | None = None
) -> BridgeConfig:
    """Build the configuration from ``environ`` (default: the process's) and a YAML file.

    Raises ConfigError with every problem found, each on its own line: a BRIDGE_*
    variable that is no setting is one (a typo never passes), and a value set by a
    variable is reported under the variable's name.
    """
    variables = dict(os.environ if environ is None else environ)
    unknown = _unknown_variables(variables)
    if unknown:
        raise ConfigError(unknown)
    env = _Environment.model_construct(None, **_env_kwargs(variables))
    path = config_file or env.config_file
    data: dict[str, Any] = _load_yaml(path) if path else {}
    top, mqtt_env, nvr_env = _environment_overrides(env)
    if env.shard_index is not None or env.shard_count is not None:
        # Kubernetes StatefulSets give the ordinal and the replica count separately.
        if env.shard_index is None or env.shard_count is None:
            raise ConfigError(["BRIDGE_SHARD_INDEX and BRIDGE_SHARD_COUNT go together"])
        top.setdefault("shard", f"{env.shard_index}/{env.shard_count}")
    data.update(top)
    if mqtt_env:
        mqtt = data.get("mqtt") or {}
        if not isinstance(mqtt, dict):
            raise ConfigError(["mqtt: must be a mapping of broker settings"])
        data["mqtt"] = {**mqtt, **mqtt_env}
    index = _merge_nvr_overrides(data, nvr_env)
    origins: Origins = {(name,): f"BRIDGE_{name.upper()}" for name in top}
    origins |= {("mqtt", name): f"BRIDGE_MQTT_{name.upper()}" for name in mqtt_env}
    if index is not None:
        origins |= {("nvrs", index, name): f"BRIDGE_NVR_{name.upper()}" for name in nvr_env}
    try:
        return BridgeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(e, origins) for e in exc.errors()]) from None


def _env_kwargs(environ: Mapping[str, str]) -> dict[str, str]:
    """Turn a BRIDGE_* mapping into _Environment's field names."""
    fields = _Environment.model_fields
    out: dict[str, str] = {}
    for key, value in environ.items():
        name = key.lower().removeprefix("bridge_")
        if key.upper().startswith("BRIDGE_") and name in fields:
            out[name] = value
    return out


def config_warnings(config: BridgeConfig, *, tls: bool = True) -> list[str]:
    """What is valid but probably not meant: a line each (check-config and run show them).

    ``tls`` False leaves out the warnings about certificate checks turned off (``run`` logs
    those with hints of their own).
    """
    warnings = []
    if not config.commands:
        warnings.append(
            "BRIDGE_COMMANDS is empty: every command is off, and every request will be refused"
        )
    for nvr in config.nvrs:
        if nvr.commands is not None and not nvr.commands:
            warnings.append(f"nvrs[{nvr.id}].commands is empty: NVR {nvr.id!r} obeys no command")
        if nvr.username and (nvr.password is None or not nvr.password.get_secret_value()):
            warnings.append(
                f"NVR {nvr.id!r} has a username and an empty password; set "
                "BRIDGE_NVR_PASSWORD (or BRIDGE_NVR_PASSWORD_FILE) if the account has one"
            )
        if tls and nvr.is_tls and not nvr.verify_tls:
            warnings.append(f"nvrs[{nvr.id}].verify_tls is false: any certificate is accepted")
    mqtt = config.mqtt
    if mqtt.username and (mqtt.password is None or not mqtt.password.get_secret_value()):
        warnings.append("the MQTT account has a username and an empty password")
    if tls and mqtt.is_tls and not mqtt.verify_tls:
        warnings.append("mqtt.verify_tls is false: any broker certificate is accepted")
    return warnings


def masked(config: BridgeConfig) -> dict[str, Any]:
    """The configuration as plain data with every secret replaced by a mask."""
    data: dict[str, Any] = config.model_dump(mode="json")

    def scrub(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (MASK if "password" in k and not k.endswith("_file") and v else scrub(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [scrub(item) for item in node]
        return node

    result: dict[str, Any] = scrub(data)
    return result


def secrets_of(config: BridgeConfig) -> list[str]:
    """Every secret value in the configuration (for redacting logs)."""
    values = [n.password.get_secret_value() for n in config.nvrs if n.password is not None]
    if config.mqtt.password is not None:
        values.append(config.mqtt.password.get_secret_value())
    return [v for v in values if v]


def environ_snapshot() -> dict[str, str]:
    """The process's BRIDGE_* environment variables."""
    return {k: v for k, v in os.environ.items() if k.startswith("BRIDGE_")}
