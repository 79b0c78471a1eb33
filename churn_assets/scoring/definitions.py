"""The scoring layer's Definitions: monthly predictions and explanations, and the scoring policy."""

import dagster as dg

from churn_assets.scoring.assets import scoring_assets
from churn_assets.scoring.batch import ScoringPolicy

defs = dg.Definitions(assets=scoring_assets, resources={"scoring_policy": ScoringPolicy()})
