"""The training layer's Definitions: candidate assets, the registry, the gate and the champion,
with the training, tuning and promotion policies."""

import dagster as dg

from churn_assets.core.metadata import layer_assets
from churn_assets.training.assets import ml_asset_checks, ml_assets
from churn_assets.training.promotion import PromotionPolicy
from churn_assets.training.train import TrainingPolicy
from churn_assets.training.tuning import TuningPolicy

# Who answers for this layer's assets (shown in the UI, for routing alerts).
OWNER = "team:ml"

defs = dg.Definitions(
    assets=layer_assets(ml_assets, owner=OWNER, layer="training"),
    asset_checks=ml_asset_checks,
    resources={
        "training_policy": TrainingPolicy(),
        "tuning_policy": TuningPolicy(),
        "promotion_policy": PromotionPolicy(),
    },
)
