"""Latency and throughput of `churn serve` over loopback HTTP, beside the bare in-process cost of
the same answers (feature lookup + predict + SHAP), so the HTTP overhead is visible.

    uv run python benchmarks/bench_serving.py --churn-home data          # after `churn demo`
    uv run python benchmarks/bench_serving.py --churn-home data --quick  # under a minute

For each of 1 and 2 workers it starts `churn serve` on a free loopback port, waits for /ready,
and runs each scenario: GET by id with reasons, GET by id without reasons, POST one row, POST
batches of 100 and of 1,000 rows. The load generator (asyncio on uvloop, raw HTTP/1.1 over
keep-alive connections, in this process) keeps ``--concurrency`` requests in flight until it has
sent ``--requests`` or ``--seconds`` have passed, whichever comes first, and times each request
from its first byte sent to its last byte read (an asyncio Protocol per connection: tens of
microseconds of the generator's CPU per request). Every answer must be 200, or it counts as an
error. The generator shares the machine's cores with the server; the load average is printed.

The in-process column times ``ServingState.answer`` on the same rows in this process (one
thread, no HTTP): what a request costs before the web framework.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = ("get_reasons", "get_no_reasons", "post_one", "batch_100", "batch_1000")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def state_and_bodies(home: Path, rows_wanted: int, seed: int):
    """The serving state the service will load, sample customer ids and posted bodies."""
    os.environ["CHURN_HOME"] = str(home)
    from churn_assets.core.paths import artifacts_dir
    from churn_assets.core.warehouse import Warehouse
    from churn_assets.policies import load_policies
    from churn_assets.scoring.serving import load_state, pointer_path, write_snapshot

    policies = load_policies()
    if not pointer_path(artifacts_dir()).is_file():
        with Warehouse().read() as con:
            write_snapshot(con, artifacts_dir(), policies.serving.challenger)
    state = load_state(artifacts_dir(), policies.serving, policies.scoring.bands())
    rng = random.Random(seed)
    ids = rng.sample(sorted(state.row_of), min(rows_wanted, len(state.row_of)))

    def features(customer: str) -> dict:
        row = state.row(customer)
        out = {}
        for name, field in state.fields.items():
            value = state.frame[name].iat[row]
            if hasattr(value, "item"):
                value = value.item()
            if value is None or value != value:
                out[name] = None
            elif field.categorical:
                out[name] = str(value)
            else:
                out[name] = float(value)
        return out

    posted = [{"features": features(customer), "customer_id": customer} for customer in ids]
    return state, ids, posted


def http_requests(scenario: str, ids: list[str], posted: list[dict], port: int) -> list[bytes]:
    host = f"127.0.0.1:{port}"

    def get(path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    def post(path: str, body: dict) -> bytes:
        data = json.dumps(body).encode()
        return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode() + data

    if scenario == "get_reasons":
        return [get(f"/v1/customers/{customer}/score") for customer in ids]
    if scenario == "get_no_reasons":
        return [get(f"/v1/customers/{customer}/score?reasons=false") for customer in ids]
    if scenario == "post_one":
        return [post("/v1/score", body) for body in posted]
    size = int(scenario.split("_")[1])
    batches = []
    for start in range(0, max(len(posted) - size + 1, 1), size):
        rows = posted[start:start + size]
        if len(rows) == size:
            batches.append(post("/v1/score:batch", {"rows": rows}))
    return batches or [post("/v1/score:batch", {"rows": (posted * (size // max(len(posted), 1) + 1))[:size]})]


CONTENT_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


class Connection(asyncio.Protocol):
    """One keep-alive connection sending the next request when the last answer is complete: a
    protocol, not streams, so the generator spends tens of microseconds a request, not hundreds."""

    def __init__(self, run: "Run"):
        self.run, self.buffer, self.started, self.transport = run, b"", 0.0, None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.send()

    def send(self) -> None:
        payload = self.run.next_payload()
        if payload is None:
            self.transport.close()
            return
        self.started = time.perf_counter()
        self.transport.write(payload)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end]
        total = end + 4 + int(CONTENT_LENGTH.search(head).group(1))
        if len(self.buffer) < total:
            return
        self.run.done(time.perf_counter() - self.started, head, self.buffer[end + 4:total])
        self.buffer = self.buffer[total:]
        self.send()

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class Run:
    def __init__(self, payloads: list[bytes], requests: int, seconds: float):
        self.payloads, self.requests = payloads, requests
        self.deadline = time.perf_counter() + seconds
        self.sent, self.errors, self.latencies = 0, 0, []

    def next_payload(self) -> bytes | None:
        if self.sent >= self.requests or time.perf_counter() >= self.deadline:
            return None
        self.sent += 1
        return self.payloads[self.sent % len(self.payloads)]

    def done(self, latency: float, head: bytes, body: bytes) -> None:
        self.latencies.append(latency)
        if not head.startswith(b"HTTP/1.1 200"):
            self.errors += 1
            if self.errors == 1:
                print(f"    first error: {head.splitlines()[0].decode()} {body[:200]!r}", file=sys.stderr)


async def load(port: int, payloads: list[bytes], requests: int, seconds: float, concurrency: int) -> dict:
    loop = asyncio.get_running_loop()
    run = Run(payloads, requests, seconds)
    started = time.perf_counter()
    connections = [(await loop.create_connection(lambda: Connection(run), "127.0.0.1", port))[1]
                   for _ in range(concurrency)]
    await asyncio.gather(*(connection.closed for connection in connections))
    wall = time.perf_counter() - started
    latencies = run.latencies
    return {"requests": len(latencies), "errors": run.errors, "wall": wall,
            "p50": percentile(latencies, 50) * 1e3, "p95": percentile(latencies, 95) * 1e3,
            "p99": percentile(latencies, 99) * 1e3, "rps": len(latencies) / wall}


def in_process(state, scenario: str, ids: list[str], posted: list[dict], repeats: int) -> dict:
    """The same answers without HTTP: ServingState.answer on this process's state, one thread."""
    from churn_assets.scoring.serving import CHAMPION

    state.champion.model.use_threads(1)
    served = state.models[CHAMPION]
    timings = []
    for i in range(repeats):
        started = time.perf_counter()
        if scenario.startswith("get"):
            state.answer(served, rows=[state.row(ids[i % len(ids)])], reasons=scenario == "get_reasons")
        elif scenario == "post_one":
            state.answer(served, posted=[posted[i % len(posted)]["features"]], reasons=True)
        else:
            size = int(scenario.split("_")[1])
            rows = [posted[(i * size + j) % len(posted)]["features"] for j in range(size)]
            state.answer(served, posted=rows, reasons=True)
        timings.append(time.perf_counter() - started)
    return {"p50": percentile(timings, 50) * 1e3, "p95": percentile(timings, 95) * 1e3}


def start_server(home: Path, port: int, workers: int) -> subprocess.Popen:
    env = {**os.environ, "CHURN_HOME": str(home)}
    process = subprocess.Popen([sys.executable, "-m", "churn_assets.cli.main", "serve", "--port", str(port),
                                "--workers", str(workers)], env=env, cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import urllib.request

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"churn serve exited: {process.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as answer:
                if answer.status == 200:
                    # Every worker loads the snapshot; give the others a moment past the first.
                    time.sleep(2 + 3 * (workers - 1))
                    return process
        except OSError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit("churn serve did not become ready in 180 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--churn-home", type=Path, default=Path(os.environ.get("CHURN_HOME", "data")))
    parser.add_argument("--quick", action="store_true", help="fewer requests per scenario")
    parser.add_argument("--requests", type=int, default=20_000, help="requests per scenario at most")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds per scenario at most")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.requests, args.seconds = 3_000, 4.0
    home = args.churn_home.resolve()
    state, ids, posted = state_and_bodies(home, 2_000, args.seed)
    print(f"# churn serve on {home}: champion {state.champion.version} ({state.champion.model.algorithm}), "
          f"{len(state.row_of):,} customers; concurrency {args.concurrency}; "
          f"at most {args.requests:,} requests / {args.seconds:.0f} s per scenario")
    bare = {scenario: in_process(state, scenario, ids, posted, 300 if not scenario.startswith("batch") else 5)
            for scenario in SCENARIOS}
    print(f"# load average before: {load_average()}")
    print("| scenario | workers | requests | errors | p50 ms | p95 ms | p99 ms | requests/s | rows/s "
          "| in process p50 / p95 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for workers in [int(w) for w in args.workers.split(",")]:
        port = free_port()
        server = start_server(home, port, workers)
        try:
            for scenario in SCENARIOS:
                payloads = http_requests(scenario, ids, posted, port)
                rows = int(scenario.split("_")[1]) if scenario.startswith("batch") else 1
                budget = args.requests if rows == 1 else max(args.requests // (rows * 2), 20)
                asyncio.run(load(port, payloads, min(200, budget), 2.0, args.concurrency))  # warm-up
                result = asyncio.run(load(port, payloads, budget, args.seconds, args.concurrency))
                print(f"| {scenario} | {workers} | {result['requests']:,} | {result['errors']} | {result['p50']:.2f} "
                      f"| {result['p95']:.2f} | {result['p99']:.2f} | {result['rps']:,.0f} | {result['rps'] * rows:,.0f} "
                      f"| {bare[scenario]['p50']:.2f} / {bare[scenario]['p95']:.2f} |", flush=True)
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    print(f"# load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sys.exit(main())
