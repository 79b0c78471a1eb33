"""`churn reports`: the reports the UI links to, over HTTP, and nothing outside them."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest

from churn_assets.core.reports import report_server, report_url


def test_reports_are_served_over_http_and_nothing_outside_them(tmp_path, monkeypatch):
    artifacts = tmp_path / "artifacts"
    drift = artifacts / "reports" / "drift" / "2025-07.html"
    drift.parent.mkdir(parents=True)
    drift.write_text("<html>drift 2025-07</html>")
    card = artifacts / "reports" / "xgboost-0123456789abcdef" / "model_card.md"
    card.parent.mkdir()
    card.write_text("# Model card")
    (artifacts / "models").mkdir()
    (artifacts / "models" / "secret.json").write_text("{}")

    server = report_server(artifacts / "reports", port=0)
    port = server.server_address[1]
    monkeypatch.setenv("CHURN_REPORTS_URL", f"http://127.0.0.1:{port}/")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = report_url(artifacts, drift)
        assert url == f"http://127.0.0.1:{port}/drift/2025-07.html"
        with urllib.request.urlopen(url) as page:
            assert page.read() == b"<html>drift 2025-07</html>" and page.headers["Content-Type"] == "text/html"
        with urllib.request.urlopen(report_url(artifacts, card)) as page:
            assert page.headers["Content-Type"].startswith("text/plain")  # shown, not downloaded
        for outside in ("/../models/secret.json", "/%2e%2e/models/secret.json"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{outside}")
            assert refused.value.code == 404
        # A link out of the folder, a folder listing, a foreign Host (DNS rebinding): refused.
        (artifacts / "reports" / "escape.json").symlink_to(artifacts / "models" / "secret.json")
        for path, code in (("/escape.json", 404), ("/", 404), ("/drift/", 404)):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}")
            assert refused.value.code == code, path
        rebound = urllib.request.Request(url, headers={"Host": "attacker.example:80"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebound)
        assert refused.value.code == 403
        assert report_url(artifacts, artifacts / "models" / "secret.json") is None
        request = urllib.request.Request(url, method="PUT", data=b"x")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request)
        assert refused.value.code == 501  # read-only
    finally:
        server.shutdown()
        server.server_close()
