"""``churn serve``: the champion (and the challenger) over HTTP, with FastAPI and uvicorn.

The application answers from a ``ServingState`` (``scoring/serving.py``): both models and
every customer's latest features, loaded from the snapshot ``ml/serving_snapshot`` writes. A
watcher thread looks for a new snapshot every ``reload_interval_s``, loads it beside the one in
use and swaps it in with one assignment; each request reads the state once. Scores go to the
score log (``scoring/score_log.py``) without waiting for the warehouse.

Request bodies are checked by pydantic models built from the loaded models' feature specs
(every feature required, nullable; categories from the training levels; numbers finite and
inside the training range widened by ``numeric_range_slack``), so a dataset project needs no
code and ``/docs`` shows its own fields. Errors are one JSON object, ``{"error": "<one line
naming the field>", "errors": [...]}``, never a stack trace.
"""

from __future__ import annotations

import hmac
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from churn_assets.scoring.batch import RiskBands
from churn_assets.scoring.score_log import ScoreLog, elapsed_ms, now_utc, say
from churn_assets.scoring.serving import (
    CHALLENGER,
    CHAMPION,
    FeatureField,
    ServingError,
    ServingPolicy,
    ServingState,
    UnknownCustomerError,
    is_loopback,
    load_state,
    pointer_path,
    read_pointer,
    routing_fraction,
)

API_VERSION = "v1"
POINTER_NAME = "artifacts/serving/current.json"
API_KEY_HEADER = "x-api-key"
# Paths answered without an API key: a load balancer's probes carry none, and a browser opening
# the API docs cannot send one (the docs' "Authorize" sends it with the calls they make).
OPEN_PATHS = frozenset({"/health", "/ready", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


# -- response models (documentation; answers are written as JSON directly) -----------------


class Reason(BaseModel):
    feature: str
    value: str | None = Field(description="The row's value of the feature, as text; null if missing.")
    shap_value: float = Field(description="Contribution to the log-odds of churn.")


class Reasons(BaseModel):
    increases_risk: list[Reason]
    decreases_risk: list[Reason]


class Score(BaseModel):
    customer_id: str | None
    feature_month: str | None = Field(description="Snapshot month of the features scored (YYYY-MM-DD).")
    churn_probability: float
    risk_band: Literal["low", "medium", "high"]
    model_version: str
    arm: Literal["champion", "challenger"]
    reasons: Reasons | None = Field(default=None, description="Top reasons up and down (absent with reasons=false).")
    stale: bool | None = Field(default=None, description="GET by id: true when the customer's latest features are "
                                                         "older than the snapshot's latest month (a customer who has "
                                                         "probably left); absent for posted rows.")
    explanation_method: str | None = None


class BatchScores(BaseModel):
    request_id: str
    scores: list[Score]


class ScoreResponse(Score):
    request_id: str


class ErrorItem(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    error: str = Field(description="One line naming what is wrong.")
    errors: list[ErrorItem] = []


ERRORS = {code: {"model": ErrorResponse} for code in (401, 404, 413, 422, 503)}


# -- request models built from the loaded models' feature specs ------------------------------


def request_models(fields: dict[str, FeatureField], max_batch_rows: int) -> tuple[type[BaseModel], type[BaseModel]]:
    """(one row, a batch) pydantic models of posted rows for these features."""
    definitions = {}
    for position, (name, field) in enumerate(sorted(fields.items())):
        if field.categorical:
            # A Literal is checked in pydantic's core (a Python validator per field costs 50 ms a
            # 1,000-row batch); its error lists the levels: "Input should be 'A' or 'B'".
            kind = Literal[field.levels] | None if field.levels else None
            definitions[f"f{position}"] = (kind, Field(alias=name, description="A category seen in training "
                                                                               "(as text), or null (missing)."))
        else:
            bounds = {key: value for key, value in (("ge", field.low), ("le", field.high)) if value is not None}
            definitions[f"f{position}"] = (float | None, Field(alias=name, strict=True, allow_inf_nan=False,
                                                               description="A number, or null (missing).", **bounds))
    features = create_model("Features", __config__=ConfigDict(extra="forbid"), **definitions)
    row = create_model(
        "ScoreRequest", __config__=ConfigDict(extra="forbid"),
        features=(features, Field(description="Every feature of the model; null where a value is missing.")),
        customer_id=(str | None, Field(default=None, max_length=200,
                                       description="Routes the row (A/B) and goes to the score log.")),
        snapshot_month=(Annotated[str | None, AfterValidator(_real_month)],
                        Field(default=None, description="Month the features describe (YYYY-MM), for the score log.")),
    )
    batch = create_model("BatchScoreRequest", __config__=ConfigDict(extra="forbid"),
                         rows=(list[row], Field(min_length=1, max_length=max_batch_rows)))
    return row, batch


def _error_items(error: ValidationError) -> list[dict]:
    items = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "body"
        message = problem["msg"].removeprefix("Value error, ")
        items.append({"field": where, "message": message})
    return items


class Rejected(Exception):
    """A request answered with an error status: ``status``, one line, and the items."""

    def __init__(self, status: int, message: str, items: list[dict] | None = None):
        super().__init__(message)
        self.status, self.message, self.items = status, message, items or []


def _json(content: Any, status: int = 200, background: BackgroundTask | None = None,
          headers: dict | None = None) -> Response:
    return Response(json.dumps(content, allow_nan=False).encode(), status_code=status,
                    media_type="application/json", background=background, headers=headers)


def _rejection(error: Rejected) -> Response:
    return _json({"error": error.message, "errors": error.items}, error.status)


# -- metrics -------------------------------------------------------------------------------


class Metrics:
    """Prometheus metrics of one application. With several workers each process writes its
    values to ``$PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` adds them up (prometheus_client's
    multiprocess mode)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # no *_created series: Prometheus does not need them
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter("churn_http_requests_total", "HTTP requests by endpoint and status.",
                                ["endpoint", "method", "status"], registry=registry)
        self.latency = Histogram("churn_http_request_duration_seconds", "Time from request to response.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=registry)
        self.scores = Counter("churn_scores_total", "Scores computed, by arm and whether they were the answer.",
                              ["arm", "model_version", "answered"], registry=registry)
        self.model_info = Gauge("churn_model_info", "1 for each model being served, by arm and version.",
                                ["arm", "version"], registry=registry, multiprocess_mode="liveall")
        self.reloads = Counter("churn_snapshot_loads_total", "Snapshot loads by outcome.", ["outcome"],
                               registry=registry)
        self.log_written = Counter("churn_score_log_rows_written_total", "Rows written to serving.score_log.",
                                   registry=registry)
        self.log_dropped = Gauge("churn_score_log_dropped_rows", "Score log rows dropped (the buffer was full, or a write "
                                 "failed for a reason other than a busy warehouse).",
                                 registry=registry, multiprocess_mode="liveall")
        self._dropped_seen = 0

    def served_models(self, state: ServingState | None, previous: ServingState | None) -> None:
        if previous is not None:
            for arm, served in previous.models.items():
                try:
                    self.model_info.remove(arm, served.version)
                except KeyError:
                    pass
        if state is not None:
            for arm, served in state.models.items():
                self.model_info.labels(arm, served.version).set(1)

    def text(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        if os.environ.get(MULTIPROCESS_ENV):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


# -- the service -----------------------------------------------------------------------------


class Service:
    """The state in use, the watcher that replaces it, the score log and the metrics."""

    def __init__(self, policy: ServingPolicy, bands: RiskBands, artifacts_root: Path, warehouse):
        self.policy, self.bands, self.artifacts_root = policy, bands, Path(artifacts_root)
        self.state: ServingState | None = None
        self.load_error: str | None = None
        self._pointer_seen: str | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.metrics = Metrics()
        self.log = ScoreLog(warehouse, policy.log_flush_s, policy.log_buffer_rows, on_flush=self._flushed)
        self._reload_lock = threading.Lock()

    def _flushed(self, written: int, dropped: int) -> None:
        if written:
            self.metrics.log_written.inc(written)
        self.metrics.log_dropped.set(dropped)

    # loading

    def reload(self) -> bool:
        """Load the snapshot ``current.json`` names if it is not the one in use; True when a new
        state was swapped in. A failure keeps the state in use, is kept in ``load_error`` (logged
        once per distinct error) and is tried again at the next look."""
        with self._reload_lock:
            try:
                text = pointer_path(self.artifacts_root).read_text()
            except OSError:
                text = None
            if text is not None and text == self._pointer_seen:
                return False
            try:
                pointer = json.loads(text) if text is not None else read_pointer(self.artifacts_root)
                if self.state is not None and isinstance(pointer, dict) and \
                        pointer.get("snapshot_id") == self.state.snapshot_id:
                    self._pointer_seen = text  # the snapshot in use, written again
                    return False
                state = load_state(self.artifacts_root, self.policy, self.bands, pointer)
                state.request_model, state.batch_model = request_models(state.fields, self.policy.max_batch_rows)
            except Exception as error:  # any failure to load keeps the previous state serving
                message = describe_load_error(error)
                if message != self.load_error:
                    self.metrics.reloads.labels("failed").inc()
                    say(f"snapshot not loaded ({message}); "
                         + (f"still serving {self.state.champion.version}" if self.state else "not ready"))
                self.load_error = message
                return False
            previous = self.state
            # One assignment; a request reads self.state once, then uses only that.
            self.state = state
            self._pointer_seen = text
            self.load_error = None
            self.metrics.reloads.labels("ok").inc()
            self.metrics.served_models(state, previous)
            arms = ", ".join(f"{arm} {state.models[arm].version}" for arm in (CHAMPION, CHALLENGER) if arm in state.models)
            say(f"serving snapshot {state.snapshot_id} ({len(state.row_of):,} customers; {arms})")
            return True

    def start(self) -> None:
        self.reload()
        self.log.start()
        self._watcher = threading.Thread(target=self._watch, name="snapshot-watcher", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        self.log.stop()

    def _watch(self) -> None:
        while not self._stop.wait(self.policy.reload_interval_s):
            self.reload()

    def ready_state(self) -> ServingState:
        state = self.state
        if state is None:
            raise Rejected(503, f"not ready: {self.load_error or 'loading'}")
        return state

    # routing

    def arms(self, state: ServingState, customer_id: str | None) -> tuple[str, str | None]:
        """(the arm that answers, the arm scoring in shadow or None) for one customer."""
        if state.challenger is None:
            return CHAMPION, None
        answering = CHAMPION
        if customer_id is not None and self.policy.challenger_share > 0 and \
                routing_fraction(customer_id, self.policy.routing_salt) < self.policy.challenger_share:
            answering = CHALLENGER
        shadow = (CHALLENGER if answering == CHAMPION else CHAMPION) if self.policy.shadow else None
        return answering, shadow

    # answering

    def score(self, endpoint: str, state: ServingState, keys: list[tuple[str | None, str | None]],
              reasons: bool, rows: list[int] | None = None, posted: list[dict] | None = None) -> tuple[list[dict], str, BackgroundTask | None]:
        """Answers for rows (snapshot positions or posted feature dicts) of customers ``keys``
        ((customer id, feature month) per row), the request id, and the shadow scoring task."""
        request = (endpoint, uuid.uuid4().hex, state, keys, rows, posted)
        routes = [self.arms(state, customer) for customer, _ in keys]
        answers: list[dict | None] = [None] * len(keys)
        log_rows: list[tuple] = []
        for arm in dict.fromkeys(answering for answering, _ in routes):
            positions = [i for i, (answering, _) in enumerate(routes) if answering == arm]
            group, logged = self._scored(request, arm, positions, reasons, answered=True)
            for i, answer in zip(positions, group, strict=True):
                customer, month = keys[i]
                answers[i] = {"customer_id": customer, "feature_month": month, **answer, "arm": arm}
            log_rows += logged
        self.log.add(log_rows)
        shadow_groups: dict[str, list[int]] = {}
        for i, (_, shadow) in enumerate(routes):
            if shadow is not None:
                shadow_groups.setdefault(shadow, []).append(i)
        # After the response is sent: the shadow model never delays the answer.
        task = BackgroundTask(self._shadow, request, shadow_groups) if shadow_groups else None
        return answers, request[1], task

    def _scored(self, request: tuple, arm: str, positions: list[int], reasons: bool,
                answered: bool) -> tuple[list[dict], list[tuple]]:
        """``arm``'s answers for the request's rows at ``positions``, and their score-log rows."""
        endpoint, request_id, state, keys, rows, posted = request
        served = state.models[arm]
        started = time.perf_counter()
        if rows is not None:
            group = state.answer(served, rows=[rows[i] for i in positions], reasons=reasons)
        else:
            group = state.answer(served, posted=[posted[i] for i in positions], reasons=reasons)
        latency = elapsed_ms(started) / len(positions)
        served_at = now_utc()
        logged = [(served_at, request_id, endpoint, *keys[i], answer["model_version"], arm, answered,
                   answer["churn_probability"], answer["risk_band"], latency)
                  for i, answer in zip(positions, group, strict=True)]
        self.metrics.scores.labels(arm, served.version, str(answered).lower()).inc(len(positions))
        return group, logged

    def _shadow(self, request: tuple, groups: dict[str, list[int]]) -> None:
        log_rows = []
        for arm, positions in groups.items():
            try:
                log_rows += self._scored(request, arm, positions, reasons=False, answered=False)[1]
            except Exception as error:  # a failing shadow model must not take the worker down
                say(f"shadow {arm} {request[2].models[arm].version} failed: {' '.join(str(error).split())[:300]}")
        self.log.add(log_rows)

    def describe(self) -> dict:
        state = self.ready_state()
        from churn_assets.training.registry import read_artifact

        def model(arm: str) -> dict | None:
            served = state.models.get(arm)
            if served is None:
                return None
            spec = served.model.feature_spec
            split = read_artifact(self.artifacts_root, served.version, "split.json")
            return {
                "version": served.version, "algorithm": served.model.algorithm,
                "manifest_sha256": served.manifest_sha256,
                "metrics": read_artifact(self.artifacts_root, served.version, "metrics.json"),
                "training_window": {part: {"months": [values["months"][0], values["months"][-1]] if values.get("months") else [],
                                           "rows": values.get("rows")}
                                    for part, values in split.get("parts", {}).items()},
                "features": {
                    "categorical": {name: spec.categories[name] for name in spec.roles.categorical},
                    # What a posted value may be: the training range widened by numeric_range_slack.
                    "numeric": {name: {"accepted_low": state.fields[name].low, "accepted_high": state.fields[name].high,
                                       "training_range": state.snapshot.get("numeric_ranges", {}).get(name)}
                                for name in spec.roles.numeric},
                },
                "explanation_method": served.model.candidate.explanation_method(served.model),
            }

        return {
            "champion": model(CHAMPION), "challenger": model(CHALLENGER),
            "routing": {"challenger_share": self.policy.challenger_share if state.challenger else 0.0,
                        "shadow": bool(self.policy.shadow and state.challenger)},
            "snapshot": {"id": state.snapshot_id, "customers": len(state.row_of),
                         "feature_months": state.snapshot["feature_months"],
                         "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.loaded_at))},
            "risk_bands": {"medium": self.bands.medium, "high": self.bands.high},
            "reload_error": self.load_error,
            "score_log": self.log.status(),
        }


def describe_load_error(error: Exception) -> str:
    """One line for a snapshot that cannot be loaded; a pointer file of the wrong shape is named."""
    if isinstance(error, (KeyError, TypeError, AttributeError)):
        return (f"{POINTER_NAME} is not a serving snapshot description ({type(error).__name__}: {error}): "
                "rematerialize ml/serving_snapshot")
    return " ".join(str(error).split())[:500] or type(error).__name__


# -- the ASGI guard: API key, loopback host, body size, metrics ------------------------------


class Guard:
    """In front of the application: refuses a request without the API key (when one is set),
    one naming a host other than loopback while bound to loopback (a web page rebinding its
    DNS), and a body over the limit (read at most that far); then times the answer."""

    def __init__(self, app, service: Service, api_key: str | None, loopback_only: bool):
        self.app, self.service = app, service
        self.api_key = api_key.encode() if api_key else None
        self.loopback_only = loopback_only
        self.limit = service.policy.max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_seen = [500]
        answered = [None]

        async def send_and_see(message):
            if message["type"] == "http.response.start":
                status_seen[0] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                # The answer is out: a background task (the shadow model) runs after this.
                answered[0] = time.perf_counter()

        rejection = self._refusal(scope)
        if rejection is None and scope["method"] in ("POST", "PUT", "PATCH"):
            rejection = self._not_json(scope)
        if rejection is None and scope["method"] in ("POST", "PUT", "PATCH"):
            receive, rejection = await self._bounded_body(scope, receive)
        try:
            if rejection is not None:
                await rejection(scope, receive, send_and_see)
            else:
                await self.app(scope, receive, send_and_see)
        finally:  # also when the application raised (Starlette answers 500 outside this guard)
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            metrics = self.service.metrics
            metrics.requests.labels(endpoint, scope["method"], str(status_seen[0])).inc()
            metrics.latency.labels(endpoint).observe((answered[0] or time.perf_counter()) - started)

    def _refusal(self, scope) -> Response | None:
        headers = {key: value for key, value in scope["headers"] if key in (b"host", API_KEY_HEADER.encode())}
        if self.loopback_only:
            host = headers.get(b"host", b"").decode("latin-1").rsplit(":", 1)[0].strip("[]")
            if not is_loopback(host):
                return _json({"error": f"Host {host!r} refused: this service answers requests to loopback only",
                              "errors": []}, 403)
        if self.api_key is not None and scope["path"] not in OPEN_PATHS:
            given = headers.get(API_KEY_HEADER.encode())
            if given is None or not hmac.compare_digest(given, self.api_key):
                return _json({"error": f"missing or wrong API key (header {API_KEY_HEADER})", "errors": []}, 401,
                             headers={"WWW-Authenticate": "ApiKey"})
        return None

    async def _bounded_body(self, scope, receive):
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > self.limit:
                return receive, self._too_large()
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return receive, self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay, None

    def _not_json(self, scope) -> Response | None:
        # Only JSON: a form or text/plain post is a "simple" cross-site request a web page may
        # send without asking (no CORS preflight).
        kind = next((value for key, value in scope["headers"] if key == b"content-type"), b"")
        if kind.split(b";")[0].strip().lower() != b"application/json":
            return _json({"error": f"content-type {kind.decode('latin-1') or '(none)'!r} refused: send "
                                   "application/json", "errors": []}, 415)
        return None

    def _too_large(self) -> Response:
        return _json({"error": f"request body larger than {self.limit:,} bytes (serving.max_body_bytes)",
                      "errors": []}, 413)


# -- the application ---------------------------------------------------------------------------


def create_app(policy: ServingPolicy, bands: RiskBands, artifacts_root: Path, warehouse,
               reports_root: Path | None = None, start: bool = True) -> FastAPI:
    """The FastAPI application; ``start`` loads the snapshot and starts the watcher and the log
    writer with the application's lifespan (tests drive ``Service.reload`` themselves with
    ``start=False``)."""
    from contextlib import asynccontextmanager

    policy.check()
    service = Service(policy, bands, artifacts_root, warehouse)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if start:
            service.start()
        try:
            yield
        finally:
            if start:
                service.stop()

    app = FastAPI(
        title="Churn scoring service", version=API_VERSION, lifespan=lifespan,
        description="Churn probability, risk band and reasons from the champion model, for known customers "
                    "(their latest features) and for posted feature rows. Request schemas follow the loaded "
                    "model's feature spec.",
    )
    app.state.service = service

    @app.exception_handler(Rejected)
    async def rejected(request: Request, error: Rejected) -> Response:
        return _rejection(error)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        items = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in error.errors()]
        return _rejection(Rejected(422, f"{items[0]['field']}: {items[0]['message']}" if items else "invalid request",
                                   items))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        return _json({"error": str(error.detail), "errors": []}, error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception) -> Response:
        say(f"{request.method} {request.url.path} failed: {type(error).__name__}: {' '.join(str(error).split())[:300]}")
        return _json({"error": "internal error while scoring; the service log has the details", "errors": []}, 500)

    @app.get("/health", tags=["service"], summary="Liveness: the process answers.")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", tags=["service"], summary="Readiness: a model and the features are loaded.",
             responses={503: {"model": ErrorResponse}})
    async def ready() -> Response:
        state = service.state
        if state is None:
            return _json({"ready": False, "error": f"not ready: {service.load_error or 'loading'}"}, 503)
        return _json({"ready": True, "champion": state.champion.version, "snapshot": state.snapshot_id})

    for probe in (health, ready):  # HEAD wherever a probe may GET
        app.add_api_route(f"/{probe.__name__}", probe, methods=["HEAD"], include_in_schema=False)

    @app.get(f"/{API_VERSION}/model", tags=["model"], summary="The served models, routing and snapshot.",
             responses=ERRORS)
    async def model() -> Response:
        return _json(service.describe())

    @app.get(f"/{API_VERSION}/customers/{{customer_id}}/score", tags=["scoring"], response_model=ScoreResponse,
             summary="Score a known customer's latest features now.", responses=ERRORS)
    async def score_customer(customer_id: Annotated[str, PathParam(max_length=200)],
                             reasons: Annotated[bool, Query(description="Include the top reasons (exact SHAP).")] = True) -> Response:
        state = service.ready_state()
        try:
            row = state.row(customer_id)
        except UnknownCustomerError:
            raise Rejected(404, f"unknown customer {customer_id!r}: not in the serving snapshot "
                                f"{state.snapshot_id}") from None
        month = state.months[row]
        answers, request_id, task = service.score("customer", state, [(customer_id, month)], reasons, rows=[row])
        stale = month < state.snapshot["feature_months"]["last"]
        return _json({"request_id": request_id, **answers[0], "stale": stale}, background=task)

    def parsed(model: type[BaseModel], body: bytes) -> BaseModel:
        try:
            return model.model_validate_json(body)
        except ValidationError as error:
            items = _error_items(error)
            if any(item["field"] == "rows" and "at most" in item["message"] for item in items):
                raise Rejected(413, f"rows: more than {service.policy.max_batch_rows:,} rows in one batch "
                                    "(serving.max_batch_rows)", items) from None
            raise Rejected(422, f"{items[0]['field']}: {items[0]['message']}", items) from None

    def posted_rows(requests: list[BaseModel]) -> tuple[list[dict], list[tuple[str | None, str | None]]]:
        rows = [request.features.model_dump(by_alias=True) for request in requests]
        keys = [(request.customer_id, _month(request.snapshot_month)) for request in requests]
        return rows, keys

    score_body = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ScoreRequest"}}}}}
    batch_body = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/BatchScoreRequest"}}}}}

    @app.post(f"/{API_VERSION}/score", tags=["scoring"], response_model=ScoreResponse, openapi_extra=score_body,
              summary="Score one posted feature row.", responses=ERRORS)
    async def score_row(request: Request, reasons: Annotated[bool, Query()] = True) -> Response:
        state = service.ready_state()  # its request models are the features its models read
        parsed_request = parsed(state.request_model, await request.body())
        rows, keys = posted_rows([parsed_request])
        answers, request_id, task = service.score("score", state, keys, reasons, posted=rows)
        return _json({"request_id": request_id, **answers[0]}, background=task)

    @app.post(f"/{API_VERSION}/score:batch", tags=["scoring"], response_model=BatchScores, openapi_extra=batch_body,
              summary="Score up to serving.max_batch_rows posted feature rows.", responses=ERRORS)
    async def score_batch(request: Request, reasons: Annotated[bool, Query()] = True) -> Response:
        state = service.ready_state()
        parsed_request = parsed(state.batch_model, await request.body())
        rows, keys = posted_rows(parsed_request.rows)
        # Off the event loop: a 1,000-row batch with reasons takes a good fraction of a second,
        # which /health and the single-row requests should not wait for.
        answers, request_id, task = await run_in_threadpool(service.score, "batch", state, keys, reasons,
                                                            posted=rows)
        return _json({"request_id": request_id, "scores": answers}, background=task)

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics (text format).")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(service.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    if reports_root is not None:
        from starlette.staticfiles import StaticFiles

        app.mount("/reports", StaticFiles(directory=str(reports_root), html=True, check_dir=False), name="reports")

    _document_request_bodies(app, service)
    app.add_middleware(Guard, service=service, api_key=policy.api_key(), loopback_only=is_loopback(policy.host))
    return app


def _document_request_bodies(app: FastAPI, service: Service) -> None:
    """``/openapi.json`` with the request schemas of the models being served (rebuilt when the
    snapshot changes: a new champion may read other features)."""
    from fastapi.openapi.utils import get_openapi

    cache: dict[int, dict] = {}

    def openapi() -> dict:
        state = service.state
        key = id(state)
        if key not in cache:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in ((state.request_model, state.batch_model) if state is not None else ()):
                generated = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
                components.update(generated.pop("$defs", {}))
                components[model.__name__] = generated
            if service.policy.api_key() is not None:
                schema["components"]["securitySchemes"] = {
                    "ApiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}}
                schema["security"] = [{"ApiKey": []}]
            cache.clear()
            cache[key] = schema
        return cache[key]

    app.openapi = openapi


def _month(text: str | None) -> str | None:
    return None if text is None else f"{text[:7]}-01"


def _real_month(text: str | None) -> str | None:
    """YYYY-MM or YYYY-MM-01 naming a real month (the score log stores it as a DATE)."""
    import datetime as dt

    if text is None:
        return None
    try:
        if len(text) not in (7, 10) or (len(text) == 10 and not text.endswith("-01")):
            raise ValueError
        dt.date(int(text[:4]), int(text[5:7]), 1)
        if text[4] != "-" or not 1 <= int(text[:4]) <= 9999:
            raise ValueError
    except ValueError:
        raise ValueError(f"expected a month as YYYY-MM, got {text!r}") from None
    return text


def serving_with(policy: ServingPolicy, overrides: dict) -> ServingPolicy:
    """``policy`` with the command line's settings, validated like the policy file's."""
    if not overrides:
        return policy
    try:
        return type(policy)(**{**policy.model_dump(), **overrides})
    except ValidationError as error:
        first = error.errors()[0]
        raise ServingError(f"--{first['loc'][0]}: {first['msg']} (got {first.get('input')!r})") from None


# The command line's --host/--port/--workers, handed to the workers uvicorn spawns.
SERVE_OVERRIDES_ENV = "CHURN_SERVE_OVERRIDES"
