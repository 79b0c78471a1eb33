"""The public entry point: the sql/ folder as Dagster assets and asset checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from churn_assets.sql_models.loader import SingularTest, SqlModel, SqlProjectError


@dataclass(frozen=True)
class SqlProject:
    sql_dir: Path
    # In dependency order.
    models: tuple[SqlModel, ...]
    singular_tests: tuple[SingularTest, ...]
    # One AssetsDefinition per model, plus an AssetSpec per ingested raw.<name> table.
    assets: list[dg.AssetsDefinition | dg.AssetSpec]
    asset_checks: list[dg.AssetChecksDefinition]
    external_asset_keys: tuple[dg.AssetKey, ...]

    @property
    def asset_keys(self) -> list[dg.AssetKey]:
        return [m.key for m in self.models]

    @property
    def check_keys(self) -> list[dg.AssetCheckKey]:
        return [key for checks in self.asset_checks for key in checks.check_keys]

    def model(self, name: str) -> SqlModel:
        """A model by ``schema.table`` or by its table name when that is unique."""
        text = name.lower()
        matches = [
            m for m in self.models
            if m.relation.lower() == text or ("." not in text and m.name.lower() == text)
        ]
        if len(matches) != 1:
            known = ", ".join(m.relation for m in self.models)
            raise SqlProjectError(
                f"{'ambiguous' if matches else 'no'} model {name!r} in {self.sql_dir} (models: {known})"
            )
        return matches[0]


def load_sql_project(
    sql_dir: Path | str, external_assets: Sequence[dg.AssetKey] = (), *, use_cache: bool = True,
    engine: str = "duckdb",
) -> SqlProject:
    """Parse ``sql_dir`` and build its assets and checks.

    ``external_assets`` are keys produced elsewhere (the raw layer) that SQL may read.
    Raises SqlProjectError, naming the file(s), on an unknown table, a dependency cycle,
    a table defined twice, unparseable SQL or invalid YAML. DuckDB is not opened.

    With ``use_cache`` the parse result is reused from ``$CHURN_HOME/.cache/sql_manifest.json``
    while no .sql/.yml file has changed, so sqlglot is not even imported (see manifest.py).
    ``engine`` (duckdb or spark) is the one the model assets build on (``core/engine.py``).
    """
    from churn_assets.sql_models.assets import build_external_asset, build_model_asset
    from churn_assets.sql_models.check_assets import build_model_checks, build_singular_checks
    from churn_assets.sql_models.manifest import default_manifest_path, parse_sql_project_cached

    manifest = default_manifest_path() if use_cache else None
    parsed = parse_sql_project_cached(Path(sql_dir), external_assets, manifest)
    assets: list[dg.AssetsDefinition | dg.AssetSpec] = [
        build_model_asset(m, engine, parsed.external_keys) for m in parsed.models]
    assets += [build_external_asset(key) for key in parsed.external_keys]
    checks = [c for c in (build_model_checks(m) for m in parsed.models) if c is not None]
    checks += [build_singular_checks(t) for t in parsed.singular_tests]
    return SqlProject(
        sql_dir=parsed.sql_dir,
        models=parsed.models,
        singular_tests=parsed.singular_tests,
        assets=assets,
        asset_checks=checks,
        external_asset_keys=parsed.external_keys,
    )
