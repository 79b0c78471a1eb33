"""The warehouse resource under concurrency: writers queue, readers wait then report busy."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from churn_assets.core.warehouse import Warehouse, WarehouseBusyError, WarehouseMissingError

HOLD_WRITE = textwrap.dedent(
    """
    import sys, time
    from churn_assets.core.warehouse import Warehouse
    warehouse = Warehouse(path=sys.argv[1])
    with warehouse.write() as con:
        con.execute("CREATE TABLE IF NOT EXISTS t (writer VARCHAR, written_at DOUBLE)")
        con.execute("INSERT INTO t VALUES (?, ?)", [sys.argv[2], time.time()])
        print("holding", flush=True)
        time.sleep(float(sys.argv[3]))
    """
)


def _hold_write(path, name: str, seconds: float) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITE, str(path), name, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "holding"
    return process


def test_reader_waits_for_a_writer_then_reads(tmp_path):
    path = tmp_path / "w.duckdb"
    writer = _hold_write(path, "first", 1.0)
    with Warehouse(path=str(path), read_wait_s=20).read() as con:
        # The reader only got in after the writer committed.
        assert con.execute("SELECT writer FROM t").fetchall() == [("first",)]
    assert writer.wait(timeout=30) == 0


def test_reader_gives_a_clear_busy_error(tmp_path):
    path = tmp_path / "w.duckdb"
    writer = _hold_write(path, "slow", 5.0)
    try:
        with pytest.raises(WarehouseBusyError, match="busy"):
            with Warehouse(path=str(path), read_wait_s=0.5).read():
                pass
    finally:
        writer.kill()
        writer.wait()


def test_concurrent_writers_queue_instead_of_failing(tmp_path):
    path = tmp_path / "w.duckdb"
    first = _hold_write(path, "first", 1.0)
    started = time.time()
    second = _hold_write(path, "second", 0.0)  # blocks on the writer lock, then writes
    assert first.wait(timeout=30) == 0 and second.wait(timeout=30) == 0
    with Warehouse(path=str(path)).read() as con:
        rows = con.execute("SELECT writer, written_at FROM t ORDER BY written_at").fetchall()
    assert [r[0] for r in rows] == ["first", "second"]
    assert rows[1][1] >= started


def test_failed_write_rolls_back(tmp_path):
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    with warehouse.write() as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
    with pytest.raises(RuntimeError):
        with warehouse.write() as con:
            con.execute("INSERT INTO t VALUES (2)")
            raise RuntimeError("boom")
    with warehouse.read() as con:
        assert con.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_reading_a_missing_warehouse_says_what_to_do(tmp_path):
    with pytest.raises(WarehouseMissingError, match="churn demo"):
        with Warehouse(path=str(tmp_path / "none.duckdb")).read():
            pass


def test_a_waiting_writer_says_what_it_waits_for(tmp_path, capfd):
    path = tmp_path / "w.duckdb"
    holder = _hold_write(path, "holder", 3.5)
    with Warehouse(path=str(path)).write() as con:
        con.execute("INSERT INTO t VALUES ('waiter', 0)")
    assert holder.wait(timeout=30) == 0
    err = capfd.readouterr().err
    assert "Waiting for the warehouse: another process holds" in err and "w.write-lock" in err


def test_default_memory_limit_and_spill_folder(tmp_path, monkeypatch):
    from churn_assets.core import warehouse as warehouse_module

    monkeypatch.setenv("CHURN_HOME", str(tmp_path / "home"))
    # Half the memory, capped: fixed machine sizes, so the test does not depend on this one.
    monkeypatch.setattr(warehouse_module, "available_memory_bytes", lambda: 16 * 1024**3)
    assert warehouse_module.default_memory_limit() == "8192MiB"
    monkeypatch.setattr(warehouse_module, "available_memory_bytes", lambda: 256 * 1024**3)
    assert warehouse_module.default_memory_limit() == "16384MiB"
    monkeypatch.setattr(warehouse_module, "available_memory_bytes", lambda: None)
    assert warehouse_module.default_memory_limit() == "16384MiB"
    monkeypatch.setattr(warehouse_module, "available_memory_bytes", lambda: 16 * 1024**3)

    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    with warehouse.write() as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
        limit, spill = con.execute(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchone()
    assert limit == "8.0 GiB"
    assert spill == str(tmp_path / "home" / "duckdb_tmp")
    # Readers, sandboxed ones included, open with the same settings: DuckDB refuses a second
    # connection to an open file with a different configuration.
    with warehouse.read() as first, warehouse.read() as second:
        assert first.execute("SELECT x FROM t").fetchall() == second.execute("SELECT x FROM t").fetchall()
    with warehouse.read(sandboxed=True) as con:
        assert con.execute("SELECT current_setting('temp_directory')").fetchone()[0] == spill

    custom = Warehouse(path=str(tmp_path / "w.duckdb"), memory_limit="1GB", temp_directory=str(tmp_path / "spill"))
    with custom.read() as con:
        assert con.execute(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchone() == ("953.6 MiB", str(tmp_path / "spill"))
