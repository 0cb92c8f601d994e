"""The ``nvr-bridge`` command line: run, simulate, demo, check-config, discover.

Exit codes: 0 success (also after a clean SIGTERM/SIGINT shutdown), 1 ``discover``
found no NVR, 2 a configuration, start-up or usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from bridge import __version__
from bridge.config import (
    BridgeConfig,
    ConfigError,
    config_warnings,
    load_config,
    masked,
    secrets_of,
)

EXIT_CONFIG = 2
EXIT_NOTHING_FOUND = 1
REFERENCE = "docs/configuration.md"


def _install_uvloop() -> None:
    """Use uvloop when it is installed (faster event loop); plain asyncio otherwise."""
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: PLC0415

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# Young collections after this many new container objects (Python's default is 700).
GC_THRESHOLDS = (10_000, 20, 20)


def _tune_gc() -> None:
    """Collect less often on the message path; once, after startup.

    Everything loaded so far (modules, classes, validators, the configuration) lives as
    long as the process: ``gc.freeze`` takes it out of every later collection. Messages
    allocate short-lived containers by the thousand, so young collections run every
    10,000 allocations instead of 700. The collector had 4.5% of a profile's samples at
    1,000 msg/s; with this, A/B runs took about 3% less CPU per message there and in
    bursts (less than their run-to-run spread). Garbage in reference cycles waits at most
    that many allocations longer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _load(args: argparse.Namespace) -> BridgeConfig:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run ``main(stop)`` with SIGTERM/SIGINT setting ``stop`` (a clean shutdown)."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    _install_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(runner())


def cmd_run(args: argparse.Namespace) -> int:
    """Run the bridge until SIGTERM/SIGINT."""
    config = _load(args)
    from bridge.app import Bridge, StartError  # noqa: PLC0415 - keeps check-config light
    from bridge.observability import configure_logging  # noqa: PLC0415

    configure_logging(config.log_format, config.log_level, secrets_of(config), final=True)
    _tune_gc()

    async def main(stop: asyncio.Event) -> None:
        bridge = Bridge(config)
        waiter = asyncio.create_task(stop.wait(), name="signal-wait")
        runner = asyncio.create_task(bridge.run(), name="bridge")
        done, _ = await asyncio.wait({waiter, runner}, return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            bridge.stop()
        else:
            waiter.cancel()
        await runner

    try:
        run_until_signal(main)
    except StartError as exc:
        print(f"start error: {exc.reason}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the configuration and print it with secrets masked."""
    config = _load(args)
    import yaml  # noqa: PLC0415

    text = yaml.safe_dump(masked(config), sort_keys=False, default_flow_style=False)
    print(text, end="")
    for warning in config_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Serve a simulated NVR (or several) until SIGTERM/SIGINT."""
    from bridge.observability import configure_logging  # noqa: PLC0415
    from bridge.sim import run_simulator  # noqa: PLC0415

    configure_logging(args.log_format, "info")

    async def main(stop: asyncio.Event) -> None:
        serve = asyncio.create_task(
            run_simulator(
                host=args.host,
                port=args.port,
                channels=args.channels,
                username=None if args.no_auth else args.username,
                password=args.password,
                traffic=not args.quiet,
                count=args.count,
                discovery_port=args.discovery_port,
                tls_cert=args.tls_cert,
                tls_key=args.tls_key,
            ),
            name="simulator",
        )
        waiter = asyncio.create_task(stop.wait(), name="signal-wait")
        await asyncio.wait({serve, waiter}, return_when=asyncio.FIRST_COMPLETED)
        for task in (serve, waiter):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serve

    run_until_signal(main)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Broker, simulated NVR, bridge and a live view, all in this process."""
    from bridge.demo import run_demo  # noqa: PLC0415

    async def main(stop: asyncio.Event) -> None:
        await run_demo(stop, broker=args.broker, channels=args.channels, duration=args.duration)

    run_until_signal(main)
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    """Find NVRs by the SDK's UDP discovery and print them."""
    from bridge.discovery import discover, format_table  # noqa: PLC0415

    devices = asyncio.run(
        discover(target=args.target, port=args.port, timeout=args.timeout, interface=args.interface)
    )
    if args.json:
        import orjson  # noqa: PLC0415

        print(orjson.dumps([d.as_dict() for d in devices], option=orjson.OPT_INDENT_2).decode())
    else:
        print(format_table(devices, port=args.port))
    return 0 if devices else EXIT_NOTHING_FOUND


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows every option's default (not an absent one, nor a flag's off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command (each option with its help and default)."""
    parser = argparse.ArgumentParser(
        prog="nvr-bridge",
        description="Bridge EverFocus NVR event streams and commands to MQTT.",
        epilog=f"Every setting, topic and metric: {REFERENCE} and docs/mqtt.md.",
        formatter_class=_Help,
    )
    parser.add_argument(
        "--config", metavar="FILE", help="YAML configuration file (else BRIDGE_CONFIG_FILE)"
    )
    parser.add_argument(
        "--version", action="version", version=f"nvr-bridge {__version__}", help="print the version"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="bridge every configured NVR until SIGTERM",
        description="Bridge every configured NVR to the MQTT broker until SIGTERM or Ctrl-C, "
        "then publish offline and exit 0. The configuration comes from BRIDGE_* environment "
        f"variables and an optional YAML file: see {REFERENCE}. Exit code 2 with one "
        "'config error:' or 'start error:' line when it cannot start.",
        formatter_class=_Help,
    )
    run.set_defaults(handler=cmd_run)

    check = commands.add_parser(
        "check-config",
        help="validate and print the configuration",
        description="Validate the configuration (environment and file, every file it names "
        "included) and print it with passwords masked, then warnings on stderr; exit 2 with "
        f"one 'config error:' line per problem. Every setting: {REFERENCE}.",
        formatter_class=_Help,
    )
    check.set_defaults(handler=cmd_check_config)
    for sub in (run, check):
        # Also after the command: `nvr-bridge run --config bridge.yaml`.
        sub.add_argument(
            "--config",
            metavar="FILE",
            default=argparse.SUPPRESS,
            help="YAML configuration file (else BRIDGE_CONFIG_FILE)",
        )

    sim = commands.add_parser(
        "simulate",
        help="serve a simulated NVR",
        description="Serve a simulated EverFocus NVR (its REST API, five websocket streams "
        "and UDP discovery) producing realistic traffic; its /_sim/ control API drops "
        "streams, injects faults and pushes items (see bridge/sim/control.py).",
        formatter_class=_Help,
    )
    sim.add_argument("--host", default="127.0.0.1", help="address to bind")
    sim.add_argument("--port", type=int, default=8080, help="HTTP port (0: any free one)")
    sim.add_argument("--channels", type=int, default=4, help="number of channels")
    sim.add_argument("--username", default="admin", help="login name")
    sim.add_argument("--password", default="admin", help="login password")
    sim.add_argument("--no-auth", action="store_true", help="require no login")
    sim.add_argument("--quiet", action="store_true", help="no generated traffic")
    sim.add_argument("--count", type=int, default=1, help="serve N NVRs on ports P..P+N-1")
    sim.add_argument(
        "--discovery-port",
        type=int,
        default=31501,
        help="answer UDP discovery on this port of --host (31501 is the NVR's; 0: do not)",
    )
    sim.add_argument("--tls-cert", default=None, help="serve https/wss with this certificate")
    sim.add_argument("--tls-key", default=None, help="private key of --tls-cert")
    sim.add_argument(
        "--log-format", default="console", choices=("json", "console"), help="log format"
    )
    sim.set_defaults(handler=cmd_simulate)

    demo = commands.add_parser(
        "demo",
        help="everything on one machine, with a live view",
        description="An embedded MQTT broker (port 1883 when free), a simulated NVR, the "
        "bridge and a live view of the traffic, with nothing else installed; Ctrl-C stops it.",
        formatter_class=_Help,
    )
    demo.add_argument(
        "--broker",
        default=None,
        metavar="mqtt://host:port",
        help="use this broker instead of the embedded one",
    )
    demo.add_argument("--channels", type=int, default=4, help="simulated channels")
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (none: until Ctrl-C)",
    )
    demo.set_defaults(handler=cmd_demo)

    disc = commands.add_parser(
        "discover",
        help="find NVRs on the LAN (UDP port 31501)",
        description="Send the SDK's UDP inquiry and list the NVRs that answer, with the URL "
        "to configure; exit 1 when none answered.",
        formatter_class=_Help,
    )
    disc.add_argument(
        "--target",
        default="255.255.255.255",
        help="address to send the inquiry to (the default is a broadcast)",
    )
    disc.add_argument(
        "--interface", default=None, help="local address to send from (picks the network interface)"
    )
    disc.add_argument("--port", type=int, default=31501, help="discovery port")
    disc.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for answers")
    disc.add_argument("--json", action="store_true", help="print JSON instead of a table")
    disc.set_defaults(handler=cmd_discover)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nvr-bridge`` and ``python -m bridge``."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)
