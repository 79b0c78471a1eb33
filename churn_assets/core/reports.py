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


def report_url(artifacts_root: Path, path: Path) -> str | None:
    """The HTTP link of a file (or folder) under the reports folder; None for any other path."""
    try:
        relative = Path(path).resolve().relative_to(reports_root(artifacts_root).resolve())
    except ValueError:
        return None
    base = (os.environ.get(REPORTS_URL_ENV) or DEFAULT_REPORTS_URL).rstrip("/")
    suffix = "/" if Path(path).is_dir() else ""
    return f"{base}/{quote(relative.as_posix())}{suffix}"


def report_server(root: Path, host: str = "127.0.0.1", port: int = DEFAULT_REPORTS_PORT):
    """A threading HTTP server answering GET/HEAD for files under ``root`` only: the standard
    handler keeps ``..`` inside its directory, and a path whose real location (symlinks
    followed) is outside it, a folder listing, or a Host other than this machine's loopback
    names (a web page rebinding its DNS to 127.0.0.1) gets 404 or 403. Markdown model cards
    are shown as text."""
    from functools import partial
    from http import HTTPStatus
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    real_root = root.resolve()

    class ReportHandler(SimpleHTTPRequestHandler):
        extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".md": "text/plain; charset=utf-8",
                          ".json": "application/json", ".csv": "text/plain; charset=utf-8"}

        def send_head(self):
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
            if host not in ("127.0.0.1", "localhost", "::1"):
                self.send_error(HTTPStatus.FORBIDDEN, "reports are served to this machine only")
                return None
            target = Path(self.translate_path(self.path)).resolve()
            if target.is_dir() and (target / "index.html").is_file():
                target = target / "index.html"
            if not target.is_file() or not target.is_relative_to(real_root):
                self.send_error(HTTPStatus.NOT_FOUND, "no such report")
                return None
            return super().send_head()

        def log_message(self, format, *args):  # noqa: A002 (the base class's name)
            pass  # quiet terminal; the pages are static

    return ThreadingHTTPServer((host, port), partial(ReportHandler, directory=str(root)))
