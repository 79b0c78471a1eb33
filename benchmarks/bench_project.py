"""Any churn export through the platform, against a plain 5-fold XGBoost script on the same rows.

What a new user does: ``churn init`` a project from the file, ``churn run`` it twice. The
script prints every candidate's ``cv_auc`` (the selection score: 5-fold CV over the non-test
rows on one snapshot, the validation month out of time), the champion, whether the second run
kept the same versions, the wall times, and beside them the peer: the "plain 5-fold XGBoost
script" one would write first (one-hot categoricals, median-imputed numerics into
``xgboost.XGBClassifier`` with n_estimators=300, learning_rate=0.05, max_depth=4), scored by
5-fold stratified CV over every labelled row of ``features.training_set`` (the same columns the
project kept). The machine's load average is printed with the timings.

    uv run python benchmarks/bench_project.py ../shared/datasets/telco_customer_churn.csv \\
        --id customerID --label Churn
    uv run python benchmarks/bench_project.py export.parquet --label Exited --keep /tmp/bank

Pass-through options (--id, --label, --positive, --month, --time) go to ``churn init``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb


def churn(*args: str, env: dict) -> tuple[int, float, str]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "churn_assets.cli.main", *args], env=env, capture_output=True,
                          text=True)
    return done.returncode, time.monotonic() - started, done.stdout + done.stderr


def versions(project: Path) -> list[tuple]:
    con = duckdb.connect(str(project / "data" / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute("SELECT algorithm, version, cv_auc, cv_auc_std, test_auc, is_champion "
                           "FROM ml.model_versions WHERE last_trained_at = (SELECT max(last_trained_at) "
                           "FROM ml.model_versions) ORDER BY cv_auc DESC").fetchall()
    finally:
        con.close()


def plain_xgboost_cv(project: Path, folds: int, seed: int, nthread: int) -> tuple[float, float, int]:
    import numpy as np
    import xgboost as xgb
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    con = duckdb.connect(str(project / "data" / "warehouse.duckdb"), read_only=True)
    try:
        frame = con.execute("SELECT * FROM features.training_set").df()
    finally:
        con.close()
    labels = frame.pop("churned").astype(int).to_numpy()
    frame = frame.drop(columns=["customer_id", "snapshot_month"])
    categorical = [c for c in frame.columns if frame[c].dtype == object or str(frame[c].dtype) in ("bool", "string")]
    numeric = [c for c in frame.columns if c not in categorical]
    frame[categorical] = frame[categorical].astype(str)
    pipeline = Pipeline([
        ("columns", ColumnTransformer([
            ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
            ("numeric", SimpleImputer(strategy="median"), numeric),
        ])),
        ("model", xgb.XGBClassifier(n_estimators=300, learning_rate=0.05, max_depth=4, eval_metric="logloss",
                                    n_jobs=nthread, random_state=seed)),
    ])
    scores = cross_val_score(pipeline, frame, labels, scoring="roc_auc",
                             cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return float(np.mean(scores)), float(np.std(scores)), len(frame)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file")
    for option in ("id", "label", "positive", "month", "time"):
        parser.add_argument(f"--{option}")
    parser.add_argument("--keep", type=Path, help="create the project here and keep it (default: a temp dir)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--nthread", type=int, default=2, help="threads of the plain script's XGBoost")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench_project_"))
    project = args.keep or workdir / "project"
    env = {**os.environ, "DAGSTER_HOME": str(workdir / "dagster"), "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("CHURN_HOME", None)
    env.pop("CHURN_POLICIES", None)
    init_args = ["init", str(project), "--from", args.file]
    for option in ("id", "label", "positive", "month", "time"):
        if getattr(args, option):
            init_args += [f"--{option}", getattr(args, option)]
    try:
        code, init_s, out = churn(*init_args, env=env)
        print(out)
        if code:
            return code
        env["CHURN_PROJECT"] = str(project)
        load_before = os.getloadavg()
        code, first_s, out = churn("run", env=env)
        if code:
            print(out)
            return code
        first = versions(project)
        code_again, second_s, out_again = churn("run", env=env)
        second = versions(project)
        load_after = os.getloadavg()
        plain_auc, plain_std, rows = plain_xgboost_cv(project, args.folds, args.seed, args.nthread)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)

    champion = next(r for r in first if r[5])
    print(f"\n{args.file}: {rows:,} labelled rows")
    print("\n| candidate | version | cv_auc | cv_auc_std | test_auc | champion |")
    print("|---|---|---|---|---|---|")
    for algorithm, version, cv, std, test, is_champion in first:
        std_text = f"{std:.4f}" if std is not None else "-"
        print(f"| {algorithm} | {version} | {cv:.4f} | {std_text} | {test:.4f} | {'yes' if is_champion else ''} |")
    print(f"| plain 5-fold XGBoost script | - | {plain_auc:.4f} | {plain_std:.4f} | - | |")
    print(f"\nchampion {champion[0]} cv_auc {champion[2]:.4f} - plain script {plain_auc:.4f} = "
          f"{champion[2] - plain_auc:+.4f}")
    print(f"second churn run: exit {code_again}, same versions: {sorted(first) == sorted(second)}")
    print(f"\n| step | wall s |\n|---|---|\n| churn init | {init_s:.1f} |\n| churn run (first) | {first_s:.1f} |\n"
          f"| churn run (second) | {second_s:.1f} |")
    print(f"load average before / after the runs: {load_before[0]:.2f} / {load_after[0]:.2f} "
          f"({os.cpu_count()} cores)")
    return 0 if code_again == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
