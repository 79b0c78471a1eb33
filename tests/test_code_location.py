"""The code location loads cheaply and its graph is well formed."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY_MODULES = [
    "pandas", "numpy", "duckdb", "sklearn", "xgboost", "lightgbm", "shap", "evidently", "optuna",
    "matplotlib", "pyarrow", "scipy",
]


def test_loading_the_code_location_imports_no_heavy_library():
    # A fresh interpreter: what this test process imported must not hide a regression.
    code = (
        "import sys, json; import churn_assets.definitions; "
        f"print(json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_every_asset_has_a_description_group_and_kinds():
    from churn_assets.definitions import defs

    specs = list(defs.resolve_all_asset_specs())
    assert specs
    for spec in specs:
        name = spec.key.to_user_string()
        assert spec.description, f"{name} has no description"
        assert spec.group_name and spec.group_name != "default", f"{name} has no group"
        assert spec.kinds, f"{name} has no kinds"


def test_every_asset_has_owners_a_layer_tag_and_a_code_version_and_every_table_a_described_schema():
    from churn_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node, name = graph.get(key), key.to_user_string()
        assert node.owners and all(o.startswith("team:") for o in node.owners), f"{name} has no owner"
        assert node.tags.get("layer"), f"{name} has no layer tag"
        assert node.code_version, f"{name} has no code version"
        metadata = node.metadata or {}
        if "dagster/table_name" in metadata:
            schema = metadata.get("dagster/column_schema")
            assert schema is not None, f"{name} is a table without a schema"
            undescribed = [c.name for c in schema.schema.columns if not c.description]
            assert not undescribed, f"{name}: columns without a description: {undescribed}"


def test_definitions_validate():
    from churn_assets.definitions import defs

    defs.validate_loadable(defs)


def test_each_layer_exports_its_own_definitions():
    from churn_assets.core.project import active_project
    from churn_assets.definitions import defs, layers
    from churn_assets.policies import load_policies

    assets = {key for layer in layers(active_project(), load_policies()) for asset in (layer.assets or [])
              for key in (asset.keys if hasattr(asset, "keys") else [asset.key])}  # AssetSpec: an external asset
    assert assets == set(defs.resolve_asset_graph().get_all_asset_keys())
    candidate_assets = {k.to_user_string() for k in assets if k.path[0] == "ml"}
    assert {"ml/baseline_models", "ml/tuned_xgboost", "ml/lightgbm", "ml/ensemble"} <= candidate_assets
    assert {f"{name}_policy" for name in ("training", "tuning", "promotion", "evaluation", "scoring", "serving",
                                          "drift", "retraining")} <= set(defs.resources)


def test_the_kinds_say_which_steps_run_on_spark():
    """engine: spark: the raw landing and the SQL models are Spark's; training (the sample's
    pull), scoring and drift's PSI counts run partly there. Nothing says spark on duckdb."""
    from churn_assets.definitions import build_defs
    from churn_assets.policies import Policies

    def kinds(engine: str) -> dict[str, set[str]]:
        graph = build_defs(Policies.from_mapping({"engine": engine})).resolve_asset_graph()
        return {key.to_user_string(): set(graph.get(key).kinds) for key in graph.get_all_asset_keys()}

    on_duckdb, on_spark = kinds("duckdb"), kinds("spark")
    assert not any("spark" in k for k in on_duckdb.values())
    spark_steps = {name for name, k in on_spark.items() if "spark" in k}
    assert {"raw/subscriptions", "features/customer_features", "ml/predictions", "ml/tuned_xgboost",
            "monitoring/drift"} <= spark_steps
    assert "ml/champion" not in spark_steps and "ml/evaluation_report" not in spark_steps
    assert on_spark["ml/predictions"] == on_duckdb["ml/predictions"] | {"spark"}
    defs = build_defs(Policies.from_mapping({"engine": "spark"}))
    defs.validate_loadable(defs)
