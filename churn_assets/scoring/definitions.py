"""The scoring layer's Definitions: monthly predictions and explanations, and the scoring policy."""

import dagster as dg

from churn_assets.core.metadata import layer_assets
from churn_assets.scoring.assets import scoring_assets
from churn_assets.scoring.batch import ScoringPolicy

# Who answers for this layer's assets (shown in the UI, for routing alerts).
OWNER = "team:ml"

defs = dg.Definitions(assets=layer_assets(scoring_assets, owner=OWNER, layer="scoring"),
                      resources={"scoring_policy": ScoringPolicy()})
