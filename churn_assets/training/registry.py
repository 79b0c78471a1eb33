"""The model registry: content-addressed artifacts on disk and ``ml.model_versions`` in DuckDB.

A model's folder ``artifacts/models/<version>/`` holds the model (in its candidate's format:
boosters in their own UBJ / text formats, the ensemble as JSON, sklearn pipelines with skops
and a trusted-types list: no format that runs code on load), the feature spec, parameters, metrics,
calibration, split and a ``manifest.json`` listing the SHA-256 of every file together with
the training data version and code version. The version is ``<algorithm>-`` plus the
first 16 hex digits of the SHA-256 of the manifest, so it names the exact bytes: loading
recomputes every hash and refuses a folder whose files, manifest or name disagree, before
anything is read. The manifest holds nothing time-dependent, so the same data, seed
and settings give the same version.

The champion pointer (``ml.champion`` history plus ``is_champion`` in ``ml.model_versions``)
changes only through ``promote``, which the champion asset calls after the promotion decision.
"""

from __future__ import annotations

import hashlib
import json
import re
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn_assets.core.warehouse import table_exists
from churn_assets.training.candidates import candidate
from churn_assets.training.columns import FeatureSpec
from churn_assets.training.model import ChurnModel
from churn_assets.training.split import Split, SplitSettings, split_training_set

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from churn_assets.core.warehouse import Warehouse

MODELS_DIR = "models"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
from churn_assets.training.registry_tables import (  # noqa: E402 (the tables' schema, light enough for the asset definitions)
    CHAMPION_COLUMNS,
    CHAMPION_TABLE,
    ML_SCHEMA,
    VERSIONS_COLUMNS,
    VERSIONS_TABLE,
)
# Out-of-fold validation predictions of a model fitted on its validation rows (the small-data
# path of the boosters): what a stacking candidate needs to use them honestly.
HELD_OUT_VALID = "held_out_valid.json"
# Out-of-fold predictions of train + valid and fold AUCs (small random splits): what the
# selection rule's ``cv_auc`` and a stacking candidate's pooled fit read.
CROSS_VALIDATION = "cross_validation.json"

# LoadedModel is what readers of the registry get back: a ChurnModel with its version set.
LoadedModel = ChurnModel


VERSION_NAME = re.compile(r"[a-z][a-z0-9_]*-[0-9a-f]{16}")


class ArtifactIntegrityError(RuntimeError):
    """A model folder does not match its recorded hashes; it is refused before loading."""


class NoChampionError(LookupError):
    """No model has been made champion yet."""


class UnknownVersionError(LookupError):
    """The requested model version is not in the registry or not on disk."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def code_version() -> str:
    """Hash of the training layer's source: a change to training code changes every version."""
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for path in sorted(here.rglob("*.py")):
        digest.update(path.relative_to(here).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("scikit-learn", "xgboost", "lightgbm")}


def training_data_version(frame: pd.DataFrame, key_columns: tuple[str, ...] | list[str]) -> str:
    """Content hash of a training frame: column names, types and values, in key order."""
    import pandas as pd

    ordered = frame.sort_values(list(key_columns), kind="mergesort").reset_index(drop=True)
    ordered = ordered[sorted(ordered.columns)]
    digest = hashlib.sha256()
    digest.update(canonical_json([[c, str(t)] for c, t in ordered.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(ordered, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def models_root(artifacts_root: str | Path) -> Path:
    return Path(artifacts_root) / MODELS_DIR


@dataclass(frozen=True)
class SavedModel:
    version: str
    path: Path
    manifest: dict
    manifest_sha256: str


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, sort_keys=True, indent=2, default=str) + "\n")


def save_model(
    model: ChurnModel,
    artifacts_root: str | Path,
    *,
    split: Split,
    metrics: dict[str, float],
    training_data_version: str,
    code_version: str,
    extra: dict | None = None,
) -> SavedModel:
    """Write the model's folder atomically and return its content-addressed version.

    Saving the same model twice yields the same version; an existing intact folder is kept.
    """
    root = models_root(artifacts_root)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        files = {
            "feature_spec.json": model.feature_spec.to_dict(),
            "params.json": model.params,
            "metrics.json": metrics,
            "calibration.json": model.calibration,
            "split.json": split.description,
        }
        if extra:
            files["extra.json"] = extra
        held_out = model.held_out_raw.get("valid")
        if held_out is not None and len(held_out) == len(split.valid):
            files[HELD_OUT_VALID] = [round(float(v), 12) for v in held_out]
        if model.cross_validation:
            files[CROSS_VALIDATION] = {
                "raw": [round(float(v), 12) for v in model.cross_validation["raw"]],
                "fold_aucs": [round(float(v), 12) for v in model.cross_validation["fold_aucs"]],
            }
        for name, value in files.items():
            _write_json(staging / name, value)
        model_file = model.candidate.save(model, staging)
        file_hashes = {name: sha256_file(staging / name) for name in sorted([*files, model_file])}
        manifest = {
            "format": MANIFEST_FORMAT,
            "algorithm": model.algorithm,
            "model_file": model_file,
            "files": file_hashes,
            "training_data_version": training_data_version,
            "code_version": code_version,
            "libraries": library_versions(),
            "split_strategy": split.strategy,
            "split_settings": split.settings.to_dict(),
        }
        manifest_text = canonical_json(manifest)
        manifest_sha = hashlib.sha256(manifest_text.encode()).hexdigest()
        version = f"{model.algorithm}-{manifest_sha[:16]}"
        (staging / MANIFEST).write_text(manifest_text)
        final = root / version
        model.version, model.manifest = version, manifest
        if final.exists():
            try:
                verify_model_folder(final, version)
                shutil.rmtree(staging)
                return SavedModel(version, final, manifest, manifest_sha)
            except ArtifactIntegrityError:
                # A damaged folder under this content address is replaced by the good bytes.
                trash = root / f".trash-{uuid.uuid4().hex}"
                os.rename(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return SavedModel(version, final, manifest, manifest_sha)


def check_version_name(version: str) -> str:
    """A version is ``<algorithm>-<16 hex digits>``: a name, never a path."""
    if not isinstance(version, str) or not VERSION_NAME.fullmatch(version):
        raise ArtifactIntegrityError(f"{version!r} is not a model version (expected <algorithm>-<16 hex digits>)")
    return version


def verify_model_folder(folder: Path, version: str, expected_manifest_sha256: str | None = None) -> dict:
    """Check the manifest against the version (and the registry's hash), then every file
    against the manifest. Returns the manifest; raises ArtifactIntegrityError on any mismatch."""
    check_version_name(version)
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        raise ArtifactIntegrityError(f"{folder}: no {MANIFEST}; refusing to load model {version}")
    manifest_bytes = manifest_path.read_bytes()
    manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
    if expected_manifest_sha256 and manifest_sha != expected_manifest_sha256:
        raise ArtifactIntegrityError(
            f"{manifest_path}: SHA-256 {manifest_sha} differs from the registry's "
            f"{expected_manifest_sha256}; refusing to load model {version}"
        )
    if not version.endswith(manifest_sha[:16]):
        raise ArtifactIntegrityError(
            f"{manifest_path} was modified: its SHA-256 {manifest_sha[:16]}... does not match "
            f"version {version}; refusing to load"
        )
    manifest = json.loads(manifest_bytes)
    if manifest.get("model_file") not in manifest.get("files", {}):
        raise ArtifactIntegrityError(f"{manifest_path}: model_file {manifest.get('model_file')!r} is not one of the "
                                     f"hashed files; refusing to load model {version}")
    for name, expected in manifest["files"].items():
        if Path(name).name != name:
            raise ArtifactIntegrityError(f"{manifest_path}: file name {name!r} has path parts; refusing to load "
                                         f"model {version}")
        path = folder / name
        if not path.exists():
            raise ArtifactIntegrityError(f"{path} is missing; refusing to load model {version}")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactIntegrityError(
                f"{path} was modified: SHA-256 {actual} differs from the recorded {expected}; "
                f"refusing to load model {version}"
            )
    return manifest


def load_model_folder(folder: Path, version: str, expected_manifest_sha256: str | None = None) -> LoadedModel:
    manifest = verify_model_folder(folder, version, expected_manifest_sha256)
    spec = FeatureSpec.from_dict(json.loads((folder / "feature_spec.json").read_text()))
    params = json.loads((folder / "params.json").read_text())
    calibration = json.loads((folder / "calibration.json").read_text())
    # Read only after verify_model_folder has matched these bytes to the version.
    trained_by = candidate(manifest["algorithm"])
    estimator = trained_by.load(folder / manifest["model_file"], manifest, spec)
    held_out = {}
    if HELD_OUT_VALID in manifest["files"]:
        import numpy as np

        held_out["valid"] = np.asarray(json.loads((folder / HELD_OUT_VALID).read_text()), dtype="float64")
    cross_validation = {}
    if CROSS_VALIDATION in manifest["files"]:
        import numpy as np

        stored = json.loads((folder / CROSS_VALIDATION).read_text())
        cross_validation = {"raw": np.asarray(stored["raw"], dtype="float64"), "fold_aucs": stored["fold_aucs"]}
    return ChurnModel(
        candidate=trained_by,
        feature_spec=spec,
        estimator=estimator,
        params=params,
        calibration=calibration,
        version=version,
        manifest=manifest,
        held_out_raw=held_out,
        cross_validation=cross_validation,
    )


def read_artifact(artifacts_root: str | Path, version: str, name: str) -> Any:
    """A JSON file of a model folder (metrics.json, split.json, extra.json, ...)."""
    return json.loads((models_root(artifacts_root) / check_version_name(version) / name).read_text())


# -- the registry tables ----------------------------------------------------------------

def ensure_registry_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {ML_SCHEMA}")
    for table, columns in ((VERSIONS_TABLE, VERSIONS_COLUMNS), (CHAMPION_TABLE, CHAMPION_COLUMNS)):
        body = ", ".join(f"{name} {kind}" for name, kind in columns.items())
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({body})")
    # Registries made before cv_auc existed gain the column (NULL for their old rows).
    for name in ("cv_auc", "cv_auc_std"):
        con.execute(f"ALTER TABLE {VERSIONS_TABLE} ADD COLUMN IF NOT EXISTS {name} DOUBLE")


def version_record(saved: SavedModel, model: ChurnModel, role: str, split: Split, metrics: dict) -> dict:
    """The ``ml.model_versions`` row of a saved model (role: its candidate's, 'baseline' or 'challenger')."""
    return {
        "version": saved.version,
        "algorithm": saved.manifest["algorithm"],
        "role": role,
        "test_auc": metrics.get("test_auc"),
        "test_logloss": metrics.get("test_logloss"),
        "valid_auc": metrics.get("valid_auc"),
        "valid_logloss": metrics.get("valid_logloss"),
        "cv_auc": metrics.get("cv_auc"),
        "cv_auc_std": metrics.get("cv_auc_std"),
        "split_strategy": split.strategy,
        "split_description": canonical_json(split.description),
        "params": canonical_json(model.params),
        "metrics": canonical_json(metrics),
        "calibration": model.calibration["method"],
        "training_data_version": saved.manifest["training_data_version"],
        "code_version": saved.manifest["code_version"],
        "artifact_path": str(saved.path),
        "manifest_sha256": saved.manifest_sha256,
    }


def register_versions(con: duckdb.DuckDBPyConnection, records: list[dict], now: datetime | None = None) -> None:
    """Insert new versions; a version trained again keeps its row and champion flag and
    gets a new ``last_trained_at``. Runs in the caller's transaction."""
    ensure_registry_tables(con)
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    columns = [c for c in VERSIONS_COLUMNS if c not in ("is_champion", "created_at", "last_trained_at")]
    placeholders = ", ".join("?" for _ in range(len(columns) + 3))
    for record in records:
        values = [record.get(c) for c in columns]
        con.execute(
            f"INSERT INTO {VERSIONS_TABLE} ({', '.join(columns)}, is_champion, created_at, last_trained_at) "
            f"VALUES ({placeholders}) ON CONFLICT (version) DO UPDATE SET last_trained_at = excluded.last_trained_at",
            [*values, False, now, now],
        )


def champion_version(con: duckdb.DuckDBPyConnection) -> str | None:
    if not table_exists(con, VERSIONS_TABLE):
        return None
    row = con.execute(f"SELECT version FROM {VERSIONS_TABLE} WHERE is_champion").fetchone()
    return row[0] if row else None


def latest_run_versions(con: duckdb.DuckDBPyConnection, role: str | None = None) -> list[str]:
    """Versions registered by the latest ``ml/model_versions`` run (optionally of one role)."""
    if not table_exists(con, VERSIONS_TABLE):
        return []
    return [r[0] for r in con.execute(
        f"SELECT version FROM {VERSIONS_TABLE} WHERE last_trained_at = "
        f"(SELECT max(last_trained_at) FROM {VERSIONS_TABLE}) AND (? IS NULL OR role = ?) ORDER BY version",
        [role, role],
    ).fetchall()]


def selection_metric(candidates: list[dict]) -> str:
    """What the selection rule compares: ``cv_auc`` when every candidate has one (small random
    splits: the same K-fold CV over train + valid for all), else ``valid_auc`` (out of sample
    for every candidate: the held-out month, or cross-fitted predictions where a model was
    refitted on its validation rows)."""
    return "cv_auc" if candidates and all(c.get("cv_auc") is not None for c in candidates) else "valid_auc"


def select_best(candidates: list[dict]) -> dict | None:
    """The selection rule over ``ml.model_versions``-shaped rows; ties go to the first version."""
    if not candidates:
        return None
    metric = selection_metric(candidates)
    return min(candidates, key=lambda c: (-(c.get(metric) if c.get(metric) is not None else float("-inf")),
                                          c["version"]))


def latest_run_records(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """Version and selection scores of every candidate of the latest ``ml/model_versions`` run."""
    if not table_exists(con, VERSIONS_TABLE):
        return []
    cursor = con.execute(
        f"SELECT version, cv_auc, valid_auc FROM {VERSIONS_TABLE} WHERE last_trained_at = "
        f"(SELECT max(last_trained_at) FROM {VERSIONS_TABLE})"
    )
    return [dict(zip(["version", "cv_auc", "valid_auc"], row, strict=True)) for row in cursor.fetchall()]


def best_of_latest_run(con: duckdb.DuckDBPyConnection) -> str | None:
    """The challenger: the latest run's best candidate by the selection rule (``select_best``)."""
    best = select_best(latest_run_records(con))
    return best["version"] if best else None


def versions_trained_with(con: duckdb.DuckDBPyConnection, training_data_version: str, role: str,
                          code_version: str | None = None) -> list[str]:
    """Versions of ``role`` trained on this data (and, if given, by this training code)."""
    return [r[0] for r in con.execute(
        f"SELECT version FROM {VERSIONS_TABLE} WHERE training_data_version = ? AND role = ? "
        "AND (? IS NULL OR code_version = ?) ORDER BY version",
        [training_data_version, role, code_version, code_version],
    ).fetchall()]


def promote(con: duckdb.DuckDBPyConnection, version: str, decision: dict, now: datetime | None = None) -> None:
    """Make ``version`` the champion. Call only after the promotion decision chose it, inside the
    caller's transaction so flag and history change together."""
    ensure_registry_tables(con)
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    if not con.execute(f"SELECT count(*) FROM {VERSIONS_TABLE} WHERE version = ?", [version]).fetchone()[0]:
        raise UnknownVersionError(f"Cannot promote {version}: it is not in {VERSIONS_TABLE}")
    previous = champion_version(con)
    con.execute(f"UPDATE {VERSIONS_TABLE} SET is_champion = (version = ?)", [version])
    con.execute(
        f"INSERT INTO {CHAMPION_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            version, now, previous, decision.get("champion_version"),
            decision.get("challenger_auc"), decision.get("champion_auc"),
            decision.get("auc_difference"), decision.get("ci_low"), decision.get("ci_high"),
            decision.get("margin"), decision.get("test_rows"),
        ],
    )


DECISION_FILE = "promotion.json"


def write_decision(artifacts_root: str | Path, decision: dict) -> Path:
    """The latest promotion decision, for the CLI's summary (the same decision rewrites the same bytes)."""
    target = models_root(artifacts_root) / DECISION_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_suffix(f".{os.getpid()}.tmp")
    _write_json(staging, decision)
    os.replace(staging, target)
    return target


def read_decision(artifacts_root: str | Path) -> dict | None:
    target = models_root(artifacts_root) / DECISION_FILE
    return json.loads(target.read_text()) if target.exists() else None


# -- the API other stages use -------------------------------------------------------------


def _with_connection(warehouse_or_con: Warehouse | duckdb.DuckDBPyConnection, action):
    if hasattr(warehouse_or_con, "read") and hasattr(warehouse_or_con, "db_path"):
        with warehouse_or_con.read() as con:
            return action(con)
    return action(warehouse_or_con)


def registered_manifest_sha(con: duckdb.DuckDBPyConnection, version: str) -> str:
    row = con.execute(
        f"SELECT manifest_sha256 FROM {VERSIONS_TABLE} WHERE version = ?", [version]
    ).fetchone() if table_exists(con, VERSIONS_TABLE) else None
    if not row:
        raise UnknownVersionError(f"Model version {version} is not in {VERSIONS_TABLE}")
    return row[0]


def load_model(
    version: str,
    artifacts_root: str | Path,
    warehouse_or_con: Warehouse | duckdb.DuckDBPyConnection | None = None,
) -> LoadedModel:
    """Load a registered model after verifying every artifact hash.

    With a warehouse (resource or DuckDB connection) the manifest must also match the
    SHA-256 recorded in ``ml.model_versions``.
    """
    check_version_name(version)
    folder = models_root(artifacts_root) / version
    if not folder.exists():
        raise UnknownVersionError(f"No artifacts for model version {version} under {folder.parent}")
    expected = (
        _with_connection(warehouse_or_con, lambda con: registered_manifest_sha(con, version))
        if warehouse_or_con is not None else None
    )
    return load_model_folder(folder, version, expected)


def load_champion(
    artifacts_root: str | Path, warehouse_or_con: Warehouse | duckdb.DuckDBPyConnection
) -> LoadedModel:
    """The current champion, verified and loaded; NoChampionError when none was promoted."""

    def find(con):
        version = champion_version(con)
        if version is None:
            raise NoChampionError(
                "No champion model yet: materialize ml/champion"
            )
        return version, registered_manifest_sha(con, version)

    version, expected = _with_connection(warehouse_or_con, find)
    return load_model_folder(models_root(artifacts_root) / version, version, expected)


def rebuild_split(model: LoadedModel, frame: pd.DataFrame) -> Split:
    """The split ``model`` was trained with, rebuilt on ``frame`` (the same training table
    gives exactly the recorded rows; check ``model.manifest['training_data_version']``)."""
    settings = SplitSettings.from_dict(model.manifest["split_settings"])
    return split_training_set(frame, model.feature_spec.roles, settings)
