"""End to end: months arrive one by one through the landing folder and the sensors do the rest.

Small seeded data with the generator's price-rise drift in 2024-08. The sensors are driven
with Dagster's own testing tools (build_sensor_context on a temporary instance); each run
request is executed the way the daemon would, skipping run keys the instance already has.
"""

from __future__ import annotations

import dagster as dg
import pytest

from churn_assets.automation.jobs import (
    landing_sensor,
    monthly_refresh_job,
    retraining_sensor,
    training_job,
)
from churn_assets.core.warehouse import ArtifactStore, Warehouse
from churn_assets.core.paths import landing_dir
from churn_assets.monitoring.drift import DriftPolicy
from churn_assets.monitoring.retraining import RetrainingPolicy
from churn_assets.source.synthetic import GeneratorConfig, generate_months

pytestmark = pytest.mark.slow

GENERATOR = GeneratorConfig(
    customers=3_000, months=8, start_month="2024-01", drift_month="2024-08", seed=11
)
# Resource config of a training run, as a deployment's churn.yaml would set it.
SMALL_TRAINING = {
    "training_policy": {"config": {
        "split": {"min_time_split_months": 4},
        "candidate_params": {"random_forest": {"n_estimators": 30}, "lightgbm": {"max_rounds": 300}},
    }},
    "tuning_policy": {"config": {"n_trials": 6, "timeout_s": 30, "persist_study": False}},
}


def _resources():
    return {
        "warehouse": Warehouse(),
        "artifacts": ArtifactStore(),
        "retraining_policy": RetrainingPolicy(first_model_labelled_months=3, new_labelled_months=3),
        "drift_policy": DriftPolicy(),
    }


def _requests(result) -> list[dg.RunRequest]:
    if isinstance(result, dg.SkipReason):
        return []
    return [result] if isinstance(result, dg.RunRequest) else list(result)


def _launch(defs, instance, request: dg.RunRequest, run_config=None,
            resources_config=None) -> dg.ExecuteInProcessResult | None:
    """What the daemon does with a run request: nothing if its run key already ran."""
    if instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": request.run_key})):
        return None
    job = defs.resolve_job_def(request.job_name)
    return job.execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags={**request.tags, "dagster/run_key": request.run_key},
        run_config={"ops": run_config or {}, "resources": resources_config or {}},
        raise_on_error=False,
    )


def _deliver(frames_by_month, *months: str) -> None:
    for month in months:
        folder = landing_dir() / month[:7]
        folder.mkdir(parents=True)
        for name, frame in frames_by_month[month].items():
            frame.to_parquet(folder / f"{name}.parquet")


def _tick(sensor, instance):
    return _requests(sensor(dg.build_sensor_context(instance=instance, resources=_resources())))


def _champion(warehouse: Warehouse) -> str | None:
    with warehouse.read() as con:
        row = con.execute("SELECT version FROM ml.model_versions WHERE is_champion").fetchone()
    return row[0] if row else None


def test_landing_drift_and_retraining(churn_home):
    from churn_assets.definitions import defs

    frames = dict(generate_months(GENERATOR))
    months = list(frames)
    warehouse = Warehouse()
    with dg.instance_for_test() as instance:
        # History: six months dropped at once load as one range run (no champion yet, so
        # data layers only).
        _deliver(frames, *months[:6])
        [history] = _tick(landing_sensor, instance)
        assert history.job_name == "data_refresh"
        assert _launch(defs, instance, history).success
        assert _tick(landing_sensor, instance) == []

        # Five labelled months and no champion: the retraining sensor bootstraps a model.
        [bootstrap] = _tick(retraining_sensor, instance)
        assert bootstrap.run_key == "new_data-none-2024-05"
        # The first model only has to exist for monitoring to have a champion; the gate's
        # decision itself is covered in tests/test_ml_promotion.py.
        first = _launch(
            defs, instance, bootstrap,
            resources_config={**SMALL_TRAINING, "promotion_policy": {"config": {"margin": -1.0}}},
        )
        assert first.success
        first_champion = _champion(warehouse)
        assert first_champion is not None
        assert _tick(retraining_sensor, instance) == []  # nothing new to answer

        # July (quiet) and August (the price rise) arrive one by one and are scored.
        for month in months[6:]:
            _deliver(frames, month)
            [request] = _tick(landing_sensor, instance)
            assert request.job_name == monthly_refresh_job.name
            assert request.partition_key == month
            assert _launch(defs, instance, request).success

        with warehouse.read() as con:
            drift = dict(
                con.execute(
                    "SELECT strftime(month, '%Y-%m'), share_drifted >= 0.3 OR max_psi >= 0.5 "
                    "FROM monitoring.drift_summary ORDER BY month"
                ).fetchall()
            )
            scored = con.execute("SELECT count(DISTINCT snapshot_month) FROM ml.predictions").fetchone()[0]
        assert drift == {"2024-07": False, "2024-08": True}
        assert scored == 2

        # The drift calls for exactly one retraining, however often the sensor ticks.
        [retrain] = _tick(retraining_sensor, instance)
        assert retrain.run_key == f"drift-{first_champion}-2024-08"
        assert retrain.tags["churn/retrain_reasons"] == "drift"
        result = _launch(defs, instance, retrain, resources_config=SMALL_TRAINING)
        # Ticking again requests nothing new: a promoted model answers the drift, and a
        # refused one leaves the same cause, whose run key has already run.
        for again in _tick(retraining_sensor, instance):
            assert again.run_key == retrain.run_key
            assert _launch(defs, instance, again, resources_config=SMALL_TRAINING) is None

        # The promotion decision alone says whether the new model takes over; either way the
        # run succeeds.
        assert result.success
        decision = result.asset_materializations_for_node("ml__champion")[0].metadata
        champion_now = _champion(warehouse)
        if decision["decision"].value == "promoted":
            assert champion_now != first_champion
        else:
            assert decision["decision"].value == "kept_champion" and champion_now == first_champion

        with warehouse.read() as con:
            versions = con.execute("SELECT count(*) FROM ml.model_versions").fetchone()[0]
        assert versions == 10  # two training runs, five candidates each
        training_runs = instance.get_runs(
            filters=dg.RunsFilter(job_name=training_job.name, tags={"churn/trigger": "retraining"})
        )
        assert len(training_runs) == 2
