"""SHAP explanations: each candidate's exact attributions where it has them, a permutation
fallback for the others; ``explain`` chooses.

All contributions are in log-odds. Exact ones come from the candidate (``Candidate.
contributions``): XGBoost's and LightGBM's boosters (TreeSHAP in their C++), the logistic
regression's coefficients, and the stacked ensemble's weighted sum of its members'. The base
value plus the contributions equals the model's margin for every row. When the registry
calibrates a model (isotonic/Platt on top), the explanation is of the *uncalibrated* margin:
the calibration map is monotone, so the ranking of reasons is unchanged.

For models without exact attributions (the random forest) ``permutation_contributions``
estimates Shapley values of logit(predict_proba) on a sample with antithetic permutations
against a small background set; it is additive by construction (each permutation chain
telescopes from the background to the row). The helpers here that take a raw XGBoost
booster are what the XGBoost candidate calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import xgboost as xgb

NATIVE_METHOD = "xgboost-native-treeshap"
APPROXIMATE_METHOD = "xgboost-saabas-approximation"
PERMUTATION_METHOD = "permutation-shap"
ADDITIVITY_TOLERANCE = 1e-4
INCREASES_RISK = "increases_risk"
DECREASES_RISK = "decreases_risk"


class ExplanationError(ValueError):
    """Inputs that cannot be explained as given."""


@dataclass
class Contributions:
    """Per-row, per-feature contributions in log-odds, plus the base value of each row."""

    values: np.ndarray  # (rows, features)
    base_values: np.ndarray  # (rows,)
    feature_names: list[str]
    method: str

    @property
    def base_value(self) -> float:
        return float(self.base_values.mean())

    def reconstructed_margin(self) -> np.ndarray:
        return self.base_values + self.values.sum(axis=1)


def booster_frame(
    frame: pd.DataFrame,
    feature_names: Sequence[str],
    categories: dict[str, Sequence[Any]] | None = None,
) -> pd.DataFrame:
    """The columns a booster was trained on, in its order, categoricals typed as trained.

    XGBoost maps a pandas category to the code it had at training time, so the categories
    must be the training categories in the training order, not whatever this frame holds.
    Values outside them become missing (the booster's default direction), never another
    category's code.
    """
    import pandas as pd

    missing = [name for name in feature_names if name not in frame.columns]
    if missing:
        raise ExplanationError(
            f"Columns {missing} the model was trained on are missing from the frame to explain"
        )
    selected = frame.loc[:, list(feature_names)].copy()
    for name, levels in (categories or {}).items():
        if name in selected.columns:
            values = selected[name]
            if values.dtype == bool or str(values.dtype) == "boolean":
                values = values.astype("string")
            selected[name] = pd.Categorical(values.astype("object"), categories=list(levels))
    return selected


def _dmatrix(booster: xgb.Booster, frame: pd.DataFrame) -> xgb.DMatrix:
    import xgboost as xgb

    expected = booster.feature_names
    if expected is not None and list(frame.columns) != list(expected):
        raise ExplanationError(
            f"Frame columns {list(frame.columns)} differ from the booster's features {expected}"
        )
    return xgb.DMatrix(frame, enable_categorical=True)


def booster_margin(booster: xgb.Booster, frame: pd.DataFrame) -> np.ndarray:
    """The booster's raw log-odds output for each row."""
    import numpy as np

    margin = booster.predict(_dmatrix(booster, frame), output_margin=True)
    return np.asarray(margin, dtype=np.float64)


def xgboost_contributions(
    booster: xgb.Booster, frame: pd.DataFrame, *, approximate: bool = False
) -> Contributions:
    """Exact TreeSHAP values from the booster (last output column is the bias term).

    ``approximate=True`` uses XGBoost's Saabas path attribution instead: much cheaper per
    row (linear in tree depth rather than quadratic, no per-leaf recursion), still adds up
    to the margin, but not Shapley values; meant for very large explanation batches.
    """
    import numpy as np

    raw = booster.predict(
        _dmatrix(booster, frame), pred_contribs=True, approx_contribs=approximate
    )
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 2:
        raise ExplanationError(
            f"Expected a binary model with one output; contributions have shape {raw.shape}"
        )
    return Contributions(
        values=raw[:, :-1],
        base_values=raw[:, -1],
        feature_names=list(frame.columns),
        method=APPROXIMATE_METHOD if approximate else NATIVE_METHOD,
    )


def additivity_error(contributions: Contributions, margin: np.ndarray) -> float:
    """Largest |base + sum(contributions) - margin| over rows."""
    import numpy as np

    margin = np.asarray(margin, dtype=np.float64).ravel()
    if margin.shape[0] != contributions.values.shape[0]:
        raise ExplanationError(
            f"{contributions.values.shape[0]} explained rows but {margin.shape[0]} margins"
        )
    if margin.size == 0:
        return 0.0
    return float(np.max(np.abs(contributions.reconstructed_margin() - margin)))


def check_additivity(
    contributions: Contributions, margin: np.ndarray, tolerance: float = ADDITIVITY_TOLERANCE
) -> tuple[bool, dict[str, Any]]:
    """Base value plus contributions must equal the model's margin for every row."""
    import numpy as np

    margin = np.asarray(margin, dtype=np.float64).ravel()
    error = additivity_error(contributions, margin)
    gaps = np.abs(contributions.reconstructed_margin() - margin)
    failing = int(np.sum(gaps > tolerance))
    passed = failing == 0
    return passed, {
        "max_abs_error": error,
        "tolerance": tolerance,
        "rows_checked": int(margin.size),
        "rows_failing": failing,
        "worst_row": int(np.argmax(gaps)) if margin.size else None,
        "method": contributions.method,
        "description": (
            f"base value + contributions match the margin on all {margin.size} rows "
            f"(max error {error:.2e})"
            if passed
            else f"{failing} of {margin.size} rows break additivity (max error {error:.2e} > "
            f"{tolerance:g})"
        ),
    }


def _logit(probabilities: np.ndarray) -> np.ndarray:
    import numpy as np

    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def _encode(frame: pd.DataFrame) -> tuple[np.ndarray, list[Callable[[np.ndarray], Any]]]:
    """Frame -> float matrix (categoricals as codes) and per-column decoders back to values."""
    import numpy as np
    import pandas as pd

    columns = []
    decoders: list[Callable[[np.ndarray], Any]] = []
    for name in frame.columns:
        series = frame[name]
        is_numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(
            series
        )
        if is_numeric:
            columns.append(series.to_numpy(dtype=np.float64, na_value=np.nan))
            dtype = series.dtype

            def decode_numeric(codes: np.ndarray, dtype: Any = dtype) -> Any:
                # Nullable extension dtypes (Int64, Float64) take NaN as missing via pandas.
                if isinstance(dtype, np.dtype):
                    return codes.astype(dtype, copy=False)
                return pd.Series(codes).astype(dtype)

            decoders.append(decode_numeric)
        else:
            codes, uniques = pd.factorize(series, use_na_sentinel=True)
            columns.append(codes.astype(np.float64))
            dtype = series.dtype

            def decode_category(
                codes: np.ndarray, uniques: Any = uniques, dtype: Any = dtype
            ) -> Any:
                values = pd.Series(
                    pd.api.extensions.take(
                        np.asarray(uniques, dtype=object), codes.astype(np.int64), allow_fill=True
                    ),
                    dtype=object,
                )
                if isinstance(dtype, pd.CategoricalDtype):
                    return pd.Categorical(values, dtype=dtype)
                return values if dtype == np.dtype(object) else values.astype(dtype)

            decoders.append(decode_category)
    return np.column_stack(columns), decoders


def permutation_contributions(
    predict_proba: Callable[[pd.DataFrame], Any],
    frame: pd.DataFrame,
    background: pd.DataFrame,
    *,
    permutations: int = 1,
    seed: int = 0,
    batch_rows: int = 100_000,
) -> Contributions:
    """Model-agnostic Shapley estimates of logit(P(churn)) for each row of ``frame``.

    Each of ``permutations`` random feature orders is walked forwards and backwards
    (antithetic sampling) from every background row to the explained row, one feature at a
    time; a feature's contribution is the average change in logit when it switches from the
    background value to the row's value. Cost: rows x 2 x permutations x (features + 1) x
    background rows model evaluations, batched into calls of about ``batch_rows``.
    ``predict_proba`` takes a frame with the columns of ``frame`` and returns P(churn), or
    an (n, 2) array whose second column is P(churn).
    """
    import numpy as np
    import pandas as pd

    if list(background.columns) != list(frame.columns):
        raise ExplanationError("The background frame must have the explained frame's columns")
    if len(frame) == 0 or len(background) == 0:
        raise ExplanationError("Both the explained rows and the background must be non-empty")
    combined = pd.concat([frame, background], ignore_index=True)
    encoded, decoders = _encode(combined)
    rows, background_rows = encoded[: len(frame)], encoded[len(frame) :]
    n_rows, n_features = rows.shape
    n_background = background_rows.shape[0]
    rng = np.random.default_rng(seed)

    def model_logit(matrix: np.ndarray) -> np.ndarray:
        decoded = pd.DataFrame(
            {name: decode(matrix[:, j]) for j, (name, decode) in enumerate(
                zip(frame.columns, decoders, strict=True))}
        )
        probabilities = np.asarray(predict_proba(decoded), dtype=np.float64)
        if probabilities.ndim == 2:
            probabilities = probabilities[:, 1]
        return _logit(probabilities)

    orders = []
    for _ in range(permutations):
        order = rng.permutation(n_features)
        orders.extend([order, order[::-1]])
    steps = n_features + 1
    evaluations_per_row = len(orders) * steps * n_background
    rows_per_batch = max(1, batch_rows // evaluations_per_row)
    values = np.zeros((n_rows, n_features))
    base_logit = model_logit(background_rows).mean()

    for start in range(0, n_rows, rows_per_batch):
        chunk = rows[start : start + rows_per_batch]
        # states[r, o, s, b, :] = background b with the first s features of order o set to row r.
        states = np.broadcast_to(
            background_rows, (len(chunk), len(orders), steps, n_background, n_features)
        ).copy()
        for o, order in enumerate(orders):
            for s in range(1, steps):
                switched = order[:s]
                step_view = states[:, o, s]
                step_view[:, :, switched] = chunk[:, None, switched]
        logits = model_logit(states.reshape(-1, n_features)).reshape(
            len(chunk), len(orders), steps, n_background
        )
        # Change in logit at each step, averaged over background rows, credited to the
        # feature switched at that step.
        deltas = np.diff(logits, axis=2).mean(axis=3)
        for o, order in enumerate(orders):
            values[start : start + len(chunk), order] += deltas[:, o, :]
    values /= len(orders)
    return Contributions(
        values=values,
        base_values=np.full(n_rows, base_logit),
        feature_names=[str(c) for c in frame.columns],
        method=PERMUTATION_METHOD,
    )


def global_importance(contributions: Contributions) -> pd.DataFrame:
    """Mean |SHAP| per feature, its share of the total, ranked (1 = most important)."""
    import numpy as np
    import pandas as pd

    mean_abs = np.abs(contributions.values).mean(axis=0)
    total = mean_abs.sum()
    table = pd.DataFrame(
        {
            "feature": contributions.feature_names,
            "mean_abs_shap": mean_abs,
            "share": mean_abs / total if total > 0 else np.zeros_like(mean_abs),
            # Direction on average: positive means the feature mostly raises risk.
            "mean_shap": contributions.values.mean(axis=0),
        }
    )
    table = table.sort_values(["mean_abs_shap", "feature"], ascending=[False, True])
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.reset_index(drop=True)


def format_feature_values(series: pd.Series) -> pd.Series:
    """Feature values as short text for reasons: 4 significant digits, missing as NULL."""
    import pandas as pd

    if pd.api.types.is_float_dtype(series):
        text = series.map(lambda v: f"{v:.4g}", na_action="ignore")
    else:
        text = series.astype("object").map(str, na_action="ignore")
    return text.astype("string")


def top_reasons(
    contributions: Contributions,
    features: pd.DataFrame,
    keys: pd.DataFrame,
    k: int = 3,
) -> pd.DataFrame:
    """The top ``k`` features pushing each row's risk up and down, one row per reason.

    Columns: the ``keys`` columns, ``direction`` (increases_risk / decreases_risk), ``rank``
    (1 = strongest), ``feature``, ``feature_value`` (text), ``shap_value`` (log-odds). Only
    features that actually push in that direction appear, so a row may have fewer than
    ``k`` reasons on a side. Ordered by key, direction, rank.
    """
    import numpy as np
    import pandas as pd

    n_rows, n_features = contributions.values.shape
    if len(features) != n_rows or len(keys) != n_rows:
        raise ExplanationError(
            f"{n_rows} explained rows, but {len(features)} feature rows and {len(keys)} keys"
        )
    if k < 1:
        raise ExplanationError(f"k must be at least 1, got {k}")
    missing = [name for name in contributions.feature_names if name not in features.columns]
    if missing:
        raise ExplanationError(f"Feature values missing for {missing}")
    k = min(k, n_features)
    values = contributions.values
    parts = []
    for direction, signed in ((INCREASES_RISK, values), (DECREASES_RISK, -values)):
        # argpartition then a sort of k columns: O(rows x features), not a full sort.
        if k < n_features:
            top = np.argpartition(-signed, k - 1, axis=1)[:, :k]
        else:
            top = np.tile(np.arange(n_features), (n_rows, 1))
        top_values = np.take_along_axis(signed, top, axis=1)
        order = np.argsort(-top_values, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        top_values = np.take_along_axis(top_values, order, axis=1)
        row_index = np.repeat(np.arange(n_rows), k)
        feature_index = top.ravel()
        signed_flat = top_values.ravel()
        keep = signed_flat > 0
        parts.append(
            pd.DataFrame(
                {
                    "row": row_index[keep],
                    "direction": direction,
                    "rank": np.tile(np.arange(1, k + 1), n_rows)[keep],
                    "feature_index": feature_index[keep],
                    "shap_value": values[row_index[keep], feature_index[keep]],
                }
            )
        )
    reasons = pd.concat(parts, ignore_index=True)
    reasons = reasons.sort_values(["row", "direction", "rank"], kind="stable", ignore_index=True)
    names = np.asarray(contributions.feature_names, dtype=object)
    feature_values = pd.Series(pd.NA, index=reasons.index, dtype="string")
    for j, name in enumerate(contributions.feature_names):
        hits = np.flatnonzero(reasons["feature_index"].to_numpy() == j)
        if hits.size:
            rows = reasons["row"].to_numpy()[hits]
            feature_values.iloc[hits] = format_feature_values(
                features[name].iloc[rows].reset_index(drop=True)
            ).to_numpy()
    key_part = keys.iloc[reasons["row"].to_numpy()].reset_index(drop=True)
    return pd.concat(
        [
            key_part,
            pd.DataFrame(
                {
                    "direction": reasons["direction"].astype("string"),
                    "rank": reasons["rank"].astype("int32"),
                    "feature": pd.Series(
                        names[reasons["feature_index"].to_numpy()], dtype="string"
                    ),
                    "feature_value": feature_values.reset_index(drop=True),
                    "shap_value": reasons["shap_value"].astype("float64"),
                }
            ),
        ],
        axis=1,
    )


def explain(model, frame: pd.DataFrame, *, background: pd.DataFrame | None, seed: int = 0,
            approximate: bool = False) -> tuple[Contributions, np.ndarray]:
    """Contributions and the exact margin they must add up to, for ``frame``'s rows.

    Candidates with exact attributions (the boosters' TreeSHAP) give them; every other model
    is explained by the permutation fallback on ``background``, explaining logit(predict_proba).
    """
    import numpy as np

    from churn_assets.training.columns import feature_frame

    features = feature_frame(frame, model.feature_spec)
    exact = model.candidate.contributions(model, features, approximate=approximate)
    if exact is not None:
        return exact
    if background is None:
        raise ValueError("A model without exact attributions needs background rows for the permutation fallback")
    background_features = feature_frame(background, model.feature_spec)
    contributions = permutation_contributions(model.predict_proba, features, background_features, seed=seed)
    probabilities = np.clip(model.predict_proba(features), 1e-7, 1 - 1e-7)
    return contributions, np.log(probabilities / (1 - probabilities))
