"""The core layer's Definitions: the resources every other layer uses."""

import dagster as dg

from churn_assets.core.warehouse import ArtifactStore, Warehouse

defs = dg.Definitions(resources={"warehouse": Warehouse(), "artifacts": ArtifactStore()})
