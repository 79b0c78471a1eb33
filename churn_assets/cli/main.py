"""The `churn` command: init, demo, run, ingest, sql, check, ui, reports, serve.

Every command serves one project: ``--project DIR`` (or ``$CHURN_PROJECT``), else the built-in
synthetic telecom one. The project is chosen before anything of the code location is imported,
because the monthly partitions start at the project's first month.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _load_defs():
    """The code location with the policies read now (a bad policy file stops here, named)."""
    from churn_assets.policies import load_policies

    policies = load_policies()
    from churn_assets.definitions import build_defs

    return build_defs(policies)


def _months_to_run() -> list[str]:
    """The months the project's data describes: its export's, or the built-in deliveries'."""
    from churn_assets.core.partitions import FIRST_MONTH
    from churn_assets.core.paths import source_dir
    from churn_assets.core.project import active_project, current_month
    from churn_assets.policies import load_policies
    from churn_assets.source.deliveries import available_months
    from churn_assets.source.export import export_months

    project = active_project()
    source = load_policies().source
    if source.from_export:
        months = export_months(project.root, source)
        where = f"{project.config_file}'s project.first_month"
    else:
        months = available_months(source_dir())
        where = "CHURN_FIRST_MONTH"
    early = [m for m in months if m < FIRST_MONTH]
    if early:
        raise SystemExit(f"Months before the first month {FIRST_MONTH[:7]} ({', '.join(m[:7] for m in early)}): "
                         f"set {where} to an earlier month.")
    future = [m for m in months if m > current_month()]
    if future:
        raise SystemExit(f"Months after the month in progress ({', '.join(m[:7] for m in future)}): "
                         "a delivery cannot describe the future.")
    return months


def cmd_run(args: argparse.Namespace) -> int:
    from churn_assets.cli.runner import materialize

    months = _months_to_run()
    if not months:
        _say("No deliveries found: run `churn demo` or `churn ingest` first, or `churn init` a project.")
        return 1
    _say(f"Materializing every asset for {months[0][:7]} .. {months[-1][:7]} ({len(months)} months)")
    started = time.monotonic()
    defs = _load_defs()
    step_seconds: dict[str, float] = {}
    result = materialize(defs, months=months, raise_on_error=False, step_seconds=step_seconds,
                         tags={"churn/command": args.command, "churn/months": f"{months[0][:7]}..{months[-1][:7]}"})
    elapsed = time.monotonic() - started
    if not result.success:
        from churn_assets.cli.runner import check_result_text, failure_message

        _say(f"Run {result.run_id} FAILED after {elapsed:.0f}s; see the run in `churn ui`.")
        for event in result.all_events:
            if event.event_type_value == "STEP_FAILURE":
                _say(f"  {event.step_key}: {failure_message(event.event_specific_data.error)}")
            elif event.event_type_value == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed \
                    and event.event_specific_data.severity.value == "ERROR":
                data = event.event_specific_data
                _say(f"  check {data.asset_key.to_user_string()}:{data.check_name}: {check_result_text(data)}")
        return 1
    _say(f"Run {result.run_id} succeeded in {elapsed:.0f}s.")
    _print_summary()
    from churn_assets.cli.runner import stage_lines

    for line in stage_lines(defs, step_seconds, elapsed, before=getattr(args, "stages_before", ())):
        print(line)
    return 0


def _print_summary() -> None:
    """A few numbers from the warehouse, read-only."""
    from churn_assets.cli.summary import summary_lines
    from churn_assets.core.paths import artifacts_dir
    from churn_assets.core.project import active_project
    from churn_assets.core.warehouse import Warehouse
    from churn_assets.policies import load_policies
    from churn_assets.training.registry import read_decision

    policies = load_policies()
    print(f"Project: {active_project().name}")
    with Warehouse().read() as con:
        for line in summary_lines(con, policies.drift, read_decision(artifacts_dir())):
            print(line)


def _refuse_in_dataset_project(command: str) -> int | None:
    from churn_assets.core.project import active_project

    project = active_project()
    if project.builtin:
        return None
    _say(f"`churn {command}` feeds the built-in synthetic project; {project.root} reads its export "
         f"({project.config_file.name} source.file): replace that file and run `churn run`.")
    return 2


def cmd_init(args: argparse.Namespace) -> int:
    from churn_assets.cli.init import InitError, create_project, report_lines

    try:
        result = create_project(args.dir, args.source, id_column=args.id, label=args.label,
                                positive=args.positive, month=args.month, time_column=args.time)
    except InitError as error:
        _say(f"churn init refused: {error}")
        return 2
    for line in report_lines(result):
        print(line)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if (refused := _refuse_in_dataset_project("demo")) is not None:
        return refused
    from churn_assets.core.paths import source_dir
    from churn_assets.source.deliveries import available_months
    from churn_assets.source.synthetic import GeneratorConfig, refuse_partial_replacement, write_source

    source = source_dir()
    existing = available_months(source)
    if existing and not args.regenerate:
        _say(
            f"Using the {len(existing)} existing deliveries in {source} "
            "(pass --regenerate to replace them)."
        )
    else:
        try:
            config = GeneratorConfig(
                customers=args.customers,
                months=args.months,
                seed=args.seed,
                **({"drift_month": None} if args.no_drift else {}),
            )
        except ValueError as error:
            _say(f"churn demo refused: {error}")
            return 2
        if args.regenerate:
            try:
                refuse_partial_replacement(source, config)
            except FileExistsError as error:
                _say(str(error))
                return 2
        _say(
            f"Generating {config.customers:,} customers x {config.months} months "
            f"(seed {config.seed}) into {source}"
        )
        started = time.monotonic()
        written = write_source(source, config, replace=args.regenerate, progress=_say)
        generated = time.monotonic() - started
        _say(f"Generated {len(written)} monthly deliveries in {generated:.0f}s.")
        args.stages_before = [("generate data", generated)]
    return cmd_run(args)


def cmd_ingest(args: argparse.Namespace) -> int:
    from churn_assets.core.warehouse import Warehouse, WarehouseBusyError
    from churn_assets.core.paths import source_dir
    from churn_assets.source import ingest
    from churn_assets.source.deliveries import ContractError

    path = Path(args.path)
    if args.format and (refused := _refuse_in_dataset_project("ingest --format telco")) is not None:
        return refused
    if bool(args.table) == bool(args.format or args.month):
        _say("Give either --table raw.NAME, or --format telco --month YYYY-MM.")
        return 2
    try:
        if args.table:
            print(ingest.ingest_table(path, args.table, Warehouse(), allow_schema_change=args.replace))
            return 0
        if args.format != "telco" or not args.month:
            _say("A Telco file needs both --format telco and --month YYYY-MM.")
            return 2
        report = ingest.ingest_telco(path, args.month, source_dir(), replace=args.replace)
    except (ContractError, FileExistsError, FileNotFoundError, WarehouseBusyError) as error:
        _say(f"Ingestion refused: {error}")
        return 1
    print(report)
    from churn_assets.cli.runner import get_instance
    from churn_assets.core.partitions import register_months

    register_months(get_instance(), [report.month])  # a partition from delivery, loaded or not
    if args.no_load:
        return 0
    from churn_assets.cli.runner import materialize
    from churn_assets.source.raw_assets import RAW_ASSET_KEYS

    result = materialize(
        _load_defs(), selection=RAW_ASSET_KEYS, months=[report.month], raise_on_error=False,
        tags={"churn/command": "ingest", "churn/months": report.month[:7]},
    )
    if not result.success:
        _say("Loading the raw layer failed; see the run in `churn ui`.")
        return 1
    _say(
        f"Loaded {report.month[:7]} into the raw layer. "
        "Run `churn run` to refresh everything downstream."
    )
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from churn_assets.core.warehouse import Warehouse, WarehouseBusyError, WarehouseMissingError
    from churn_assets.cli.sql_console import QueryError, print_relation

    if args.dialect:
        from churn_assets.core.project import active_project
        from churn_assets.sql_models import SqlProjectError, transpile_model

        try:
            print(transpile_model(active_project().sql_dir, args.query, args.dialect))
        except SqlProjectError as error:
            _say(str(error))
            return 1
        return 0
    from churn_assets.policies import load_policies

    try:
        folders = load_policies().engine.folders_behind_views()
        with Warehouse(read_wait_s=args.wait).read(sandboxed=True, readable_folders=folders) as con:
            print_relation(con, args.query, args.format, max_rows=args.max_rows)
    except (WarehouseBusyError, WarehouseMissingError) as error:
        _say(str(error))
        return 3
    except QueryError as error:
        _say(str(error))
        return 2
    except Exception as error:  # duckdb.Error subclasses: show DuckDB's own message
        if type(error).__module__.startswith(("duckdb", "_duckdb")):
            _say(f"SQL error: {error}")
            return 1
        raise
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from churn_assets.cli.check_runner import exit_code, format_table, run_all_checks, write_junit
    from churn_assets.core.warehouse import Warehouse

    defs = _load_defs()
    if "warehouse" in (defs.resources or {}):
        from churn_assets.core.keys import TRAINING_SET_KEY
        from churn_assets.core.warehouse import table_exists

        warehouse = Warehouse()
        if not warehouse.db_path.exists():
            _say(f"No warehouse at {warehouse.db_path}: nothing to check; run `churn run` (or `churn demo`) first.")
            return 1
        with warehouse.read() as con:
            built = table_exists(con, ".".join(TRAINING_SET_KEY.path))
        if not built:
            # Checks on tables that were never built would only report DuckDB catalog errors.
            _say(f"{warehouse.db_path} has no {'.'.join(TRAINING_SET_KEY.path)} yet: run `churn run` first, "
                 "then `churn check`.")
            return 1
        # The delivered months are the partitions the drift checks judge (a home built before
        # the months were partitions has them in its deliveries only).
        from churn_assets.cli.runner import get_instance
        from churn_assets.core.partitions import register_months

        register_months(get_instance(), _months_to_run())
    outcomes, elapsed = run_all_checks(defs, progress=_say if args.verbose else None)
    if not outcomes:
        _say("No asset checks are defined.")
        return 0
    print(format_table(outcomes))
    if args.junit:
        write_junit(outcomes, Path(args.junit), elapsed)
        _say(f"JUnit XML written to {args.junit}")
    return exit_code(outcomes)


def cmd_ui(args: argparse.Namespace) -> int:
    """The Dagster webserver and daemon (sensors, schedule, run queue) on this home's instance.

    What `dagster dev` starts, launched directly: Dagster 1.13 marks `dagster dev` superseded
    (by `dg dev`, which needs a dg project) and warns on every start."""
    import os
    import subprocess

    from churn_assets.cli.runner import dagster_home
    from churn_assets.core.paths import REPO_ROOT, WORKSPACE_FILE

    import signal

    home = dagster_home()
    port = str(args.port or 3000)
    workspace = ["-w", str(WORKSPACE_FILE)]
    env = os.environ.copy()
    # SIGTERM (a service manager, `kill`) stops both children as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    daemon = subprocess.Popen([sys.executable, "-m", "dagster._daemon", "run", "--log-level", "warning", *workspace],
                              env=env, cwd=REPO_ROOT)
    _say(f"Dagster UI on http://127.0.0.1:{port} (DAGSTER_HOME={home}); Ctrl-C stops it and the daemon.")
    webserver = subprocess.Popen([sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", port,
                                  "--dagster-log-level", "warning", *workspace], env=env, cwd=REPO_ROOT)
    try:
        while True:
            for name, process in (("webserver", webserver), ("daemon", daemon)):
                if process.poll() is not None:
                    _say(f"churn ui: the Dagster {name} exited ({process.returncode}); stopping.")
                    return process.returncode or 1
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    finally:
        for process in (webserver, daemon):
            if process.poll() is None:
                process.terminate()
        for process in (webserver, daemon):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def cmd_reports(args: argparse.Namespace) -> int:
    """Serve artifacts/reports/ (drift pages, evaluation plots, model cards) for the UI's links."""
    from churn_assets.core.paths import artifacts_dir
    from churn_assets.core.reports import REPORTS_URL_ENV, report_server, reports_root

    root = reports_root(artifacts_dir())
    try:
        server = report_server(root, port=args.port)
    except OSError as error:
        _say(f"churn reports: cannot listen on 127.0.0.1:{args.port}: {error.strerror} (choose --port; "
             f"set {REPORTS_URL_ENV} to the URL the UI's links should use)")
        return 2
    _say(f"Serving {root} on http://127.0.0.1:{args.port}/ (read-only); Ctrl-C stops it.")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The HTTP scoring service (FastAPI on uvicorn) for this project's champion."""
    import json
    import os
    import socket
    import tempfile

    from churn_assets.core.paths import artifacts_dir
    from churn_assets.policies import load_policies
    from churn_assets.scoring.serving import ServingError, pointer_path
    from churn_assets.scoring.service import MULTIPROCESS_ENV, SERVE_OVERRIDES_ENV

    from churn_assets.scoring.service import serving_with

    overrides = {name: getattr(args, name) for name in ("host", "port", "workers") if getattr(args, name) is not None}
    try:
        serving = serving_with(load_policies().serving, overrides)
        serving.check()
    except ServingError as error:
        _say(f"churn serve: {error}")
        return 2
    try:  # a clear line now rather than uvicorn's log after the models are loaded
        family = socket.AF_INET6 if ":" in serving.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((serving.host, serving.port))
    except OSError as error:
        _say(f"churn serve: cannot listen on {serving.host}:{serving.port}: {error.strerror} (choose --port)")
        return 2
    if not pointer_path(artifacts_dir()).is_file():
        _say("churn serve: no serving snapshot yet (materialize ml/serving_snapshot: `churn run`); /ready answers "
             "503 until one is written, then the service loads it")
    os.environ[SERVE_OVERRIDES_ENV] = json.dumps(overrides)
    # One thread per prediction (ChurnModel.use_threads); OpenMP's default would start one per core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    metrics_dir = None
    if serving.workers > 1:
        # Each worker writes its metrics here; /metrics adds them up.
        metrics_dir = os.environ[MULTIPROCESS_ENV] = tempfile.mkdtemp(prefix="churn-serve-metrics-")
    import shutil

    import uvicorn

    _say(f"churn serve: http://{serving.host}:{serving.port} (API docs at /docs, reports at /reports/), "
         f"{serving.workers} worker(s); Ctrl-C stops it.")
    try:
        uvicorn.run("churn_assets.cli.serve:app_from_environment", factory=True, host=serving.host,
                    port=serving.port, workers=serving.workers, log_level="warning", access_log=False)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from churn_assets.core.reports import DEFAULT_REPORTS_PORT

    project = argparse.ArgumentParser(add_help=False)
    project.add_argument(
        "--project", metavar="DIR", default=argparse.SUPPRESS,
        help="dataset project folder made by `churn init` (default: $CHURN_PROJECT, else the built-in one)",
    )
    parser = argparse.ArgumentParser(
        prog="churn", parents=[project],
        description="Churn prediction on Dagster + DuckDB. A project's data lives under $CHURN_HOME "
                    "(default: the project's data/, or ./data for the built-in project).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[project], **kwargs)

    init = sub.add_parser("init", help="create a dataset project from your own CSV/Parquet export")
    init.add_argument("dir", help="the project folder to create (must not exist or be empty)")
    init.add_argument("--from", dest="source", required=True, metavar="FILE", help="the export (CSV or Parquet)")
    init.add_argument("--id", metavar="COL", help="column identifying a customer (default: a stable row id is made)")
    init.add_argument("--label", metavar="COL", help="the churn label column (default: guessed from the names)")
    init.add_argument("--positive", metavar="VALUE",
                      help="the label value meaning churned (inferred for 1/true/yes)")
    init.add_argument("--month", metavar="YYYY-MM", help="month a one-snapshot file describes (default: this month)")
    init.add_argument("--time", metavar="COL", help="column giving each row's month (default: detected)")
    init.set_defaults(func=cmd_init)

    demo = add("demo", help="create the embedded data if missing, then `churn run`")
    demo.add_argument("--customers", type=_positive_int, default=10_000, help="initial customer base")
    demo.add_argument("--months", type=_positive_int, default=24, help="months of history")
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--no-drift", action="store_true", help="switch off the price-rise drift event")
    demo.add_argument("--regenerate", action="store_true", help="replace existing deliveries")
    demo.set_defaults(func=cmd_demo)

    run = add("run", help="materialize the whole graph for every delivered month")
    run.set_defaults(func=cmd_run)

    ingest = add("ingest", help="load a file: a Telco-format month, or any table as is")
    ingest.add_argument("path")
    ingest.add_argument("--format", choices=["telco"], help="file layout (with --month)")
    ingest.add_argument("--month", help="YYYY-MM the file describes (with --format telco)")
    ingest.add_argument("--table", help="raw.NAME: load a CSV/Parquet as is into this table")
    ingest.add_argument("--replace", action="store_true",
                        help="replace an existing delivery; with --table, accept a change of columns or types")
    ingest.add_argument(
        "--no-load", action="store_true", help="write the delivery only; do not load raw tables"
    )
    ingest.set_defaults(func=cmd_ingest)

    sql = add("sql", help="read-only query of the warehouse")
    sql.add_argument("query", help="a SELECT, or with --dialect a model name / .sql file")
    sql.add_argument("--format", choices=["table", "csv", "json"], default="table")
    sql.add_argument("--max-rows", type=int, default=50, help="rows shown in table format")
    sql.add_argument("--wait", type=float, default=10.0, help="seconds to wait for a busy warehouse")
    sql.add_argument(
        "--dialect", choices=["spark", "snowflake", "bigquery"],
        help="print the model transpiled to this dialect instead of running a query",
    )
    sql.set_defaults(func=cmd_sql)

    reports = add("reports", help="serve the drift, evaluation and SHAP reports the UI links to")
    reports.add_argument("--port", type=int, default=DEFAULT_REPORTS_PORT)
    reports.set_defaults(func=cmd_reports)

    check = add("check", help="run every asset check against the current warehouse")
    check.add_argument("--junit", help="write JUnit XML to this path")
    check.add_argument("--verbose", action="store_true", help="print each check as it runs")
    check.set_defaults(func=cmd_check)

    serve = add("serve", help="the HTTP scoring service for the champion (FastAPI + uvicorn)")
    serve.add_argument("--host", help="address to listen on (default: serving.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default: serving.port, 8000)")
    serve.add_argument("--workers", type=_positive_int, help="server processes (default: serving.workers, 1)")
    serve.set_defaults(func=cmd_serve)

    ui = add("ui", help="start the Dagster UI and daemon on this CHURN_HOME's instance")
    ui.add_argument("--port", type=int)
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Before any import of the code location: the project decides the partitions.
    from churn_assets.core.project import ProjectError, select_project

    try:
        select_project(getattr(args, "project", None))
    except ProjectError as error:
        _say(f"churn: {error}")
        return 2
    from churn_assets.core.paths import HomeError
    from churn_assets.core.warehouse import WarehouseDamagedError
    from churn_assets.policies import PolicyError
    from churn_assets.source.export import ExportError

    try:
        return args.func(args)
    except (PolicyError, ProjectError, ExportError, HomeError, WarehouseDamagedError) as error:
        _say(f"churn: {error}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
