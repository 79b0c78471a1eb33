"""Registry: content-addressed save, verified load, identical predictions, tampering refused."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest

from churn_assets.training.candidates.logistic_regression import train_logistic_regression
from churn_assets.training.candidates.random_forest import train_random_forest
from churn_assets.training.candidates.tuned_xgboost import train_xgboost
from churn_assets.training.model import evaluate
from churn_assets.training.columns import build_feature_spec, duckdb_types_of_frame, infer_roles
from churn_assets.training.registry import (
    ArtifactIntegrityError, NoChampionError, champion_version, load_champion, load_model,
    models_root, promote, rebuild_split, register_versions, save_model, training_data_version,
    version_record,
)
from churn_assets.training.sample_data import synthetic_training_frame
from churn_assets.training.split import split_training_set


@pytest.fixture(scope="module")
def trained():
    frame = synthetic_training_frame(n_customers=300, n_months=5, seed=31)
    roles = infer_roles(duckdb_types_of_frame(frame))
    split = split_training_set(frame, roles)
    spec = build_feature_spec(split.train, roles)
    data_version = training_data_version(frame, roles.key_columns)

    def train_all():
        return [
            train_logistic_regression(split, spec),
            train_random_forest(split, spec, n_estimators=20, n_jobs=1),
            train_xgboost(split, spec, {"eta": 0.2, "max_depth": 3}, max_rounds=40, nthread=1),
        ]

    return frame, split, data_version, train_all


def _save(model, split, root, data_version):
    return save_model(model, root, split=split, metrics=evaluate(model, split),
                      training_data_version=data_version, code_version="test-code")


def test_round_trip_gives_identical_predictions_and_reproducible_versions(trained, tmp_path):
    frame, split, data_version, train_all = trained
    models = train_all()
    first = [_save(m, split, tmp_path, data_version) for m in models]
    again = [_save(m, split, tmp_path / "other", data_version) for m in train_all()]

    assert [s.version for s in first] == [s.version for s in again]
    assert first[2].version.startswith("xgboost-") and (first[2].path / "model.ubj").exists()
    for model, saved in zip(models, first):
        loaded = load_model(saved.version, tmp_path)
        assert loaded.version == saved.version and loaded.algorithm == model.algorithm
        assert np.array_equal(loaded.predict_proba(split.test), model.predict_proba(split.test))
        assert loaded.feature_spec == model.feature_spec
        rebuilt = rebuild_split(loaded, frame)
        assert rebuilt.test[["customer_id", "snapshot_month"]].equals(split.test[["customer_id", "snapshot_month"]])
    assert load_model(first[2].version, tmp_path).algorithm == "xgboost"


def test_training_data_version_ignores_row_order_but_not_values(trained):
    frame, _, data_version, _ = trained
    keys = ("customer_id", "snapshot_month")
    assert training_data_version(frame.sample(frac=1.0, random_state=1), keys) == data_version
    changed = frame.copy()
    changed.loc[0, "monthly_charges"] += 1
    assert training_data_version(changed, keys) != data_version


@pytest.mark.parametrize("target", ["model.skops", "metrics.json", "manifest.json"])
def test_tampered_artifacts_are_refused_before_loading(trained, tmp_path, target):
    _, split, data_version, train_all = trained
    saved = _save(train_all()[0], split, tmp_path, data_version)
    path = saved.path / target
    if target == "metrics.json":
        metrics = json.loads(path.read_text())
        metrics["test_auc"] = 0.99
        path.write_text(json.dumps(metrics))
    else:
        path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(ArtifactIntegrityError, match="refusing to load"):
        load_model(saved.version, tmp_path)


def test_registry_rows_and_champion_pointer(trained, tmp_path):
    _, split, data_version, train_all = trained
    models = train_all()
    saved = [_save(m, split, tmp_path, data_version) for m in models]
    records = [version_record(s, m, m.candidate.role, split,
                              evaluate(m, split)) for s, m in zip(saved, models)]
    con = duckdb.connect()
    register_versions(con, records)
    register_versions(con, records)  # registering again keeps one row per version
    assert con.execute("SELECT count(*) FROM ml.model_versions").fetchone()[0] == 3
    with pytest.raises(NoChampionError):
        load_champion(tmp_path, con)

    promote(con, saved[2].version, {"margin": 0.0})
    assert champion_version(con) == saved[2].version
    champion = load_champion(tmp_path, con)
    assert champion.version == saved[2].version and champion.algorithm == "xgboost"

    # A manifest swapped for another valid one under the same folder name is caught by
    # the registry's recorded hash.
    victim = models_root(tmp_path) / saved[2].version
    (victim / "manifest.json").write_bytes((saved[0].path / "manifest.json").read_bytes())
    with pytest.raises(ArtifactIntegrityError):
        load_champion(tmp_path, con)


class _Trap:
    """Unpickling this writes a file: proof that a pickle ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _forge(saved, model_file: str, payload: bytes, *, hash_it: bool = True):
    """A folder as an attacker with write access would make it: manifest hashes recomputed,
    the folder renamed to the new content address."""
    import hashlib
    import shutil

    from churn_assets.training.registry import canonical_json, sha256_file

    folder = saved.path.parent / "forging"
    shutil.copytree(saved.path, folder)
    (folder / model_file).write_bytes(payload)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["model_file"] = model_file
    if hash_it:
        manifest["files"][model_file] = sha256_file(folder / model_file)
    text = canonical_json(manifest)
    (folder / "manifest.json").write_text(text)
    version = f"{manifest['algorithm']}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    folder.rename(saved.path.parent / version)
    return version


def test_a_forged_model_folder_never_runs_code(trained, tmp_path):
    import pickle

    from churn_assets.training.candidates.sklearn_common import UntrustedModelError
    from churn_assets.training.registry import load_model_folder, models_root

    _, split, data_version, train_all = trained
    saved = _save(train_all()[0], split, tmp_path, data_version)
    assert saved.manifest["model_file"] == "model.skops"
    marker = tmp_path / "code-ran"
    pickled = _forge(saved, "model.joblib", pickle.dumps(_Trap(str(marker))))
    with pytest.raises(UntrustedModelError, match="would run code"):
        load_model_folder(models_root(tmp_path) / pickled, pickled)
    assert not marker.exists()
    # A model file that is not among the hashed files, and a version that is a path, are refused too.
    unhashed = _forge(saved, "other.skops", b"x", hash_it=False)
    with pytest.raises(ArtifactIntegrityError, match="not one of the hashed files"):
        load_model_folder(models_root(tmp_path) / unhashed, unhashed)
    with pytest.raises(ArtifactIntegrityError, match="not a model version"):
        load_model(f"../{saved.version}", tmp_path)
