"""What ``churn serve``'s uvicorn workers build: the HTTP service for the active project
(``$CHURN_PROJECT``, ``$CHURN_HOME``, the policy file), with the command line's settings."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI


def app_from_environment() -> FastAPI:
    from churn_assets.core.paths import artifacts_dir
    from churn_assets.core.reports import reports_root
    from churn_assets.core.warehouse import Warehouse
    from churn_assets.policies import load_policies
    from churn_assets.scoring.service import SERVE_OVERRIDES_ENV, create_app, serving_with

    policies = load_policies()
    serving = serving_with(policies.serving, json.loads(os.environ.get(SERVE_OVERRIDES_ENV) or "{}"))
    return create_app(serving, policies.scoring.bands(), artifacts_dir(), Warehouse(),
                      reports_root=reports_root(artifacts_dir()))
