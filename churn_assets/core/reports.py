"""Reports over HTTP: the Evidently drift pages, evaluation plots and model cards under
``artifacts/reports/``, linked from the assets' metadata.

A browser refuses ``file://`` links from the Dagster UI's page, so each report's metadata
carries an ``http://`` link to ``churn reports``, a read-only static server on 127.0.0.1.
``CHURN_REPORTS_URL`` says where it is reachable when served elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

REPORTS_DIR = "reports"
REPORTS_URL_ENV = "CHURN_REPORTS_URL"
DEFAULT_REPORTS_PORT = 8001
DEFAULT_REPORTS_URL = f"http://127.0.0.1:{DEFAULT_REPORTS_PORT}"


def reports_root(artifacts_root: Path) -> Path:
    return Path(artifacts_root) / REPORTS_DIR


def report_url(artifacts_root: Path, path: Path) -> str:
    """The HTTP link of a file (or folder) under the reports folder."""
    relative = Path(path).resolve().relative_to(reports_root(artifacts_root).resolve())
    base = (os.environ.get(REPORTS_URL_ENV) or DEFAULT_REPORTS_URL).rstrip("/")
    suffix = "/" if Path(path).is_dir() else ""
    return f"{base}/{quote(relative.as_posix())}{suffix}"


def report_server(root: Path, host: str = "127.0.0.1", port: int = DEFAULT_REPORTS_PORT):
    """A threading HTTP server answering GET/HEAD for files under ``root`` only (the standard
    handler resolves paths inside its directory); Markdown model cards are shown as text."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class ReportHandler(SimpleHTTPRequestHandler):
        extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".md": "text/plain; charset=utf-8",
                          ".json": "application/json", ".csv": "text/plain; charset=utf-8"}

        def log_message(self, format, *args):  # noqa: A002 (the base class's name)
            pass  # quiet terminal; the pages are static

    root.mkdir(parents=True, exist_ok=True)
    return ThreadingHTTPServer((host, port), partial(ReportHandler, directory=str(root)))
