"""The code location: each layer's Definitions merged into one ``defs`` for the active project
(``$CHURN_PROJECT``, else the built-in one), with its policies (its churn.yaml, or
``$CHURN_POLICIES``, else every default) as resources."""

import warnings

import dagster as dg

# Single-run backfill policies on partitioned assets are "beta" in Dagster 1.13; the
# warning would be printed by every process that loads the code location.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

from churn_assets.automation.definitions import defs as automation_defs  # noqa: E402
from churn_assets.core.definitions import defs as core_defs  # noqa: E402
from churn_assets.core.keys import DRIFT_KEY, PREDICTIONS_KEY  # noqa: E402
from churn_assets.core.project import Project, active_project  # noqa: E402
from churn_assets.evaluation.definitions import defs as evaluation_defs  # noqa: E402
from churn_assets.monitoring.definitions import defs as monitoring_defs  # noqa: E402
from churn_assets.policies import Policies, load_policies, policy_file  # noqa: E402
from churn_assets.scoring.definitions import defs as scoring_defs  # noqa: E402
from churn_assets.source import definitions as source_definitions  # noqa: E402
from churn_assets.sql_models import definitions as sql_definitions  # noqa: E402
from churn_assets.training.assets import CANDIDATE_ASSET_KEYS  # noqa: E402
from churn_assets.training.definitions import defs as training_defs  # noqa: E402


def layers(project: Project, policies: Policies) -> list[dg.Definitions]:
    """Each layer's Definitions, lowest first; the source and SQL layers depend on the project."""
    engine = policies.engine.name
    return [core_defs, source_definitions.definitions_for(project, policies.source, engine),
            sql_definitions.definitions_for(project, policies.source, engine), training_defs, evaluation_defs,
            scoring_defs, monitoring_defs, automation_defs]


def build_defs(policies: Policies | None = None, project: Project | None = None) -> dg.Definitions:
    """Every layer's Definitions for ``project``; the layers' default policies replaced by ``policies``."""
    project = project or active_project()
    policies = policies or load_policies(policy_file(project))
    merged = dg.Definitions.merge(*layers(project, policies))
    assets = list(merged.assets)
    if policies.engine.on_spark:
        # The raw and SQL layers build their assets for the engine; these steps of the other
        # layers run part of their work there (the training sample's pull, scoring, drift's
        # PSI counts), so the UI's kinds say so.
        partly_on_spark = {*CANDIDATE_ASSET_KEYS, PREDICTIONS_KEY, DRIFT_KEY}
        assets = dg.map_asset_specs(
            lambda spec: spec.merge_attributes(kinds={"spark"}) if spec.key in partly_on_spark else spec, assets)
    executor = {"in_process": dg.in_process_executor,
                "multiprocess": dg.multiprocess_executor}[policies.project.run_executor]
    return dg.Definitions(
        executor=executor,
        assets=assets,
        asset_checks=merged.asset_checks,
        jobs=merged.jobs,
        schedules=merged.schedules,
        sensors=merged.sensors,
        resources={**merged.resources, **policies.resources()},
    )


defs = build_defs()
