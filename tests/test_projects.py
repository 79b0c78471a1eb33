"""Dataset projects end to end: `churn init` on generated exports of three shapes, `churn run`
twice, refusals of bad input, champion choice across algorithms, and churn.yaml reaching readers."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml

from churn_assets.cli.main import main
from conftest import FAST_CANDIDATE_PARAMS, FAST_TUNING


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """No CHURN_HOME: a project keeps its data in its own data/ folder. The Dagster instance is
    per test; CHURN_PROJECT is restored after the test."""
    monkeypatch.delenv("CHURN_HOME", raising=False)
    monkeypatch.delenv("CHURN_POLICIES", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("CHURN_PROJECT", "")
    monkeypatch.delenv("CHURN_PROJECT")
    return tmp_path


def customers(n: int, seed: int) -> pd.DataFrame:
    """A churn export that is not Telco-shaped (a bank-like book), with a learnable signal and
    the columns a real export has that cannot be features."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n)
    products = rng.integers(1, 5, n)
    active = rng.random(n) < 0.5
    country = rng.choice(["France", "Spain", "Germany"], n)
    balance = np.round(rng.gamma(2.0, 40_000, n), 2)
    logit = -1.5 + 0.04 * (age - 45) + 0.9 * (products >= 3) - 1.0 * active + 0.7 * (country == "Germany")
    churned = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame({
        "RowNumber": np.arange(1, n + 1),
        "Surname": [f"Name{i:03d}" for i in rng.integers(0, 200, n)],
        "Country": country,
        "Age": age,
        "NumOfProducts": products,
        "IsActiveMember": active.astype(int),
        "Balance": balance,
        "Branch": "HQ",
        "churned": churned.astype(int),
    })


def fast(project, **sections) -> None:
    """Small budgets in the project's churn.yaml, as a user would edit it."""
    path = project / "churn.yaml"
    config = yaml.safe_load(path.read_text())
    config["tuning"].update({**FAST_TUNING, "n_trials": 3})
    config["training"]["candidate_params"] = FAST_CANDIDATE_PARAMS
    config["promotion"]["bootstrap_samples"] = 100
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def versions(project) -> list[tuple]:
    con = duckdb.connect(str(project / "data" / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute("SELECT version, algorithm, cv_auc, test_auc, is_champion FROM ml.model_versions "
                           "ORDER BY version").fetchall()
    finally:
        con.close()


def query(project, sql: str):
    con = duckdb.connect(str(project / "data" / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def run_twice(project, capsys) -> list[tuple]:
    assert main(["--project", str(project), "run"]) == 0
    first = versions(project)
    assert [r for r in first if r[4]], "no champion"
    out = capsys.readouterr()
    assert "champion:" in out.out and "promotion: first champion" in out.out
    # Same data, seed and churn.yaml: the same versions, the same champion, exit 0.
    assert main(["run", "--project", str(project)]) == 0
    assert versions(project) == first
    assert "promotion: unchanged" in capsys.readouterr().out
    return first


@pytest.mark.slow
def test_export_with_id_and_01_label(workspace, capsys):
    export = workspace / "bank_export.csv"
    customers(500, seed=1).rename(columns={"RowNumber": "row_no"}).assign(
        account=lambda f: [f"A{i:05d}" for i in range(len(f))]).to_csv(export, index=False)
    project = workspace / "bank"
    assert main(["init", str(project), "--from", str(export), "--id", "account", "--label", "churned",
                 "--month", "2024-06"]) == 0
    report = capsys.readouterr().out
    assert "'1' = churned" in report
    # Columns that cannot generalise are reported and left commented in the SQL.
    assert "row_no: unique per row" in report and "Surname: free text" in report and "Branch: constant" in report
    features_sql = (project / "sql" / "features" / "customer_features.sql").read_text()
    assert "-- surname,  -- left out: free text" in features_sql
    assert "\n    age,\n" in features_sql and "\n    country,\n" in features_sql
    # Every policy section is in churn.yaml, and the export was loaded as its raw table.
    config = yaml.safe_load((project / "churn.yaml").read_text())
    assert {"project", "source", "training", "tuning", "promotion", "evaluation", "scoring", "drift",
            "retraining"} <= set(config)
    assert query(project, "SELECT count(*), min(delivery_month) FROM raw.bank_export") == [
        (500, pd.Timestamp("2024-06-01").date())]

    fast(project, evaluation={"slice_columns": ["country"]}, promotion={"margin": 0.01}, drift={"psi_error": 0.45})
    rows = run_twice(project, capsys)
    assert sorted(r[1] for r in rows) == ["ensemble", "lightgbm", "logistic_regression", "random_forest", "xgboost"]
    # One snapshot: every candidate scored by the same 5-fold CV; the champion is the best cv_auc.
    assert all(r[2] is not None for r in rows)
    assert [r for r in rows if r[4]][0][0] == min(rows, key=lambda r: (-r[2], r[0]))[0]
    assert query(project, "SELECT count(*) FROM ml.predictions") == [(500,)]
    # churn.yaml reached the readers: the slice column in the report, the margin in the decision,
    # the trial budget in the study.
    report_path = next((project / "data" / "artifacts" / "reports").rglob("evaluation.json"))
    assert "country" in json.dumps(json.loads(report_path.read_text())["slices"])
    decision = json.loads((project / "data" / "artifacts" / "models" / "promotion.json").read_text())
    assert decision["margin"] == 0.01
    from churn_assets.core.project import load_project
    from churn_assets.definitions import build_defs

    resources = build_defs(project=load_project(project)).resources
    assert resources["drift_policy"].psi_error == 0.45 and resources["promotion_policy"].margin == 0.01
    [(xgboost,)] = query(project, "SELECT version FROM ml.model_versions WHERE algorithm = 'xgboost'")
    study = json.loads((project / "data" / "artifacts" / "models" / xgboost / "extra.json").read_text())
    assert len(study["trials"]) == 3 and not study["stopped_by_time_cap"]


@pytest.mark.slow
def test_export_without_id_and_true_false_label(workspace, capsys):
    frame = customers(400, seed=2).drop(columns=["RowNumber", "Surname", "Branch"])
    frame["churned"] = frame["churned"].map({1: "True", 0: "False"})
    export = workspace / "no_ids.parquet"
    frame.rename(columns={"churned": "Exited"}).to_parquet(export, index=False)
    project = workspace / "no_ids"
    assert main(["init", str(project), "--from", str(export), "--label", "Exited", "--month", "2024-03"]) == 0
    report = capsys.readouterr().out
    assert "stable id made from a hash" in report
    fast(project, training={"candidates": ["logistic_regression", "random_forest"]})
    run_twice(project, capsys)
    ids = query(project, "SELECT count(DISTINCT customer_id), count(*) FROM features.customer_features")
    assert ids == [(400, 400)]


@pytest.mark.slow
def test_export_with_a_time_column_and_two_months(workspace, capsys):
    first = customers(300, seed=3).assign(month="2024-01", customer=lambda f: [f"C{i}" for i in range(len(f))])
    second = customers(300, seed=4).assign(month="2024-02", customer=lambda f: [f"C{i}" for i in range(len(f))])
    frame = pd.concat([first, second]).drop(columns=["RowNumber"])
    frame["churned"] = frame["churned"].map({1: "Yes", 0: "No"})
    export = workspace / "history.csv"
    frame.rename(columns={"churned": "Churn"}).to_csv(export, index=False)
    project = workspace / "history"
    assert main(["init", str(project), "--from", str(export), "--id", "customer"]) == 0
    report = capsys.readouterr().out
    assert "'month' gives each row's month" in report and "2024-01 .. 2024-02 (2 months)" in report
    assert "label: Churn" in report  # guessed from its name
    fast(project, training={"candidates": ["logistic_regression", "random_forest"]})
    run_twice(project, capsys)
    # The months are partitions like the built-in project's.
    assert query(project, "SELECT strftime(snapshot_month, '%Y-%m'), count(*) FROM features.customer_features "
                          "GROUP BY 1 ORDER BY 1") == [("2024-01", 300), ("2024-02", 300)]
    assert query(project, "SELECT count(DISTINCT snapshot_month) FROM ml.predictions") == [(2,)]


def _bad(workspace, capsys, frame_or_text, *args, name="bad.csv"):
    path = workspace / name
    if isinstance(frame_or_text, str):
        path.write_text(frame_or_text)
    else:
        frame_or_text.to_csv(path, index=False)
    project = workspace / "refused"
    code = main(["init", str(project), "--from", str(path), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert not project.exists() and not list(workspace.glob(".refused*")), "something was written"
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_bad_exports_are_refused_naming_the_problem_and_nothing_is_written(workspace, capsys):
    good = customers(100, seed=5)
    assert "no id column 'nope'" in _bad(workspace, capsys, good, "--id", "nope", "--label", "churned")
    assert "no label column 'gone'" in _bad(workspace, capsys, good, "--label", "gone")
    three = good.assign(churned=np.resize(["a", "b", "c"], len(good)))
    assert "has 3 values" in _bad(workspace, capsys, three, "--label", "churned")
    assert "no data rows" in _bad(workspace, capsys, "a,b,churned\n", "--label", "churned")
    twice = pd.concat([good.head(60), good.head(60)]).assign(account=lambda f: ["X"] * 2 + [f"A{i}" for i in range(118)])
    assert "duplicate id 'X'" in _bad(workspace, capsys, twice, "--id", "account", "--label", "churned")
    spelled = good.assign(churned=good["churned"].map({1: "gone", 0: "here"}))
    assert "--positive" in _bad(workspace, capsys, spelled, "--label", "churned")
    assert "not a value" in _bad(workspace, capsys, spelled, "--label", "churned", "--positive", "left")
    # An existing, non-empty folder is never written into.
    (workspace / "refused").mkdir()
    (workspace / "refused" / "keep.txt").write_text("mine")
    assert main(["init", str(workspace / "refused"), "--from", str(workspace / "bad.csv"), "--label", "churned",
                 "--positive", "gone"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in (workspace / "refused").iterdir()] == ["keep.txt"]


@pytest.mark.slow
def test_any_algorithm_can_win_and_a_losing_challenger_keeps_the_champion(workspace, capsys):
    # Churn is an XOR of two flags: a linear model cannot see it, a forest can, and an XGBoost
    # held to two rounds of depth 1 cannot either, so the forest must end as champion.
    rng = np.random.default_rng(7)
    n = 600
    frame = pd.DataFrame({"id": [f"K{i}" for i in range(n)], "flag_a": rng.integers(0, 2, n),
                          "flag_b": rng.integers(0, 2, n), "noise": rng.normal(size=n)})
    frame["churned"] = ((frame.flag_a ^ frame.flag_b) & (rng.random(n) < 0.85)).astype(int)
    export = workspace / "xor.csv"
    frame.to_csv(export, index=False)
    project = workspace / "xor"
    assert main(["init", str(project), "--from", str(export), "--id", "id", "--label", "churned",
                 "--month", "2024-05"]) == 0
    fast(project, training={"candidates": ["logistic_regression", "random_forest", "xgboost"]},
         tuning={"max_rounds": 2, "n_trials": 2})
    assert main(["--project", str(project), "run"]) == 0
    rows = versions(project)
    assert [r[1] for r in rows if r[4]] == ["random_forest"], rows

    # A new export whose challenger cannot clear an impossible margin: the run succeeds, the
    # forest stays champion and the new month is still scored with it.
    frame.assign(noise=rng.normal(size=n)).to_csv(project / "source" / "xor.csv", index=False)
    fast(project, promotion={"margin": 0.5})
    capsys.readouterr()
    assert main(["--project", str(project), "run"]) == 0
    out = capsys.readouterr().out
    assert "promotion: kept champion" in out and "stays" in out
    after = versions(project)
    assert len(after) == 6
    assert [r[0] for r in after if r[4]] == [r[0] for r in rows if r[4]]
    champion = [r[0] for r in rows if r[4]][0]
    assert query(project, "SELECT DISTINCT model_version FROM ml.predictions") == [(champion,)]


def test_a_newer_export_without_a_column_is_refused_naming_it(workspace, capsys):
    export = workspace / "book.csv"
    customers(120, seed=8).to_csv(export, index=False)
    project = workspace / "book"
    assert main(["init", str(project), "--from", str(export), "--label", "churned", "--month", "2024-02"]) == 0
    customers(120, seed=9).drop(columns=["Country"]).to_csv(project / "source" / "book.csv", index=False)
    capsys.readouterr()
    assert main(["--project", str(project), "run"]) == 1
    err = capsys.readouterr().err
    assert "column(s) Country missing" in err and "Traceback" not in err
    # The refused load left the previous raw table as it was.
    assert query(project, "SELECT count(*), count(Country) FROM raw.book") == [(120, 120)]


def test_positive_may_be_spelled_as_in_the_file_when_duckdb_reads_a_boolean(workspace, capsys):
    frame = customers(120, seed=10)
    frame["Attrition"] = frame.pop("churned").map({1: "Yes", 0: "No"})
    export = workspace / "hr.csv"
    frame.to_csv(export, index=False)
    # Yes/No is read as a boolean; "--positive No" still means the file's "No".
    assert main(["init", str(workspace / "hr"), "--from", str(export), "--positive", "No", "--month", "2024-01"]) == 0
    report = capsys.readouterr().out
    assert "'false' = churned" in report and "read as booleans" in report
    # Nothing named like a label and no --label: the two-valued columns are offered.
    assert main(["init", str(workspace / "other"), "--from", str(export.with_name("x.csv"))]) == 2
    frame.rename(columns={"Attrition": "Status"}).to_csv(export.with_name("plain.csv"), index=False)
    assert main(["init", str(workspace / "other"), "--from", str(export.with_name("plain.csv"))]) == 2
    assert "candidates: IsActiveMember, Status" in capsys.readouterr().err
