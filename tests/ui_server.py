"""Helpers of the browser test: a small demo home, `churn ui` on a free port, Chromium.

Kept out of the test module so the pieces can be used from a shell while looking at a
failure (``cd tests && uv run python -c "from ui_server import ..."``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM_ENV = "CHURN_CHROMIUM"
"""Path of a Chromium binary to use instead of the one on PATH."""

# A policy file that keeps the demo small and makes the drift checks deterministic: every
# month's largest PSI is far above 0.001 (max_psi fails with ERROR in every month) and no
# share of drifted features reaches 2 (drift_share passes in every month), whichever
# month a check evaluates. Training budgets as in tests/conftest.py's fast_resources.
UI_POLICIES = """\
tuning: {n_trials: 5, timeout_s: null, max_rounds: 80, early_stopping_rounds: 10, nthread: 1}
training:
  candidate_params:
    random_forest: {n_estimators: 20, n_jobs: 1}
    lightgbm: {max_rounds: 200, num_threads: 1}
drift: {psi_warn: 0.001, psi_error: 0.001, share_warn: 2.0, share_error: 2.0, html_reports: none}
"""

WORKSPACE_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def find_chromium() -> str | None:
    """$CHURN_CHROMIUM, else Debian's chromium (or chromium-browser / google-chrome) on PATH."""
    explicit = os.environ.get(CHROMIUM_ENV)
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def churn_env(home: Path) -> dict[str, str]:
    """The environment of a child `churn` process working on ``home`` only."""
    env = os.environ.copy()
    env.pop("CHURN_PROJECT", None)
    env.update(
        CHURN_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster"),
        CHURN_POLICIES=str(home / "policies.yaml"),
        OMP_WAIT_POLICY="PASSIVE",
        PYTHONUNBUFFERED="1",
    )
    return env


def churn_command() -> list[str]:
    script = Path(sys.executable).with_name("churn")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from churn_assets.cli.main import main; sys.exit(main())"]


def build_demo_home(home: Path, *, customers: int, months: int, log: Path) -> None:
    """`churn demo` into ``home`` (a fresh folder) with the UI test's policies."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "policies.yaml").write_text(UI_POLICIES)
    with log.open("w") as out:
        code = subprocess.call(
            [*churn_command(), "demo", "--customers", str(customers), "--months", str(months)],
            env=churn_env(home), stdout=out, stderr=subprocess.STDOUT,
        )
    if code != 0:
        raise RuntimeError(f"churn demo exited {code}; last lines of {log}:\n{tail(log)}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class DagsterUI:
    """`churn ui --port PORT` (the webserver and the daemon) in its own process group."""

    def __init__(self, home: Path, log: Path) -> None:
        self.home = home
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 300.0) -> None:
        self._out = self.log.open("w")
        self.process = subprocess.Popen(
            [*churn_command(), "ui", "--port", str(self.port)],
            env=churn_env(self.home), stdout=self._out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the webserver and daemon go with it
        )
        try:
            self._wait_until_loaded(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _graphql(self, query: str) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql", data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def _wait_until_loaded(self, timeout_s: float) -> None:
        """Until the webserver answers and the code location is loaded (or failed to load)."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"`churn ui` exited {self.process.returncode}:\n{tail(self.log)}")
            try:
                workspace = self._graphql(WORKSPACE_QUERY)["data"]["workspaceOrError"]
                entries = workspace.get("locationEntries") or []
                last = json.dumps(entries)
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    errors = [e for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
                    if errors:
                        raise RuntimeError(f"code location failed to load: {errors}")
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError, ValueError) as error:
                last = repr(error)
            time.sleep(1)
        raise TimeoutError(f"`churn ui` not ready after {timeout_s:.0f}s ({last}):\n{tail(self.log)}")

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL after 20 s."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
            # Children that outlived the group leader.
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        finally:
            self._out.close()
            self.process = None
