"""Every setting a user may change, as one schema: one typed policy per concern, each defined
beside the code it governs and exposed as one Dagster resource (``<section>_policy``).

=============  ==================================================  =========================
section        governs                                             defined in
=============  ==================================================  =========================
project        the project's name and first monthly partition      core/project.py
engine         duckdb or spark, and the Spark session's settings   core/engine.py
source         a dataset project's export file and its months      source/export.py
training       column roles, split, candidates and their params    training/train.py
tuning         the tuned boosters' budget and trial selection      training/tuning.py
promotion      margin, significance and bootstrap of the gate      training/promotion.py
evaluation     business assumptions, slices, evaluation checks     evaluation/metrics.py
scoring        risk bands, scoring batch size                      scoring/batch.py
serving        the HTTP service: address, limits, A/B and shadow   scoring/serving.py
drift          drift measurement and its warn / error levels       monitoring/drift.py
retraining     decay level, when a new model is due                monitoring/retraining.py
=============  ==================================================  =========================

A YAML file with any of these sections (``drift: {psi_error: 0.4}``) replaces the defaults
it names (``engine: spark`` is short for ``engine: {name: spark}``); unknown sections or keys and values of the wrong type are refused with the key
named. A dataset project's ``churn.yaml`` is such a file (``churn init`` writes every
section); ``$CHURN_POLICIES`` names another one to use instead. The code location and the CLI
read the same file, so assets, checks, sensors and the summary agree.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from churn_assets.core.engine import EnginePolicy, engine_section
from churn_assets.core.project import Project, ProjectSection, active_project
from churn_assets.evaluation.metrics import EvaluationPolicy
from churn_assets.monitoring.drift import DriftPolicy
from churn_assets.monitoring.retraining import RetrainingPolicy
from churn_assets.scoring.batch import ScoringPolicy
from churn_assets.scoring.serving import ServingPolicy
from churn_assets.source.export import SourcePolicy
from churn_assets.training.promotion import PromotionPolicy
from churn_assets.training.train import TrainingPolicy
from churn_assets.training.tuning import TuningPolicy

POLICY_FILE_ENV = "CHURN_POLICIES"


class PolicyError(ValueError):
    """A policy file that cannot be used as it is; the message names the file and the key."""


class Policies(BaseModel):
    """The whole set of policies; each field is one Dagster resource, ``<field>_policy``."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    project: ProjectSection = Field(default_factory=ProjectSection)
    engine: EnginePolicy = Field(default_factory=EnginePolicy)
    source: SourcePolicy = Field(default_factory=SourcePolicy)
    training: TrainingPolicy = Field(default_factory=TrainingPolicy)
    tuning: TuningPolicy = Field(default_factory=TuningPolicy)
    promotion: PromotionPolicy = Field(default_factory=PromotionPolicy)
    evaluation: EvaluationPolicy = Field(default_factory=EvaluationPolicy)
    scoring: ScoringPolicy = Field(default_factory=ScoringPolicy)
    serving: ServingPolicy = Field(default_factory=ServingPolicy)
    drift: DriftPolicy = Field(default_factory=DriftPolicy)
    retraining: RetrainingPolicy = Field(default_factory=RetrainingPolicy)

    def resources(self) -> dict[str, Any]:
        # project: is read when the code location is built (partitions), not by assets.
        return {f"{name}_policy": getattr(self, name) for name in type(self).model_fields if name != "project"}

    def check(self) -> Policies:
        """Cross-field rules each policy enforces when it is used, run once up front."""
        self.engine.check()
        self.source.check()
        self.training.validate_names()
        self.tuning.settings(self.training.split.seed)
        self.evaluation.assumptions()
        self.scoring.bands()
        self.drift.thresholds()
        self.drift.settings()
        self.retraining.decay()
        return self

    @classmethod
    def from_mapping(cls, values: Any, source: str = "policies") -> Policies:
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise PolicyError(f"{source}: expected a mapping of policy sections, got {type(values).__name__}")
        values = _dates_as_text(values)
        if "engine" in values:
            values = {**values, "engine": engine_section(values["engine"])}
        # Dagster resources accept keys they do not know; a misspelt one would silently
        # leave its default in force.
        unknown = _unknown_key(cls, values)
        if unknown:
            raise PolicyError(f"{source}: {unknown}: Extra inputs are not permitted (not a policy setting)")
        try:
            policies = cls.model_validate(values)
        except ValidationError as error:
            first = error.errors()[0]
            key = ".".join(str(part) for part in first["loc"])
            raise PolicyError(f"{source}: {key}: {first['msg']} (got {first.get('input')!r})") from None
        try:
            return policies.check()
        except (ValueError, KeyError) as error:
            raise PolicyError(f"{source}: {error}") from None


def _dates_as_text(value: Any) -> Any:
    """YAML reads ``2024-06-01`` as a date; every month setting is text ('2024-06' or '2024-06-01')."""
    import datetime as dt

    if isinstance(value, dict):
        return {key: _dates_as_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_dates_as_text(item) for item in value]
    return value.isoformat() if isinstance(value, dt.date) else value


def _unknown_key(model: type[BaseModel], values: dict, prefix: str = "") -> str | None:
    """The first key of ``values`` (nested sections included) that ``model`` has no field for."""
    for key, value in values.items():
        field = model.model_fields.get(key)
        if field is None:
            return f"{prefix}{key}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(value, dict):
            found = _unknown_key(annotation, value, f"{prefix}{key}.")
            if found:
                return found
    return None


def policy_file(project: Project | None = None) -> Path | None:
    """``$CHURN_POLICIES``, else the (active) dataset project's churn.yaml (None: built-in defaults)."""
    value = os.environ.get(POLICY_FILE_ENV)
    return Path(value).expanduser() if value else (project or active_project()).config_file


def load_policies(path: str | Path | None = None) -> Policies:
    """The policies in ``path`` (default: ``policy_file()``; none: every default)."""
    path = Path(path) if path else policy_file()
    if path is None:
        return Policies().check()
    import yaml

    if not path.is_file():
        raise PolicyError(f"Policy file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise PolicyError(f"{path}: not valid YAML: {error}") from None
    return Policies.from_mapping(values, source=str(path))


def _yaml_scalar(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True).strip().removesuffix(
        "\n...").removesuffix("...").strip()


def _section_lines(model: BaseModel, indent: str) -> list[str]:
    lines = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if info.description:
            lines.append(f"{indent}# {info.description}")
        if isinstance(value, BaseModel):
            lines.append(f"{indent}{name}:")
            lines += _section_lines(value, indent + "  ")
        else:
            lines.append(f"{indent}{name}: {_yaml_scalar(value)}")
    return lines


def policies_yaml(policies: Policies, header: str = "") -> str:
    """Every setting of ``policies`` as a commented YAML document that ``load_policies`` reads back."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for name, section in policies:
        import textwrap

        summary = " ".join((type(section).__doc__ or name).strip().split("\n\n")[0].split())
        lines += ["", *(f"# {line}" for line in textwrap.wrap(summary, 98)), f"{name}:"]
        lines += _section_lines(section, "  ")
    return "\n".join(lines).lstrip("\n") + "\n"
