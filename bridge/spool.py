"""The durable outbound spool (``BRIDGE_SPOOL_DIR``): the outbox, mirrored in SQLite.

Every publication read from an NVR is written to ``spool.sqlite3`` within a fraction of a
second (inserts are batched and committed with ``synchronous=FULL``, one fsync per
batch) and deleted once the broker confirmed it. After a crash, the next start loads what
is left, in order, before anything new: a bridge killed during a broker outage loses
nothing it had read. The bridge's own state (availability, ``bridge/state``, responses,
discovery) is not spooled: it is published afresh.

A spool that cannot write (a full disk, a file system gone read-only) says so once, in
the log, a metric and ``/readyz``, and falls back to memory: its files are removed, so
a later start can never publish again what the broker already confirmed, and every
``RETRY_SECONDS`` it tries a fresh file, which gets every message still waiting. A spool
directory that is unusable at start is a ``SpoolUnusable`` (the bridge does not start).

SQLite runs in a worker thread (``asyncio.to_thread``), so the event loop never waits
for the disk.

Errors::

    SpoolUnusable          the spool directory cannot be used at start (``reason``)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import structlog

from bridge.nvr.models import STREAM_NAMES
from bridge.observability import Metrics
from bridge.outbox import Entry, Outbox
from bridge.publishing import Publication

log = structlog.get_logger("bridge.spool")

FLUSH_INTERVAL = 0.2
RETRY_SECONDS = 30.0
SPOOL_FILE = "spool.sqlite3"
_SIDE_FILES = ("-wal", "-shm", "-journal")

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


class SpoolUnusable(Exception):
    """The spool directory cannot be used; ``reason`` says why and what to do."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class Spool:
    """Mirrors the spoolable entries of an ``Outbox`` in SQLite (see module doc)."""

    def __init__(self, directory: str | Path, *, metrics: Metrics | None = None) -> None:
        self.path = Path(directory) / SPOOL_FILE
        self._metrics = metrics
        self.failure: str | None = None  # why the spool is not writing right now
        self._rows: dict[int, int] = {}  # outbox seq -> row id, once written
        self._to_insert: dict[int, Entry] = {}  # outbox seq -> entry, not yet written
        self._to_delete: list[int] = []  # row ids
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._alive_entries: Callable[[], list[Entry]] = list
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._open()
            self._probe()
        except (OSError, sqlite3.Error) as exc:
            raise SpoolUnusable(
                f"the spool directory {str(directory)!r} is unusable: {_describe(exc)}; "
                "make it writable with free space, or unset BRIDGE_SPOOL_DIR"
            ) from None
        if metrics is not None:
            metrics.spool_writing.set(1)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _probe(self) -> None:
        """Write and delete a row: a directory that cannot take writes fails here."""
        db = self._db
        db.execute("BEGIN")
        try:
            db.execute(
                "INSERT INTO outbox (topic, payload, retain, nvr, stream) VALUES (?,?,?,?,?)",
                ("probe", b"", 0, "", None),
            )
            db.execute("DELETE FROM outbox WHERE topic = 'probe' AND nvr = ''")
            db.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            db.close()
            raise

    @staticmethod
    def spoolable(publication: Publication) -> bool:
        """Only messages read from an NVR go to disk."""
        return publication.stream is not None

    def restore(self, outbox: Outbox) -> int:
        """Load what an earlier run left into ``outbox``, oldest first; returns how many.

        The outbox also tells the spool, from now on, what is still waiting (for a fresh
        file after a failure).
        """
        self._alive_entries = outbox.alive_entries
        restored = 0
        cursor = self._db.execute(
            "SELECT id, topic, payload, retain, nvr, stream FROM outbox ORDER BY id"
        )
        for row_id, topic, payload, retain, nvr, stream in cursor:
            known = stream if stream in STREAM_NAMES else None
            entry = outbox.put(Publication(topic, bytes(payload), bool(retain), nvr, known))
            self._rows[entry.seq] = row_id
            restored += 1
        if restored:
            log.info("spool restored", messages=restored, path=str(self.path))
        return restored

    def added(self, entry: Entry) -> None:
        """An entry entered the outbox: write it with the next batch."""
        if self.failure is None and self.spoolable(entry.publication):
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
                timeout = RETRY_SECONDS if self.failure is not None else FLUSH_INTERVAL
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wakeup.wait()
                self._wakeup.clear()
                if self.failure is not None:
                    await self._reopen()
                else:
                    await self.flush()
        finally:
            await asyncio.shield(self.flush())

    async def flush(self) -> None:
        """Write the pending inserts and deletes in one transaction."""
        async with self._lock:
            if self.failure is not None or (not self._to_insert and not self._to_delete):
                return
            inserts = list(self._to_insert.items())
            self._to_insert.clear()
            deletes, self._to_delete = self._to_delete, []
            try:
                row_ids = await asyncio.to_thread(self._write, inserts, deletes)
            except (sqlite3.Error, OSError) as exc:
                await asyncio.to_thread(self._fail, _describe(exc))
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
            if deletes:
                db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in deletes])
            for _, entry in inserts:
                p = entry.publication
                cursor = db.execute(
                    "INSERT INTO outbox (topic, payload, retain, nvr, stream) VALUES (?,?,?,?,?)",
                    (p.topic, p.payload, int(p.retain), p.nvr, p.stream),
                )
                row_ids.append(int(cursor.lastrowid or 0))
            db.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        return row_ids

    def _fail(self, reason: str) -> None:
        """Fall back to memory: say so once, and remove the files (in the worker thread)."""
        self.failure = reason
        self._rows.clear()
        self._to_insert.clear()
        self._to_delete.clear()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        leftover = self._remove_files()
        if self._metrics is not None:
            self._metrics.spool_errors.inc()
            self._metrics.spool_writing.set(0)
        log.error(
            "spool write failed, keeping messages in memory",
            path=str(self.path),
            error=reason,
            retry_in=RETRY_SECONDS,
            hint="free space or fix the spool directory; a crash now loses what waits",
            files_left=leftover or None,
        )

    def _remove_files(self) -> list[str]:
        """Delete the spool's files, so no later start republishes confirmed messages."""
        left = []
        for path in [self.path, *(Path(f"{self.path}{suffix}") for suffix in _SIDE_FILES)]:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError:
                left.append(str(path))
        return left

    async def _reopen(self) -> None:
        """Try a fresh spool file; on success it holds everything still waiting."""
        async with self._lock:
            entries = [e for e in self._alive_entries() if self.spoolable(e.publication)]
            try:
                db, row_ids = await asyncio.to_thread(self._fresh_file, entries)
            except (sqlite3.Error, OSError) as exc:
                self.failure = _describe(exc)
                await asyncio.to_thread(self._remove_files)
                return
            self._db = db
            for entry, row_id in zip(entries, row_ids, strict=True):
                if entry.alive:
                    self._rows[entry.seq] = row_id
                else:
                    self._to_delete.append(row_id)  # confirmed while it was written
            self.failure = None
            # What arrived while the file was being written goes with the next batch.
            for entry in self._alive_entries():
                if self.spoolable(entry.publication) and entry.seq not in self._rows:
                    self._to_insert[entry.seq] = entry
        if self._metrics is not None:
            self._metrics.spool_writing.set(1)
        log.info("spool writing again", path=str(self.path), messages=len(entries))

    def _fresh_file(self, entries: list[Entry]) -> tuple[sqlite3.Connection, list[int]]:
        self._remove_files()
        self._db = self._open()
        try:
            row_ids = self._write([(e.seq, e) for e in entries], [])
        except sqlite3.Error:
            self._db.close()
            raise
        return self._db, row_ids

    def close(self) -> None:
        """Close the database."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
