# syntax=docker/dockerfile:1
# nvr-bridge container image.
#
#   docker build -t nvr-bridge .
#   docker run --rm -e BRIDGE_NVR_URL=http://192.168.1.20:80 -e BRIDGE_MQTT_URL=mqtt://broker:1883 nvr-bridge
#
# Two stages: the builder (full Debian image, so a dependency without a wheel for the
# platform can still compile) installs the locked dependencies and the project's wheel
# into /opt/venv; the final stage is the slim image of the same Debian release and
# Python, and receives only that venv. No compiler, pip cache or source tree reaches
# the final image.
#
# Base images are pinned by the digest of their multi-platform index (the tag beside it
# is for the reader; the digest is what is pulled), so a rebuild gets the same bytes on
# linux/amd64 and linux/arm64. To update them, read the current index digests:
#   docker buildx imagetools inspect python:3.12-bookworm       (the "Digest:" line)
#   docker buildx imagetools inspect python:3.12-slim-bookworm
# and replace both FROM lines and the base.digest label (Dependabot's "docker"
# ecosystem, .github/dependabot.yml, proposes the same). Python stays 3.12, the
# version requirements/runtime.lock is compiled for: change both together.

FROM python:3.12-bookworm@sha256:dbbe4ceb97851e2e5fa83798b239811f871cb743b259ba3563737349f6bcfaa0 AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# The dependencies first, in their own layer: a change to the bridge's source reuses it.
# Every file is checked against the lock's hashes (requirements/compile.sh makes it).
COPY requirements/runtime.lock ./requirements/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --require-hashes -r requirements/runtime.lock

# Then the project: its wheel, installed without dependencies (all are there already),
# so the venv gets the installed package (byte-compiled), never an editable link to /src.
# The demo (`nvr-bridge demo`, with its embedded broker) is removed: the image runs
# `run` and `simulate` only.
COPY pyproject.toml README.md LICENSE ./
COPY bridge ./bridge
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /dist . \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps /dist/*.whl \
    && site=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
    && rm -rf "$site/bridge/demo" "$site/bridge/demo.py" "$site"/bridge/__pycache__/demo.*.pyc \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall --yes pip \
    && /opt/venv/bin/nvr-bridge --help > /dev/null

FROM python:3.12-slim-bookworm@sha256:0f5b26b9518d002b6173fd61daad821fa340635ebfec5bba471013f9ca114579

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="nvr-bridge" \
      org.opencontainers.image.description="Bridges EverFocus NVR event streams and commands to MQTT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/library/python:3.12-slim-bookworm" \
      org.opencontainers.image.base.digest="sha256:0f5b26b9518d002b6173fd61daad821fa340635ebfec5bba471013f9ca114579"

# A fixed numeric UID/GID so Kubernetes' runAsNonRoot can check it and volume
# permissions (fsGroup) line up with the Helm chart's securityContext.
RUN groupadd --system --gid 10001 nvr-bridge \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin nvr-bridge

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1 \
    BRIDGE_HTTP_PORT=9108 \
    BRIDGE_LOG_FORMAT=json

USER 10001:10001
WORKDIR /
EXPOSE 9108

# No curl in the slim image: Python asks /healthz itself. Any error (refused, timeout,
# a non-2xx answer) raises, and the non-zero exit marks the container unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('BRIDGE_HTTP_PORT', '9108'), timeout=3)"]

# SIGTERM makes the bridge publish offline and exit 0 within 5 s (docker stop waits 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["nvr-bridge"]
CMD ["run"]
