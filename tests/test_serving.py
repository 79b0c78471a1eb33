"""`churn serve`: the HTTP service over a small trained warehouse (FastAPI's test client), one real
uvicorn process for the hot swap under load, and the arms comparison of the score log."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from churn_assets.core.warehouse import ArtifactStore, Warehouse  # noqa: E402
from churn_assets.scoring.batch import RiskBands  # noqa: E402
from churn_assets.scoring.serving import (  # noqa: E402
    CHALLENGER,
    CHAMPION,
    ServingError,
    ServingPolicy,
    pointer_path,
    routing_fraction,
    write_snapshot,
)

REPO = Path(__file__).resolve().parents[1]


def _train_and_register(home: Path) -> dict:
    """Six synthetic months of features; an XGBoost champion and a logistic-regression challenger."""
    from churn_assets.training.candidates.logistic_regression import train_logistic_regression
    from churn_assets.training.candidates.tuned_xgboost import train_xgboost
    from churn_assets.training.columns import build_feature_spec, duckdb_types_of_frame, infer_roles
    from churn_assets.training.model import evaluate
    from churn_assets.training.registry import promote, register_versions, save_model, version_record
    from churn_assets.training.sample_data import synthetic_training_frame
    from churn_assets.training.split import split_training_set

    frame = synthetic_training_frame(n_customers=200, n_months=6, seed=7)
    roles = infer_roles(duckdb_types_of_frame(frame))
    split = split_training_set(frame, roles)
    spec = build_feature_spec(split.train, roles)
    artifacts = ArtifactStore(root=str(home / "artifacts"))
    warehouse = Warehouse(path=str(home / "warehouse.duckdb"))
    models, records = {}, []
    for name, model in (("xgboost", train_xgboost(split, spec, {"eta": 0.3, "max_depth": 3}, max_rounds=20, nthread=1)),
                        ("logistic_regression", train_logistic_regression(split, spec))):
        metrics = evaluate(model, split)
        saved = save_model(model, artifacts.root_path, split=split, metrics=metrics,
                           training_data_version="test-data", code_version="test-code")
        model.version = saved.version
        models[name] = model
        records.append(version_record(saved, model, "challenger", split, metrics))
    with warehouse.write() as con:
        con.execute("CREATE SCHEMA features")
        con.register("frame", frame)
        con.execute("CREATE TABLE features.customer_features AS SELECT * EXCLUDE (churned) FROM frame")
        con.execute("CREATE TABLE features.labels AS SELECT customer_id, snapshot_month, churned FROM frame")
        con.execute("CREATE TABLE features.training_set AS SELECT * FROM frame WHERE churned IS NOT NULL")
        con.unregister("frame")
        register_versions(con, records)
        promote(con, models["xgboost"].version, {"margin": 0.0})
        write_snapshot(con, artifacts.root_path)
    return {"home": home, "frame": frame, "models": models, "warehouse": warehouse, "artifacts": artifacts}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return _train_and_register(tmp_path_factory.mktemp("serving"))


def make_app(trained, **settings):
    from churn_assets.scoring.service import create_app

    policy = ServingPolicy(**{"log_flush_s": 3600, **settings})
    app = create_app(policy, RiskBands(), trained["artifacts"].root_path, trained["warehouse"],
                     reports_root=trained["home"] / "artifacts" / "reports", start=False)
    return app, app.state.service


@pytest.fixture
def served(trained):
    app, service = make_app(trained)
    assert service.reload()
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client, service


def latest_rows(trained) -> pd.DataFrame:
    frame = trained["frame"]
    return frame.sort_values("snapshot_month").groupby("customer_id").tail(1).set_index("customer_id")


def posted_body(trained, customer: str) -> dict:
    row = latest_rows(trained).loc[customer]
    spec = trained["models"]["xgboost"].feature_spec
    features = {}
    for name in spec.roles.categorical:
        features[name] = None if pd.isna(row[name]) else str(row[name])
    for name in spec.roles.numeric:
        features[name] = None if pd.isna(row[name]) else float(row[name])
    return {"features": features, "customer_id": customer}


# -- answers ----------------------------------------------------------------------------------


def test_a_known_customer_is_scored_now_with_exact_reasons(trained, served):
    from churn_assets.scoring.explanations import explanation_rows

    client, service = served
    champion = trained["models"]["xgboost"]
    customer = "C000007" if "C000007" in latest_rows(trained).index else latest_rows(trained).index[3]
    row = latest_rows(trained).loc[[customer]].reset_index()

    answer = client.get(f"/v1/customers/{customer}/score")

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["customer_id"] == customer and body["arm"] == CHAMPION
    assert body["model_version"] == champion.version
    assert body["feature_month"] == f"{row['snapshot_month'][0]:%Y-%m-%d}"
    assert body["churn_probability"] == pytest.approx(float(champion.predict_proba(row)[0]), abs=1e-12)
    assert body["risk_band"] == RiskBands().of(body["churn_probability"])
    # The same reasons, values and SHAP values ml/explanations writes for that row.
    expected = explanation_rows(champion, row, top_k=3)
    for direction in ("increases_risk", "decreases_risk"):
        wanted = expected[expected["direction"] == direction]
        got = body["reasons"][direction]
        assert [r["feature"] for r in got] == list(wanted["feature"])
        assert [r["value"] for r in got] == [None if pd.isna(v) else v for v in wanted["feature_value"]]
        np.testing.assert_allclose([r["shap_value"] for r in got], wanted["shap_value"], rtol=1e-6)

    plain = client.get(f"/v1/customers/{customer}/score", params={"reasons": "false"}).json()
    assert "reasons" not in plain and plain["churn_probability"] == body["churn_probability"]


def test_posted_rows_score_like_the_snapshot(trained, served):
    client, _ = served
    customers = list(latest_rows(trained).index[:3])
    by_id = [client.get(f"/v1/customers/{c}/score").json() for c in customers]

    one = client.post("/v1/score", json=posted_body(trained, customers[0]))
    batch = client.post("/v1/score:batch", json={"rows": [posted_body(trained, c) for c in customers]})

    assert one.status_code == 200 and batch.status_code == 200, (one.text, batch.text)
    assert one.json()["churn_probability"] == by_id[0]["churn_probability"]
    assert one.json()["reasons"] == by_id[0]["reasons"]
    scores = batch.json()["scores"]
    assert [s["customer_id"] for s in scores] == customers
    assert [s["churn_probability"] for s in scores] == [b["churn_probability"] for b in by_id]


def test_service_endpoints(trained, served):
    client, service = served
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["ready"] is True and ready["champion"] == trained["models"]["xgboost"].version
    described = client.get("/v1/model").json()
    assert described["champion"]["algorithm"] == "xgboost"
    assert described["challenger"]["version"] == trained["models"]["logistic_regression"].version
    assert described["champion"]["metrics"]["test_auc"] > 0.5
    assert set(described["champion"]["training_window"]) == {"train", "valid", "test"}
    assert "contract" in described["champion"]["features"]["categorical"]
    assert described["snapshot"]["customers"] == latest_rows(trained).shape[0]
    client.get("/v1/customers/nobody/score")
    metrics = client.get("/metrics").text
    assert 'churn_http_requests_total{endpoint="/v1/customers/{customer_id}/score",method="GET",status="404"}' in metrics
    assert f'churn_model_info{{arm="champion",version="{trained["models"]["xgboost"].version}"}} 1.0' in metrics
    assert "churn_http_request_duration_seconds_bucket" in metrics
    assert client.get(f"/v1/customers/{latest_rows(trained).index[0]}/score").json()["stale"] in (True, False)
    # The OpenAPI document carries the served model's own request schema.
    schema = client.get("/openapi.json").json()
    features = schema["components"]["schemas"]["Features"]
    assert set(features["required"]) == set(trained["models"]["xgboost"].feature_spec.roles.features)


def test_not_ready_without_a_snapshot(trained, tmp_path):
    from churn_assets.scoring.service import create_app

    app = create_app(ServingPolicy(), RiskBands(), tmp_path / "artifacts", trained["warehouse"], start=False)
    service = app.state.service
    assert not service.reload()
    with TestClient(app, base_url="http://127.0.0.1") as client:
        answer = client.get("/ready")
        assert answer.status_code == 503 and "ml/serving_snapshot" in answer.json()["error"]
        assert client.get("/v1/customers/C000001/score").status_code == 503
        assert client.get("/health").status_code == 200


# -- bad input --------------------------------------------------------------------------------


def test_bad_requests_get_a_status_naming_the_problem_and_log_nothing(trained, served):
    client, service = served
    customer = latest_rows(trained).index[0]
    good = posted_body(trained, customer)
    spec = trained["models"]["xgboost"].feature_spec
    categorical, numeric = spec.roles.categorical[0], spec.roles.numeric[0]

    def with_features(**changes):
        body = json.loads(json.dumps(good))
        for name, value in changes.items():
            if value is KeyError:
                del body["features"][name]
            else:
                body["features"][name] = value
        return body

    cases = {
        "missing field": (with_features(**{numeric: KeyError}), 422, f"features.{numeric}"),
        "extra field": (with_features(surprise=1.0), 422, "features.surprise"),
        "wrong type": (with_features(**{numeric: "twelve"}), 422, f"features.{numeric}"),
        "boolean for a number": (with_features(**{numeric: True}), 422, f"features.{numeric}"),
        "unknown category": (with_features(**{categorical: "Teleport"}), 422, f"features.{categorical}"),
        "out of range": (with_features(**{numeric: 1e12}), 422, f"features.{numeric}"),
        "extra top-level key": ({**good, "priority": "high"}, 422, "priority"),
        "no features": ({"customer_id": "x"}, 422, "features"),
    }
    for what, (body, status, field) in cases.items():
        answer = client.post("/v1/score", json=body)
        assert answer.status_code == status, (what, answer.text)
        error = answer.json()
        assert error["error"].startswith(field), (what, error)
        assert "Traceback" not in answer.text

    nan = json.dumps(good).replace(json.dumps(good["features"][numeric]), "NaN", 1)
    answer = client.post("/v1/score", content=nan, headers={"content-type": "application/json"})
    assert answer.status_code == 422 and answer.json()["error"].startswith(f"features.{numeric}"), answer.text
    answer = client.post("/v1/score", content=b"{not json", headers={"content-type": "application/json"})
    assert answer.status_code == 422 and "json" in answer.json()["error"].lower()

    bad_month = client.post("/v1/score", json={**good, "snapshot_month": "2025-13"})
    assert bad_month.status_code == 422 and bad_month.json()["error"].startswith("snapshot_month"), bad_month.text
    as_text = client.post("/v1/score", content=json.dumps(good), headers={"content-type": "text/plain"})
    assert as_text.status_code == 415  # a simple cross-site request a web page could send
    unknown = client.get("/v1/customers/C-does-not-exist/score")
    assert unknown.status_code == 404 and "C-does-not-exist" in unknown.json()["error"]
    assert client.get(f"/v1/customers/{customer}/score", params={"reasons": "maybe"}).status_code == 422

    too_many = client.post("/v1/score:batch", json={"rows": [good] * (service.policy.max_batch_rows + 1)})
    assert too_many.status_code == 413 and "max_batch_rows" in too_many.json()["error"]
    assert client.post("/v1/score:batch", json={"rows": []}).status_code == 422
    assert not service.log.buffer, "a rejected request must not be logged as served"


def test_oversized_bodies_are_refused_before_they_are_read(trained):
    app, service = make_app(trained, max_body_bytes=1024)
    service.reload()
    body = json.dumps({"rows": [posted_body(trained, latest_rows(trained).index[0])] * 10})
    assert len(body) > 1024
    with TestClient(app, base_url="http://127.0.0.1") as client:
        answer = client.post("/v1/score:batch", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 413 and "max_body_bytes" in answer.json()["error"]

        def chunks():  # no Content-Length: the body is counted as it arrives
            for start in range(0, len(body), 500):
                yield body[start:start + 500].encode()

        answer = client.post("/v1/score:batch", content=chunks(), headers={"content-type": "application/json"})
        assert answer.status_code == 413
    assert not service.log.buffer


# -- security -------------------------------------------------------------------------------


def test_an_api_key_is_enforced_when_configured(trained, monkeypatch):
    monkeypatch.setenv("TEST_CHURN_KEY", "s3cret")
    app, service = make_app(trained, api_key_env="TEST_CHURN_KEY")
    service.reload()
    customer = latest_rows(trained).index[0]
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get(f"/v1/customers/{customer}/score").status_code == 401
        assert client.get(f"/v1/customers/{customer}/score", headers={"x-api-key": "wrong"}).status_code == 401
        assert client.get("/metrics").status_code == 401
        assert client.get(f"/v1/customers/{customer}/score", headers={"x-api-key": "s3cret"}).status_code == 200
        assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200


def test_other_addresses_need_a_key_and_loopback_refuses_foreign_hosts(trained, monkeypatch):
    from churn_assets.scoring.service import create_app

    monkeypatch.delenv("CHURN_API_KEY", raising=False)
    with pytest.raises(ServingError, match="API key"):
        create_app(ServingPolicy(host="0.0.0.0"), RiskBands(), trained["artifacts"].root_path, trained["warehouse"],
                   start=False)
    app, service = make_app(trained)
    service.reload()
    with TestClient(app, base_url="http://attacker.example") as client:
        assert client.get("/health").status_code == 403
    for host in ("127.0.0.1.evil.example", "127.evil.example"):  # names a rebinding attacker controls
        with TestClient(app, base_url=f"http://{host}") as client:
            assert client.get("/health").status_code == 403, host
    with TestClient(app, base_url="http://LOCALHOST") as client:
        assert client.get("/health").status_code == 200
        assert client.head("/health").status_code == 200
        refused = client.delete("/v1/score")
        assert refused.status_code == 405 and "POST" in refused.headers["allow"]


def test_churn_serve_refuses_a_public_address_without_a_key(trained, monkeypatch):
    from churn_assets.cli.main import main

    monkeypatch.setenv("CHURN_HOME", str(trained["home"]))
    monkeypatch.delenv("CHURN_API_KEY", raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["serve", "--port", str(busy.getsockname()[1])]) == 2


# -- routing and the score log -----------------------------------------------------------------


def test_ab_routing_shares_customers_stably(trained):
    app, service = make_app(trained, challenger_share=0.3)
    service.reload()
    state = service.state
    ids = [f"X{i:06d}" for i in range(4000)]
    arms = [service.arms(state, customer)[0] for customer in ids]
    share = arms.count(CHALLENGER) / len(arms)
    assert abs(share - 0.3) < 0.03  # binomial sd at n=4000 is 0.007
    assert arms == [service.arms(state, customer)[0] for customer in ids]  # stable
    assert all((routing_fraction(c, "churn-ab") < 0.3) == (a == CHALLENGER) for c, a in zip(ids, arms, strict=True))
    # A new salt draws new groups.
    other = [routing_fraction(c, "another-salt") < 0.3 for c in ids]
    assert other != [a == CHALLENGER for a in arms]

    customers = list(latest_rows(trained).index)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for customer in customers[:40]:
            first = client.get(f"/v1/customers/{customer}/score", params={"reasons": "false"}).json()
            again = client.get(f"/v1/customers/{customer}/score", params={"reasons": "false"}).json()
            assert first["arm"] == again["arm"] == service.arms(state, customer)[0]
            assert first["model_version"] == state.models[first["arm"]].version


def test_shadow_mode_scores_with_both_and_answers_with_the_champion(trained):
    app, service = make_app(trained, shadow=True)
    service.reload()
    customer = latest_rows(trained).index[1]
    with TestClient(app, base_url="http://127.0.0.1") as client:
        answer = client.get(f"/v1/customers/{customer}/score").json()
    assert answer["arm"] == CHAMPION
    logged = list(service.log.buffer)
    assert [(row[6], row[7]) for row in logged] == [(CHAMPION, True), (CHALLENGER, False)]
    assert logged[1][5] == trained["models"]["logistic_regression"].version


def test_the_score_log_fills_in_the_background_and_waits_out_a_busy_warehouse(trained):
    from churn_assets.scoring.score_log import SCORE_LOG_TABLE

    app, service = make_app(trained)
    service.reload()
    customers = list(latest_rows(trained).index[:5])
    holding, release = threading.Event(), threading.Event()

    def pipeline_writer():  # another process's run holding the warehouse
        with trained["warehouse"].write():
            holding.set()
            release.wait(30)

    writer = threading.Thread(target=pipeline_writer)
    writer.start()
    holding.wait(10)
    try:
        with TestClient(app, base_url="http://127.0.0.1") as client:
            started = time.perf_counter()
            for customer in customers:
                assert client.get(f"/v1/customers/{customer}/score").status_code == 200
            assert time.perf_counter() - started < 5, "requests waited for the warehouse"
        assert service.log.flush() == 0 and len(service.log.buffer) == 5  # busy: kept for later
    finally:
        release.set()
        writer.join()
    assert service.log.flush() == 5 and not service.log.buffer
    with trained["warehouse"].read() as con:
        logged = con.execute(f"SELECT customer_id, arm, answered, model_version, latency_ms FROM {SCORE_LOG_TABLE} "
                             "ORDER BY served_at").fetchall()
    assert [row[0] for row in logged[-5:]] == customers
    assert all(row[1] == CHAMPION and row[2] and row[4] > 0 for row in logged[-5:])


def test_a_failed_load_keeps_serving_the_previous_state(trained, tmp_path):
    import shutil

    artifacts = tmp_path / "artifacts"
    shutil.copytree(trained["artifacts"].root_path, artifacts)
    from churn_assets.scoring.service import create_app

    app = create_app(ServingPolicy(), RiskBands(), artifacts, trained["warehouse"], start=False)
    service = app.state.service
    assert service.reload()
    version = service.state.champion.version
    pointer = json.loads(pointer_path(artifacts).read_text())
    pointer["features_sha256"], pointer["snapshot_id"] = "0" * 64, "f" * 16  # a new snapshot, damaged
    pointer_path(artifacts).write_text(json.dumps(pointer))

    assert not service.reload()
    assert service.state.champion.version == version and "SHA-256" in service.load_error
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get(f"/v1/customers/{latest_rows(trained).index[0]}/score").json()["model_version"] == version
        assert "SHA-256" in client.get("/v1/model").json()["reload_error"]


def test_the_snapshot_is_deterministic_and_materializes(trained, tmp_path):
    import dagster as dg

    from churn_assets.scoring.assets import serving_snapshot

    first = json.loads(pointer_path(trained["artifacts"].root_path).read_text())
    with trained["warehouse"].read() as con:
        again = write_snapshot(con, trained["artifacts"].root_path)
    assert again["snapshot_id"] == first["snapshot_id"]
    assert again["customers"] == latest_rows(trained).shape[0]
    result = dg.materialize([serving_snapshot], resources={
        "warehouse": trained["warehouse"], "artifacts": trained["artifacts"], "serving_policy": ServingPolicy()})
    metadata = result.asset_materializations_for_node("ml__serving_snapshot")[0].metadata
    assert metadata["snapshot_id"].value == first["snapshot_id"]
    assert metadata["champion_version"].value == trained["models"]["xgboost"].version


# -- one real uvicorn process: hot swap under concurrent requests -------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_hot_swap_under_load_in_a_real_server(tmp_path):
    from churn_assets.training.registry import promote

    trained = _train_and_register(tmp_path / "home")
    (tmp_path / "policies.yaml").write_text("serving:\n  reload_interval_s: 0.2\n  log_flush_s: 0.5\n")
    port = _free_port()
    env = {**os.environ, "CHURN_HOME": str(trained["home"]), "CHURN_POLICIES": str(tmp_path / "policies.yaml")}
    server = subprocess.Popen([sys.executable, "-m", "churn_assets.cli.main", "serve", "--port", str(port)],
                              env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    customers = list(latest_rows(trained).index[:20])
    old, new = trained["models"]["xgboost"].version, trained["models"]["logistic_regression"].version
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                with urllib.request.urlopen(f"{base}/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.3)

        seen: list[list[str]] = [[] for _ in range(3)]
        failures: list[str] = []
        stop = threading.Event()

        def client(number: int) -> None:
            i = 0
            while not stop.is_set():
                customer = customers[(i + number) % len(customers)]
                i += 1
                try:
                    with urllib.request.urlopen(f"{base}/v1/customers/{customer}/score", timeout=10) as answer:
                        seen[number].append(json.loads(answer.read())["model_version"])
                except Exception as error:  # noqa: BLE001 (any failure is what this test looks for)
                    failures.append(repr(error))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        with trained["warehouse"].write() as con:  # a new champion, and its snapshot
            promote(con, new, {"margin": 0.0})
            write_snapshot(con, trained["artifacts"].root_path)
        deadline = time.monotonic() + 60
        while not all(versions and versions[-1] == new for versions in seen) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join()

        assert not failures, failures[:3]
        for versions in seen:
            assert versions[0] == old and versions[-1] == new
            switched = versions.index(new)
            assert set(versions[:switched]) == {old} and set(versions[switched:]) == {new}, "an answer went back"
        with urllib.request.urlopen(f"{base}/ready") as answer:
            assert json.loads(answer.read())["champion"] == new
        time.sleep(1.0)  # one more flush of the score log
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert "Traceback" not in output, output
    with trained["warehouse"].read() as con:
        versions = dict(con.execute("SELECT model_version, count(*) FROM serving.score_log GROUP BY ALL").fetchall())
    assert versions.get(old, 0) > 0 and versions.get(new, 0) > 0
    assert sum(versions.values()) == sum(len(v) for v in seen)


# -- the arms comparison ------------------------------------------------------------------------


def _log_and_labels(n: int, seed: int, challenger_noise: float, champion_noise: float, shadow: bool):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    customers = [f"C{i:05d}" for i in range(n)]
    rows = []
    for i, customer in enumerate(customers):
        base = {"customer_id": customer, "feature_month": pd.Timestamp("2024-05-01"), "churned": labels[i],
                "served_at": pd.Timestamp("2024-06-02")}
        champion = labels[i] + rng.normal(0, champion_noise)
        challenger = labels[i] + rng.normal(0, challenger_noise)
        answered_by_challenger = not shadow and i % 2 == 1
        if shadow or not answered_by_challenger:
            rows.append({**base, "model_version": "champ-1", "arm": "champion", "answered": True,
                         "churn_probability": champion})
        if shadow or answered_by_challenger:
            rows.append({**base, "model_version": "chall-1", "arm": "challenger", "answered": not shadow,
                         "churn_probability": challenger})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("shadow", [True, False])
def test_the_arms_comparison_decides_once_labels_arrive(shadow):
    from churn_assets.monitoring.serving_arms import (
        CHALLENGER_BETTER, NO_CHALLENGER, NO_CLEAR_DIFFERENCE, WAITING, compare_arms,
    )
    from churn_assets.training.promotion import PromotionPolicy

    policy = PromotionPolicy(bootstrap_samples=300)
    versions = {"champion": "champ-1", "challenger": "chall-1"}
    better = compare_arms(_log_and_labels(1200, 1, 0.3, 1.2, shadow), versions, policy, min_labelled=200)
    assert better.decision == CHALLENGER_BETTER and better.comparison == ("shadow" if shadow else "ab")
    assert better.low > 0 and better.difference > 0
    arms = {(row["comparison"], row["arm"]): row for row in better.rows}
    assert arms[(better.comparison, "challenger")]["auc"] > arms[(better.comparison, "champion")]["auc"]
    assert all(row["auc_low"] <= row["auc"] <= row["auc_high"] for row in better.rows)

    # Equally good models: the interval holds 0 (at 95% it would not one seed in 20; this one is fixed).
    same = compare_arms(_log_and_labels(1200, 3, 0.8, 0.8, shadow), versions, policy, min_labelled=200)
    assert same.decision == NO_CLEAR_DIFFERENCE and same.low < 0 < same.high
    few = compare_arms(_log_and_labels(100, 3, 0.3, 1.2, shadow), versions, policy, min_labelled=200)
    assert few.decision == WAITING and "200 labelled" in few.reason
    assert compare_arms(_log_and_labels(100, 3, 0.3, 1.2, shadow), {"champion": "champ-1"}, policy,
                        200).decision == NO_CHALLENGER


def test_serving_arms_asset_reads_the_log(trained, tmp_path):
    import dagster as dg

    from churn_assets.monitoring.assets import serving_arms
    from churn_assets.training.promotion import PromotionPolicy

    result = dg.materialize([serving_arms], resources={
        "warehouse": trained["warehouse"], "serving_policy": ServingPolicy(),
        "promotion_policy": PromotionPolicy(bootstrap_samples=100)})
    metadata = result.asset_materializations_for_node("monitoring__serving_arms")[0].metadata
    assert metadata["decision"].value in ("no_challenger_served", "waiting_for_labels")


def test_reports_are_served_read_only(trained, tmp_path):
    reports = trained["home"] / "artifacts" / "reports"
    (reports / "v1").mkdir(parents=True, exist_ok=True)
    (reports / "v1" / "index.html").write_text("<h1>evaluation</h1>")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for you")
    link = reports / "v1" / "leak.txt"
    if not link.exists():
        link.symlink_to(secret)
    app, service = make_app(trained)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/reports/v1/").text == "<h1>evaluation</h1>"
        assert client.get("/reports/v1/leak.txt").status_code == 404
        assert client.get("/reports/../warehouse.duckdb").status_code == 404
        assert client.post("/reports/v1/index.html", json={}).status_code == 405


def test_models_without_a_matrix_path_are_served_from_frames(trained, monkeypatch):
    """A model scored from frames only (a random forest; any candidate without matrix_dtype):
    the same answer shape, its probability as the model's own, permutation reasons."""
    from churn_assets.scoring.serving import _served_model
    from churn_assets.training.candidates.random_forest import train_random_forest
    from churn_assets.training.columns import build_feature_spec, duckdb_types_of_frame, infer_roles
    from churn_assets.training.split import split_training_set

    frame = trained["frame"]
    roles = infer_roles(duckdb_types_of_frame(frame))
    split = split_training_set(frame, roles)
    forest = train_random_forest(split, build_feature_spec(split.train, roles), n_estimators=10, n_jobs=1)
    forest.version = "random_forest-test"
    assert forest.matrix_dtype is None
    app, service = make_app(trained)
    service.reload()
    state = service.state
    served = _served_model(CHAMPION, forest, "sha", state.frame)
    assert served.matrix is None
    customer = latest_rows(trained).index[2]
    row = state.row(customer)

    [answer] = state.answer(served, rows=[row], reasons=True)
    [posted] = state.answer(served, posted=[posted_body(trained, customer)["features"]], reasons=True)

    expected = float(forest.predict_proba(state.frame.iloc[[row]])[0])
    assert answer["churn_probability"] == pytest.approx(expected, abs=1e-12)
    assert posted["churn_probability"] == pytest.approx(expected, abs=1e-12)
    assert answer["explanation_method"] == "permutation"
    assert answer["reasons"]["increases_risk"] or answer["reasons"]["decreases_risk"]
