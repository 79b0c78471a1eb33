"""Train / validation / test split of the training set.

Out of time by default: train on the older labelled months, validate on the next one and
test on the latest labelled month, so the test score says how the model does on a month
it has never seen. With fewer than ``min_time_split_months`` labelled months (the Telco
file is one month) the split is a stratified random one with a fixed seed. Rows without
a label (their following month is not observed yet) never enter any split.

The settings are recorded with every model, and ``split_training_set`` rebuilt from them
on the same table returns exactly the same rows, so evaluation scores the recorded test set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from churn_assets.training.columns import ColumnRoles

if TYPE_CHECKING:
    import pandas as pd


class SplitError(ValueError):
    """The training set cannot be split as asked."""


@dataclass(frozen=True)
class SplitSettings:
    seed: int = 42
    min_time_split_months: int = 3
    # Only the most recent N training months are used (None: all older labelled months).
    train_months: int | None = None
    valid_fraction: float = 0.15
    test_fraction: float = 0.15

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SplitSettings:
        return cls(**values)


@dataclass
class Split:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    strategy: str
    settings: SplitSettings
    description: dict

    def parts(self) -> dict[str, pd.DataFrame]:
        return {"train": self.train, "valid": self.valid, "test": self.test}


def _month_text(value: Any) -> str:
    import pandas as pd

    return pd.Timestamp(value).strftime("%Y-%m-%d") if value is not None else ""


def _describe(parts: dict[str, pd.DataFrame], roles: ColumnRoles) -> dict:
    summary = {}
    for name, part in parts.items():
        entry = {
            "rows": int(len(part)),
            "positives": int(part[roles.label_column].sum()),
            "positive_rate": round(float(part[roles.label_column].mean()), 6) if len(part) else None,
        }
        if roles.time_column:
            months = sorted(part[roles.time_column].dropna().unique())
            entry["months"] = [_month_text(m) for m in months] if len(months) <= 36 else [
                _month_text(months[0]), "...", _month_text(months[-1])
            ]
        summary[name] = entry
    return summary


def labelled_rows(frame: pd.DataFrame, roles: ColumnRoles) -> pd.DataFrame:
    """Rows with a known 0/1 label, sorted by key so the split does not depend on row order."""
    import pandas as pd

    if roles.label_column not in frame.columns:
        raise SplitError(f"Training set has no label column '{roles.label_column}'")
    labelled = frame[frame[roles.label_column].notna()].copy()
    labels = pd.to_numeric(labelled[roles.label_column], errors="coerce")
    bad = ~labels.isin([0, 1])
    if bad.any():
        example = labelled.loc[bad, roles.label_column].iloc[0]
        raise SplitError(
            f"Label column '{roles.label_column}' must be 0/1; found {example!r} in {int(bad.sum())} row(s)"
        )
    labelled[roles.label_column] = labels.astype("int8")
    key = list(roles.key_columns)
    duplicated = labelled.duplicated(subset=key, keep=False)
    if duplicated.any():
        example = labelled.loc[duplicated, key].iloc[0].to_dict()
        raise SplitError(
            f"Training set has {int(duplicated.sum())} rows sharing a key ({', '.join(key)}), "
            f"e.g. {example}: each key must appear once"
        )
    return labelled.sort_values(key, kind="mergesort").reset_index(drop=True)


def split_training_set(
    frame: pd.DataFrame, roles: ColumnRoles, settings: SplitSettings | None = None
) -> Split:
    """Split the labelled rows of ``frame`` into train, validation and test sets."""
    import numpy as np

    settings = settings or SplitSettings()
    labelled = labelled_rows(frame, roles)
    if labelled.empty:
        raise SplitError("Training set has no labelled rows (is month M+1 observed for any month?)")
    months = (
        sorted(labelled[roles.time_column].dropna().unique()) if roles.time_column else []
    )
    if roles.time_column and labelled[roles.time_column].isna().any():
        raise SplitError(f"Time column '{roles.time_column}' is empty in some labelled rows")

    if len(months) >= max(settings.min_time_split_months, 3):
        test_month, valid_month = months[-1], months[-2]
        train_months = months[:-2]
        if settings.train_months:
            train_months = train_months[-settings.train_months:]
        time = labelled[roles.time_column]
        parts = {
            "train": labelled[time.isin(train_months)],
            "valid": labelled[time == valid_month],
            "test": labelled[time == test_month],
        }
        strategy = "out_of_time"
    else:
        rng = np.random.default_rng(settings.seed)
        assignment = np.empty(len(labelled), dtype=object)
        labels = labelled[roles.label_column].to_numpy()
        # Stratified: each class is shuffled and cut by the same fractions.
        for value in (0, 1):
            positions = np.flatnonzero(labels == value)
            positions = positions[rng.permutation(len(positions))]
            n_test = int(round(len(positions) * settings.test_fraction))
            n_valid = int(round(len(positions) * settings.valid_fraction))
            assignment[positions[:n_test]] = "test"
            assignment[positions[n_test:n_test + n_valid]] = "valid"
            assignment[positions[n_test + n_valid:]] = "train"
        parts = {name: labelled[assignment == name] for name in ("train", "valid", "test")}
        strategy = "stratified_random"

    for name, part in parts.items():
        if part.empty or part[roles.label_column].nunique() < 2:
            raise SplitError(
                f"The {name} split ({strategy}) has {len(part)} rows and needs both classes; "
                "the training set is too small or has one class only"
            )
    parts = {name: part.reset_index(drop=True) for name, part in parts.items()}
    description = {
        "strategy": strategy,
        "settings": settings.to_dict(),
        "labelled_months": len(months),
        "parts": _describe(parts, roles),
    }
    return Split(strategy=strategy, settings=settings, description=description, **parts)
