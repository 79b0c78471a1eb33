"""Dagster resources: the DuckDB warehouse and the artifact store.

DuckDB admits one writing process per database file, and a read-only connection fails
while another process holds the file. The warehouse therefore serialises writers with
an OS file lock (so parallel steps and concurrent runs queue instead of failing on
DuckDB's own lock), keeps write connections open only for one transaction, and lets
readers retry briefly before reporting that the warehouse is busy.
"""

from __future__ import annotations

import fcntl
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from churn_assets.core.paths import artifacts_dir, churn_home, duckdb_temp_dir, warehouse_path

if TYPE_CHECKING:
    import duckdb

# Every asset that writes to the warehouse runs in this Dagster concurrency pool, so an
# instance configured with a pool limit of 1 never even starts two writers at once.
WAREHOUSE_POOL = "warehouse"


# Seconds of waiting for the writer lock before saying so.
LOCK_WAIT_NOTICE_S = 2.0


class WarehouseBusyError(RuntimeError):
    """Another process has held the warehouse for longer than the caller wanted to wait."""


class WarehouseDamagedError(RuntimeError):
    """The warehouse file is not a DuckDB database; nothing reads or writes it."""


class WarehouseMissingError(FileNotFoundError):
    """The warehouse file does not exist yet."""


# The default memory_limit: half of the memory the process may use, at most this much.
# DuckDB's own default is 80% of RAM, which leaves too little for what runs beside it (the
# training and scoring steps hold the features in pandas / numpy in the same process,
# Dagster's webserver and daemon run next to it). Half of a 16 GB laptop is 8 GB, under
# which the 1M-customer feature build runs (benchmarks/bench_features.py); past the limit
# DuckDB spills to temp_directory instead of failing. The cap keeps a large shared server
# from handing one warehouse most of its memory; set memory_limit to go beyond it.
DEFAULT_MEMORY_SHARE = 0.5
DEFAULT_MEMORY_CAP_BYTES = 16 * 1024**3


def available_memory_bytes() -> int | None:
    """Physical memory, or the container's (cgroup) limit when that is lower; None if unknown."""
    import os

    sizes = []
    try:
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) > 0:
            sizes.append(int(text))
    return min(sizes) if sizes else None


def default_memory_limit() -> str:
    """``memory_limit`` when none is configured: half the available memory, at most 16GB,
    in whole MiB."""
    memory = available_memory_bytes()
    limit = DEFAULT_MEMORY_CAP_BYTES if memory is None else min(int(memory * DEFAULT_MEMORY_SHARE), DEFAULT_MEMORY_CAP_BYTES)
    return f"{limit // 1024**2}MiB"


def _is_lock_conflict(error: Exception) -> bool:
    text = str(error).lower()
    return "lock" in text or "different configuration" in text


class Warehouse(dg.ConfigurableResource):
    """The DuckDB warehouse at ``$CHURN_HOME/warehouse.duckdb`` (or ``path``)."""

    path: str | None = Field(
        default=None, description="DuckDB file; defaults to $CHURN_HOME/warehouse.duckdb."
    )
    read_wait_s: float = Field(
        default=10.0, description="How long a reader waits for a writer to finish."
    )
    write_wait_s: float = Field(
        default=1800.0, description="How long a writer queues behind other writers."
    )
    threads: int | None = Field(default=None, description="DuckDB worker threads.")
    memory_limit: str | None = Field(
        default=None,
        description="DuckDB memory_limit, e.g. '4GB'; beyond it DuckDB spills to temp_directory. "
        "Defaults to half the machine's memory (or its cgroup limit), at most 16GB.",
    )
    temp_directory: str | None = Field(
        default=None, description="Where DuckDB spills; defaults to $CHURN_HOME/duckdb_tmp."
    )

    @property
    def db_path(self) -> Path:
        return Path(self.path) if self.path else warehouse_path()

    def _settings(self) -> dict:
        # Every connection of the process gets the same settings: DuckDB refuses a second
        # connection to an open file with a different configuration, so these are computed
        # the same way each time (no per-call state).
        config = {
            "memory_limit": self.memory_limit or default_memory_limit(),
            "temp_directory": self.temp_directory or str(duckdb_temp_dir()),
        }
        if self.threads:
            config["threads"] = self.threads
        return config

    @contextmanager
    def _writer_lock(self) -> Iterator[None]:
        lock_path = self.db_path.with_suffix(".write-lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.write_wait_s
        said = False
        with open(lock_path, "a") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not said and time.monotonic() > deadline - self.write_wait_s + LOCK_WAIT_NOTICE_S:
                        # A run that waits says on what, instead of sitting silent.
                        print(f"Waiting for the warehouse: another process holds {lock_path} "
                              f"(up to {self.write_wait_s:.0f}s)", file=sys.stderr, flush=True)
                        said = True
                    if time.monotonic() > deadline:
                        raise WarehouseBusyError(
                            f"{self.db_path} is still being written by another process "
                            f"after {self.write_wait_s:.0f}s"
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _refuse_damaged_file(self) -> None:
        """A file that is not a DuckDB database (empty, truncated, something else) is never opened
        for writing: DuckDB would refuse it with a traceback, or a zero-byte file would be taken."""
        path = self.db_path
        if not path.exists():
            return
        with open(path, "rb") as handle:
            header = handle.read(16)
        # DuckDB files carry "DUCK" at byte 8 of their first block.
        if len(header) < 12 or header[8:12] != b"DUCK":
            raise WarehouseDamagedError(
                f"{path} is not a DuckDB database (empty, truncated or another file): move it aside and "
                "rebuild with `churn run` (or restore it from a backup)"
            )

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection held under the writer lock (no transaction opened)."""
        import duckdb

        self._refuse_damaged_file()
        with self._writer_lock():
            deadline = time.monotonic() + self.read_wait_s
            while True:
                try:
                    con = duckdb.connect(str(self.db_path), config=self._settings())
                    break
                except duckdb.IOException as error:
                    # A read-only reader in another process holds the file briefly.
                    if not _is_lock_conflict(error) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            try:
                yield con
            finally:
                con.close()

    @contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One atomic write: everything inside commits together or not at all."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    @contextmanager
    def read(self, sandboxed: bool = False, readable_folders: Sequence[str] = ()) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection; waits up to ``read_wait_s`` while a writer holds the file.

        ``sandboxed`` (for queries a user types): a read-only connection still runs ``COPY ... TO``,
        ``EXPORT DATABASE``, ``ATTACH`` and extension installs, so external access and extension
        loading are switched off and the configuration is locked, before the query can change it.
        ``readable_folders`` stay reachable inside the sandbox (the Spark warehouse, whose
        Parquet files the ``engine: spark`` views read). DuckDB lets ``COPY ... TO`` write
        there too, so the caller must refuse statements that write (``sql_console``).
        """
        import duckdb

        if not self.db_path.exists():
            raise WarehouseMissingError(
                f"No warehouse at {self.db_path}: run `churn demo` (or `churn run`) first."
            )
        self._refuse_damaged_file()
        deadline = time.monotonic() + self.read_wait_s
        while True:
            try:
                con = duckdb.connect(str(self.db_path), read_only=True,
                                     config={**(NO_EXTENSIONS if sandboxed else {}), **self._settings()})
                break
            except (duckdb.IOException, duckdb.ConnectionException) as error:
                if not _is_lock_conflict(error):
                    raise
                if time.monotonic() > deadline:
                    raise WarehouseBusyError(
                        f"The warehouse {self.db_path} is busy: another process (a Dagster "
                        f"run?) is writing to it. Waited {self.read_wait_s:.0f}s; try again "
                        "when the run finishes."
                    ) from error
                time.sleep(0.2)
        try:
            if sandboxed:
                # As SET statements, in this order, before any query: DuckDB 2.0 refuses
                # allowed_directories in the connect config once external access is off there
                # (whatever the order), and a temp_directory given before it.
                if readable_folders:
                    folders = ", ".join("'" + f.rstrip("/").replace("'", "''") + "/'" for f in readable_folders)
                    con.execute(f"SET allowed_directories = [{folders}]")
                con.execute("SET enable_external_access = false")
                con.execute("SET lock_configuration = true")
            yield con
        finally:
            con.close()


# The sandbox's connect config; external access and the configuration lock follow as SET
# statements (``Warehouse.read``).
NO_EXTENSIONS = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def column_definitions(columns: dict[str, tuple[str, str]]) -> str:
    """The column list of a CREATE TABLE for ``{column: (DuckDB type, description)}``."""
    return ", ".join(f"{name} {kind}" for name, (kind, _) in columns.items())


def table_exists(con: duckdb.DuckDBPyConnection, relation: str) -> bool:
    """Whether ``schema.table`` exists (names compared case-insensitively, as DuckDB does)."""
    schema, name = relation.split(".")
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE lower(table_schema) = lower(?) AND lower(table_name) = lower(?)",
            [schema, name],
        ).fetchall()[0][0]  # fetchall completes the result: DuckDB 2.0 refuses con.sql() after a pending one
    )


class ArtifactStore(dg.ConfigurableResource):
    """Files the platform produces: models, reports and plots under ``$CHURN_HOME/artifacts``."""

    root: str | None = Field(default=None, description="Defaults to $CHURN_HOME/artifacts.")

    @property
    def root_path(self) -> Path:
        path = Path(self.root) if self.root else artifacts_dir()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def path(self, *parts: str) -> Path:
        """A path under the store; parent folders are created."""
        target = self.root_path.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


__all__ = [
    "WAREHOUSE_POOL",
    "ArtifactStore",
    "Warehouse",
    "WarehouseBusyError",
    "WarehouseDamagedError",
    "WarehouseMissingError",
    "churn_home",
    "default_memory_limit",
]
