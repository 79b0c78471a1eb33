"""``churn init DIR --from FILE``: a dataset project from a user's own export.

The project is assembled in a hidden sibling folder and renamed into place at the end, so a
refused file or a failure half-way leaves nothing behind: either DIR is a whole project
(``churn.yaml``, ``sql/``, ``source/<file>``, ``data/`` with the export loaded as its raw table)
or it does not exist.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from churn_assets.core.project import PROJECT_DATA_DIR, PROJECT_FILE, PROJECT_SQL_DIR, ProjectSection
from churn_assets.source.profile import ExportProfile

SOURCE_DIR = "source"


class InitError(ValueError):
    """The project cannot be created; nothing was written."""


@dataclass
class InitResult:
    root: Path
    profile: ExportProfile
    raw_table: str
    files: list[Path]


def _table_name(path: Path) -> str:
    from churn_assets.source.profile import plain_identifier, snake_case

    name = snake_case(path.name.split(".")[0])
    return name if plain_identifier(name) else f"{name}_export"


def create_project(root: str | Path, source_file: str | Path, *, id_column: str | None = None,
                   label: str | None = None, positive: str | None = None, month: str | None = None,
                   time_column: str | None = None) -> InitResult:
    from churn_assets.core.warehouse import Warehouse
    from churn_assets.policies import Policies, policies_yaml
    from churn_assets.source.export import ExportError, load_export
    from churn_assets.source.profile import profile_export
    from churn_assets.sql_models.scaffold import write_sql_project

    root = Path(root).expanduser().resolve()
    source_file = Path(source_file).expanduser().resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InitError(f"{root} already exists and is not empty: choose a new folder for the project")
    if not source_file.is_file():
        raise InitError(f"No such file: {source_file}")
    try:
        profile = profile_export(source_file, id_column=id_column, label=label, positive=positive, month=month,
                                 time_column=time_column)
    except (ExportError, ValueError) as error:
        raise InitError(str(error)) from None

    table = _table_name(source_file)
    raw_table, staging_name = f"raw.{table}", table
    staging = root.parent / f".{root.name}.init-{uuid.uuid4().hex[:8]}"
    root.parent.mkdir(parents=True, exist_ok=True)
    staging.mkdir()
    try:
        (staging / SOURCE_DIR).mkdir()
        copied = staging / SOURCE_DIR / source_file.name
        shutil.copyfile(source_file, copied)
        source = profile.source_policy(f"{SOURCE_DIR}/{source_file.name}", raw_table)
        policies = Policies(project=ProjectSection(name=root.name, first_month=profile.months[0][:7]),
                            source=source)
        files = write_sql_project(staging / PROJECT_SQL_DIR, profile, raw_table, staging_name)
        (staging / PROJECT_FILE).write_text(policies_yaml(policies, header=_header(profile, source_file)))
        (staging / ".gitignore").write_text(f"{PROJECT_DATA_DIR}/\n")
        # Prove the files load before the project exists: the SQL parses, the YAML validates.
        _validate(staging, policies)
        data = staging / PROJECT_DATA_DIR
        data.mkdir()
        with Warehouse(path=str(data / "warehouse.duckdb")).write() as con:
            load_export(con, staging, source)
        if root.exists():
            root.rmdir()
        os.rename(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return InitResult(root=root, profile=profile, raw_table=raw_table,
                      files=[root / path.relative_to(staging) for path in files])


def _header(profile: ExportProfile, source_file: Path) -> str:
    return (f"Dataset project made by `churn init` from {source_file.name}: every setting of the run.\n"
            "Unknown keys and wrong types are refused with the key named. Delete a setting to get its default.\n"
            "The feature columns are in sql/features/customer_features.sql.")


def _validate(folder: Path, policies) -> None:
    from churn_assets.policies import load_policies
    from churn_assets.sql_models.project import load_sql_project

    load_policies(folder / PROJECT_FILE)
    import dagster as dg

    load_sql_project(folder / PROJECT_SQL_DIR, [dg.AssetKey(["raw", policies.source.table_name])], use_cache=False)


def report_lines(result: InitResult) -> list[str]:
    profile = result.profile
    months = profile.months
    boolean_note = "; the file's values, such as Yes/No, read as booleans" if profile.label_type == "BOOLEAN" else ""
    span = months[0][:7] if len(months) == 1 else f"{months[0][:7]} .. {months[-1][:7]} ({len(months)} months)"
    lines = [
        f"Created project {result.root}",
        f"  rows: {profile.rows:,}; months: {span}; loaded as {result.raw_table}",
        f"  id: {profile.id_column or '(made from each row: no --id given)'}",
        f"  label: {profile.label_column} ({profile.positive!r} = churned, {profile.negative!r} = stayed"
        f"{boolean_note}): "
        f"{profile.positives:,} churned of {profile.labelled:,} labelled ({profile.positives / max(profile.labelled, 1):.1%})",
        f"  features ({len(profile.features)}): " + ", ".join(profile.feature_names),
    ]
    if profile.excluded:
        lines.append(f"  left out ({len(profile.excluded)}, commented in sql/features/customer_features.sql):")
        lines += [f"    {c.name}: {c.reason}" for c in profile.excluded]
    lines += [f"  note: {note}" for note in profile.notes]
    project = _shell_path(result.root)
    lines += ["Next:", f"  CHURN_PROJECT={project} uv run churn run",
              f"  CHURN_PROJECT={project} uv run churn sql \"select algorithm, cv_auc, test_auc, is_champion from ml.model_versions\""]
    return lines


def _shell_path(path: Path) -> str:
    try:
        text = os.path.relpath(path)
    except ValueError:
        text = str(path)
    if text.startswith(".."):
        text = str(path)
    return text if re.fullmatch(r"[\w./-]+", text) else "'" + text.replace("'", "'\\''") + "'"
