"""Column roles of a training table: which columns identify a row, place it in time, hold
the label, and which are categorical or numeric features.

Roles come from the table's schema (DuckDB type names) plus explicit settings, never
from a list of known column names, so a dataset with other columns trains unchanged.
VARCHAR and BOOLEAN columns are categorical, numeric columns are numeric, dates and
timestamps other than the time column are left out (a raw date is not a feature).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

CATEGORICAL_TYPES = ("VARCHAR", "BOOLEAN", "ENUM", "UUID")
NUMERIC_TYPES = (
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "REAL", "DOUBLE", "DECIMAL",
)

DEFAULT_ID_COLUMNS = ("customer_id",)
DEFAULT_TIME_COLUMN = "snapshot_month"
DEFAULT_LABEL_COLUMN = "churned"


class RolesError(ValueError):
    """The training table and the role settings do not fit together."""


@dataclass(frozen=True)
class RoleSettings:
    """What a user says about the columns; everything else is inferred from the schema."""

    id_columns: tuple[str, ...] = DEFAULT_ID_COLUMNS
    time_column: str | None = DEFAULT_TIME_COLUMN
    label_column: str = DEFAULT_LABEL_COLUMN
    exclude_columns: tuple[str, ...] = ()
    # Columns forced to a role, e.g. a low-cardinality integer code that is categorical.
    categorical_columns: tuple[str, ...] = ()
    numeric_columns: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RoleSettings:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise RolesError(
                f"Unknown role setting(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}"
            )
        converted = {
            key: (tuple(value) if isinstance(value, (list, tuple)) else value)
            for key, value in values.items()
        }
        if isinstance(converted.get("id_columns"), str):
            converted["id_columns"] = (converted["id_columns"],)
        return cls(**converted)


@dataclass(frozen=True)
class ColumnRoles:
    """The resolved roles of every column the model sees."""

    id_columns: tuple[str, ...]
    time_column: str | None
    label_column: str
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    excluded: tuple[str, ...] = ()

    @property
    def features(self) -> tuple[str, ...]:
        return self.categorical + self.numeric

    @property
    def key_columns(self) -> tuple[str, ...]:
        return self.id_columns + ((self.time_column,) if self.time_column else ())

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ColumnRoles:
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()})


def _base_type(duckdb_type: str) -> str:
    # DECIMAL(18,3) -> DECIMAL, TIMESTAMP WITH TIME ZONE -> TIMESTAMP
    return duckdb_type.upper().split("(")[0].split(" ")[0].strip()


def infer_roles(column_types: Mapping[str, str], settings: RoleSettings | None = None) -> ColumnRoles:
    """Resolve roles from ``{column: DuckDB type}`` and the user's settings.

    Raises RolesError naming the column when a setting refers to a missing column, the
    label is missing, or a forced role contradicts the column's type.
    """
    settings = settings or RoleSettings()
    columns = list(column_types)
    available = set(columns)

    def require(names: Iterable[str], what: str) -> None:
        missing = [n for n in names if n not in available]
        if missing:
            raise RolesError(
                f"{what} column(s) {', '.join(missing)} not in the training table "
                f"(columns: {', '.join(columns)})"
            )

    require(settings.id_columns, "id")
    require([settings.label_column], "label")
    if settings.time_column:
        require([settings.time_column], "time")
    require(settings.exclude_columns, "excluded")
    require(settings.categorical_columns, "categorical")
    require(settings.numeric_columns, "numeric")
    both = set(settings.categorical_columns) & set(settings.numeric_columns)
    if both:
        raise RolesError(f"column(s) {', '.join(sorted(both))} listed as both categorical and numeric")

    reserved = set(settings.id_columns) | {settings.label_column} | set(settings.exclude_columns)
    if settings.time_column:
        reserved.add(settings.time_column)
    categorical: list[str] = []
    numeric: list[str] = []
    excluded: list[str] = list(settings.exclude_columns)
    for name in columns:
        if name in reserved:
            continue
        base = _base_type(column_types[name])
        if name in settings.categorical_columns:
            categorical.append(name)
        elif name in settings.numeric_columns:
            if base not in NUMERIC_TYPES and base != "BOOLEAN":
                raise RolesError(f"column '{name}' is {column_types[name]}, it cannot be numeric")
            numeric.append(name)
        elif base in CATEGORICAL_TYPES:
            categorical.append(name)
        elif base in NUMERIC_TYPES:
            numeric.append(name)
        else:
            excluded.append(name)
    if not categorical and not numeric:
        raise RolesError(
            f"No feature columns left in the training table (columns: {', '.join(columns)})"
        )
    return ColumnRoles(
        id_columns=tuple(settings.id_columns),
        time_column=settings.time_column or None,
        label_column=settings.label_column,
        categorical=tuple(categorical),
        numeric=tuple(numeric),
        excluded=tuple(excluded),
    )


def duckdb_types_of_frame(frame: pd.DataFrame) -> dict[str, str]:
    """The DuckDB type each pandas column would get, for frames that never saw DuckDB."""
    import pandas as pd

    types: dict[str, str] = {}
    for name, dtype in frame.dtypes.items():
        if pd.api.types.is_bool_dtype(dtype):
            types[name] = "BOOLEAN"
        elif pd.api.types.is_integer_dtype(dtype):
            types[name] = "BIGINT"
        elif pd.api.types.is_float_dtype(dtype):
            types[name] = "DOUBLE"
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            types[name] = "TIMESTAMP"
        elif isinstance(dtype, pd.CategoricalDtype):
            types[name] = "VARCHAR"
        else:
            sample = frame[name].dropna()
            if len(sample) and sample.map(lambda v: isinstance(v, bool)).all():
                types[name] = "BOOLEAN"
            elif len(sample) and sample.map(lambda v: hasattr(v, "year") and hasattr(v, "month")).all():
                types[name] = "DATE"
            else:
                types[name] = "VARCHAR"
    return types


@dataclass(frozen=True)
class FeatureSpec:
    """Roles plus the category levels seen in training: what a model needs to score new rows."""

    roles: ColumnRoles
    categories: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"roles": self.roles.to_dict(), "categories": self.categories}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FeatureSpec:
        return cls(roles=ColumnRoles.from_dict(values["roles"]), categories=dict(values["categories"]))


def categorical_text(values: pd.Series) -> pd.Series:
    """Categorical values as text ('True'/'False' for booleans); missing stays <NA>."""
    return values.astype("string")


def build_feature_spec(frame: pd.DataFrame, roles: ColumnRoles) -> FeatureSpec:
    """Record the sorted category levels of every categorical column in ``frame``.

    Features with a single value in ``frame`` (all missing, like month-over-month changes when
    only one month exists, or one constant, like event counts in a file without events) carry
    no information and are moved to ``excluded``: they would only dilute XGBoost's column
    sampling and clutter explanations. A constant with some missing values is kept, since
    missingness can be informative.
    """
    from dataclasses import replace

    empty = tuple(name for name in roles.features if frame[name].nunique(dropna=False) <= 1)
    if empty:
        roles = replace(
            roles,
            categorical=tuple(c for c in roles.categorical if c not in empty),
            numeric=tuple(c for c in roles.numeric if c not in empty),
            excluded=roles.excluded + empty,
        )
    if not roles.features:
        raise RolesError("Every feature column has a single value in the training rows")
    categories = {}
    for name in roles.categorical:
        levels = categorical_text(frame[name]).dropna().unique()
        categories[name] = sorted(str(level) for level in levels)
    return FeatureSpec(roles=roles, categories=categories)


def feature_frame(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The model's input columns: categoricals as pandas categories with the training levels
    (unseen levels become missing), numerics as float64. Raises RolesError on missing columns."""
    import pandas as pd

    missing = [c for c in spec.roles.features if c not in frame.columns]
    if missing:
        raise RolesError(f"Scoring frame lacks feature column(s) {', '.join(missing)}")
    out = {}
    for name in spec.roles.categorical:
        values = frame[name]
        if isinstance(values.dtype, pd.CategoricalDtype) and list(values.dtype.categories) == spec.categories[name]:
            # Already this spec's input (an ensemble hands its members one shared frame).
            out[name] = values
            continue
        out[name] = pd.Categorical(categorical_text(values), categories=spec.categories[name])
    for name in spec.roles.numeric:
        try:
            out[name] = pd.to_numeric(frame[name], errors="raise").astype("float64")
        except (TypeError, ValueError) as error:
            raise RolesError(f"numeric feature column '{name}' holds non-numeric values: {error}") from error
    return pd.DataFrame(out, index=frame.index)
