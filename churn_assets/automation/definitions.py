"""The automation layer's Definitions: jobs, the monthly scoring schedule and the sensors."""

import dagster as dg

from churn_assets.automation.jobs import jobs, schedules, sensors

defs = dg.Definitions(jobs=jobs, schedules=schedules, sensors=sensors)
