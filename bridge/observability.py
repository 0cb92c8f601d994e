"""Metrics, logging set-up and the health/metrics HTTP server.

Every metric lives in the ``Metrics`` object's own registry (not the process-global one)
so that several bridges can run in one process (tests, benchmarks). Label children are
created once and cached: the hot path only increments.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any, Literal

import orjson
import structlog
from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from bridge.config import COMMAND_NAMES
from bridge.nvr.models import STREAM_NAMES, StreamName
from bridge.redaction import MAX_WALK_DEPTH, Redactor

# The *_created series double the scrape size and carry nothing dashboards use.
disable_created_metrics()  # type: ignore[no-untyped-call]

COMMAND_OUTCOMES = ("ok", "error", "invalid", "refused")
# Why a publication was dropped (nvr_bridge_publish_dropped_total's reason label).
DropReason = Literal["buffer_full", "too_large", "bad_topic", "refused", "poison"]
DROP_REASONS: tuple[DropReason, ...] = (
    "buffer_full",
    "too_large",
    "bad_topic",
    "refused",
    "poison",
)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0)


class HotCounter:
    """A counter the hot path increments for every message: a plain number, no lock.

    prometheus_client's counters take a lock on every increment (they may be shared
    between threads); these are only touched from the event loop and read at scrape time.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        """Add ``amount`` (default 1)."""
        self.value += amount


class HotCounterFamily(Collector):
    """A labelled family of ``HotCounter``; exposed like a prometheus_client Counter."""

    def __init__(
        self, name: str, documentation: str, labelnames: tuple[str, ...], registry: Any
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = labelnames
        self._children: dict[tuple[str, ...], HotCounter] = {}
        registry.register(self)

    def labels(self, *values: str) -> HotCounter:
        """The child of these label values, created at 0 on first use."""
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = HotCounter()
        return child

    def collect(self) -> Iterator[Metric]:
        """The family with every child's current value (called at scrape time)."""
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, child in self._children.items():
            family.add_metric(list(values), child.value)
        yield family


class StreamCounters:
    """The cached counter children of one NVR's stream (the hot path's only metric cost)."""

    __slots__ = ("connected", "dropped", "invalid", "published", "received", "reconnects")

    def __init__(self, metrics: Metrics, nvr: str, stream: StreamName) -> None:
        self.received = metrics.received.labels(nvr, stream)
        self.published = metrics.published.labels(nvr, stream)
        self.invalid = metrics.invalid.labels(nvr, stream)
        self.dropped = metrics.dropped.labels(nvr, stream)
        self.connected = metrics.stream_connected.labels(nvr, stream)
        self.reconnects = metrics.reconnects.labels(nvr, stream)


class Metrics:
    """The bridge's Prometheus metrics (CONTRACT.md section 6)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        stream_labels = ("nvr", "stream")
        self.received = HotCounterFamily(
            "nvr_bridge_messages_received",
            "Items read from NVR streams, valid or not (a non-JSON frame counts as one).",
            stream_labels,
            registry=r,
        )
        self.published = HotCounterFamily(
            "nvr_bridge_messages_published",
            "MQTT publishes of stream messages confirmed by the broker.",
            stream_labels,
            registry=r,
        )
        self.invalid = Counter(
            "nvr_bridge_messages_invalid",
            "Items rejected: not JSON, wrong shape, missing or mistyped fields, too large.",
            stream_labels,
            registry=r,
        )
        self.dropped = Counter(
            "nvr_bridge_messages_dropped",
            "Stream messages never published: the outbound buffer was full while the broker "
            "was away, or the broker could not take them (see nvr_bridge_publish_dropped).",
            stream_labels,
            registry=r,
        )
        self.replayed = Counter(
            "nvr_bridge_messages_replayed",
            "Items of a stream outage fetched from the NVR's history and published.",
            stream_labels,
            registry=r,
        )
        self.stream_connected = Gauge(
            "nvr_bridge_stream_connected",
            "1 while the stream's websocket is connected.",
            stream_labels,
            registry=r,
        )
        self.reconnects = Counter(
            "nvr_bridge_stream_reconnects",
            "Connections of a stream after its first one.",
            stream_labels,
            registry=r,
        )
        self.commands = Counter(
            "nvr_bridge_commands",
            "Command requests by outcome: ok, error (REST call failed), invalid, refused.",
            ("nvr", "command", "outcome"),
            registry=r,
        )
        self.commands_repeated = Counter(
            "nvr_bridge_commands_repeated",
            "Requests received again (a QoS 1 redelivery or a repeated transaction): "
            "answered from the first outcome, not executed again.",
            ("nvr", "command"),
            registry=r,
        )
        self.request_seconds = Histogram(
            "nvr_bridge_nvr_request_seconds",
            "Duration of REST calls to the NVR.",
            ("nvr", "endpoint"),
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.logins = Counter(
            "nvr_bridge_nvr_logins",
            "Login attempts on the NVR by outcome (ok, refused, failed).",
            ("nvr", "outcome"),
            registry=r,
        )
        self.nvr_online = Gauge(
            "nvr_bridge_nvr_online",
            "1 while the NVR is logged in with all its streams up (its availability).",
            ("nvr",),
            registry=r,
        )
        self.polls = Counter(
            "nvr_bridge_nvr_polls",
            "Reads of the NVR's state (pins, gpio, storage) by outcome: ok, error, "
            "unsupported (404: not asked again until the next login).",
            ("nvr", "poll", "outcome"),
            registry=r,
        )
        self.snapshots = Counter(
            "nvr_bridge_snapshots",
            "Snapshots by outcome: ok, error, too_large, skipped (a trigger within "
            "BRIDGE_SNAPSHOT_MIN_INTERVAL).",
            ("nvr", "outcome"),
            registry=r,
        )
        self.nvr_restarts = Counter(
            "nvr_bridge_nvr_restarts",
            "Restarts of one NVR's tasks after an unexpected error in one of them.",
            ("nvr",),
            registry=r,
        )
        self.spool_writing = Gauge(
            "nvr_bridge_spool_writing",
            "1 while the spool writes to disk; 0 while it failed and messages wait in memory.",
            registry=r,
        )
        self.spool_errors = Counter(
            "nvr_bridge_spool_errors",
            "Spool writes that failed (each makes the spool fall back to memory).",
            registry=r,
        )
        self.publish_dropped = Counter(
            "nvr_bridge_publish_dropped",
            "Publications of any kind (stream messages, snapshots, state, responses) never "
            "published, by reason: buffer_full, too_large, bad_topic, refused (by the broker), "
            "poison.",
            ["reason"],
            registry=r,
        )
        for reason in DROP_REASONS:
            self.publish_dropped.labels(reason)
        self.retained_evicted = Counter(
            "nvr_bridge_retained_evicted",
            "Retained topics forgotten (not republished after a reconnect) for the bound.",
            registry=r,
        )
        self.build_info = Gauge(
            "nvr_bridge_build_info",
            "1, labelled with the bridge's version.",
            ("version",),
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "nvr_bridge_mqtt_connected", "1 while the broker is connected.", registry=r
        )
        self.queue_depth = Gauge(
            "nvr_bridge_publish_queue_depth",
            "Messages waiting in the outbound buffer (including unconfirmed ones).",
            registry=r,
        )
        self._streams: dict[tuple[str, str], StreamCounters] = {}
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def register_nvr(self, nvr: str, commands: Iterable[str] = COMMAND_NAMES) -> None:
        """Create every series of one NVR at 0, so dashboards see it from start-up."""
        for stream in STREAM_NAMES:
            self._streams[(nvr, stream)] = StreamCounters(self, nvr, stream)
        for command in commands:
            for outcome in COMMAND_OUTCOMES:
                self.commands.labels(nvr, command, outcome)
        for outcome in ("ok", "refused", "failed"):
            self.logins.labels(nvr, outcome)
        self.nvr_online.labels(nvr).set(0)
        self.nvr_restarts.labels(nvr)
        for outcome in ("ok", "error", "too_large", "skipped"):
            self.snapshots.labels(nvr, outcome)

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached.

        prometheus_client takes a lock and checks the labels on every ``labels`` call,
        which the command path would otherwise pay per request.
        """
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def stream(self, nvr: str, stream: StreamName) -> StreamCounters:
        """The cached counters of one NVR's stream."""
        counters = self._streams.get((nvr, stream))
        if counters is None:
            counters = self._streams[(nvr, stream)] = StreamCounters(self, nvr, stream)
        return counters

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


# --- logging -------------------------------------------------------------------------

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _secret_scrubber(secrets: list[str]) -> Callable[[Any, str, MutableMapping[str, Any]], Any]:
    """A processor that masks every configured secret anywhere in a log event.

    Every string at any depth (keys included, exception texts included) is scrubbed by
    the ``Redactor``; a string cut short for the log (ending in ``...``) also loses a
    password's first characters at its end.
    """
    redactor = Redactor(secrets)

    def clean(value: Any, depth: int) -> Any:
        if isinstance(value, str):
            text = redactor.text(value)
            return redactor.leaked_prefix(text) if text.endswith("...") else text
        if depth > MAX_WALK_DEPTH:
            return "***"
        if isinstance(value, dict):
            return {clean(k, depth + 1): clean(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(item, depth + 1) for item in value]
        return value

    def scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if not redactor.secrets:
            return event
        for key, value in list(event.items()):
            event[key] = clean(value, 0)
        return event

    return scrub


def _orjson_dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def configure_logging(
    fmt: str = "json", level: str = "info", secrets: Iterable[str] = (), *, final: bool = False
) -> None:
    """Structured logs on stdout: one JSON object per line, or readable console lines.

    Third-party libraries' standard-library logs go through the same renderer at WARNING.
    ``final``: this is the process's one configuration (``nvr-bridge run``), so each
    module's logger is built once on first use; a call below the level then costs next
    to nothing (the command path logs one info line per command). Tests and tools that
    configure again leave it off.
    """
    secret_list = [s for s in secrets if s]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
        # Tracebacks become text before the scrubber, so it masks secrets in them too.
        tail: list[Any] = [structlog.processors.format_exc_info]
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        tail = [structlog.processors.dict_tracebacks]
    structlog.configure(
        processors=[*shared, *tail, _secret_scrubber(secret_list), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=final,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *tail,
                _secret_scrubber(secret_list),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    # paho ("mqtt", under the tests' and benchmarks' clients) logs each lost socket at
    # ERROR: the bridge says it in one line of its own.
    logging.getLogger("mqtt").setLevel(logging.CRITICAL)


# --- HTTP: /metrics, /healthz, /readyz ---------------------------------------------------


class HealthServer:
    """The aiohttp server of ``/metrics``, ``/healthz`` and ``/readyz``."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        alive: Callable[[], list[str]],
        not_ready: Callable[[], list[str]],
        host: str,
        port: int,
    ) -> None:
        self._metrics = metrics
        self._alive = alive
        self._not_ready = not_ready
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._handle_metrics)
        app.router.add_get("/healthz", self._handle_healthz)
        app.router.add_get("/readyz", self._handle_readyz)
        return app

    async def start(self) -> None:
        """Bind and serve; ``port`` holds the bound port (useful with port 0)."""
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle_metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _handle_healthz(self, _: web.Request) -> web.Response:
        dead = self._alive()
        if dead:
            return _json_response({"status": "unhealthy", "dead": dead}, 503)
        return _json_response({"status": "ok"}, 200)

    async def _handle_readyz(self, _: web.Request) -> web.Response:
        reasons = self._not_ready()
        if reasons:
            return _json_response({"ready": False, "reasons": reasons}, 503)
        return _json_response({"ready": True}, 200)


def _json_response(body: Mapping[str, Any], status: int) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
