"""The deployment artefacts: Dockerfile, Helm chart, compose stack, Prometheus, Grafana, Node-RED.

Offline checks with real engines: hadolint lints the Dockerfile, Helm's Go SDK
(helm-python-sdk) lints and renders the chart, kubernetes-validate checks the manifests
against the Kubernetes OpenAPI schemas, promtool checks and unit-tests the alert rules and
parses the dashboard's queries, node runs the Node-RED function. A missing tool is a skip
locally and a failure in CI (CI set): .ci/install-deploy-tools.sh installs them all.
"""

from __future__ import annotations

import base64
import functools
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "nvr-bridge"
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "nvr-bridge.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
FLOWS = DEPLOY / "node-red" / "flows.json"


# Every series name /metrics exports (CONTRACT.md section 6), the histogram expanded.
# To be replaced by the names of the live registry.
def _exported_metrics() -> frozenset[str]:
    """Every sample name the bridge's live registry serves (after registering one NVR)."""
    from bridge.observability import Metrics

    metrics = Metrics()
    metrics.register_nvr("nvr")
    metrics.request_seconds.labels("nvr", "/x").observe(0.1)
    return frozenset(
        sample.name for family in metrics.registry.collect() for sample in family.samples
    )


EXPORTED_METRICS = _exported_metrics()
# The metrics the contract (section 6) names: the dashboard must show each of them.
CONTRACT_METRICS = frozenset(
    {
        "nvr_bridge_messages_received_total",
        "nvr_bridge_messages_published_total",
        "nvr_bridge_messages_invalid_total",
        "nvr_bridge_messages_dropped_total",
        "nvr_bridge_stream_connected",
        "nvr_bridge_stream_reconnects_total",
        "nvr_bridge_commands_total",
        "nvr_bridge_nvr_request_seconds_bucket",
        "nvr_bridge_mqtt_connected",
        "nvr_bridge_publish_queue_depth",
    }
)
# Series Prometheus makes itself for every target.
PROMETHEUS_METRICS = frozenset({"up"})

RELEASE = "demo"
NAMESPACE = "cams"
FULLNAME = "demo-nvr-bridge"
SECRET_DIR = "/run/secrets/nvr-bridge"
CONFIG_FILE = "/etc/nvr-bridge/config.yaml"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schema.
KUBE_VERSIONS = ("1.25.0", "1.37.0")
CRD_GROUPS = ("monitoring.coreos.com/",)


def _values_file(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / name).read_text(encoding="utf-8"))
    return loaded


SCENARIOS: dict[str, dict[str, Any] | None] = {
    "default": None,
    "multi-nvr": _values_file("multi-nvr-values.yaml"),
    "existing-secret": _values_file("existing-secret-values.yaml"),
    "monitoring": _values_file("monitoring-values.yaml"),
    "statefulset": _values_file("statefulset-values.yaml"),
    "statefulset-hostname": {
        **_values_file("statefulset-values.yaml"),
        "sharding": {"indexSource": "hostname"},
        "spool": {"enabled": True, "type": "emptyDir"},
    },
}


# --- tools ---------------------------------------------------------------------------


def _missing(what: str) -> None:
    reason = f"{what} is not installed: run .ci/install-deploy-tools.sh"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must not skip it)")
    pytest.skip(reason)


def _tool(name: str) -> str:
    """The path of a command-line tool on PATH or beside this Python (a venv's bin)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        _missing(f"the {name} command")
    assert found is not None
    return found


def _module(name: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(f"the Python package {package}")
        raise


def _run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


# --- rendering the chart -------------------------------------------------------------


def _render_text(values: dict[str, Any] | None) -> dict[str, str]:
    helm = _module("helm_python", "helm-python-sdk")
    with helm.Chart.load(str(CHART)) as chart:
        rendered: dict[str, str] = chart.render(
            values=values, name=RELEASE, namespace=NAMESPACE, is_install=True
        )
    return rendered


@functools.cache
def _rendered(scenario: str) -> tuple[dict[str, Any], ...]:
    """The manifests of one scenario (rendered once per test session)."""
    manifests = []
    for path, text in sorted(_render_text(SCENARIOS[scenario]).items()):
        for document in yaml.safe_load_all(text):
            if document:
                assert isinstance(document, dict), f"{path}: a manifest must be a mapping"
                manifests.append(document)
    return tuple(manifests)


def _one(manifests: tuple[dict[str, Any], ...], kind: str, name: str = FULLNAME) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _workload(manifests: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    workloads = [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")]
    assert len(workloads) == 1, [m["kind"] for m in workloads]
    return workloads[0]


def _container(manifests: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    containers = _workload(manifests)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["nvr-bridge"]
    container: dict[str, Any] = containers[0]
    return container


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _config(manifests: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(_one(manifests, "ConfigMap")["data"]["config.yaml"])
    return config


def _passwords(values: Any) -> set[str]:
    """Every non-empty `password` value anywhere in a values tree."""
    if isinstance(values, dict):
        found = {str(v) for k, v in values.items() if k == "password" and v}
        for v in values.values():
            found |= _passwords(v)
        return found
    if isinstance(values, list):
        return set().union(*(_passwords(v) for v in values)) if values else set()
    return set()


def _keys(tree: Any) -> set[str]:
    if isinstance(tree, dict):
        return set(tree) | set().union(*(_keys(v) for v in tree.values()))
    if isinstance(tree, list):
        return set().union(*(_keys(v) for v in tree)) if tree else set()
    return set()


def _password_files(config: dict[str, Any]) -> list[str]:
    accounts = [config.get("mqtt", {}), *config["nvrs"]]
    return [a["password_file"] for a in accounts if "password_file" in a]


# --- Dockerfile ----------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    """hadolint finds nothing, down to style level, and the OCI labels are there."""
    hadolint = _tool("hadolint")
    result = _run(
        hadolint,
        "--no-color",
        "--failure-threshold",
        "style",
        "--require-label",
        "org.opencontainers.image.title:text",
        "--require-label",
        "org.opencontainers.image.description:text",
        "--require-label",
        "org.opencontainers.image.version:text",
        "--require-label",
        "org.opencontainers.image.licenses:text",
        "Dockerfile",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_final_stage_is_slim_non_root_and_health_checked() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    final_stage = text.split("\nFROM ")[-1]
    assert re.match(r"python:\$\{PYTHON_VERSION\}-slim", final_stage)
    assert re.search(r"^ARG PYTHON_VERSION=3\.1[12]$", text, re.MULTILINE)
    assert "COPY --from=builder /opt/venv /opt/venv" in final_stage
    # Only the venv crosses over: no source tree, no apt-get (so no compiler) in the image.
    assert not re.search(r"^COPY (?!--from=builder)", final_stage, re.MULTILINE)
    assert "apt-get" not in final_stage
    assert re.search(r"^USER 10001(:10001)?$", final_stage, re.MULTILINE)
    assert re.search(r"^EXPOSE 9108$", final_stage, re.MULTILINE)
    assert 'ENTRYPOINT ["nvr-bridge"]' in final_stage
    assert 'CMD ["run"]' in final_stage
    healthcheck = re.search(r"^HEALTHCHECK .*?(?<!\\)$", final_stage, re.MULTILINE | re.DOTALL)
    assert healthcheck is not None
    assert "/healthz" in healthcheck.group(0)
    assert "curl" not in healthcheck.group(0)
    assert "PYTHONUNBUFFERED=1" in final_stage


def test_dockerignore_lets_in_what_the_build_reads() -> None:
    """The allow-list admits pyproject.toml, its readme and the package, nothing else."""
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line.removeprefix("!").rstrip("/") for line in lines if line.startswith("!")}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    readme = pyproject["project"].get("readme")
    needed = {"pyproject.toml", "bridge"} | ({readme} if isinstance(readme, str) else set())
    assert needed <= allowed
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    for name in needed:
        assert name in dockerfile, f"{name} is allowed into the context but never copied"


# --- Helm chart ----------------------------------------------------------------------


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "nvr-bridge"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert chart["appVersion"] == pyproject["project"]["version"]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_chart_lints(scenario: str) -> None:
    """helm lint --strict reports no warning or error."""
    helm = _module("helm_python", "helm-python-sdk")
    report = helm.lint(
        str(CHART), SCENARIOS[scenario], strict=True, namespace=NAMESPACE, kube_version="v1.30.0"
    )
    assert report["errors"] == []
    # Severity 1 is informational (e.g. "icon is recommended"); 2 a warning, 3 an error.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_chart_renders_valid_kubernetes_manifests(scenario: str) -> None:
    """Every manifest validates strictly against the Kubernetes schemas (CRDs excepted)."""
    kubernetes_validate = _module("kubernetes_validate", "kubernetes-validate")
    manifests = _rendered(scenario)
    kinds = {m["kind"] for m in manifests}
    assert {"ConfigMap", "Service", "ServiceAccount"} <= kinds
    for manifest in manifests:
        assert manifest["metadata"]["namespace"] == NAMESPACE
        if manifest["apiVersion"].startswith(CRD_GROUPS):
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{manifest['kind']} on Kubernetes {version}: {exc.message}")


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_pod_is_probed_and_locked_down(scenario: str) -> None:
    manifests = _rendered(scenario)
    workload = _workload(manifests)
    pod = workload["spec"]["template"]
    spec = pod["spec"]
    container = _container(manifests)

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http-metrics": 9108}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}

    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"

    assert container["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }
    assert spec["terminationGracePeriodSeconds"] == 15
    assert spec["automountServiceAccountToken"] is False
    account = _one(manifests, "ServiceAccount", spec["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False
    assert re.fullmatch(r"[0-9a-f]{64}", pod["metadata"]["annotations"]["checksum/config"])
    selector = workload["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()

    env = _env(container)
    assert env["BRIDGE_CONFIG_FILE"] == CONFIG_FILE
    assert "BRIDGE_MQTT_CLIENT_ID" in env
    assert not any("PASSWORD" in name and not name.endswith("_FILE") for name in env)

    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    secret_name = (SCENARIOS[scenario] or {}).get("existingSecret") or FULLNAME
    assert volumes["secrets"]["secret"]["secretName"] == secret_name
    assert mounts["secrets"]["mountPath"] == SECRET_DIR
    assert mounts["secrets"]["readOnly"] is True
    config_map = _one(manifests, "ConfigMap")
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert f"{mounts['config']['mountPath']}/config.yaml" == CONFIG_FILE
    # The root filesystem is read-only: whatever is written goes to a volume.
    assert mounts["tmp"]["mountPath"] == "/tmp"
    for mount in container["volumeMounts"]:
        assert mount["name"] in volumes or mount["name"] in {
            t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])
        }

    service = _one(manifests, "Service")
    assert service["spec"]["ports"] == [
        {"name": "http-metrics", "port": 9108, "targetPort": "http-metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_configmap_holds_no_password(scenario: str) -> None:
    """Passwords go to the Secret; the config file only names files of the mounted Secret."""
    values = SCENARIOS[scenario]
    manifests = _rendered(scenario)
    config_text = yaml.safe_dump(_one(manifests, "ConfigMap"))
    for password in _passwords(values):
        assert password not in config_text
    config = _config(manifests)
    assert "password" not in _keys(config)
    assert "password:" not in config_text

    files = _password_files(config)
    for path in files:
        assert path.startswith(f"{SECRET_DIR}/")
    secrets = [m for m in manifests if m["kind"] == "Secret"]
    if values and values.get("existingSecret"):
        assert secrets == []
        return
    (secret,) = secrets
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    assert sorted(data) == sorted(Path(path).name for path in files)
    assert set(data.values()) == _passwords(values)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_rendered_config_is_accepted_by_the_bridge(scenario: str, tmp_path: Path) -> None:
    """The ConfigMap's config.yaml loads with the bridge's own loader, secrets and all."""
    from bridge.config import load_config

    manifests = _rendered(scenario)
    text = _one(manifests, "ConfigMap")["data"]["config.yaml"]
    secrets = [m for m in manifests if m["kind"] == "Secret"]
    data = secrets[0].get("data") or {} if secrets else {}
    for path in _password_files(_config(manifests)):
        key = Path(path).name
        value = base64.b64decode(data[key]).decode() if key in data else "from-existing-secret"
        (tmp_path / key).write_text(value + "\n", encoding="utf-8")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(text.replace(SECRET_DIR, str(tmp_path)), encoding="utf-8")

    config = load_config(config_file=str(config_file), environ={})

    values = SCENARIOS[scenario] or {}
    expected_ids = [str(n["id"]) for n in values.get("nvrs", [{"id": "nvr"}])]
    assert [n.id for n in config.nvrs] == expected_ids
    for nvr in config.nvrs:
        assert (nvr.password is not None) == (nvr.username is not None)


def test_config_change_changes_the_pod_checksum() -> None:
    """A new config (here a log level) changes checksum/config, so the pods restart."""
    before = _rendered("default")
    after = tuple(
        document
        for text in _render_text({"bridge": {"log_level": "debug"}}).values()
        for document in yaml.safe_load_all(text)
        if document
    )
    annotations = [
        _workload(m)["spec"]["template"]["metadata"]["annotations"] for m in (before, after)
    ]
    assert annotations[0]["checksum/config"] != annotations[1]["checksum/config"]
    assert _config(after)["log_level"] == "debug"


def test_unquoted_mqtt_protocol_reaches_the_config_as_text() -> None:
    """`protocol: 5` in the values (a YAML number) is the string "5" the bridge expects."""
    manifests = [
        document
        for text in _render_text({"mqtt": {"protocol": 5}}).values()
        for document in yaml.safe_load_all(text)
        if document
    ]
    assert _config(tuple(manifests))["mqtt"]["protocol"] == "5"


def test_deployment_mode_runs_one_bridge_with_a_stable_client_id() -> None:
    manifests = _rendered("multi-nvr")
    deployment = _one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    env = _env(_container(manifests))
    assert env["BRIDGE_MQTT_CLIENT_ID"] == FULLNAME
    assert "BRIDGE_SHARD_INDEX" not in env
    # spool.type pvc: a claim, mounted where the config's spool_dir points.
    claim = _one(manifests, "PersistentVolumeClaim", f"{FULLNAME}-spool")
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    mounts = {m["name"]: m["mountPath"] for m in _container(manifests)["volumeMounts"]}
    assert mounts["spool"] == _config(manifests)["spool_dir"]


def test_statefulset_mode_shards_by_pod_index() -> None:
    manifests = _rendered("statefulset")
    statefulset = _one(manifests, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 3
    headless = _one(manifests, "Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    container = _container(manifests)
    env = _env(container)
    assert env["BRIDGE_SHARD_INDEX"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    assert env["BRIDGE_SHARD_COUNT"] == "3"
    assert env["BRIDGE_MQTT_CLIENT_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "spool"
    assert not [m for m in manifests if m["kind"] in ("Deployment", "PersistentVolumeClaim")]


def test_statefulset_mode_can_take_the_index_from_the_hostname() -> None:
    container = _container(_rendered("statefulset-hostname"))
    assert container["command"] == ["/bin/sh", "-c"]
    (script,) = container["args"]
    assert 'BRIDGE_SHARD_INDEX="${HOSTNAME##*-}"' in script
    assert script.endswith("exec nvr-bridge run")
    env = _env(container)
    assert "BRIDGE_SHARD_INDEX" not in env
    assert env["BRIDGE_SHARD_COUNT"] == "3"


def test_monitoring_objects_scrape_the_metrics_service_and_carry_the_alerts() -> None:
    manifests = _rendered("monitoring")
    monitor = _one(manifests, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http-metrics"
    assert endpoint["path"] == "/metrics"
    assert {"action": "replace", "targetLabel": "job", "replacement": "nvr-bridge"} in endpoint[
        "relabelings"
    ]
    services = [m for m in manifests if m["kind"] == "Service"]
    selected = [
        s
        for s in services
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in selected] == [FULLNAME]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"

    rule = _one(manifests, "PrometheusRule")
    alerts = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert rule["spec"]["groups"] == alerts["groups"]


def test_chart_alerts_are_a_copy_of_the_deploy_alerts() -> None:
    chart_copy = CHART / "files" / "alerts.yml"
    assert chart_copy.read_text(encoding="utf-8") == ALERTS.read_text(encoding="utf-8"), (
        "helm/nvr-bridge/files/alerts.yml differs: cp deploy/prometheus/alerts.yml there"
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": 2}, "replicas must be 1 in deployment mode"),
        ({"mode": "daemonset"}, 'mode "daemonset" is not known'),
        (
            {"nvrs": [{"id": "lobby", "url": "http://192.168.1.20", "username": "admin"}]},
            "nvrs[0] (lobby) has a username but no password",
        ),
        ({"mqtt": {"username": "bridge"}}, "mqtt.username is set but mqtt.password is empty"),
        ({"nvrs": [{"id": "lobby/1", "url": "http://192.168.1.20"}]}, "must match [A-Za-z0-9_-]+"),
        (
            {
                "nvrs": [
                    {"id": "a", "url": "http://10.0.0.1"},
                    {"id": "a", "url": "http://10.0.0.2"},
                ]
            },
            'nvrs[1].id "a" is used twice',
        ),
        ({"nvrs": [{"url": "http://10.0.0.1"}]}, "nvrs[0] has no id"),
    ],
)
def test_chart_refuses_bad_values_with_a_clear_message(
    values: dict[str, Any], message: str
) -> None:
    helm = _module("helm_python", "helm-python-sdk")
    with pytest.raises(helm.HelmRenderError) as caught:
        _render_text(values)
    assert message in str(caught.value)


def test_chart_readme_sidecar_snippet_is_a_valid_pod_spec() -> None:
    """The README's sidecar container and volumes validate as a Pod and hold no password."""
    kubernetes_validate = _module("kubernetes_validate", "kubernetes-validate")
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- sidecar-snippet.*?-->\s*```yaml\n(.*?)```", readme, re.DOTALL)
    assert block is not None, "the README lost its sidecar-snippet block"
    spec = yaml.safe_load(block.group(1))
    assert set(spec) == {"containers", "volumes"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app"}, "spec": spec}
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)
    (sidecar,) = spec["containers"]
    env = _env(sidecar)
    assert env["BRIDGE_NVR_PASSWORD_FILE"].startswith(f"{SECRET_DIR}/")
    assert not any("PASSWORD" in name and not name.endswith("_FILE") for name in env)
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"


# --- Prometheus ----------------------------------------------------------------------


def test_promtool_checks_the_alert_rules() -> None:
    result = _run(_tool("promtool"), "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_alert_rules_pass() -> None:
    result = _run(_tool("promtool"), "test", "rules", "alerts_test.yml", cwd=ALERTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_prometheus_config() -> None:
    config = DEPLOY / "prometheus" / "prometheus.yml"
    result = _run(_tool("promtool"), "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {job["job_name"]: job for job in yaml.safe_load(config.read_text())["scrape_configs"]}
    assert jobs["nvr-bridge"]["static_configs"][0]["targets"] == ["bridge:9108"]


def test_alerts_cover_the_failure_modes() -> None:
    rules = {
        r["alert"]: r
        for group in yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
        for r in group["rules"]
    }
    expected = {
        "NvrBridgeDown": "up",
        "NvrBridgeBrokerDisconnected": "nvr_bridge_mqtt_connected",
        "NvrBridgeNvrOffline": "nvr_bridge_nvr_online",
        "NvrBridgeStreamFlapping": "nvr_bridge_stream_reconnects_total",
        "NvrBridgeMessagesDropped": "nvr_bridge_messages_dropped_total",
        "NvrBridgeCommandsFailing": "nvr_bridge_commands_total",
    }
    assert set(rules) == set(expected)
    for alert, metric in expected.items():
        assert metric in _metric_names(rules[alert]["expr"])
        assert rules[alert]["labels"]["severity"] in ("critical", "warning")
        assert {"summary", "description"} <= set(rules[alert]["annotations"])


# --- PromQL metric names -------------------------------------------------------------

_PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "group_left", "group_right"}
    | {"inf", "nan", "Inf", "NaN"}
)


def _metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (a lexer just good enough for ours)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers (and Grafana's $nvr in them)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors (and $__rate_interval)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"(?<![\w.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", "", expr)  # numbers
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    functions = {w for w in words if re.search(rf"\b{re.escape(w)}\s*\(", expr)}
    return words - functions - _PROMQL_KEYWORDS


def _dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [
        (f"{inner['title']} {target['refId']}", target["expr"])
        for panel in dashboard["panels"]
        for inner in [panel, *panel.get("panels", [])]
        for target in inner.get("targets", [])
    ]


def test_metric_name_lexer() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, nvr) (rate(foo_bucket{nvr=~"$nvr"}'
        "[$__rate_interval]))) / on(nvr) group_left bar > 1e3 or absent(up)"
    )
    assert _metric_names(expr) == {"foo_bucket", "bar", "up"}


def test_alert_rules_read_only_exported_metrics() -> None:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        unknown = _metric_names(rule["expr"]) - EXPORTED_METRICS - PROMETHEUS_METRICS
        assert not unknown, f"{rule['alert']} reads metrics the bridge does not export: {unknown}"


def test_dashboard_reads_only_exported_metrics_and_shows_them_all() -> None:
    used: set[str] = set()
    for where, expr in _dashboard_exprs():
        names = _metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= EXPORTED_METRICS, f"{where}: unknown metrics {names - EXPORTED_METRICS}"
        used |= names
    assert CONTRACT_METRICS <= EXPORTED_METRICS
    assert used >= CONTRACT_METRICS, f"the dashboard shows nothing of {CONTRACT_METRICS - used}"


def test_dashboard_has_the_nvr_variable_and_latency_quantiles() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "nvr-bridge"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["nvr"]["type"] == "query"
    assert variables["nvr"]["multi"] is True
    assert variables["nvr"]["includeAll"] is True
    assert "label_values(" in variables["nvr"]["definition"]
    assert variables["datasource"]["type"] == "datasource"
    exprs = [expr for _, expr in _dashboard_exprs()]
    assert any('nvr=~"$nvr"' in expr for expr in exprs)
    quantiles = [e for e in exprs if "histogram_quantile" in e]
    levels = {q for e in quantiles for q in re.findall(r"histogram_quantile\(([\d.]+)", e)}
    assert levels >= {"0.5", "0.9", "0.99"}
    assert all("nvr_bridge_nvr_request_seconds_bucket" in e and "le" in e for e in quantiles)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every panel query (Grafana's variables given sample values)."""
    substitutions = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$nvr": ".*"}
    rules = []
    for index, (where, expr) in enumerate(_dashboard_exprs()):
        query = expr
        for variable, sample in substitutions.items():
            query = query.replace(variable, sample)
        assert "$" not in query, f"{where}: unknown variable in {expr!r}"
        rules.append({"record": f"dashboard:query_{index}", "expr": query})
    rule_file = tmp_path / "dashboard-rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _run(_tool("promtool"), "check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr


# --- docker compose ------------------------------------------------------------------


def test_compose_stack_names_all_services_and_wires_them() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == {"mosquitto", "nvr-sim", "bridge", "prometheus", "grafana", "node-red"}
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")

    simulator = services["nvr-sim"]
    command = simulator["command"]
    assert command[0] == "simulate"
    # Reachable from the bridge's container: bound to every address, on the URL's port.
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--port") + 1] == "8080"
    bridge = services["bridge"]
    for service in (simulator, bridge):
        build = service["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"
    env = bridge["environment"]
    nvr_url = urlsplit(env["BRIDGE_NVR_URL"])
    assert (nvr_url.hostname, nvr_url.port) == ("nvr-sim", 8080)
    assert urlsplit(env["BRIDGE_MQTT_URL"]).hostname == "mosquitto"
    assert "9108:9108" in bridge["ports"]

    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"

    mosquitto_conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8")
    assert re.search(r"^listener 1883\b", mosquitto_conf, re.MULTILINE)
    assert re.search(r"^allow_anonymous true$", mosquitto_conf, re.MULTILINE)


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (prometheus,) = datasources["datasources"]
    assert prometheus["type"] == "prometheus"
    assert prometheus["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "nvr-bridge.yml").read_text())
    (provider,) = providers["providers"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
    mounts = dict(v.split(":")[:2][::-1] for v in compose["services"]["grafana"]["volumes"])
    assert (DEPLOY / mounts[provider["options"]["path"]] / DASHBOARD.name).is_file()


# --- Node-RED ------------------------------------------------------------------------


def _topic_matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching (+ one level, # the rest)."""
    levels = topic.split("/")
    for index, part in enumerate(pattern.split("/")):
        if part == "#":
            return True
        if index >= len(levels) or part not in ("+", levels[index]):
            return False
    return len(levels) == len(pattern.split("/"))


def _flow_nodes() -> dict[str, dict[str, Any]]:
    flows = json.loads(FLOWS.read_text(encoding="utf-8"))
    assert isinstance(flows, list)
    return {node["id"]: node for node in flows}


def test_node_red_flow_wires_motion_to_manual_alarm() -> None:
    nodes = _flow_nodes()
    by_type: dict[str, list[dict[str, Any]]] = {}
    for node in nodes.values():
        by_type.setdefault(node["type"], []).append(node)
    (broker,) = by_type["mqtt-broker"]
    assert (broker["broker"], str(broker["port"])) == ("mosquitto", "1883")

    inputs = {n["topic"]: n for n in by_type["mqtt in"]}
    motion = inputs["everfocus/+/channel/+/event/Motion"]
    assert motion["datatype"] == "json"
    assert motion["broker"] == broker["id"]
    (function_id,) = motion["wires"][0]
    function = nodes[function_id]
    assert function["type"] == "function"
    (out_id,) = function["wires"][0]
    publisher = nodes[out_id]
    assert publisher["type"] == "mqtt out"
    assert publisher["broker"] == broker["id"]
    assert (str(publisher["qos"]), str(publisher["retain"])) == ("1", "false")
    assert publisher["topic"] == ""  # the function sets msg.topic

    responses = inputs["everfocus/+/response/+"]
    (debug_id,) = responses["wires"][0]
    assert nodes[debug_id]["type"] == "debug"
    assert "request/manual_alarm" in function["func"]


_NODE_HARNESS = """
const [func, cases] = JSON.parse(require("fs").readFileSync(0, "utf8"));
const run = new Function("msg", "node", "context", "flow", "global", "env", func);
console.log(JSON.stringify(cases.map((msg) => run(msg, {}, {}, {}, {}, {}) ?? null)));
"""


def test_node_red_function_requests_manual_alarm_on_active_motion() -> None:
    """Run the function node's code in node: active Motion -> a manual_alarm start request."""
    node = _tool("node")
    (function,) = [n for n in _flow_nodes().values() if n["type"] == "function"]
    cases = [
        {
            "topic": "everfocus/lobby/channel/3/event/Motion",
            "payload": {"nvr": "lobby", "channel": 3, "type": "Motion", "state": "active"},
            "_msgid": "m-1",
        },
        {
            "topic": "everfocus/lobby/channel/3/event/Motion",
            "payload": {"nvr": "lobby", "channel": 3, "type": "Motion", "state": "inactive"},
            "_msgid": "m-2",
        },
        {
            "topic": "everfocus/lobby/channel/system/event/Motion",
            "payload": {"nvr": "lobby", "channel": None, "type": "Motion", "state": "active"},
            "_msgid": "m-3",
        },
    ]
    result = subprocess.run(
        [node, "-e", _NODE_HARNESS],
        input=json.dumps([function["func"], cases]),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    active, inactive, system = json.loads(result.stdout)
    assert _topic_matches("everfocus/+/request/manual_alarm", active["topic"])
    assert active["topic"] == "everfocus/lobby/request/manual_alarm"
    assert active["payload"]["channel"] == 3
    assert active["payload"]["command"] == "start"
    assert active["payload"]["transaction"] == "m-1"
    assert set(active["payload"]) <= {"channel", "command", "transaction", "timestamp"}
    assert (active["qos"], active["retain"]) == (1, False)
    assert inactive is None
    assert system is None
