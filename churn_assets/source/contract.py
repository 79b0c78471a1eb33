"""The raw data contract: the tables a monthly delivery consists of, column by column.

Both the embedded synthetic generator and file ingestion produce exactly these columns;
the raw layer validates every delivery against them before anything reaches DuckDB.
Kept free of heavy imports: the code location imports it at load time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

YES_NO = ("Yes", "No")
CONTRACTS = ("Month-to-month", "One year", "Two year")
INTERNET_SERVICES = ("DSL", "Fiber optic", "No")
PAYMENT_METHODS = (
    "Electronic check",
    "Mailed check",
    "Bank transfer (automatic)",
    "Credit card (automatic)",
)
MULTIPLE_LINES = ("Yes", "No", "No phone service")
INTERNET_ADDON = ("Yes", "No", "No internet service")
GENDERS = ("Female", "Male")
EVENT_TYPES = ("support_call", "late_payment", "outage", "plan_change", "usage")
CANCEL_REASONS = ("price", "competitor", "service", "moved", "other")

INTERNET_ADDON_COLUMNS = (
    "online_security",
    "online_backup",
    "device_protection",
    "tech_support",
    "streaming_tv",
    "streaming_movies",
)


@dataclass(frozen=True)
class Column:
    name: str
    # DuckDB type of the column in the raw layer.
    dtype: str
    description: str
    nullable: bool = False
    # Closed set of allowed values for categorical columns.
    categories: tuple[str, ...] | None = None
    # Inclusive numeric bounds, where a value outside them is certainly wrong.
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    # Columns that identify one row within a monthly delivery.
    key: tuple[str, ...]
    # The column that places a row in time (used for checks and documentation).
    time_column: str
    extra: dict = field(default_factory=dict)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


CUSTOMERS = Table(
    name="customers",
    description=(
        "One row per customer, delivered in the month the customer first appears "
        "(the initial base is delivered with the first month)."
    ),
    key=("customer_id",),
    time_column="signup_date",
    columns=(
        Column("customer_id", "VARCHAR", "Stable customer identifier."),
        Column("signup_date", "DATE", "Date the subscription started."),
        Column("gender", "VARCHAR", "Customer gender as recorded.", categories=GENDERS),
        Column("senior_citizen", "BOOLEAN", "Customer is 65 or older."),
        Column("partner", "BOOLEAN", "Customer has a partner."),
        Column("dependents", "BOOLEAN", "Customer has dependents."),
    ),
)

SUBSCRIPTIONS = Table(
    name="subscriptions",
    description="Monthly snapshot: one row per active customer at the end of the month.",
    key=("customer_id", "snapshot_month"),
    time_column="snapshot_month",
    columns=(
        Column("customer_id", "VARCHAR", "Customer identifier (see customers)."),
        Column("snapshot_month", "DATE", "First day of the month this snapshot describes."),
        Column("contract", "VARCHAR", "Contract term.", categories=CONTRACTS),
        Column("phone_service", "BOOLEAN", "Has phone service."),
        Column("multiple_lines", "VARCHAR", "Multiple phone lines.", categories=MULTIPLE_LINES),
        Column("internet_service", "VARCHAR", "Internet product.", categories=INTERNET_SERVICES),
        *(
            Column(name, "VARCHAR", f"{name.replace('_', ' ').capitalize()} add-on.",
                   categories=INTERNET_ADDON)
            for name in INTERNET_ADDON_COLUMNS
        ),
        Column("paperless_billing", "BOOLEAN", "Receives paperless bills."),
        Column("payment_method", "VARCHAR", "How the customer pays.", categories=PAYMENT_METHODS),
        Column("monthly_charges", "DOUBLE", "Amount billed this month.", minimum=0, maximum=10_000),
        Column(
            "total_charges", "DOUBLE",
            "Amount billed since signup, up to and including this month. "
            "NULL when not yet billed (the Telco file leaves it blank for new customers).",
            nullable=True, minimum=0,
        ),
    ),
)

EVENTS = Table(
    name="events",
    description=(
        "Timestamped customer events: support calls, late payments, outages, plan "
        "changes and monthly usage records."
    ),
    key=("event_id",),
    time_column="event_time",
    columns=(
        Column("event_id", "VARCHAR", "Unique event identifier."),
        Column("customer_id", "VARCHAR", "Customer identifier (see customers)."),
        Column("event_time", "TIMESTAMP", "When the event happened."),
        Column("event_type", "VARCHAR", "Kind of event.", categories=EVENT_TYPES),
        Column(
            "value", "DOUBLE",
            "Magnitude: call minutes, overdue amount, outage hours, change in monthly "
            "charges, or GB used.",
            nullable=True,
        ),
    ),
)

CANCELLATIONS = Table(
    name="cancellations",
    description="One row per cancelled subscription.",
    key=("customer_id", "cancel_date"),
    time_column="cancel_date",
    columns=(
        Column("customer_id", "VARCHAR", "Customer identifier (see customers)."),
        Column("cancel_date", "DATE", "Date the subscription ended."),
        Column("reason", "VARCHAR", "Stated reason.", categories=CANCEL_REASONS, nullable=True),
    ),
)

# The schema the raw tables live in, on either engine.
RAW_SCHEMA = "raw"

RAW_TABLES: dict[str, Table] = {
    t.name: t for t in (CUSTOMERS, SUBSCRIPTIONS, EVENTS, CANCELLATIONS)
}

# Every raw table carries the month of the delivery it arrived in; it is the
# partition column of the raw layer (the month a file describes, as YYYY-MM-01).
DELIVERY_MONTH = Column(
    "delivery_month", "DATE", "First day of the monthly delivery this row arrived in."
)
