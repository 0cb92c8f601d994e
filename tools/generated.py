"""What the generators in ``tools/`` share: telling whether a generated file is current."""

from __future__ import annotations

import difflib
from pathlib import Path

SHOWN_DIFF_LINES = 60


def stale(path: Path, text: str, regenerate: str) -> str | None:
    """Why the file at ``path`` is not ``text`` (None when it is): a diff and the remedy.

    ``regenerate`` is the command that writes the file.
    """
    try:
        written = path.read_text(encoding="utf-8")
    except OSError as exc:
        return f"{path}: cannot read it ({exc.strerror}); generate it with: {regenerate}"
    if written == text:
        return None
    diff = list(
        difflib.unified_diff(
            written.splitlines(), text.splitlines(), str(path), "generated", lineterm=""
        )
    )
    shown = "\n".join(diff[:SHOWN_DIFF_LINES])
    if len(diff) > SHOWN_DIFF_LINES:
        shown += "\n..."
    return f"{path} is stale; regenerate it with: {regenerate}\n{shown}"
