"""Dagster wiring of the training layer: one asset per candidate group, the registry table,
the promotion decision and the champion pointer.

Graph::

    features/training_set --> ml/baseline_models --\\
                          \\-> ml/tuned_xgboost -----+--> ml/ensemble --> ml/model_versions --> ml/champion
                          \\-> ml/lightgbm ---------/

The candidate assets come from the candidate registry (``training/candidates``): every
``Candidate.asset`` name is one ``ml/<asset>``; a stacking candidate's asset depends on the
others. They write model folders under ``$CHURN_HOME/artifacts/models/`` (not the warehouse,
so they run in parallel with no writer lock). ``ml/model_versions`` registers what they
produced in one transaction. ``ml/champion`` decides who is champion (``promotion.py``): the
best candidate by the selection rule becomes the first, and later replaces the champion only
when it beats it on the same test rows by the margin. A challenger that loses is a normal
outcome: the champion stays, the decision and its numbers are the materialization's metadata
(and ``artifacts/models/promotion.json`` for the CLI), and everything downstream carries on.
The logic lives in ``train.py``, ``registry.py`` and ``promotion.py``; this module only wires it.
"""

import json
from typing import Any

import dagster as dg

from churn_assets.core.keys import CHAMPION_KEY, MODEL_VERSIONS_KEY, TRAINING_SET_KEY
from churn_assets.core.engine import EnginePolicy
from churn_assets.core.metadata import markdown_table, table_metadata, table_schema
from churn_assets.core.warehouse import WAREHOUSE_POOL, ArtifactStore, Warehouse
from churn_assets.training.candidates import candidate_assets
from churn_assets.training.promotion import FIRST_CHAMPION, PROMOTED, GateDecision, PromotionPolicy, gate_decision
from churn_assets.training.train import TrainingPolicy, read_pointer, read_training_set, train_candidates, write_pointer
from churn_assets.training.registry_tables import (
    CHAMPION_COLUMNS,
    CHAMPION_DESCRIPTIONS,
    CHAMPION_TABLE,
    VERSIONS_COLUMNS,
    VERSIONS_DESCRIPTIONS,
    VERSIONS_TABLE,
)
from churn_assets.training.tuning import TuningPolicy

GROUP = "ml"
CANDIDATE_ASSET_KEYS = [dg.AssetKey([GROUP, name]) for name in candidate_assets()]


def _candidate_metadata(record: dict) -> dict[str, Any]:
    prefix = record["algorithm"]
    return {
        f"{prefix}/version": record["version"],
        f"{prefix}/test_auc": dg.MetadataValue.float(record["test_auc"]),
        f"{prefix}/test_logloss": dg.MetadataValue.float(record["test_logloss"]),
        f"{prefix}/valid_auc": dg.MetadataValue.float(record["valid_auc"]),
        **({f"{prefix}/cv_auc": dg.MetadataValue.float(record["cv_auc"])} if record.get("cv_auc") is not None
           else {}),
        f"{prefix}/calibration": record["calibration"],
    }


def _candidate_asset(asset_name: str, entries: list) -> dg.AssetsDefinition:
    stacks = any(entry.stacks for entry in entries)
    upstream = [key for key in CANDIDATE_ASSET_KEYS if key.path[-1] != asset_name] if stacks else []
    kinds = set().union(*(entry.kinds for entry in entries))
    lines = "\n".join(f"- `{entry.algorithm}`: {entry.description}" for entry in entries)

    @dg.asset(
        key=[GROUP, asset_name],
        deps=[TRAINING_SET_KEY, *upstream],
        group_name=GROUP,
        kinds=kinds,
        code_version=f"{asset_name}-v1",
        description=f"Candidate model(s) trained on features.training_set:\n{lines}",
    )
    def train(context: dg.AssetExecutionContext, warehouse: Warehouse, artifacts: ArtifactStore,
              training_policy: TrainingPolicy, tuning_policy: TuningPolicy,
              engine_policy: EnginePolicy) -> dg.MaterializeResult:
        metadata: dict[str, Any] = {}
        odds_factor = None
        if engine_policy.on_spark:
            from churn_assets.training.spark_sample import training_sample_for

            sample = training_sample_for(engine_policy, training_policy.roles, training_policy.split.seed)
            frame, types = sample.frame, sample.column_types
            metadata["training_set_rows"] = dg.MetadataValue.int(sample.total_rows)
            metadata["sample_fractions"] = dg.MetadataValue.json(sample.fractions)
            odds_factor = sample.odds_factor
            if odds_factor is not None:
                metadata["sample_odds_factor"] = dg.MetadataValue.float(odds_factor)
        else:
            with warehouse.read() as con:
                frame, types = read_training_set(con)
        outcome = train_candidates(entries, frame, types, training_policy,
                                   tuning_policy.settings(training_policy.split.seed), artifacts.root_path,
                                   persist_study=tuning_policy.persist_study, sample_odds_factor=odds_factor)
        write_pointer(artifacts.root_path, asset_name, [t.record for t in outcome.trained])
        for item in outcome.trained:
            metadata.update(_candidate_metadata(item.record))
            metadata.update(item.model.candidate.metadata(item.model))
        if outcome.trained:
            first = outcome.trained[0].record
            metadata["split"] = dg.MetadataValue.json(json.loads(first["split_description"]))
            metadata["training_data_version"] = first["training_data_version"]
        for algorithm, reason in outcome.skipped.items():
            context.log.info(f"{algorithm} not trained: {reason}")
            metadata[f"{algorithm}/skipped"] = reason
        return dg.MaterializeResult(metadata=metadata)

    return train


candidate_models = [_candidate_asset(name, entries) for name, entries in candidate_assets().items()]


@dg.asset(
    key=MODEL_VERSIONS_KEY,
    deps=CANDIDATE_ASSET_KEYS,
    group_name=GROUP,
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
    code_version="model-versions-v1",
    description="ml.model_versions: one row per trained model with its metrics, split, params and hashes.",
    metadata=table_metadata(column_schema=table_schema(VERSIONS_COLUMNS, VERSIONS_DESCRIPTIONS),
                            table_name=VERSIONS_TABLE),
)
def model_versions(context: dg.AssetExecutionContext, warehouse: Warehouse,
                   artifacts: ArtifactStore) -> dg.MaterializeResult:
    from churn_assets.training.registry import models_root, register_versions, verify_model_folder

    records = [record for key in CANDIDATE_ASSET_KEYS for record in read_pointer(artifacts.root_path, key.path[-1])]
    for record in records:
        verify_model_folder(models_root(artifacts.root_path) / record["version"], record["version"],
                            record["manifest_sha256"])
    with warehouse.write() as con:
        register_versions(con, records)
        total = con.execute(f"SELECT count(*) FROM {VERSIONS_TABLE}").fetchone()[0]
        rows = con.execute(
            f"SELECT version, algorithm, role, cv_auc, valid_auc, test_auc, test_logloss, last_trained_at "
            f"FROM {VERSIONS_TABLE} ORDER BY last_trained_at DESC, valid_auc DESC LIMIT 20"
        ).df().to_dict("records")
    # No is_champion column: this snapshot is taken before ml/champion decides (see its metadata).
    columns = ["version", "algorithm", "role", "cv_auc", "valid_auc", "test_auc", "test_logloss", "last_trained_at"]
    return dg.MaterializeResult(metadata={
        **table_metadata(row_count=total, table_name=VERSIONS_TABLE),
        "registered_now": dg.MetadataValue.json([r["version"] for r in records]),
        "latest_versions": dg.MetadataValue.md(markdown_table(columns, rows)),
    })


def _decision_metadata(decision: GateDecision, context: dict) -> dict[str, Any]:
    values = decision.to_dict()
    metadata: dict[str, Any] = {"decision": values.pop("outcome"), "reason": values.pop("reason")}
    for name, value in values.items():
        if isinstance(value, float):
            metadata[name] = dg.MetadataValue.float(value)
        elif value is not None:
            metadata[name] = value
    metadata["context"] = dg.MetadataValue.json(context)
    return metadata


@dg.asset(
    key=CHAMPION_KEY,
    deps=[MODEL_VERSIONS_KEY],
    group_name=GROUP,
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
    code_version="champion-v1",
    metadata=table_metadata(column_schema=table_schema(CHAMPION_COLUMNS, CHAMPION_DESCRIPTIONS),
                            table_name=CHAMPION_TABLE),
    description="ml.champion: history of promotions; the current champion is flagged in ml.model_versions. "
                "Each materialization decides whether the latest run's best candidate (by the selection rule) "
                "replaces the champion: with none it becomes the first; otherwise it must beat the champion on "
                "the same test rows by the promotion margin. Its metadata is the decision with its numbers.",
)
def champion(context: dg.AssetExecutionContext, promotion_policy: PromotionPolicy, warehouse: Warehouse,
             artifacts: ArtifactStore) -> dg.MaterializeResult:
    from churn_assets.training.registry import promote, write_decision

    with warehouse.write() as con:
        # Decided inside the write transaction so nothing can slip in between decision and pointer.
        decision, decision_context = gate_decision(con, artifacts.root_path, promotion_policy)
        changed = decision.outcome in (PROMOTED, FIRST_CHAMPION)
        if changed:
            promote(con, decision.challenger_version, decision.to_dict())
        promotions = con.execute(f"SELECT count(*) FROM {CHAMPION_TABLE}").fetchone()[0]
    write_decision(artifacts.root_path, decision.to_dict())
    context.log.info(f"Promotion decision: {decision.outcome}: {decision.reason}")
    return dg.MaterializeResult(metadata={
        **table_metadata(row_count=promotions, table_name=CHAMPION_TABLE),
        "champion": decision.champion_after,
        "changed": changed,
        **_decision_metadata(decision, decision_context),
    })


ml_assets = [*candidate_models, model_versions, champion]
ml_asset_checks: list[dg.AssetChecksDefinition] = []
