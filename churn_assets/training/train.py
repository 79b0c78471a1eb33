"""Training: the training policy, and the steps the ml/<candidate> assets wrap.

Each candidate asset reads ``features.training_set``, resolves column roles from its schema
and the policy, splits it the same way (the split is seeded, so every asset gets the same
rows), fits its candidates, saves them to the registry's folders and writes a small JSON
pointer (``artifacts/models/candidates/<asset>.json``) naming the versions it produced.
``ml/model_versions`` registers every pointer's versions in one transaction. Stacking
candidates (the ensemble) load the versions the other pointers name as their members.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from churn_assets.training.columns import RoleSettings
from churn_assets.training.split import SplitSettings

if TYPE_CHECKING:
    import pandas as pd

    from churn_assets.training.candidates.base import Candidate
    from churn_assets.training.model import ChurnModel
    from churn_assets.training.split import Split
    from churn_assets.training.tuning import TuningSettings

TRAINING_SET_TABLE = "features.training_set"
CANDIDATES_DIR = "candidates"
OPTUNA_DIR = "optuna"


class RolesPolicy(dg.Config):
    """Column roles of the training table; feature columns are inferred from its schema."""

    id_columns: list[str] = Field(default=list(RoleSettings.id_columns), description="Columns identifying an entity.")
    time_column: str | None = Field(default=RoleSettings.time_column, description="Month column; null for no time.")
    label_column: str = Field(default=RoleSettings.label_column, description="0/1 label column.")
    exclude_columns: list[str] = Field(default=[], description="Columns that are not features.")
    categorical_columns: list[str] = Field(
        default=[], description="Force these columns categorical (e.g. low-cardinality integer codes).")
    numeric_columns: list[str] = Field(default=[], description="Force these columns numeric.")

    def settings(self) -> RoleSettings:
        return RoleSettings.from_mapping(self.model_dump())


class SplitPolicy(dg.Config):
    seed: int = Field(default=SplitSettings.seed, description="Seed of the random split and of every model.")
    min_time_split_months: int = Field(default=SplitSettings.min_time_split_months,
                                       description="Fewer labelled months -> random split.")
    train_months: int | None = Field(default=SplitSettings.train_months,
                                     description="Train on only the latest N older months.")
    valid_fraction: float = Field(default=SplitSettings.valid_fraction, description="Random split: validation share.")
    test_fraction: float = Field(default=SplitSettings.test_fraction, description="Random split: test share.")

    def settings(self) -> SplitSettings:
        return SplitSettings(**self.model_dump())


class TrainingPolicy(dg.ConfigurableResource):
    """What is trained on which columns and rows: roles, split, the candidates that run and
    their parameters. Read by every candidate asset, so they all see the same split."""

    roles: RolesPolicy = Field(default_factory=RolesPolicy)
    split: SplitPolicy = Field(default_factory=SplitPolicy)
    candidates: list[str] | None = Field(
        default=None, description="Algorithms to train (see `churn_assets.training.candidates`); null: all.")
    candidate_params: dict[str, dict[str, Any]] = Field(
        default={}, description="Per algorithm, parameters that replace the candidate's defaults.")

    def enabled(self, entry: Candidate) -> bool:
        return self.candidates is None or entry.algorithm in self.candidates

    def params_for(self, entry: Candidate):
        return entry.params(self.candidate_params.get(entry.algorithm))

    def validate_names(self) -> None:
        """Unknown algorithms or parameters fail here, naming the key."""
        from churn_assets.training.candidates import candidate

        for name in [*(self.candidates or []), *self.candidate_params]:
            candidate(name)
        for name, overrides in self.candidate_params.items():
            candidate(name).params(overrides)


# -- reading and preparing -------------------------------------------------------------------


def read_training_set(con, table: str = TRAINING_SET_TABLE) -> tuple[pd.DataFrame, dict[str, str]]:
    """The training table and its DuckDB column types."""
    schema, name = table.split(".")
    types = {
        row[0]: row[1]
        for row in con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [schema, name],
        ).fetchall()
    }
    if not types:
        raise dg.Failure(f"{table} does not exist: materialize the features group first")
    return con.execute(f"SELECT * FROM {table}").df(), types


def prepare(frame: pd.DataFrame, column_types: dict[str, str], roles: RoleSettings, split: SplitSettings):
    """Feature spec, split and content hash of the training frame."""
    from churn_assets.training.columns import build_feature_spec, infer_roles
    from churn_assets.training.registry import training_data_version
    from churn_assets.training.split import split_training_set

    resolved = infer_roles(column_types, roles)
    data_version = training_data_version(frame, resolved.key_columns)
    data_split = split_training_set(frame, resolved, split)
    spec = build_feature_spec(data_split.train, resolved)
    return spec, data_split, data_version


# -- training one asset's candidates ----------------------------------------------------------


@dataclass
class Trained:
    record: dict
    model: ChurnModel


@dataclass
class TrainingOutcome:
    trained: list[Trained]
    # algorithm -> why it trained nothing (disabled by the policy, nothing to stack, ...)
    skipped: dict[str, str]


def save_candidate(model: ChurnModel, data_split: Split, artifacts_root: Path, data_version: str,
                   role: str) -> dict:
    from churn_assets.training.model import evaluate
    from churn_assets.training.registry import code_version, save_model, version_record

    metrics = evaluate(model, data_split)
    saved = save_model(model, artifacts_root, split=data_split, metrics=metrics,
                       training_data_version=data_version, code_version=code_version(),
                       extra=model.report or None)
    return version_record(saved, model, role, data_split, metrics)


def stacking_members(artifacts_root: Path, data_version: str) -> list[ChurnModel]:
    """The models the other (non-stacking) candidate assets last produced for this data."""
    from churn_assets.training.candidates import candidate_assets
    from churn_assets.training.registry import load_model_folder, models_root

    members = []
    for asset, group in candidate_assets().items():
        if any(c.stacks for c in group) or not pointer_path(artifacts_root, asset).exists():
            continue
        for record in read_pointer(artifacts_root, asset):
            if record["training_data_version"] == data_version:
                members.append(load_model_folder(models_root(artifacts_root) / record["version"], record["version"]))
    return members


def train_candidates(entries: list[Candidate], frame: pd.DataFrame, column_types: dict[str, str],
                     policy: TrainingPolicy, tuning: TuningSettings, artifacts_root: Path,
                     persist_study: bool = True, sample_odds_factor: float | None = None) -> TrainingOutcome:
    """Fit, save and describe the enabled ``entries`` (one asset's candidates).
    ``sample_odds_factor``: ``frame`` is a class-stratified sample (engine: spark); each model's
    probabilities are mapped back to the training set's odds (``model.correct_for_sampling``)."""
    from churn_assets.training.candidates.base import CandidateSkipped, FitContext
    from churn_assets.training.model import correct_for_sampling

    spec, data_split, data_version = prepare(frame, column_types, policy.roles.settings(), policy.split.settings())
    context = FitContext(
        seed=policy.split.seed, tuning=tuning, training_data_version=data_version,
        study_dir=Path(artifacts_root) / OPTUNA_DIR if persist_study else None,
    )
    if any(entry.stacks for entry in entries):
        context.members = [m for m in stacking_members(artifacts_root, data_version)
                           if policy.enabled(m.candidate)]
    outcome = TrainingOutcome([], {})
    for entry in entries:
        if not policy.enabled(entry):
            outcome.skipped[entry.algorithm] = "not among the training policy's candidates"
            continue
        try:
            model = entry.fit(data_split, spec, policy.params_for(entry), context)
        except CandidateSkipped as reason:
            outcome.skipped[entry.algorithm] = str(reason)
            continue
        model = correct_for_sampling(model, sample_odds_factor)
        record = save_candidate(model, data_split, artifacts_root, data_version, entry.role)
        outcome.trained.append(Trained(record, model))
    return outcome


# -- pointers: which versions an asset produced last ----------------------------------------


def pointer_path(artifacts_root: Path, asset_name: str) -> Path:
    from churn_assets.training.registry import models_root

    return models_root(artifacts_root) / CANDIDATES_DIR / f"{asset_name}.json"


def write_pointer(artifacts_root: Path, asset_name: str, records: list[dict]) -> Path:
    target = pointer_path(artifacts_root, asset_name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_suffix(f".{os.getpid()}.tmp")
    staging.write_text(json.dumps(records, indent=2, sort_keys=True, default=str))
    os.replace(staging, target)
    return target


def read_pointer(artifacts_root: Path, asset_name: str) -> list[dict]:
    target = pointer_path(artifacts_root, asset_name)
    if not target.exists():
        raise dg.Failure(f"No candidates from ml/{asset_name} yet ({target} missing): materialize it first")
    return json.loads(target.read_text())
