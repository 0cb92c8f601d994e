#!/usr/bin/env bash
# Regenerates requirements/runtime.lock from requirements/runtime.in: every runtime
# dependency pinned, with the sha256 of every file PyPI has for the pinned version (so
# one lock installs with --require-hashes on linux/amd64 and linux/arm64 alike).
#
#   requirements/compile.sh                          # re-resolve what runtime.in allows
#   requirements/compile.sh --upgrade                # move every pin to the newest release
#   requirements/compile.sh --upgrade-package aiohttp
#
# The lock is for the container image's Python (3.12, Linux): markers are evaluated for
# the interpreter that runs pip-compile, so run it with Python 3.12 on Linux, e.g.
#   PYTHON=python3.12 requirements/compile.sh
# or inside the image's own base (the FROM line of the Dockerfile's final stage):
#   docker run --rm -v "$PWD:/src" -w /src python:3.12-slim-bookworm requirements/compile.sh
# Only PyPI is asked (no local index or find-links from a pip.conf).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3.12}
"$python" - <<'PY'
import sys
if sys.version_info[:2] != (3, 12) or not sys.platform.startswith("linux"):
    raise SystemExit(f"the lock is for Python 3.12 on Linux, not {sys.version.split()[0]} on {sys.platform}")
PY

venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
export PIP_CONFIG_FILE=/dev/null
unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_CONSTRAINT
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --index-url https://pypi.org/simple "pip-tools==7.6.2"
# The command pip-compile names in the lock's header.
export CUSTOM_COMPILE_COMMAND="requirements/compile.sh (pip-compile --generate-hashes, Python 3.12, Linux)"
"$venv/bin/pip-compile" --quiet \
    --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
    --index-url https://pypi.org/simple \
    --output-file requirements/runtime.lock \
    "$@" requirements/runtime.in
