"""What the HTTP service (``churn serve``) serves: its settings, the snapshot an asset writes for
it, and the scorer that answers one request from the snapshot and the loaded models.

The service holds no DuckDB connection: a held one would block the pipeline's writers. The
asset ``ml/serving_snapshot`` writes what it needs as files instead, under
``artifacts/serving/``:

- ``snapshots/<id>/features.parquet``: every customer's latest row of
  ``features.customer_features`` (one row per customer, the month it describes included);
- ``snapshots/<id>/snapshot.json``: the champion's and the challenger's versions and manifest
  hashes (as ``ml.model_versions`` records them), the feature months, and the range of every
  numeric feature in the training rows (what a posted value is checked against);
- ``current.json``: a copy of the newest snapshot.json, replaced atomically (``os.replace``)
  once the folder is complete.

The service reads ``current.json`` at start and whenever it changes; it loads both models
(every artifact verified against the recorded hashes), builds each model's input matrix for
every customer, and swaps the new ``ServingState`` in with one assignment. A request reads the
state once, so it sees the old state or the new one, never half of each; a load that fails
leaves the previous state serving.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from churn_assets.scoring.batch import FEATURES_TABLE, ID_COLUMN, MONTH_COLUMN, RiskBands, quote_name
from churn_assets.scoring.explanations import DEFAULT_TOP_REASONS

if TYPE_CHECKING:
    import duckdb
    import numpy as np
    import pandas as pd

    from churn_assets.training.columns import FeatureSpec
    from churn_assets.training.model import ChurnModel

SERVING_DIR = "serving"
SNAPSHOTS_DIR = "snapshots"
POINTER_FILE = "current.json"
SNAPSHOT_FILE = "snapshot.json"
FEATURES_FILE = "features.parquet"
TRAINING_TABLE = "features.training_set"
# Snapshot folders kept besides the current one: a service still loading the previous one
# must find its file.
KEEP_SNAPSHOTS = 2

CHAMPION = "champion"
CHALLENGER = "challenger"


class ServingError(ValueError):
    """A snapshot or a model the service cannot serve from; the message says what to do."""


class UnknownCustomerError(LookupError):
    """A customer id the snapshot has no row for."""


class ServingPolicy(dg.ConfigurableResource):
    """The HTTP service (``churn serve``): where it listens, what a request may ask, and how
    traffic is shared between the champion and the challenger."""

    host: str = Field(default="127.0.0.1", description="Address to listen on; any other than loopback requires an API key.")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port.")
    workers: int = Field(default=1, ge=1, le=64, description="Server processes (each loads the models and the snapshot).")
    max_batch_rows: int = Field(default=1000, ge=1, description="Rows one POST /v1/score:batch may hold (more: 413).")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="Largest request body (more: 413).")
    top_reasons: int = Field(default=DEFAULT_TOP_REASONS, ge=1, description="Reasons per direction in a response.")
    challenger: str | None = Field(
        default=None,
        description="Registry version of the challenger; default: the latest training run's best candidate that "
                    "is not the champion.")
    challenger_share: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="A/B routing: the share of customers (by a stable hash of the id) the challenger answers.")
    shadow: bool = Field(default=False, description="Shadow mode: the model that does not answer scores every request too; "
                                                    "only its log row records it.")
    routing_salt: str = Field(default="churn-ab", description="Mixed into the routing hash; a new salt draws new A/B groups.")
    api_key_env: str = Field(default="CHURN_API_KEY",
                             description="Environment variable holding the API key (X-API-Key header); unset: no key.")
    reload_interval_s: float = Field(default=2.0, gt=0, description="How often the service looks for a new snapshot.")
    log_flush_s: float = Field(default=1.0, gt=0, description="How often served scores are written to serving.score_log.")
    log_buffer_rows: int = Field(default=200_000, ge=1, description="Served scores held while the warehouse is busy; "
                                                                    "beyond it the oldest are dropped (and counted).")
    arm_min_labelled: int = Field(
        default=200, ge=1,
        description="monitoring/serving_arms decides only when each arm has this many labelled customers "
                    "(and 10 churners); until then it says it is waiting for labels.")
    numeric_range_slack: float = Field(
        default=1.0, ge=0.0,
        description="A posted number may lie this many training ranges (max - min) outside [min, max] "
                    "(never below 0 for a feature that was never negative); further out: 422.")

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None

    def check(self) -> None:
        if self.api_key() is None and not is_loopback(self.host):
            raise ServingError(f"serving.host {self.host} is reachable from other machines: set an API key in "
                               f"${self.api_key_env} (serving.api_key_env) first")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is this machine's loopback: an IP address in
    127.0.0.0/8 or ::1, or "localhost" (no name that merely starts with "127.")."""
    import ipaddress

    host = host.strip().strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the snapshot (written by ml/serving_snapshot) ------------------------------------------


def serving_dir(artifacts_root: str | Path) -> Path:
    return Path(artifacts_root) / SERVING_DIR


def pointer_path(artifacts_root: str | Path) -> Path:
    return serving_dir(artifacts_root) / POINTER_FILE


def choose_challenger(con: duckdb.DuckDBPyConnection, champion: str, configured: str | None) -> str | None:
    """The configured challenger, else the latest run's best candidate that is not the champion."""
    from churn_assets.training.registry import latest_run_records, select_best

    if configured:
        return configured if configured != champion else None
    best = select_best([record for record in latest_run_records(con) if record["version"] != champion])
    return best["version"] if best else None


def _model_entry(con: duckdb.DuckDBPyConnection, artifacts_root: Path, version: str) -> tuple[dict, FeatureSpec]:
    """The snapshot's record of a model (the service verifies its files when it loads it) and its
    feature spec."""
    from churn_assets.training.columns import FeatureSpec
    from churn_assets.training.registry import read_artifact, registered_manifest_sha

    sha = registered_manifest_sha(con, version)
    manifest = read_artifact(artifacts_root, version, "manifest.json")
    return ({"version": version, "algorithm": manifest["algorithm"], "manifest_sha256": sha},
            FeatureSpec.from_dict(read_artifact(artifacts_root, version, "feature_spec.json")))


def numeric_ranges(con: duckdb.DuckDBPyConnection, names: Sequence[str]) -> dict[str, list[float | None]]:
    """[min, max] of each numeric feature over the training rows (None where all missing)."""
    if not names:
        return {}
    parts = ", ".join(f"min(CAST({quote_name(n)} AS DOUBLE)), max(CAST({quote_name(n)} AS DOUBLE))" for n in names)
    row = con.execute(f"SELECT {parts} FROM {TRAINING_TABLE}").fetchone()
    return {name: [row[2 * i], row[2 * i + 1]] for i, name in enumerate(names)}


def write_snapshot(con: duckdb.DuckDBPyConnection, artifacts_root: str | Path, challenger: str | None = None) -> dict:
    """Write the service's snapshot for the current champion and point ``current.json`` at it;
    returns its description (snapshot.json). The same data and models give the same bytes."""
    from churn_assets.training.registry import NoChampionError, champion_version

    artifacts_root = Path(artifacts_root)
    champion = champion_version(con)
    if champion is None:
        raise NoChampionError("No champion model yet: materialize ml/champion")
    models = {CHAMPION: _model_entry(con, artifacts_root, champion)}
    challenger_version = choose_challenger(con, champion, challenger)
    if challenger_version is not None:
        models[CHALLENGER] = _model_entry(con, artifacts_root, challenger_version)
    numeric = sorted({name for _, spec in models.values() for name in spec.roles.numeric})

    root = serving_dir(artifacts_root)
    staging = root / SNAPSHOTS_DIR / f".staging-{os.getpid()}"
    staging.mkdir(parents=True, exist_ok=True)
    features_file = staging / FEATURES_FILE
    latest = (f"SELECT * FROM {FEATURES_TABLE} QUALIFY row_number() OVER "
              f"(PARTITION BY {ID_COLUMN} ORDER BY {MONTH_COLUMN} DESC) = 1 ORDER BY {ID_COLUMN}")
    con.execute(f"COPY ({latest}) TO '{features_file.as_posix()}' (FORMAT parquet, COMPRESSION zstd)")
    rows, first, last = con.execute(
        f"SELECT count(*), CAST(min({MONTH_COLUMN}) AS VARCHAR), CAST(max({MONTH_COLUMN}) AS VARCHAR) "
        f"FROM read_parquet('{features_file.as_posix()}')").fetchone()
    described = {
        "models": {arm: entry for arm, (entry, _) in models.items()},
        "customers": int(rows),
        "feature_months": {"first": first, "last": last},
        "numeric_ranges": numeric_ranges(con, numeric),
        "features_sha256": hashlib.sha256(features_file.read_bytes()).hexdigest(),
    }
    snapshot_id = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]
    described = {"snapshot_id": snapshot_id, "features_file": f"{SNAPSHOTS_DIR}/{snapshot_id}/{FEATURES_FILE}",
                 **described}
    text = json.dumps(described, sort_keys=True, indent=2) + "\n"
    (staging / SNAPSHOT_FILE).write_text(text)
    final = root / SNAPSHOTS_DIR / snapshot_id
    if final.exists():  # the same snapshot again: its bytes are these
        import shutil

        shutil.rmtree(staging)
    else:
        os.replace(staging, final)
    pointer = pointer_path(artifacts_root)
    temporary = pointer.with_suffix(f".tmp-{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, pointer)
    _prune_snapshots(root / SNAPSHOTS_DIR, keep=snapshot_id)
    return described


def _prune_snapshots(folder: Path, keep: str) -> None:
    import shutil

    others = sorted((p for p in folder.iterdir() if p.is_dir() and p.name != keep and not p.name.startswith(".")),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[KEEP_SNAPSHOTS - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def read_pointer(artifacts_root: str | Path) -> dict:
    path = pointer_path(artifacts_root)
    if not path.is_file():
        raise ServingError(f"No serving snapshot at {path}: materialize ml/serving_snapshot (`churn run`)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ServingError(f"{path} is not valid JSON ({error}): rematerialize ml/serving_snapshot") from None


# -- routing ---------------------------------------------------------------------------


def routing_fraction(customer_id: str, salt: str) -> float:
    """A customer's stable position in [0, 1): the same id always lands in the same place
    (every worker, every restart), and ids spread uniformly."""
    digest = hashlib.sha256(f"{salt}\x00{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


# -- the state a request is answered from ----------------------------------------------------


@dataclass(frozen=True)
class FeatureField:
    """One feature a posted row must give: a categorical (its allowed levels) or a number (its range)."""

    name: str
    levels: tuple[str, ...] | None = None  # a categorical's levels; None for a number
    low: float | None = None
    high: float | None = None
    integral: bool = False  # an integer column in the warehouse (its values are shown without decimals)

    @property
    def categorical(self) -> bool:
        return self.levels is not None


def format_value(value: Any, integral: bool = False) -> str | None:
    """A feature value as the reasons show it (as ``ml.explanations`` does): numbers with 4
    significant digits (integers as integers), categories as their text, missing as None."""
    if hasattr(value, "item"):  # a numpy scalar, as a snapshot column holds it
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)) or type(value).__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if integral and float(value).is_integer():
        return str(int(value))
    return f"{float(value):.4g}"


@dataclass
class ServedModel:
    """One loaded model, its input matrix for every snapshot customer, and how it explains."""

    arm: str
    model: ChurnModel
    manifest_sha256: str
    # (customers x features) in the model's feature order; None when the model scores frames only.
    matrix: np.ndarray | None
    level_codes: dict[str, dict[str, float]]  # categorical -> level -> code

    @property
    def version(self) -> str:
        return str(self.model.version)

    @property
    def features(self) -> tuple[str, ...]:
        return self.model.feature_spec.roles.features

    def posted_matrix(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The model's input matrix of posted (validated) rows."""
        import numpy as np

        spec = self.model.feature_spec
        nan = float("nan")
        out = np.empty((len(rows), len(self.features)))
        for i, row in enumerate(rows):
            values = [self.level_codes[name].get(row.get(name), nan) if row.get(name) is not None else nan
                      for name in spec.roles.categorical]
            values += [nan if row.get(name) is None else float(row[name]) for name in spec.roles.numeric]
            out[i] = values
        return out

    def score(self, matrix: np.ndarray | None, frame: Callable[[], pd.DataFrame], reasons: bool,
              background: Callable[[], pd.DataFrame]) -> tuple[np.ndarray, Any]:
        """Calibrated probabilities and (with ``reasons``) the contributions of the rows, from
        the matrix, or from ``frame()`` for a model without a matrix path."""
        from churn_assets.training.model import apply_calibration

        model, candidate = self.model, self.model.candidate
        if matrix is not None:
            if not reasons:
                return model.predict_proba_matrix(matrix), None
            explained = candidate.explain_matrix(model, matrix)
            if explained is not None:
                contributions, raw = explained
                return apply_calibration(model.calibration, raw), contributions
        rows = frame()
        probabilities = model.predict_proba(rows)
        if not reasons:
            return probabilities, None
        from churn_assets.training.explain import explain

        contributions, _ = explain(model, rows, background=background())
        return probabilities, contributions


@dataclass
class ServingState:
    """Everything one answer needs, loaded together and swapped as one object."""

    snapshot: dict
    models: dict[str, ServedModel]
    row_of: dict[str, int]  # customer id -> snapshot row
    months: list[str]  # feature month of each snapshot row
    frame: pd.DataFrame  # the snapshot rows, as read
    fields: dict[str, FeatureField]  # what a posted row must give (both models' features)
    columns: dict[str, np.ndarray]  # the snapshot's value of each feature, by row (reasons show them)
    bands: RiskBands
    top_reasons: int
    loaded_at: float = 0.0
    # The pydantic models of posted rows for these features (scoring/service.py builds them):
    # in the state, so a request is validated and scored against the same models.
    request_model: Any = None
    batch_model: Any = None
    _background: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def champion(self) -> ServedModel:
        return self.models[CHAMPION]

    @property
    def challenger(self) -> ServedModel | None:
        return self.models.get(CHALLENGER)

    @property
    def snapshot_id(self) -> str:
        return self.snapshot["snapshot_id"]

    def row(self, customer_id: str) -> int:
        try:
            return self.row_of[customer_id]
        except KeyError:
            raise UnknownCustomerError(customer_id) from None

    def background(self) -> pd.DataFrame:
        """A few seeded snapshot rows: the permutation fallback's background."""
        if self._background is None:
            self._background = self.frame.sample(n=min(10, len(self.frame)), random_state=0)
        return self._background

    def snapshot_values(self, row: int) -> Callable[[str], Any]:
        columns = self.columns
        return lambda name: columns[name][row]

    def answer(self, served: ServedModel, *, rows: Sequence[int] | None = None,
               posted: Sequence[Mapping[str, Any]] | None = None, reasons: bool) -> list[dict]:
        """``served``'s answers for snapshot rows or posted rows: probability, band and (with
        ``reasons``) the top reasons up and down with the feature values."""
        import numpy as np
        import pandas as pd

        if rows is not None:
            matrix = served.matrix[list(rows)] if served.matrix is not None else None

            def frame():
                return self.frame.iloc[list(rows)].reset_index(drop=True)

            def values(i: int):
                return self.snapshot_values(rows[i])
        else:
            matrix = served.posted_matrix(posted) if served.matrix is not None else None

            def frame():
                return pd.DataFrame([{name: row.get(name) for name in served.features} for row in posted])

            def values(i: int):
                return posted[i].get
        probabilities, contributions = served.score(matrix, frame, reasons, self.background)
        answers = []
        for i, probability in enumerate(np.asarray(probabilities, dtype=np.float64)):
            answer = {"churn_probability": float(probability), "risk_band": self.bands.of(float(probability)),
                      "model_version": served.version}
            if contributions is not None:
                answer["reasons"] = top_reasons_of(contributions.values[i], contributions.feature_names,
                                                   values(i), self.fields, self.top_reasons)
                answer["explanation_method"] = served.model.candidate.explanation_method(served.model)
            answers.append(answer)
        return answers


def top_reasons_of(values: np.ndarray, names: Sequence[str], value_of: Callable[[str], Any],
                   fields: Mapping[str, FeatureField], k: int) -> dict[str, list[dict]]:
    """The ``k`` features pushing one row's risk up and down the most (only those that push
    that way), strongest first, with the row's value of each: ``top_reasons`` for one row."""
    import numpy as np

    from churn_assets.training.explain import DECREASES_RISK, INCREASES_RISK

    out = {}
    for direction, signed in ((INCREASES_RISK, values), (DECREASES_RISK, -values)):
        # A stable sort on the negated values: ties keep the feature order, as top_reasons does.
        order = np.argsort(-signed, kind="stable")[:k]
        out[direction] = [
            {"feature": names[j], "value": format_value(value_of(names[j]), fields[names[j]].integral),
             "shap_value": float(values[j])}
            for j in order if signed[j] > 0
        ]
    return out


def _fields(models: Sequence[ChurnModel], ranges: Mapping[str, Sequence[float | None]], frame: pd.DataFrame,
            slack: float) -> dict[str, FeatureField]:
    import pandas as pd

    fields: dict[str, FeatureField] = {}
    for model in models:
        spec = model.feature_spec
        for name in spec.roles.categorical:
            levels = tuple(spec.categories[name])
            known = fields.get(name)
            if known is not None and not known.categorical:
                raise ServingError(f"the champion and the challenger disagree on feature {name} (category or number)")
            merged = tuple(sorted(set(levels) | set(known.levels))) if known else levels
            fields[name] = FeatureField(name, levels=merged)
        for name in spec.roles.numeric:
            known = fields.get(name)
            if known is not None and known.categorical:
                raise ServingError(f"the champion and the challenger disagree on feature {name} (category or number)")
            low, high = (ranges.get(name) or [None, None])[:2]
            if low is not None and high is not None:
                width = (high - low) or max(abs(high), 1.0)
                low, high = (max(low - slack * width, 0.0) if low >= 0 else low - slack * width), high + slack * width
            integral = name in frame.columns and pd.api.types.is_integer_dtype(frame[name].dtype)
            fields[name] = FeatureField(name, low=low, high=high, integral=integral)
    return fields


def _served_model(arm: str, model: ChurnModel, manifest_sha256: str, frame: pd.DataFrame) -> ServedModel:
    import numpy as np

    spec = model.feature_spec
    missing = [name for name in spec.roles.features if name not in frame.columns]
    if missing:
        raise ServingError(f"the snapshot lacks feature column(s) {', '.join(missing)} of {model.version}")
    model.use_threads(1)
    level_codes = {name: {level: float(code) for code, level in enumerate(spec.categories[name])}
                   for name in spec.roles.categorical}
    matrix = None
    if model.matrix_dtype is not None:
        features = model.features(frame)
        columns = []
        for name in spec.roles.categorical:
            codes = features[name].cat.codes.to_numpy()
            columns.append(np.where(codes < 0, np.nan, codes.astype(np.float64)))
        columns += [features[name].to_numpy(dtype=np.float64) for name in spec.roles.numeric]
        matrix = np.ascontiguousarray(np.column_stack(columns)) if columns else np.empty((len(frame), 0))
    return ServedModel(arm, model, manifest_sha256, matrix, level_codes)


def load_state(artifacts_root: str | Path, policy: ServingPolicy, bands: RiskBands,
               pointer: dict | None = None) -> ServingState:
    """The state described by ``current.json`` (or ``pointer``): both models loaded and verified
    against the recorded hashes, the snapshot read, each model's matrix built."""
    import time

    import pandas as pd

    from churn_assets.training.registry import load_model_folder, models_root

    pointer = pointer or read_pointer(artifacts_root)
    path = serving_dir(artifacts_root) / pointer["features_file"]
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ServingError(f"cannot read the snapshot {path}: {error.strerror}") from None
    if hashlib.sha256(data).hexdigest() != pointer["features_sha256"]:
        raise ServingError(f"{path} does not match its recorded SHA-256: rematerialize ml/serving_snapshot")
    import io

    frame = pd.read_parquet(io.BytesIO(data))
    models: dict[str, ServedModel] = {}
    for arm, entry in pointer["models"].items():
        version = entry["version"]
        model = load_model_folder(models_root(artifacts_root) / version, version, entry["manifest_sha256"])
        models[arm] = _served_model(arm, model, entry["manifest_sha256"], frame)
    ids = frame[ID_COLUMN].astype(str).tolist()
    fields = _fields([m.model for m in models.values()], pointer.get("numeric_ranges", {}), frame,
                     policy.numeric_range_slack)
    return ServingState(
        snapshot=pointer, models=models, row_of={customer: i for i, customer in enumerate(ids)},
        months=pd.to_datetime(frame[MONTH_COLUMN]).dt.strftime("%Y-%m-%d").tolist(), frame=frame,
        fields=fields, columns={name: frame[name].to_numpy() for name in fields},
        bands=bands, top_reasons=policy.top_reasons, loaded_at=time.time())
