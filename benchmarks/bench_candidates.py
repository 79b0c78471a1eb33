"""Every registered candidate side by side under 5-fold CV, against a plain 5-fold XGBoost script.

Outer folds: seeded stratified K-fold over all labelled rows (optionally a seeded stratified
subsample of them, ``--max-rows``). For fold k the test rows are fold k; the other rows are
split into train / valid (stratified random 85 / 15, seeded) and wrapped in a ``Split`` with
the pipeline's random-split strategy, so each candidate sees exactly what the pipeline gives
it on a one-month file: the boosters take their small-data CV path when train + valid has at
most 20k rows, and their holdout path above. The feature spec is built on the fold's train
rows. Every registered candidate is fitted through the candidate protocol
(``Candidate.fit(split, spec, params, FitContext)``) in registration order with its default
parameters and the default ``TuningSettings``; stacking candidates come last and get the
other fold models as members. Each model's calibrated ``predict_proba`` is scored on the
fold's test rows (ROC-AUC; the uncalibrated AUC is kept too, since isotonic steps create ties).

The peer is the "plain 5-fold XGBoost script" one would write first: an sklearn Pipeline
(one-hot categoricals, median-imputed numerics) into ``xgboost.XGBClassifier`` with library
defaults except n_estimators=300, learning_rate=0.05, max_depth=4, eval_metric="logloss",
fitted on the same non-test rows (train + valid) of each fold.

The pipeline's selection rule (``registry.select_best``: the best ``cv_auc`` when every candidate
has one, as on these small random splits, else the best ``valid_auc``; ties to the lexically
first version) is applied per fold, and the test AUC of the candidate it picks is reported as
its own row ("selection rule"): that is the CV estimate of what the pipeline would ship.

    uv run python benchmarks/bench_candidates.py                                   # Telco CSV
    uv run python benchmarks/bench_candidates.py --max-rows 3000 --folds 3         # smoke run
    uv run python benchmarks/bench_candidates.py --churn-home /tmp/demo/home --max-rows 40000

On a warehouse with several months the random folds mix months (a customer's earlier months
can be in train while a later one is in test), so the figures are not the out-of-time score
the pipeline's own split would give; they compare the candidates on equal terms.

Writes the figures as JSON to ``--output`` (default benchmarks/results/bench_candidates.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

# Sibling script: run as `python benchmarks/bench_candidates.py`, its folder is on sys.path.
from bench_tuning import cpu_seconds, load_frame

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CSV = Path("/work/shared/datasets/telco_customer_churn.csv")
PLAIN = "plain_xgboost_script"
SELECTION = "selection rule"
# The pipeline's name for a split that is not out of time (anything else takes the same paths).
RANDOM_STRATEGY = "stratified_random"


def stratified_subsample(labelled, label: str, max_rows: int | None, seed: int):
    """A seeded stratified sample of ``max_rows`` labelled rows (all of them when fewer)."""
    import numpy as np

    if not max_rows or len(labelled) <= max_rows:
        return labelled
    rng = np.random.default_rng(seed)
    labels = labelled[label].to_numpy()
    keep = []
    for value in (0, 1):
        positions = np.flatnonzero(labels == value)
        take = round(max_rows * len(positions) / len(labels))
        keep.append(rng.choice(positions, size=take, replace=False))
    return labelled.iloc[np.sort(np.concatenate(keep))].reset_index(drop=True)


def train_valid_split(rest, label: str, valid_fraction: float, seed: int):
    """Stratified random train / valid parts of the fold's non-test rows."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rest[label].to_numpy()
    is_valid = np.zeros(len(rest), dtype=bool)
    for value in (0, 1):
        positions = np.flatnonzero(labels == value)
        positions = positions[rng.permutation(len(positions))]
        is_valid[positions[: round(len(positions) * valid_fraction)]] = True
    return rest[~is_valid].reset_index(drop=True), rest[is_valid].reset_index(drop=True)


def plain_xgboost(rows, test, spec, nthread: int, seed: int):
    """The plain script: one-hot + median imputation -> XGBClassifier, fitted on ``rows``."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder
    from xgboost import XGBClassifier

    from churn_assets.training.candidates.sklearn_common import sklearn_input
    from churn_assets.training.columns import feature_frame

    transformers = []
    if spec.roles.categorical:
        transformers.append(("categorical", OneHotEncoder(handle_unknown="ignore"), list(spec.roles.categorical)))
    if spec.roles.numeric:
        transformers.append(("numeric", SimpleImputer(strategy="median"), list(spec.roles.numeric)))
    pipeline = Pipeline([
        ("prepare", ColumnTransformer(transformers)),
        ("model", XGBClassifier(n_estimators=300, learning_rate=0.05, max_depth=4, eval_metric="logloss",
                                n_jobs=nthread, random_state=seed)),
    ])
    pipeline.fit(sklearn_input(feature_frame(rows, spec), spec), rows[spec.roles.label_column].to_numpy())
    return pipeline.predict_proba(sklearn_input(feature_frame(test, spec), spec))[:, 1]


def timed(action):
    started, cpu_started = time.perf_counter(), cpu_seconds()
    value = action()
    return value, time.perf_counter() - started, cpu_seconds() - cpu_started


def run_fold(k: int, labelled, rest_rows, test_rows, roles, data_version: str, args) -> dict:
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from churn_assets.training.candidates import registered
    from churn_assets.training.candidates.base import FitContext
    from churn_assets.training.columns import build_feature_spec
    from churn_assets.training.model import evaluate
    from churn_assets.training.split import Split, SplitSettings
    from churn_assets.training.tuning import TuningSettings

    label = roles.label_column
    test = labelled.iloc[test_rows].reset_index(drop=True)
    rest = labelled.iloc[rest_rows].reset_index(drop=True)
    train, valid = train_valid_split(rest, label, args.valid_fraction, args.seed + k)
    settings = SplitSettings(seed=args.seed, valid_fraction=args.valid_fraction)
    parts = {"train": train, "valid": valid, "test": test}
    description = {"strategy": RANDOM_STRATEGY, "fold": k,
                   "parts": {n: {"rows": len(p), "positives": int(p[label].sum())} for n, p in parts.items()}}
    split = Split(train=train, valid=valid, test=test, strategy=RANDOM_STRATEGY, settings=settings,
                  description=description)
    spec = build_feature_spec(train, roles)
    tuning = TuningSettings(nthread=args.nthread, seed=args.seed)
    context = FitContext(seed=args.seed, tuning=tuning, training_data_version=f"{data_version}-fold{k}")
    labels = test[label].to_numpy()
    print(f"fold {k}: train {len(train)} / valid {len(valid)} / test {len(test)} "
          f"({int(test[label].sum())} positives)", flush=True)

    results: dict[str, dict] = {}
    fitted = []
    entries = sorted(registered().values(), key=lambda e: e.stacks)  # stable: registration order
    for entry in entries:
        if entry.stacks:
            context.members = list(fitted)
        try:
            model, wall, cpu = timed(lambda entry=entry: entry.fit(split, spec, entry.params(), context))
        except Exception as error:  # noqa: BLE001 -- a crash is a finding: report it, benchmark the others
            import traceback

            results[entry.algorithm] = {"error": f"{type(error).__name__}: {error}",
                                        "traceback": traceback.format_exc()}
            print(f"  {entry.algorithm}: FAILED {type(error).__name__}: {error}", flush=True)
            continue
        model.version = f"{entry.algorithm}-fold{k}"
        metrics = evaluate(model, split)
        scores = model.predict_proba(test)
        raw = model.predict_raw(test)
        figures = {
            "test_auc": float(roc_auc_score(labels, scores)),
            "test_auc_raw": float(roc_auc_score(labels, raw)),
            "valid_auc": float(metrics["valid_auc"]),
            "cv_auc": metrics.get("cv_auc"),
            "test_logloss": float(metrics["test_logloss"]),
            "fit_wall_s": wall,
            "fit_cpu_s": cpu,
            "calibration": model.calibration.get("method"),
        }
        for key in ("tuning_strategy", "num_boost_round", "fitted_on", "weights"):
            if key in model.params:
                figures[key] = model.params[key]
        if model.report.get("trials"):
            states: dict[str, int] = {}
            for trial in model.report["trials"]:
                states[trial["state"]] = states.get(trial["state"], 0) + 1
            figures["trials"] = states
            figures["chosen_params"] = model.report.get("chosen_params")
        results[entry.algorithm] = figures
        if not entry.stacks:
            fitted.append(model)
        print(f"  {entry.algorithm}: test AUC {figures['test_auc']:.4f} (raw {figures['test_auc_raw']:.4f}), "
              f"valid AUC {figures['valid_auc']:.4f}, {wall:.1f}s wall / {cpu:.1f}s CPU"
              + (f", trials {figures['trials']}" if "trials" in figures else ""), flush=True)

    scores, wall, cpu = timed(lambda: plain_xgboost(pd.concat([train, valid], ignore_index=True), test, spec,
                                                    args.nthread, args.seed))
    results[PLAIN] = {"test_auc": float(roc_auc_score(labels, scores)), "fit_wall_s": wall, "fit_cpu_s": cpu}
    print(f"  {PLAIN}: test AUC {results[PLAIN]['test_auc']:.4f}, {wall:.1f}s wall / {cpu:.1f}s CPU", flush=True)

    from churn_assets.training.registry import select_best, selection_metric

    candidates = [{"version": f"{name}-fold{k}", "algorithm": name, "cv_auc": f.get("cv_auc"),
                   "valid_auc": f["valid_auc"]} for name, f in results.items() if "valid_auc" in f]
    metric = selection_metric(candidates)
    chosen = select_best(candidates)["algorithm"]
    results[SELECTION] = {"test_auc": results[chosen]["test_auc"], "selected": chosen, "by": metric}
    print(f"  selection rule ({metric}) picks {chosen} ({metric} {results[chosen][metric]:.4f}, "
          f"test AUC {results[chosen]['test_auc']:.4f})", flush=True)
    return {"fold": k, "rows": description["parts"], "candidates": results}


def summarise(folds: list[dict]) -> dict:
    import numpy as np

    names = list(folds[0]["candidates"])
    plain = np.array([f["candidates"][PLAIN]["test_auc"] for f in folds])
    summary = {}
    for name in names:
        entries = [f["candidates"].get(name, {}) for f in folds]
        if any("test_auc" not in e for e in entries):
            summary[name] = {"error": next(e.get("error") for e in entries if "test_auc" not in e),
                             "failed_folds": sum("test_auc" not in e for e in entries)}
            continue
        aucs = np.array([e["test_auc"] for e in entries])
        difference = aucs - plain
        row = {
            "cv_auc_mean": float(aucs.mean()),
            "cv_auc_std": float(aucs.std(ddof=1)) if len(aucs) > 1 else 0.0,
            "folds": [round(float(a), 4) for a in aucs],
            "minus_plain_mean": float(difference.mean()),
            "minus_plain_standard_error": float(difference.std(ddof=1) / np.sqrt(len(difference)))
            if len(difference) > 1 else 0.0,
            "wins_vs_plain": int((difference > 0).sum()),
        }
        if all("test_auc_raw" in e for e in entries):
            row["cv_auc_raw_mean"] = float(np.mean([e["test_auc_raw"] for e in entries]))
        if all("valid_auc" in e for e in entries):
            row["valid_auc_mean"] = float(np.mean([e["valid_auc"] for e in entries]))
        if all("fit_wall_s" in e for e in entries):
            row["fit_wall_s_mean"] = float(np.mean([e["fit_wall_s"] for e in entries]))
            row["fit_cpu_s_mean"] = float(np.mean([e["fit_cpu_s"] for e in entries]))
        if name == SELECTION:
            row["selected"] = [e["selected"] for e in entries]
        else:
            row["times_selected"] = sum(f["candidates"][SELECTION]["selected"] == name for f in folds)
        summary[name] = row
    return summary


def markdown_table(results: dict) -> str:
    def number(value, digits=4, sign=False):
        if value is None:
            return "-"
        return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"

    rows = [
        ("| candidate | CV AUC mean | std | uncalibrated | mean - plain (SE) | wins | valid AUC | fit wall s "
         "| fit CPU s | selected |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in results["summary"].items():
        if "error" in row:
            rows.append(f"| {name} | FAILED in {row['failed_folds']} fold(s): {row['error']} | | | | | | | | |")
            continue
        difference = "-" if name == PLAIN else (f"{number(row['minus_plain_mean'], sign=True)} "
                                                f"({number(row['minus_plain_standard_error'])})")
        wins = "-" if name == PLAIN else f"{row['wins_vs_plain']}/{len(row['folds'])}"
        selected = ", ".join(row["selected"]) if name == SELECTION else str(row.get("times_selected", "-"))
        if name == PLAIN:
            selected = "-"
        rows.append(
            f"| {name} | {number(row['cv_auc_mean'])} | {number(row['cv_auc_std'])} | "
            f"{number(row.get('cv_auc_raw_mean'))} | {difference} | {wins} | {number(row.get('valid_auc_mean'))} | "
            f"{number(row.get('fit_wall_s_mean'), 2)} | {number(row.get('fit_cpu_s_mean'), 2)} | {selected} |"
        )
    machine = results["machine"]
    rows.append("")
    rows.append(f"{results['data']}: {results['rows']} labelled rows, {results['folds']}-fold stratified CV "
                f"(seed {results['seed']}), nthread {results['nthread']}; {machine['cpus']} CPUs, load average "
                f"before {machine['load_average_before']}, after {machine['load_average_after']}; "
                f"total {results['wall_s']:.0f}s wall")
    rows.append("valid AUC: the mean of what the selection rule compares per fold (valid AUC - CV AUC shows how "
                "optimistic it is); fit seconds of a stacking candidate exclude its members' fits.")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--churn-home", type=Path, default=None,
                        help="read features.training_set from this warehouse instead of the CSV")
    parser.add_argument("--max-rows", type=int, default=None,
                        help="seeded stratified subsample of the labelled rows (e.g. 40000 for the demo)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42, help="seed of the folds, the subsample and every model")
    parser.add_argument("--valid-fraction", type=float, default=0.15,
                        help="share of each fold's non-test rows used as the validation split")
    parser.add_argument("--nthread", type=int, default=None,
                        help="XGBoost threads of the tuned candidate and of the plain script "
                             "(default: TuningSettings.nthread; the tuner uses 1 below 20k rows regardless)")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "bench_candidates.json")
    args = parser.parse_args()

    # Idle OpenMP threads spin by default, which on a shared machine steals CPU from others.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from sklearn.model_selection import StratifiedKFold

    from churn_assets.training.candidates import registered
    from churn_assets.training.columns import RoleSettings, infer_roles
    from churn_assets.training.registry import training_data_version
    from churn_assets.training.split import labelled_rows
    from churn_assets.training.tuning import TuningSettings

    if args.nthread is None:
        args.nthread = TuningSettings().nthread
    load_before = os.getloadavg()
    started = time.perf_counter()
    frame, types, source = load_frame(args)
    roles = infer_roles(types, RoleSettings())
    labelled = labelled_rows(frame, roles)
    labelled = stratified_subsample(labelled, roles.label_column, args.max_rows, args.seed)
    data_version = training_data_version(labelled, roles.key_columns)[:12]
    print(f"data: {source}: {len(frame)} rows, {len(labelled)} labelled rows used "
          f"({labelled[roles.label_column].mean():.3f} positive); candidates: {', '.join(registered())}",
          flush=True)

    splitter = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=args.seed)
    folds = [run_fold(k, labelled, rest, test, roles, data_version, args)
             for k, (rest, test) in enumerate(splitter.split(labelled, labelled[roles.label_column]))]
    results = {
        "data": source,
        "rows": len(labelled),
        "max_rows": args.max_rows,
        "folds": args.folds,
        "seed": args.seed,
        "valid_fraction": args.valid_fraction,
        "nthread": args.nthread,
        "tuning_settings": TuningSettings(nthread=args.nthread, seed=args.seed).to_dict(),
        "summary": None,
        "per_fold": folds,
        "wall_s": time.perf_counter() - started,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_before": [round(v, 2) for v in load_before],
                    "load_average_after": [round(v, 2) for v in os.getloadavg()]},
    }
    results["summary"] = summarise(folds)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print()
    print(markdown_table(results))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
