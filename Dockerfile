# syntax=docker/dockerfile:1
# nvr-bridge container image.
#
#   docker build -t nvr-bridge .
#   docker run --rm -e BRIDGE_NVR_URL=http://192.168.1.20:80 -e BRIDGE_MQTT_URL=mqtt://broker:1883 nvr-bridge
#
# Two stages: the builder (full Debian image, so a dependency without a wheel for the
# platform can still compile) builds the project's wheel and installs it into /opt/venv;
# the final stage is the slim image of the same Debian release and Python, and receives
# only that venv. No compiler, pip cache or source tree reaches the final image.

ARG PYTHON_VERSION=3.12
ARG DEBIAN_RELEASE=bookworm

FROM python:${PYTHON_VERSION}-${DEBIAN_RELEASE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge

# The wheel first, then the wheel alone into a fresh venv: the venv gets the installed
# package (with byte-compiled modules), never an editable link to /src.
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /dist . \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir /dist/*.whl \
    && /opt/venv/bin/pip uninstall --yes pip \
    && /opt/venv/bin/nvr-bridge --help > /dev/null

FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE}

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="nvr-bridge" \
      org.opencontainers.image.description="Bridges EverFocus NVR event streams and commands to MQTT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE}"

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
