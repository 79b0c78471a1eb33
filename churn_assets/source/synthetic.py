"""The embedded data source: a seeded, vectorised simulation of a telecom subscriber base.

It produces monthly deliveries that follow the raw contract (``contract.py``) exactly:
customers, end-of-month subscription snapshots, timestamped events and cancellations.

How realistic it is, and why:

* Marginals of the initial base are calibrated on the public IBM Telco churn sample
  (7,043 customers): demographic shares, internet service given age, contract given
  internet service, add-on take-up given internet service and contract, payment method
  given contract, paperless billing given payment method, and tenure given contract
  (the Telco file is a stock of surviving customers, so long contracts carry long
  tenures). Telco prices are an exact list price plus about $1 of noise: phone $20,
  extra lines $5, DSL $25, fibre $50, each protection/support add-on $5, each streaming
  add-on $10; the same price list is used here, so the charge distribution matches.
* Cancellation is a monthly logistic hazard. Its drivers are the ones the Telco data and
  the churn literature point to: month-to-month contract, short tenure, fibre without
  tech support, electronic check, paperless billing, senior, high charges, support
  calls, late payments and outages in the trailing months, involuntary price rises
  (promotion expiry, the configured drift event) and a latent dissatisfaction that
  evolves month to month. The latent part is visible only through its symptoms (more
  support calls, falling usage, downgrades), which keeps a point-in-time model at a
  realistic ROC-AUC (about 0.8-0.9) rather than near 1.0.
* Events depend on customer state: fibre has more outages, electronic check more late
  payments, fibre without tech support more support calls, dissatisfied customers call
  more and use less. Contracts are upgraded, expire and revert to month-to-month,
  services are added and dropped; each of these is a ``plan_change`` event whose value
  is the change in monthly charges.
* Time: new signups every month (mostly month-to-month, a quarter on a six-month
  promotion), January churn and September signup peaks, and an optional price rise for
  one internet segment from ``drift_month`` on, so drift monitoring has something real
  to find.

Calibration target for the churn level: about 26.5% of all customers ever observed
(the initial base plus every signup) cancel within a 24-month window, the churn share of
the Telco sample. That is a monthly cancellation rate of roughly 1.5-2% of the active
base, typical of a consumer telecom with a large month-to-month book.

Label consistency: a customer who cancels in month M has snapshots up to month M-1 and
none from M on, and nobody cancels in the month they first appear. So "a snapshot in M
and a cancellation dated in M+1" is exactly "churned in M+1", the shared label rule.

Memory stays flat in the number of months: the simulation keeps per-customer state
arrays and three months of event counts, and yields one month of rows at a time.
"""

from __future__ import annotations


from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

from churn_assets.core.partitions import month_key
from churn_assets.core.project import current_month
from churn_assets.source.contract import (
    CANCEL_REASONS,
    CONTRACTS,
    EVENT_TYPES,
    INTERNET_ADDON_COLUMNS,
    INTERNET_SERVICES,
    PAYMENT_METHODS,
)

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    import pandas as pd

# ---------------------------------------------------------------------------------------
# Calibration constants, measured on the IBM Telco sample (see the module docstring).
# Category order follows contract.py: INTERNET_SERVICES = DSL, Fiber optic, No;
# CONTRACTS = Month-to-month, One year, Two year; PAYMENT_METHODS = Electronic check,
# Mailed check, Bank transfer (automatic), Credit card (automatic).
# ---------------------------------------------------------------------------------------
SENIOR_SHARE = 0.162
MALE_SHARE = 0.505
PARTNER_SHARE = 0.483
# Dependents given partner (Telco: 51% with a partner, 10% without); seniors rarely have
# dependents at home, and the 1.14 keeps the overall share at Telco's 30%.
DEPENDENTS_GIVEN_PARTNER = (0.099, 0.514)
DEPENDENTS_SENIOR_FACTOR = 0.3
DEPENDENTS_NON_SENIOR_FACTOR = 1.14
INTERNET_GIVEN_SENIOR = ((0.366, 0.384, 0.250), (0.227, 0.728, 0.045))
CONTRACT_GIVEN_INTERNET = ((0.505, 0.236, 0.259), (0.687, 0.174, 0.139), (0.343, 0.239, 0.418))
PHONE_GIVEN_INTERNET = (0.718, 1.0, 1.0)
MULTIPLE_LINES_GIVEN_INTERNET_CONTRACT = ((0.26, 0.43, 0.62), (0.57, 0.69, 0.82), (0.09, 0.18, 0.36))
# Take-up of each internet add-on, [DSL, Fiber optic] x contract, in INTERNET_ADDON_COLUMNS order.
ADDON_GIVEN_INTERNET_CONTRACT = {
    "online_security": ((0.30, 0.58, 0.77), (0.17, 0.41, 0.61)),
    "online_backup": ((0.30, 0.49, 0.69), (0.33, 0.64, 0.72)),
    "device_protection": ((0.23, 0.54, 0.76), (0.32, 0.63, 0.79)),
    "tech_support": ((0.28, 0.57, 0.82), (0.16, 0.42, 0.72)),
    "streaming_tv": ((0.24, 0.45, 0.64), (0.47, 0.74, 0.82)),
    "streaming_movies": ((0.25, 0.45, 0.66), (0.47, 0.75, 0.82)),
}
PAYMENT_GIVEN_CONTRACT = (
    (0.477, 0.230, 0.152, 0.141),
    (0.236, 0.229, 0.265, 0.270),
    (0.099, 0.225, 0.333, 0.343),
)
PAPERLESS_GIVEN_PAYMENT = (0.737, 0.407, 0.577, 0.580)
# Tenure (months) of the Telco stock given contract, in bins 1-6, 7-12, ..., 61-66, 67-71, 72.
TENURE_BIN_EDGES = (1, 7, 13, 19, 25, 31, 37, 43, 49, 55, 61, 67, 72, 73)
TENURE_GIVEN_CONTRACT = (
    (0.365, 0.150, 0.108, 0.082, 0.068, 0.057, 0.046, 0.036, 0.032, 0.029, 0.019, 0.009, 0.001),
    (0.026, 0.058, 0.061, 0.073, 0.086, 0.084, 0.090, 0.092, 0.118, 0.100, 0.108, 0.093, 0.012),
    (0.017, 0.023, 0.024, 0.029, 0.024, 0.033, 0.041, 0.064, 0.073, 0.091, 0.136, 0.243, 0.202),
)
# Telco's list prices (a least-squares fit recovers them to the cent, residual sd $1.02).
PRICE_PHONE, PRICE_EXTRA_LINES = 20.0, 5.0
PRICE_INTERNET = (25.0, 50.0, 0.0)
PRICE_ADDON = {name: (10.0 if name.startswith("streaming") else 5.0) for name in INTERNET_ADDON_COLUMNS}
PRICE_NOISE_SD = 1.0
# Telco's total_charges / (monthly_charges * tenure) has sd 0.05: past prices differed.
TOTAL_CHARGES_HISTORY_SD = 0.05

# New signups: mostly month-to-month (Telco customers with tenure <= 6 are 95% on it),
# fewer partners; a share starts on a promotional discount that later expires.
NEW_SIGNUP_CONTRACT_WEIGHT = (1.0, 0.25, 0.15)
NEW_SIGNUP_PARTNER_SHARE = 0.30
PROMOTION_SHARE = 0.25
PROMOTION_DISCOUNT = 0.15
PROMOTION_MONTHS = 6
# Relative size of new signups by calendar month (September back-to-school peak,
# quiet start of the year), and churn hazard shift by calendar month (January peak
# after the holidays, quiet December).
SIGNUP_SEASONALITY = (0.85, 0.90, 1.00, 1.00, 1.00, 0.95, 0.95, 1.10, 1.40, 1.10, 1.00, 0.90)
CHURN_SEASONALITY = (0.30, 0.10, 0.00, 0.00, 0.00, 0.00, 0.05, 0.05, 0.00, 0.00, -0.05, -0.15)

CONTRACT_TERM_MONTHS = (0, 12, 24)
DAY_SECONDS = 86_400
TRAILING_MONTHS = 3

_MONTH_TO_MONTH, _ONE_YEAR, _TWO_YEAR = 0, 1, 2
_DSL, _FIBER, _NO_INTERNET = 0, 1, 2
_ELECTRONIC_CHECK, _MAILED_CHECK = 0, 1
_SUPPORT_CALL, _LATE_PAYMENT, _OUTAGE, _PLAN_CHANGE, _USAGE = range(5)
_SECURITY, _BACKUP, _PROTECTION, _TECH_SUPPORT, _TV, _MOVIES = range(6)


def _add_months(month: str, count: int) -> str:
    year, index = divmod(int(month[:4]) * 12 + int(month[5:7]) - 1 + count, 12)
    return f"{year:04d}-{index + 1:02d}-01"


def _months_between(first: str, last: str) -> int:
    return (int(last[:4]) * 12 + int(last[5:7])) - (int(first[:4]) * 12 + int(first[5:7]))


@dataclass(frozen=True)
class GeneratorConfig:
    """What to simulate. The defaults give the demo data set (20k customers, two years)."""

    customers: int = 20_000
    """Size of the initial base (delivered with the first month); signups come on top."""
    months: int = 24
    start_month: str = "2024-01"
    seed: int = 42
    drift_month: str | None = "2025-07"
    """From this month on the drift segment pays more; None switches the drift off.
    A month beyond the generated window simply never happens (no error)."""
    drift_segment: str = "Fiber optic"
    drift_price_increase: float = 0.15
    """Relative rise of monthly charges in the drift segment (0.15 = +15%)."""
    signup_rate: float = 0.02
    """New signups per month as a share of the active base (before seasonality)."""
    seasonality: float = 1.0
    """Scales the calendar effects on signups and churn; 0 switches them off."""
    churn_shift: float = 0.0
    """Added to the logit of the monthly cancellation hazard (negative: less churn)."""

    def __post_init__(self) -> None:
        if not isinstance(self.customers, int) or self.customers < 1:
            raise ValueError(f"customers must be a positive integer, got {self.customers!r}")
        if not isinstance(self.months, int) or self.months < 1:
            raise ValueError(f"months must be a positive integer, got {self.months!r}")
        start = month_key(self.start_month)
        last = _add_months(start, self.months - 1)
        current = current_month()
        if last > current:
            fit = _months_between(start, current) + 1
            raise ValueError(
                f"{self.months} months from {start[:7]} would reach {last[:7]}, after the current month "
                f"{current[:7]}: at most {max(fit, 0)} fit (or choose an earlier start month)"
            )
        if self.drift_month is not None:
            drift = month_key(self.drift_month)
            if drift <= start:
                raise ValueError(
                    f"drift_month {self.drift_month} must come after start_month "
                    f"{self.start_month}: the rise is measured against the month before it"
                )
        if self.drift_segment not in INTERNET_SERVICES:
            raise ValueError(
                f"drift_segment {self.drift_segment!r} is not an internet service; "
                f"allowed: {list(INTERNET_SERVICES)}"
            )
        if not -0.9 < self.drift_price_increase < 10:
            raise ValueError(
                f"drift_price_increase {self.drift_price_increase} is not a plausible "
                "relative change (expected between -0.9 and 10)"
            )
        if not 0 <= self.signup_rate <= 1:
            raise ValueError(f"signup_rate must be within [0, 1], got {self.signup_rate}")
        if self.seasonality < 0:
            raise ValueError(f"seasonality must be >= 0, got {self.seasonality}")

    @property
    def drift_index(self) -> int | None:
        """Month number (0 = start_month) of the drift event, or None."""
        if self.drift_month is None:
            return None
        return _month_number(self.drift_month) - _month_number(self.start_month)


def partition_keys(config: GeneratorConfig) -> list[str]:
    """The partition keys ('YYYY-MM-01') that ``generate_months(config)`` yields, in order."""
    first = _month_number(config.start_month)
    return [_month_text(first + m) for m in range(config.months)]


def generate_months(config: GeneratorConfig) -> Iterator[tuple[str, dict[str, pd.DataFrame]]]:
    """Yield ``(partition key 'YYYY-MM-01', {table name: DataFrame})`` month by month.

    Streaming: only the population's state is kept between months, so memory stays flat
    in the number of months. The same config always yields identical frames.
    """
    simulation = _Simulation(config)
    for m in range(config.months):
        yield partition_keys(config)[m], simulation.step(m)


def refuse_partial_replacement(source: Path, config: GeneratorConfig) -> None:
    """Raise FileExistsError if ``source`` holds months that regenerating would not replace."""
    from churn_assets.source.deliveries import available_months

    keys = partition_keys(config)
    stale = [month[:7] for month in available_months(source) if month not in keys]
    if stale:
        raise FileExistsError(
            f"{source} holds deliveries for {', '.join(stale)}, which a regenerated "
            f"{keys[0][:7]}..{keys[-1][:7]} source would not replace: they would mix with "
            "the new data. Remove those month folders (and use a fresh CHURN_HOME, since "
            "the warehouse holds them too), or generate a range that covers them."
        )


def write_source(
    source: Path,
    config: GeneratorConfig,
    *,
    replace: bool = False,
    progress: Callable[[str], None] | None = None,
    validate: bool = False,
) -> list[str]:
    """Generate every month and write it as a delivery under ``source``; returns the keys.

    Each month is written atomically by ``deliveries.write_delivery``. If a month's
    delivery already exists and ``replace`` is false, its FileExistsError propagates
    (months written before it stay; nothing is skipped silently). With ``replace``, months
    already delivered that the new configuration does not generate are refused up front:
    they would stay and mix two generations in the warehouse. The generator's output
    is contract-conformant by construction and the raw layer validates every delivery
    when it loads it, so ``validate`` (re-check before writing) is off by default.
    """
    from churn_assets.source.deliveries import delivery_dir, write_delivery

    keys = partition_keys(config)
    if replace:
        refuse_partial_replacement(source, config)
    else:
        # Fail before hours of generation, not after: the first clash is the one reported.
        for key in keys:
            if delivery_dir(source, key).exists():
                raise FileExistsError(
                    f"A delivery for {key[:7]} already exists at {delivery_dir(source, key)}"
                )
    written: list[str] = []
    for key, frames in generate_months(config):
        write_delivery(source, key, frames, replace=replace, validate=validate)
        written.append(key)
        if progress is not None:
            progress(
                f"{key[:7]}: {len(frames['subscriptions']):,} active, "
                f"{len(frames['customers']):,} new customers, "
                f"{len(frames['cancellations']):,} cancellations, {len(frames['events']):,} events"
            )
    return written


# ---------------------------------------------------------------------------------------
# Implementation
# ---------------------------------------------------------------------------------------


def _month_number(value: str) -> int:
    key = month_key(value)
    return int(key[:4]) * 12 + int(key[5:7]) - 1


def _month_text(number: int) -> str:
    return f"{number // 12:04d}-{number % 12 + 1:02d}-01"


def _choice(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One categorical draw per row of ``probabilities`` (rows need not be normalised)."""
    import numpy as np

    cumulative = np.cumsum(probabilities, axis=1)
    cumulative /= cumulative[:, -1:]
    u = rng.random(len(probabilities))[:, None]
    return np.minimum((u > cumulative).sum(axis=1), probabilities.shape[1] - 1).astype(np.int8)


def _ids(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    """Object array of ids like 'C0000042' built without a Python loop per row."""
    import numpy as np

    numbers = np.asarray(numbers, dtype=np.int64)
    width = max(width, len(str(int(numbers.max())))) if len(numbers) else width
    chars = np.empty((len(numbers), width + 1), dtype=np.uint8)
    chars[:, 0] = ord(prefix)
    rest = numbers.copy()
    for position in range(width, 0, -1):
        chars[:, position] = rest % 10 + ord("0")
        rest //= 10
    return chars.view(f"S{width + 1}").ravel().astype(f"U{width + 1}").astype(object)


class _Simulation:
    """Per-customer state arrays (one slot per customer ever seen) and the monthly step."""

    def __init__(self, config: GeneratorConfig) -> None:
        import numpy as np

        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self.first_month = _month_number(config.start_month)
        self.drift_segment = INTERNET_SERVICES.index(config.drift_segment)
        self.size = 0
        self.capacity = 0
        self.next_event = 1
        self.arrays: dict[str, np.ndarray] = {}
        self._specs = {
            "customer_id": object,
            "signup_day": np.int32,  # days since 1970-01-01
            "signup_month": np.int32,  # month number, see _month_number
            "male": bool, "senior": bool, "partner": bool, "dependents": bool,
            "contract": np.int8, "contract_age": np.int16,
            "phone": bool, "multiple_lines": bool, "internet": np.int8,
            "paperless": bool, "payment": np.int8,
            "price_noise": np.float32, "price_factor": np.float64,
            "promotion_end": np.int32,  # month number the promotion expires, -1 none
            "total_charges": np.float64,
            "dissatisfaction": np.float32,
            "active": bool,
        }
        self.addons = np.zeros((6, 0), dtype=bool)
        # Event counts of the last TRAILING_MONTHS months, slot = month % TRAILING_MONTHS.
        self.recent_support = np.zeros((TRAILING_MONTHS, 0), dtype=np.int8)
        self.recent_late = np.zeros((TRAILING_MONTHS, 0), dtype=np.int8)
        self.recent_outage = np.zeros((TRAILING_MONTHS, 0), dtype=np.int8)
        # Involuntary relative price rises in the current and previous two months.
        self.recent_rise = np.zeros((TRAILING_MONTHS, 0), dtype=np.float32)
        for name, dtype in self._specs.items():
            self.arrays[name] = np.zeros(0, dtype=dtype)

    # -- population ---------------------------------------------------------------------

    def _grow(self, needed: int) -> None:
        import numpy as np

        if self.size + needed <= self.capacity:
            return
        capacity = max(self.size + needed, int(self.capacity * 1.25) + 1024)
        for name, values in self.arrays.items():
            grown = np.zeros(capacity, dtype=values.dtype)
            grown[: self.size] = values[: self.size]
            self.arrays[name] = grown

        def widen(matrix: np.ndarray) -> np.ndarray:
            grown = np.zeros((matrix.shape[0], capacity), dtype=matrix.dtype)
            grown[:, : self.size] = matrix[:, : self.size]
            return grown

        self.addons = widen(self.addons)
        self.recent_support = widen(self.recent_support)
        self.recent_late = widen(self.recent_late)
        self.recent_outage = widen(self.recent_outage)
        self.recent_rise = widen(self.recent_rise)
        self.capacity = capacity

    def _add_customers(self, n: int, month: int, *, initial: bool) -> np.ndarray:
        """Draw ``n`` new customers' profiles; returns their slots."""
        import numpy as np

        rng = self.rng
        self._grow(n)
        slots = np.arange(self.size, self.size + n)
        self.size += n
        a = self.arrays

        senior = rng.random(n) < SENIOR_SHARE
        partner = rng.random(n) < (PARTNER_SHARE if initial else NEW_SIGNUP_PARTNER_SHARE)
        dependents_p = np.where(partner, DEPENDENTS_GIVEN_PARTNER[1], DEPENDENTS_GIVEN_PARTNER[0])
        dependents_p *= np.where(senior, DEPENDENTS_SENIOR_FACTOR, DEPENDENTS_NON_SENIOR_FACTOR)
        internet = _choice(rng, np.asarray(INTERNET_GIVEN_SENIOR)[senior.astype(int)])
        contract_p = np.asarray(CONTRACT_GIVEN_INTERNET)[internet]
        if not initial:
            contract_p = contract_p * np.asarray(NEW_SIGNUP_CONTRACT_WEIGHT)
        contract = _choice(rng, contract_p)
        phone = rng.random(n) < np.asarray(PHONE_GIVEN_INTERNET)[internet]
        lines_p = np.asarray(MULTIPLE_LINES_GIVEN_INTERNET_CONTRACT)[internet, contract]
        multiple_lines = phone & (rng.random(n) < lines_p)
        has_internet = internet != _NO_INTERNET
        internet_row = np.minimum(internet, _FIBER)
        for k, name in enumerate(INTERNET_ADDON_COLUMNS):
            take_up = np.asarray(ADDON_GIVEN_INTERNET_CONTRACT[name])[internet_row, contract]
            self.addons[k, slots] = has_internet & (rng.random(n) < take_up)
        payment = _choice(rng, np.asarray(PAYMENT_GIVEN_CONTRACT)[contract])
        paperless = rng.random(n) < np.asarray(PAPERLESS_GIVEN_PAYMENT)[payment]

        month_start_day = self._month_start_day(month)
        days_in_month = self._month_start_day(month + 1) - month_start_day
        if initial:
            tenure_bin = _choice(rng, np.asarray(TENURE_GIVEN_CONTRACT)[contract])
            low = np.asarray(TENURE_BIN_EDGES)[tenure_bin]
            high = np.asarray(TENURE_BIN_EDGES)[tenure_bin + 1]
            tenure = (low + rng.random(n) * (high - low)).astype(np.int32)
            signup_month = self.first_month + month - (tenure - 1)
            starts = self._month_start_days(signup_month)
            lengths = self._month_start_days(signup_month + 1) - starts
            signup_day = starts + (rng.random(n) * lengths).astype(np.int32)
            term = np.asarray(CONTRACT_TERM_MONTHS)[contract]
            contract_age = np.where(term > 0, (rng.random(n) * np.minimum(tenure, np.maximum(term, 1))), 0)
            promotion_end = np.full(n, -1, dtype=np.int32)
        else:
            tenure = np.ones(n, dtype=np.int32)
            signup_month = np.full(n, self.first_month + month, dtype=np.int32)
            signup_day = month_start_day + (rng.random(n) * days_in_month).astype(np.int32)
            contract_age = np.zeros(n)
            promoted = rng.random(n) < PROMOTION_SHARE
            promotion_end = np.where(promoted, self.first_month + month + PROMOTION_MONTHS, -1)

        price_noise = rng.normal(0.0, PRICE_NOISE_SD, n).astype(np.float32)
        price_factor = np.ones(n)
        drift = self.config.drift_index
        if drift is not None and month >= drift:
            # Once the segment's list price has risen, new customers pay the new price too.
            price_factor[internet == self.drift_segment] *= 1 + self.config.drift_price_increase
        if not initial:
            price_factor[promotion_end >= 0] *= 1 - PROMOTION_DISCOUNT

        a["customer_id"][slots] = _ids("C", slots + 1, 7)
        a["signup_day"][slots] = signup_day
        a["signup_month"][slots] = signup_month
        a["male"][slots] = rng.random(n) < MALE_SHARE
        a["senior"][slots] = senior
        a["partner"][slots] = partner
        a["dependents"][slots] = rng.random(n) < dependents_p
        a["contract"][slots] = contract
        a["contract_age"][slots] = contract_age
        a["phone"][slots] = phone
        a["multiple_lines"][slots] = multiple_lines
        a["internet"][slots] = internet
        a["paperless"][slots] = paperless
        a["payment"][slots] = payment
        a["price_noise"][slots] = price_noise
        a["price_factor"][slots] = price_factor
        a["promotion_end"][slots] = promotion_end
        a["dissatisfaction"][slots] = rng.normal(0.0, 1.0, n)
        a["active"][slots] = True
        charges = self._monthly_charges(slots)
        if initial:
            # Earlier months were billed at slightly different prices (Telco's spread).
            history = np.clip(rng.normal(1.0, TOTAL_CHARGES_HISTORY_SD, n), 0.7, 1.3)
            a["total_charges"][slots] = np.round(charges * (tenure - 1) * history, 2)
        else:
            a["total_charges"][slots] = 0.0  # the first bill is added with the snapshot
        return slots

    # -- calendar -----------------------------------------------------------------------

    def _month_start_day(self, month: int) -> int:
        return int(self._month_start_days(self.first_month + month))

    @staticmethod
    def _month_start_days(month_numbers) -> np.ndarray:
        import numpy as np

        months = np.asarray(month_numbers, dtype=np.int64) - (1970 * 12)
        return months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int32)

    # -- prices -------------------------------------------------------------------------

    def _list_price(self, slots: np.ndarray) -> np.ndarray:
        import numpy as np

        a = self.arrays
        price = np.asarray(PRICE_INTERNET)[a["internet"][slots]]
        price = price + PRICE_PHONE * a["phone"][slots] + PRICE_EXTRA_LINES * a["multiple_lines"][slots]
        for k, name in enumerate(INTERNET_ADDON_COLUMNS):
            price = price + PRICE_ADDON[name] * self.addons[k, slots]
        return price

    def _monthly_charges(self, slots: np.ndarray) -> np.ndarray:
        import numpy as np

        a = self.arrays
        price = (self._list_price(slots) + a["price_noise"][slots]) * a["price_factor"][slots]
        return np.round(np.maximum(price, 0.0), 2)

    # -- one month ----------------------------------------------------------------------

    def step(self, m: int) -> dict[str, pd.DataFrame]:
        import numpy as np

        config, rng, a = self.config, self.rng, self.arrays
        month_number = self.first_month + m
        month_start = self._month_start_day(m)
        month_days = self._month_start_day(m + 1) - month_start
        calendar = month_number % 12
        slot = m % TRAILING_MONTHS
        events: list[tuple[np.ndarray, np.ndarray, int, np.ndarray]] = []

        if m == 0:
            new = self._add_customers(config.customers, 0, initial=True)
            at_risk = np.zeros(0, dtype=np.int64)
        else:
            at_risk = np.flatnonzero(a["active"][: self.size])
            new = None

        # Start-of-month plan changes, each recorded as a plan_change event.
        changes = self._plan_changes(at_risk, m, month_number) if len(at_risk) else None

        # Cancellations, decided on the state at the end of last month plus this month's
        # price changes.
        if len(at_risk):
            d = a["dissatisfaction"][at_risk]
            outages_last = self.recent_outage[(m - 1) % TRAILING_MONTHS, at_risk]
            d = 0.8 * d + 0.6 * rng.normal(0.0, 1.0, len(at_risk)) + 0.25 * outages_last
            d += 2.0 * self.recent_rise[slot, at_risk]
            a["dissatisfaction"][at_risk] = d
            hazard = self._hazard(at_risk, m, calendar)
            cancels = rng.random(len(at_risk)) < hazard
            cancelled = at_risk[cancels]
            cancel_day = month_start + (rng.random(len(cancelled)) * month_days).astype(np.int32)
            a["active"][cancelled] = False
            reasons = self._cancel_reasons(cancelled)
        else:
            cancelled = np.zeros(0, dtype=np.int64)
            cancel_day = np.zeros(0, dtype=np.int32)
            reasons = np.zeros(0, dtype=object)

        if m > 0:
            base = int(a["active"][: self.size].sum())
            seasonal = 1 + config.seasonality * (SIGNUP_SEASONALITY[calendar] - 1)
            n_new = int(rng.poisson(base * config.signup_rate * seasonal))
            new = self._add_customers(n_new, m, initial=False)

        # Each customer's active span within this month, in seconds.
        span_slots = np.concatenate([at_risk, new])
        month_start_s = np.int64(month_start) * DAY_SECONDS
        span_start = np.full(len(span_slots), month_start_s, dtype=np.int64)
        span_end = np.full(len(span_slots), month_start_s + month_days * DAY_SECONDS, dtype=np.int64)
        # New customers start on their signup day (the initial base signed up earlier).
        signup_s = a["signup_day"][new].astype(np.int64) * DAY_SECONDS
        span_start[len(at_risk):] = np.maximum(month_start_s, signup_s)
        if len(cancelled):
            # cancel_day is a whole day; the customer is gone by the end of that day.
            span_end[: len(at_risk)][cancels] = (cancel_day.astype(np.int64) + 1) * DAY_SECONDS
        events.extend(self._monthly_events(span_slots, span_start, span_end, month_days, slot))
        if changes is not None:
            change_slots, change_values = changes
            position = np.searchsorted(span_slots[: len(at_risk)], change_slots)
            start, end = span_start[position], span_end[position]
            # Changes take effect early in the month (first quarter of the customer's span).
            times = start + (rng.random(len(change_slots)) * 0.25 * (end - start)).astype(np.int64)
            events.append((change_slots, times, _PLAN_CHANGE, change_values))
        if len(cancelled):
            # Many cancel by phone: a last support call on the day they leave.
            calls = rng.random(len(cancelled)) < 0.5
            times = cancel_day[calls].astype(np.int64) * DAY_SECONDS + rng.integers(
                8 * 3600, 20 * 3600, int(calls.sum())
            )
            minutes = np.round(rng.lognormal(2.3, 0.5, int(calls.sum())), 1)
            events.append((cancelled[calls], times, _SUPPORT_CALL, minutes))

        # End-of-month snapshot of everyone still active; bill this month.
        active = np.flatnonzero(a["active"][: self.size])
        charges = self._monthly_charges(active)
        a["total_charges"][active] += charges
        a["contract_age"][active] += 1

        return {
            "customers": self._customers_frame(new),
            "subscriptions": self._subscriptions_frame(
                active, charges, month_number, month_start, month_days
            ),
            "events": self._events_frame(events),
            "cancellations": self._cancellations_frame(cancelled, cancel_day, reasons),
        }

    def _plan_changes(
        self, at_risk: np.ndarray, m: int, month_number: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Apply this month's contract, service and price changes; returns (slots, charge deltas)."""
        import numpy as np

        config, rng, a = self.config, self.rng, self.arrays
        before = self._monthly_charges(at_risk)
        changed = np.zeros(len(at_risk), dtype=bool)
        involuntary = np.zeros(len(at_risk), dtype=bool)
        contract = a["contract"][at_risk]
        internet = a["internet"][at_risk]
        d = a["dissatisfaction"][at_risk]
        u = rng.random((6, len(at_risk)))

        # Month-to-month customers sign a contract now and then (and get 5% off);
        # contented customers more often.
        m2m = contract == _MONTH_TO_MONTH
        upgrade_one = m2m & (u[0] < 0.006 * np.exp(-0.4 * d))
        upgrade_two = m2m & ~upgrade_one & (u[0] > 1 - 0.003 * np.exp(-0.4 * d))
        for mask, new_contract in ((upgrade_one, _ONE_YEAR), (upgrade_two, _TWO_YEAR)):
            slots = at_risk[mask]
            a["contract"][slots] = new_contract
            a["contract_age"][slots] = 0
            a["price_factor"][slots] *= 0.95
            changed |= mask
        # At the end of a term 40% fall back to month-to-month at the undiscounted price.
        term = np.asarray(CONTRACT_TERM_MONTHS)[contract]
        term_end = (term > 0) & (a["contract_age"][at_risk] >= term)
        lapse = term_end & (u[1] < 0.40)
        a["contract_age"][at_risk[term_end]] = 0
        a["contract"][at_risk[lapse]] = _MONTH_TO_MONTH
        a["price_factor"][at_risk[lapse]] /= 0.95
        changed |= lapse
        involuntary |= lapse

        # Internet customers add or drop add-ons; dissatisfied ones drop more.
        has_internet = internet != _NO_INTERNET
        add = has_internet & (u[2] < 0.010)
        drop = has_internet & ~add & (u[2] > 1 - 0.006 * np.exp(0.7 * d))
        which = (u[3] * 6).astype(np.int64)
        owned = self.addons[which, at_risk]
        add &= ~owned
        drop &= owned
        self.addons[which[add], at_risk[add]] = True
        self.addons[which[drop], at_risk[drop]] = False
        changed |= add | drop
        # DSL customers move to fibre.
        to_fiber = (internet == _DSL) & (u[4] < 0.004)
        a["internet"][at_risk[to_fiber]] = _FIBER
        a["phone"][at_risk[to_fiber]] = True
        changed |= to_fiber
        # Promotions expire after six months.
        expiring = a["promotion_end"][at_risk] == month_number
        a["price_factor"][at_risk[expiring]] /= 1 - PROMOTION_DISCOUNT
        a["promotion_end"][at_risk[expiring]] = -1
        changed |= expiring
        involuntary |= expiring
        # The drift event: a list-price rise for one segment, from drift_month on.
        if config.drift_index == m:
            segment = a["internet"][at_risk] == self.drift_segment
            a["price_factor"][at_risk[segment]] *= 1 + config.drift_price_increase
            changed |= segment
            involuntary |= segment

        after = self._monthly_charges(at_risk)
        delta = np.round(after - before, 2)
        slot = m % TRAILING_MONTHS
        rise = np.where(involuntary & (delta > 0), delta / np.maximum(before, 1.0), 0.0)
        self.recent_rise[slot, at_risk] = rise
        return at_risk[changed], delta[changed]

    def _hazard(self, slots: np.ndarray, m: int, calendar: int) -> np.ndarray:
        """Monthly cancellation probability of customers active at the end of last month."""
        import numpy as np

        config, a = self.config, self.arrays
        contract = a["contract"][slots]
        internet = a["internet"][slots]
        tenure = (self.first_month + m) - a["signup_month"][slots]  # months completed
        tech = self.addons[_TECH_SUPPORT, slots]
        security = self.addons[_SECURITY, slots]
        last = (m - 1) % TRAILING_MONTHS
        support_last = self.recent_support[last, slots].astype(np.float64)
        support_all = self.recent_support[:, slots].sum(axis=0, dtype=np.float64)
        late_all = self.recent_late[:, slots].sum(axis=0, dtype=np.float64)
        outage_last = self.recent_outage[last, slots].astype(np.float64)
        rise = self.recent_rise[:, slots].sum(axis=0, dtype=np.float64)
        charges = self._monthly_charges(slots)

        logit = np.full(len(slots), -5.75 + config.churn_shift)
        logit += np.asarray((0.0, -1.9, -3.2))[contract]
        logit -= 0.45 * np.log(np.maximum(tenure, 1))
        logit += np.asarray((0.0, 0.45, -0.55))[internet]
        logit += 0.35 * ((internet == _FIBER) & ~tech)
        logit += 0.15 * ((internet != _NO_INTERNET) & ~security)
        logit += 0.40 * (a["payment"][slots] == _ELECTRONIC_CHECK)
        logit += 0.20 * a["paperless"][slots]
        logit += 0.25 * a["senior"][slots]
        logit -= 0.15 * a["partner"][slots] + 0.20 * a["dependents"][slots]
        logit += 0.008 * (charges - 65.0)
        logit += 0.30 * np.minimum(support_last, 3) + 0.12 * np.minimum(support_all - support_last, 4)
        logit += 0.30 * np.minimum(late_all, 3)
        logit += 0.25 * np.minimum(outage_last, 2)
        # Customers on a contract cannot leave as freely when the price goes up.
        logit += 5.0 * rise * np.where(contract == _MONTH_TO_MONTH, 1.0, 0.4)
        logit += 0.55 * a["dissatisfaction"][slots]
        # Life events no data set records (a move, a job loss, a better offer from a
        # friend): they keep any model honest, far from an AUC of 1.
        logit += 1.6 * self.rng.normal(0.0, 1.0, len(slots))
        # Effects that compound rather than add up, as they do in real churn data: new
        # month-to-month customers leave during a trial-like first quarter, fibre customers
        # paying by electronic check without a contract are the classic high-risk cell,
        # support calls hurt most when there is no tech support to resolve them, and
        # long-standing contract customers barely churn at all.
        month_to_month = contract == _MONTH_TO_MONTH
        electronic = a["payment"][slots] == _ELECTRONIC_CHECK
        logit += 1.5 * (month_to_month & (tenure <= 3))
        logit += 1.2 * (month_to_month & (internet == _FIBER) & electronic)
        logit += 0.7 * np.minimum(support_last, 3) * ~tech
        logit -= 1.5 * (~month_to_month & (tenure > 24))
        # Both ends of the price range are fragile: bare-bones plans are easy to drop and
        # the priciest bundles invite comparison shopping.
        logit += 0.9 * ((charges < 25.0) | (charges > 100.0))
        logit += config.seasonality * CHURN_SEASONALITY[calendar]
        return 1.0 / (1.0 + np.exp(-logit))

    def _monthly_events(self, slots, span_start, span_end, month_days, slot):
        """Support calls, late payments, outages and usage over each customer's span."""
        import numpy as np

        rng, a = self.rng, self.arrays
        fraction = (span_end - span_start) / (month_days * DAY_SECONDS)
        internet = a["internet"][slots]
        payment = a["payment"][slots]
        d = a["dissatisfaction"][slots].astype(np.float64)
        tech = self.addons[_TECH_SUPPORT, slots]

        outage_rate = np.asarray((0.07, 0.12, 0.03))[internet]
        outages = rng.poisson(outage_rate * fraction)
        support_rate = 0.10 * np.exp(0.45 * d) * np.where((internet == _FIBER) & ~tech, 1.8, 1.0)
        support_rate *= np.where(a["senior"][slots], 1.3, 1.0) * (1 + 0.8 * outages)
        supports = rng.poisson(support_rate * fraction)
        late_rate = np.asarray((0.10, 0.06, 0.015, 0.015))[payment] * np.exp(0.35 * d)
        lates = rng.poisson(late_rate * fraction)
        # One usage record per month for internet customers, billed at the end of the span.
        usage = (internet != _NO_INTERNET) & (fraction > 0)

        out = []

        def spread(counts: np.ndarray, event_type: int, values_for) -> None:
            rows = np.repeat(np.arange(len(slots)), counts)
            start = span_start[rows]
            times = start + (rng.random(len(rows)) * (span_end[rows] - start)).astype(np.int64)
            out.append((slots[rows], times, event_type, values_for(rows)))

        spread(outages, _OUTAGE, lambda rows: np.round(rng.lognormal(0.7, 0.9, len(rows)), 1))
        spread(supports, _SUPPORT_CALL, lambda rows: np.round(rng.lognormal(2.2, 0.6, len(rows)), 1))
        charges = self._monthly_charges(slots)
        spread(
            lates, _LATE_PAYMENT,
            lambda rows: charges[rows] * rng.choice((1.0, 1.0, 1.0, 2.0), len(rows)),
        )
        streaming = self.addons[_TV, slots].astype(np.float64) + self.addons[_MOVIES, slots]
        gigabytes = (
            np.where(internet == _FIBER, 180.0, 90.0) * (1 + 0.6 * streaming)
            * np.exp(-0.25 * d) * rng.lognormal(0.0, 0.35, len(slots)) * fraction
        )
        rows = np.flatnonzero(usage)
        out.append((slots[rows], span_end[rows] - 1, _USAGE, np.round(gigabytes[rows], 1)))

        self.recent_support[slot, slots] = np.minimum(supports, 127)
        self.recent_late[slot, slots] = np.minimum(lates, 127)
        self.recent_outage[slot, slots] = np.minimum(outages, 127)
        return out

    def _cancel_reasons(self, slots: np.ndarray) -> np.ndarray:
        import numpy as np

        a = self.arrays
        n = len(slots)
        rise = self.recent_rise[:, slots].sum(axis=0, dtype=np.float64)
        trouble = self.recent_support[:, slots].sum(axis=0, dtype=np.float64)
        trouble += self.recent_outage[:, slots].sum(axis=0, dtype=np.float64)
        charges = self._monthly_charges(slots)
        weights = np.stack(
            [
                0.5 + 10 * rise + 0.6 * (charges > 80),  # price
                0.6 + 0.4 * (a["internet"][slots] == _FIBER),  # competitor
                0.3 + 0.6 * np.minimum(trouble, 4),  # service
                np.full(n, 0.35),  # moved
                np.full(n, 0.25),  # other
            ],
            axis=1,
        )
        reasons = np.asarray(CANCEL_REASONS, dtype=object)[_choice(self.rng, weights)]
        # Not every cancellation records a reason.
        reasons[self.rng.random(n) < 0.05] = None
        return reasons

    # -- frames -------------------------------------------------------------------------

    def _customers_frame(self, slots: np.ndarray) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        a = self.arrays
        return pd.DataFrame(
            {
                "customer_id": a["customer_id"][slots],
                "signup_date": a["signup_day"][slots].astype("datetime64[D]").astype("datetime64[ns]"),
                "gender": np.asarray(("Female", "Male"), dtype=object)[a["male"][slots].astype(np.int8)],
                "senior_citizen": a["senior"][slots],
                "partner": a["partner"][slots],
                "dependents": a["dependents"][slots],
            }
        )

    def _subscriptions_frame(self, slots, charges, month_number, month_start, month_days) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        a = self.arrays
        internet = a["internet"][slots]
        has_internet = internet != _NO_INTERNET
        phone = a["phone"][slots]
        yes_no_none = np.asarray(("No", "Yes", "No internet service"), dtype=object)
        columns = {
            "customer_id": a["customer_id"][slots],
            "snapshot_month": np.full(len(slots), np.datetime64(month_start, "D"), dtype="datetime64[ns]"),
            "contract": np.asarray(CONTRACTS, dtype=object)[a["contract"][slots]],
            "phone_service": phone,
            "multiple_lines": np.asarray(("No", "Yes", "No phone service"), dtype=object)[
                np.where(phone, a["multiple_lines"][slots].astype(np.int8), 2)
            ],
            "internet_service": np.asarray(INTERNET_SERVICES, dtype=object)[internet],
        }
        for k, name in enumerate(INTERNET_ADDON_COLUMNS):
            columns[name] = yes_no_none[np.where(has_internet, self.addons[k, slots].astype(np.int8), 2)]
        total = a["total_charges"][slots].copy()
        # Like the Telco file, a customer whose first bill is not out yet (signed up in
        # the last two days of the month) has no total_charges.
        unbilled = (a["signup_month"][slots] == month_number) & (
            a["signup_day"][slots] >= month_start + month_days - 2
        )
        total[unbilled] = np.nan
        columns.update(
            {
                "paperless_billing": a["paperless"][slots],
                "payment_method": np.asarray(PAYMENT_METHODS, dtype=object)[a["payment"][slots]],
                "monthly_charges": charges,
                "total_charges": np.round(total, 2),
            }
        )
        return pd.DataFrame(columns)

    def _events_frame(self, parts) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        slots = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        times = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        types = (
            np.concatenate([np.full(len(p[0]), p[2], dtype=np.int8) for p in parts])
            if parts else np.zeros(0, dtype=np.int8)
        )
        values = (
            np.concatenate([np.asarray(p[3], dtype=np.float64) for p in parts])
            if parts else np.zeros(0)
        )
        order = np.lexsort((types, slots, times))
        n = len(order)
        ids = _ids("E", np.arange(self.next_event, self.next_event + n), 10)
        self.next_event += n
        return pd.DataFrame(
            {
                "event_id": ids,
                "customer_id": self.arrays["customer_id"][slots[order]],
                "event_time": times[order].astype("datetime64[s]").astype("datetime64[ns]"),
                "event_type": np.asarray(EVENT_TYPES, dtype=object)[types[order]],
                "value": values[order],
            }
        )

    def _cancellations_frame(self, slots, cancel_day, reasons) -> pd.DataFrame:
        import pandas as pd

        order = cancel_day.argsort(kind="stable")
        return pd.DataFrame(
            {
                "customer_id": self.arrays["customer_id"][slots[order]],
                "cancel_date": cancel_day[order].astype("datetime64[D]").astype("datetime64[ns]"),
                "reason": reasons[order],
            }
        )

