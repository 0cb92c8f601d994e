"""The durable outbound spool (``BRIDGE_SPOOL_DIR``): the outbox, mirrored in SQLite.

Every publication read from an NVR is written to ``spool.sqlite3`` within a fraction of a
second (inserts are batched and committed with ``synchronous=FULL``, one fsync per
batch) and deleted once the broker confirmed it. After a crash, the next start loads what
is left, in order, before anything new: a bridge killed during a broker outage loses
nothing it had read. The bridge's own state (availability, ``bridge/state``, responses,
discovery) is not spooled: it is published afresh.

SQLite runs in a worker thread (``asyncio.to_thread``), so the event loop never waits
for the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import structlog

from bridge.normalize import Publication
from bridge.nvr.models import STREAM_NAMES
from bridge.outbox import Entry, Outbox

log = structlog.get_logger("bridge.spool")

FLUSH_INTERVAL = 0.2
SPOOL_FILE = "spool.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL,
    nvr TEXT NOT NULL,
    stream TEXT
)
"""


class Spool:
    """Mirrors the spoolable entries of an ``Outbox`` in SQLite (see module doc)."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / SPOOL_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        self._rows: dict[int, int] = {}  # outbox seq -> row id, once written
        self._to_insert: dict[int, Entry] = {}  # outbox seq -> entry, not yet written
        self._to_delete: list[int] = []  # row ids
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()

    @staticmethod
    def spoolable(publication: Publication) -> bool:
        """Only messages read from an NVR go to disk."""
        return publication.stream is not None

    def restore(self, outbox: Outbox) -> int:
        """Load what an earlier run left into ``outbox``, oldest first; returns how many."""
        rows = self._db.execute(
            "SELECT id, topic, payload, retain, nvr, stream FROM outbox ORDER BY id"
        ).fetchall()
        for row_id, topic, payload, retain, nvr, stream in rows:
            known = stream if stream in STREAM_NAMES else None
            entry = outbox.put(Publication(topic, bytes(payload), bool(retain), nvr, known))
            self._rows[entry.seq] = row_id
        if rows:
            log.info("spool restored", messages=len(rows), path=str(self.path))
        return len(rows)

    def added(self, entry: Entry) -> None:
        """An entry entered the outbox: write it with the next batch."""
        if self.spoolable(entry.publication):
            self._to_insert[entry.seq] = entry
            if len(self._to_insert) >= 5000:
                self._wakeup.set()

    def discarded(self, entry: Entry) -> None:
        """An entry left the outbox for good: delete it (or never write it)."""
        if self._to_insert.pop(entry.seq, None) is not None:
            return
        row_id = self._rows.pop(entry.seq, None)
        if row_id is not None:
            self._to_delete.append(row_id)

    @property
    def pending(self) -> int:
        """Entries accepted but not yet on disk."""
        return len(self._to_insert)

    async def run(self) -> None:
        """Flush batches until cancelled (and once more on the way out)."""
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FLUSH_INTERVAL):
                        await self._wakeup.wait()
                self._wakeup.clear()
                await self.flush()
        finally:
            await asyncio.shield(self.flush())

    async def flush(self) -> None:
        """Write the pending inserts and deletes in one transaction."""
        async with self._lock:
            if not self._to_insert and not self._to_delete:
                return
            inserts = list(self._to_insert.items())
            self._to_insert.clear()
            deletes, self._to_delete = self._to_delete, []
            try:
                row_ids = await asyncio.to_thread(self._write, inserts, deletes)
            except sqlite3.Error as exc:
                # Keep everything in memory and try again with the next batch.
                log.error("spool write failed", path=str(self.path), error=str(exc))
                self._to_insert = dict(inserts) | self._to_insert
                self._to_delete = deletes + self._to_delete
                return
            for (seq, entry), row_id in zip(inserts, row_ids, strict=True):
                if entry.alive:
                    self._rows[seq] = row_id
                else:
                    # Confirmed while it was being written: delete it with the next batch.
                    self._to_delete.append(row_id)

    def _write(self, inserts: list[tuple[int, Entry]], deletes: list[int]) -> list[int]:
        db = self._db
        row_ids: list[int] = []
        db.execute("BEGIN")
        try:
            for _, entry in inserts:
                p = entry.publication
                cursor = db.execute(
                    "INSERT INTO outbox (topic, payload, retain, nvr, stream) VALUES (?,?,?,?,?)",
                    (p.topic, p.payload, int(p.retain), p.nvr, p.stream),
                )
                row_ids.append(int(cursor.lastrowid or 0))
            if deletes:
                db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in deletes])
            db.execute("COMMIT")
        except sqlite3.Error:
            db.execute("ROLLBACK")
            raise
        return row_ids

    def close(self) -> None:
        """Close the database."""
        self._db.close()
