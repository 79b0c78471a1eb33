"""The churn platform's Dagster code location (``churn_assets.definitions:defs``)."""

import os

# XGBoost, LightGBM and scikit-learn run on GNU OpenMP, whose threads spin while they wait at
# each barrier. On a machine whose cores are busy with other work (a laptop, a shared CI box)
# a spinning thread holds the core its descheduled peer needs, and every boosting round waits
# for the scheduler: 200 XGBoost rounds on the demo's data took 56 s wall / 31 CPU-s at load 5
# with spinning, 11 s / 5.8 CPU-s with passive waiting. Set before any of them is imported; an
# explicit OMP_WAIT_POLICY in the environment wins. Results do not depend on it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
