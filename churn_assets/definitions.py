"""The code location: each layer's Definitions merged into one ``defs``, with the policies
(``$CHURN_POLICIES``, else every default) as its resources."""

import warnings

import dagster as dg

# Single-run backfill policies on partitioned assets are "beta" in Dagster 1.13; the
# warning would be printed by every process that loads the code location.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

from churn_assets.automation.definitions import defs as automation_defs  # noqa: E402
from churn_assets.core.definitions import defs as core_defs  # noqa: E402
from churn_assets.evaluation.definitions import defs as evaluation_defs  # noqa: E402
from churn_assets.monitoring.definitions import defs as monitoring_defs  # noqa: E402
from churn_assets.policies import load_policies  # noqa: E402
from churn_assets.scoring.definitions import defs as scoring_defs  # noqa: E402
from churn_assets.source.definitions import defs as source_defs  # noqa: E402
from churn_assets.sql_models.definitions import defs as sql_defs  # noqa: E402
from churn_assets.training.definitions import defs as training_defs  # noqa: E402

LAYERS = [core_defs, source_defs, sql_defs, training_defs, evaluation_defs, scoring_defs, monitoring_defs,
          automation_defs]


def build_defs(policies=None) -> dg.Definitions:
    """Every layer's Definitions; the layers' default policies replaced by ``policies``."""
    merged = dg.Definitions.merge(*LAYERS)
    policies = policies or load_policies()
    return dg.Definitions(
        assets=merged.assets,
        asset_checks=merged.asset_checks,
        jobs=merged.jobs,
        schedules=merged.schedules,
        sensors=merged.sensors,
        resources={**merged.resources, **policies.resources()},
    )


defs = build_defs()
