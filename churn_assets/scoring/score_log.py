"""The score log: one row per score the HTTP service computed (answered or in shadow), written
to ``serving.score_log`` by a background thread, so no request waits for the warehouse.

A request appends its rows to an in-memory buffer (a deque: appending is atomic and O(1)).
Every ``log_flush_s`` the writer takes what is there and inserts it in one transaction through
the warehouse's writer lock, waiting at most a moment: while a pipeline run holds the
warehouse, the rows stay buffered and go with a later flush. A buffer full after a long wait
drops its oldest rows and counts them (``churn_score_log_dropped_rows``); rows the table refuses
are dropped, counted and logged rather than retried forever. The last flush runs when the
service stops (waiting up to 30 s for a busy warehouse).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from churn_assets.core.warehouse import Warehouse

SCORE_LOG_TABLE = "serving.score_log"
SCORE_LOG_COLUMNS: dict[str, tuple[str, str]] = {
    "served_at": ("TIMESTAMP NOT NULL", "When the score was computed (UTC)."),
    "request_id": ("VARCHAR NOT NULL", "One id per HTTP request; a batch's rows share it."),
    "endpoint": ("VARCHAR NOT NULL", "customer (GET by id), score (POST one row) or batch."),
    "customer_id": ("VARCHAR", "The customer scored; NULL for a posted row without one."),
    "feature_month": ("DATE", "Snapshot month of the features scored (posted rows: the month they name, if any)."),
    "model_version": ("VARCHAR NOT NULL", "Registry version of the model that computed the score."),
    "arm": ("VARCHAR NOT NULL", "champion or challenger: the role of that model when the score was computed."),
    "answered": ("BOOLEAN NOT NULL", "Whether this score was the answer (false: computed in shadow)."),
    "churn_probability": ("DOUBLE NOT NULL", "Calibrated churn probability."),
    "risk_band": ("VARCHAR NOT NULL", "low / medium / high by the scoring policy's cut-offs."),
    "latency_ms": ("DOUBLE NOT NULL", "Milliseconds this model took per row of the request (its time / its rows)."),
}
# How long a flush waits for the warehouse's writer lock before leaving the rows for the next.
FLUSH_LOCK_WAIT_S = 0.25


def create_score_log(con) -> None:
    from churn_assets.core.warehouse import column_definitions

    body = column_definitions(SCORE_LOG_COLUMNS)
    con.execute("CREATE SCHEMA IF NOT EXISTS serving")
    con.execute(f"CREATE TABLE IF NOT EXISTS {SCORE_LOG_TABLE} ({body})")


class ScoreLog:
    """The buffer and its writer thread; ``add`` never blocks on the warehouse."""

    def __init__(self, warehouse: Warehouse, flush_s: float, max_rows: int,
                 on_flush: Callable[[int, int], None] | None = None):
        self.warehouse = warehouse.model_copy(update={"write_wait_s": FLUSH_LOCK_WAIT_S, "read_wait_s": FLUSH_LOCK_WAIT_S})
        self.flush_s = flush_s
        self.buffer: deque[tuple] = deque(maxlen=max_rows)
        self.dropped = 0
        self.written = 0
        self.last_error: str | None = None
        # Called after each flush attempt with (rows written, rows dropped so far).
        self.on_flush = on_flush
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one flush at a time (the thread's, or the final one)
        self._table_ready = False

    def status(self) -> dict:
        return {"buffered": len(self.buffer), "written": self.written, "dropped": self.dropped,
                "last_error": self.last_error}

    def add(self, rows: list[tuple]) -> None:
        overflow = len(self.buffer) + len(rows) - (self.buffer.maxlen or 0)
        if overflow > 0:
            self.dropped += overflow
        self.buffer.extend(rows)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="score-log-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and write what is left, waiting up to 30 s for a busy warehouse."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.warehouse = self.warehouse.model_copy(update={"write_wait_s": 30.0, "read_wait_s": 30.0})
        self.flush()
        if self.buffer:
            say(f"{len(self.buffer):,} served scores not written to {SCORE_LOG_TABLE} at shutdown: {self.last_error}")

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def flush(self) -> int:
        """Write what is buffered; returns the rows written (0 when the warehouse was busy)."""
        from churn_assets.core.warehouse import WarehouseBusyError

        with self._lock:
            rows = []
            while self.buffer:
                try:
                    rows.append(self.buffer.popleft())
                except IndexError:
                    break
            if not rows:
                return 0
            try:
                self._write(rows)
            except (WarehouseBusyError, OSError) as error:
                # Busy: back in front, in order; what no longer fits is the oldest, dropped and counted.
                room = (self.buffer.maxlen or 0) - len(self.buffer)
                kept = rows[-room:] if room > 0 else []
                self.dropped += len(rows) - len(kept)
                self.buffer.extendleft(reversed(kept))
                self.last_error = " ".join(str(error).split())[:300]
                written = 0
            except RuntimeError as error:
                # The rows themselves cannot be written: retrying them would stop the log for
                # good, so they are dropped, counted and said.
                self.dropped += len(rows)
                message = " ".join(str(error).split())[:300]
                if message != self.last_error:
                    say(f"dropped {len(rows)} served scores that {SCORE_LOG_TABLE} refused: {message}")
                self.last_error = message
                written = 0
            else:
                self.written += len(rows)
                self.last_error = None
                written = len(rows)
        if self.on_flush is not None:
            self.on_flush(written, self.dropped)
        return written

    def _write(self, rows: list[tuple]) -> None:
        import duckdb
        import pyarrow as pa

        columns = list(SCORE_LOG_COLUMNS)
        table = pa.table({name: [row[i] for row in rows] for i, name in enumerate(columns)})
        try:
            with self.warehouse.write() as con:
                if not self._table_ready:
                    create_score_log(con)
                con.register("served_rows", table)
                casts = ", ".join(f"CAST({name} AS {kind.replace(' NOT NULL', '')})"
                                  for name, (kind, _) in SCORE_LOG_COLUMNS.items())
                con.execute(f"INSERT INTO {SCORE_LOG_TABLE} SELECT {casts} FROM served_rows")
                con.unregister("served_rows")
            self._table_ready = True
        except duckdb.CatalogException:
            self._table_ready = False  # dropped meanwhile: created again by the next flush
            raise RuntimeError("the score log table disappeared; it is created again") from None
        except duckdb.Error as error:
            raise RuntimeError(f"score log write failed: {error}") from None


def say(message: str) -> None:
    """One line on the service's stderr, naming the worker."""
    import os
    import sys

    print(f"churn serve [{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def now_utc():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).replace(tzinfo=None)


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
