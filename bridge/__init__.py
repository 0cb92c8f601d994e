"""nvr-bridge: EverFocus NVR event streams and commands, bridged to MQTT."""

import sys as _sys
from importlib.metadata import PackageNotFoundError as _NotInstalled
from importlib.metadata import version as _version

try:
    # One place holds the version: pyproject.toml, read back from the installed package.
    __version__ = _version("nvr-bridge")
except _NotInstalled:  # pragma: no cover - running from a source tree never installed
    __version__ = "0+unknown"


def _import_structlog_without_rich() -> None:
    """Import structlog with rich hidden from it.

    structlog pretty-prints through rich whenever it can import it, and rich is often
    installed beside (by other tools of the same environment). The bridge logs JSON (or
    plain console lines), so that import would only cost about 2 MB of resident memory
    in every process. Hiding rich for
    the duration of structlog's import keeps structlog on its plain renderers; anything
    else that imports rich later gets it as usual.
    """
    if "structlog" in _sys.modules:
        return
    if _sys.modules.get("rich") is not None:
        return  # already loaded by someone else: nothing to save
    _sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog  # noqa: F401, PLC0415
    finally:
        del _sys.modules["rich"]


_import_structlog_without_rich()
