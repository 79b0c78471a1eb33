"""Asset keys that Python assets refer to across layers (SQL and raw keys come from their loaders;
candidate models' keys from the candidate registry, ``training.assets.CANDIDATE_ASSET_KEYS``).

An asset key is also the DuckDB table name: ["ml", "predictions"] is ml.predictions.
"""

import dagster as dg

CUSTOMER_FEATURES_KEY = dg.AssetKey(["features", "customer_features"])
LABELS_KEY = dg.AssetKey(["features", "labels"])
TRAINING_SET_KEY = dg.AssetKey(["features", "training_set"])

MODEL_VERSIONS_KEY = dg.AssetKey(["ml", "model_versions"])
CHAMPION_KEY = dg.AssetKey(["ml", "champion"])
EVALUATION_REPORT_KEY = dg.AssetKey(["ml", "evaluation_report"])
SHAP_SUMMARY_KEY = dg.AssetKey(["ml", "shap_summary"])
PREDICTIONS_KEY = dg.AssetKey(["ml", "predictions"])
EXPLANATIONS_KEY = dg.AssetKey(["ml", "explanations"])
SERVING_SNAPSHOT_KEY = dg.AssetKey(["ml", "serving_snapshot"])
# Written by the HTTP service (`churn serve`), not by a run: an external asset in the graph.
SCORE_LOG_KEY = dg.AssetKey(["serving", "score_log"])

DRIFT_KEY = dg.AssetKey(["monitoring", "drift"])
REALISED_PERFORMANCE_KEY = dg.AssetKey(["monitoring", "realised_performance"])
SERVING_ARMS_KEY = dg.AssetKey(["monitoring", "serving_arms"])
