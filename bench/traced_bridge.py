"""Run the bridge with tracemalloc on and write what grew, once a minute (soak helper).

    python bench/traced_bridge.py OUT_DIR [bridge arguments ...]

After a warm-up of two minutes it takes a baseline snapshot; then every minute it appends
the Python heap size to OUT_DIR/traced.tsv and writes the 25 allocation sites that grew most
since the baseline to OUT_DIR/top-MM.txt. `bench/soak.py --tracemalloc DIR` uses it, to tell
a Python-level leak (traced memory keeps growing) from allocator fragmentation (traced
memory flat while RSS creeps).
"""

from __future__ import annotations

import sys
import threading
import time
import tracemalloc
from pathlib import Path

WARMUP_S = 120.0
INTERVAL_S = 60.0


def _sample(out: Path) -> None:
    filters = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    ]
    start = time.monotonic()
    with (out / "traced.tsv").open("a") as series:
        series.write("minute\ttraced_mb\n")
        time.sleep(WARMUP_S)
        baseline = tracemalloc.take_snapshot().filter_traces(filters)
        minute = 0
        while True:
            current_mb = tracemalloc.get_traced_memory()[0] / 2**20
            series.write(f"{(time.monotonic() - start) / 60:.1f}\t{current_mb:.2f}\n")
            series.flush()
            time.sleep(INTERVAL_S)
            minute += 1
            snapshot = tracemalloc.take_snapshot().filter_traces(filters)
            lines = [str(stat) for stat in snapshot.compare_to(baseline, "lineno")[:25]]
            (out / f"top-{minute:02d}.txt").write_text("\n".join(lines) + "\n")


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    sys.argv = ["nvr-bridge", *sys.argv[2:]]
    tracemalloc.start(1)
    threading.Thread(target=_sample, args=(out,), daemon=True, name="tracemalloc").start()
    from bridge.cli import main as bridge_main

    sys.exit(bridge_main())


if __name__ == "__main__":
    main()
