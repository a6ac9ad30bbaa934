"""Bounded loopback load test of `twinbert-search serve`: N clients for T seconds, then stop.

Starts the server as a subprocess on 127.0.0.1 (a free port), waits for /readyz, runs a short
warm-up, then N concurrent clients (asyncio + httpx, one connection each) POST /search with
query texts from a file, round-robin, until the deadline. Every request has a timeout and the
run a hard stop, so the test cannot outlive `duration + warmup + 60 s` whatever the server
does; the server is terminated (its own pid) at the end. Prints one JSON report; with
--write FILE it also replaces (or appends) the "Search API under load" section of FILE,
between HTML comment markers, leaving the rest of the file alone.

    python benchmarks/load_test.py --index-dir runs/scifact-default \
        --queries ../shared/datasets/scifact/queries.jsonl --concurrency 32 --duration 60 \
        --write BENCHMARKS.md

Against a cluster (`--backend opensearch --url URL`, or elasticsearch), with `--during CMD`
a shell command runs beside the measured clients (stopping and restarting the node, say),
and `--server-log FILE` keeps the server's output: the report then counts its lines,
tracebacks and "Connection pool is full" warnings, and the answers by status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from twinbert_search.evaluation.provenance import cpu_model, git_state

BEGIN = "<!-- BEGIN search-api-load -->"
END = "<!-- END search-api-load -->"
READY_TIMEOUT_S = 600.0  # the default model is built on first use (minutes)
GRACE_S = 60.0
SERVER_CODE = (
    "import sys\n"
    "from twinbert_search.cli import main\n"
    "from twinbert_search.cli.serve import serve\n"
    "if 'serve' not in main.commands:\n"
    "    main.add_command(serve)\n"
    "main(['serve', *sys.argv[1:]], prog_name='twinbert-search')\n"
)


def read_queries(path: Path, limit: int | None = None) -> list[str]:
    """Query texts: BEIR queries.jsonl ("text" field) or one query per line."""
    texts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        texts.append(json.loads(line)["text"] if line.startswith("{") else line)
    if not texts:
        raise SystemExit(f"no queries in {path}")
    return texts[:limit] if limit else texts


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine() -> dict[str, Any]:
    commit, dirty = git_state()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit + ("+uncommitted" if dirty else ""),
    }


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


class Stats:
    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.server_ms: dict[str, list[float]] = {}
        self.errors: dict[str, int] = {}
        self.degraded = 0
        self.cache_hits = 0

    def ok(self, latency_ms: float, body: dict[str, Any]) -> None:
        self.latencies_ms.append(latency_ms)
        self.degraded += not body.get("reranked", False)
        self.cache_hits += bool(body.get("cache_hit"))
        for stage, ms in body.get("timings_ms", {}).items():
            self.server_ms.setdefault(stage, []).append(ms)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def client_loop(
    client: httpx.AsyncClient,
    url: str,
    queries: list[str],
    start: int,
    step: int,
    deadline: float,
    payload: dict[str, Any],
    stats: Stats | None,
) -> None:
    i = start
    while time.perf_counter() < deadline:
        body = {"query": queries[i % len(queries)], **payload}
        i += step
        t0 = time.perf_counter()
        try:
            response = await client.post(url, json=body)
        except httpx.HTTPError as exc:
            if stats is not None:
                stats.error(type(exc).__name__)
            continue
        latency = (time.perf_counter() - t0) * 1e3
        if stats is None:
            continue
        if response.status_code == 200:
            stats.ok(latency, response.json())
        else:
            stats.error(f"HTTP {response.status_code}")


async def run_clients(
    base_url: str,
    queries: list[str],
    concurrency: int,
    seconds: float,
    payload: dict[str, Any],
    stats: Stats | None,
    request_timeout: float,
) -> float:
    """Run `concurrency` clients until the deadline; returns the measured wall time."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(request_timeout)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as client:
        started = time.perf_counter()
        deadline = started + seconds
        tasks = [
            client_loop(client, "/search", queries, c, concurrency, deadline, payload, stats)
            for c in range(concurrency)
        ]
        # Hard stop: clients finish their request in flight (bounded by its timeout), no more.
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), seconds + request_timeout + 5)
        except asyncio.TimeoutError:
            if stats is not None:
                stats.error("hard_stop")
        return time.perf_counter() - started


def start_server(args: argparse.Namespace, port: int, log: Any) -> subprocess.Popen:
    command = [sys.executable, "-c", SERVER_CODE, "--host", "127.0.0.1", "--port", str(port)]
    if args.backend == "embedded":
        command += ["--index-dir", str(args.index_dir)]
    else:
        command += ["--backend", args.backend, "--url", args.url]
        if getattr(args, "alias", None):
            command += ["--alias", args.alias]
    command += ["--log-level", args.log_level]
    command += ["--cache-size", str(args.cache_size)]
    command += ["--rerank-budget-ms", str(args.rerank_budget_ms)]
    if getattr(args, "vector_cache_mb", None) is not None and args.backend != "embedded":
        command += ["--vector-cache-mb", str(args.vector_cache_mb)]
    if args.model:
        command += ["--model", str(args.model)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.workers:
        command += ["--workers", str(args.workers)]
    env = {k: v for k, v in os.environ.items() if k != "TWINBERT_API_KEY"}
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def wait_ready(base_url: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server was not ready after {timeout:.0f} s")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one when pid is None)."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)


def log_counts(text: str) -> dict[str, int]:
    """What the server wrote: lines, tracebacks, and urllib3's pool-full warnings."""
    return {
        "lines": len(text.splitlines()),
        "tracebacks": text.count("Traceback (most recent call last)"),
        "pool_full": text.count("Connection pool is full"),
    }


def statuses(stats: Stats) -> dict[str, int]:
    """Answers by HTTP status ("200", "503", ...); transport failures by exception name."""
    counts = {"200": len(stats.latencies_ms)} if stats.latencies_ms else {}
    for kind, n in stats.errors.items():
        counts[kind.removeprefix("HTTP ")] = n
    return counts


def summarize(stats: Stats, wall_s: float) -> dict[str, Any]:
    lat = sorted(stats.latencies_ms)
    errors = sum(stats.errors.values())
    server = {
        stage: {
            "p50_ms": round(percentile(sorted(v), 50), 2),
            "p99_ms": round(percentile(sorted(v), 99), 2),
        }
        for stage, v in stats.server_ms.items()
    }
    return {
        "requests": len(lat) + errors,
        "ok": len(lat),
        "errors": errors,
        "error_kinds": stats.errors,
        "degraded": stats.degraded,
        "cache_hits": stats.cache_hits,
        "wall_s": round(wall_s, 2),
        "rps": round(len(lat) / wall_s, 1) if wall_s else 0.0,
        "p50_ms": round(percentile(lat, 50), 2),
        "p90_ms": round(percentile(lat, 90), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "max_ms": round(lat[-1], 2) if lat else float("nan"),
        "mean_ms": round(sum(lat) / len(lat), 2) if lat else float("nan"),
        "server_ms": server,
        "statuses": statuses(stats),
    }


def render_section(report: dict[str, Any]) -> str:
    m, r, cfg = report["machine"], report["result"], report["config"]
    load = report["loadavg"]
    cpu = r.get("cpu", {"server_s": float("nan"), "client_s": float("nan")})
    per_request = cpu["server_s"] * 1e3 / r["ok"] if r["ok"] else float("nan")
    available = round(r["wall_s"] * (m["nproc"] or 1), 1)
    stages = ", ".join(
        f"{stage} {v['p50_ms']:.2f} / {v['p99_ms']:.2f}" for stage, v in r["server_ms"].items()
    )
    # Only the load before the run says whether others were busy: the run itself adds ~nproc.
    busy = load["before"][0] > 0.5 * (m["nproc"] or 1)
    note = (
        f"Other jobs were running on the machine: the 1-minute load average was "
        f"{load['before'][0]:.2f} before the run and {load['after'][0]:.2f} after it "
        f"({m['nproc']} cores; the run itself adds about {m['nproc']}), so these figures are "
        "pessimistic."
        if busy
        else f"The machine was otherwise idle (1-minute load {load['before'][0]:.2f} before, "
        f"{load['after'][0]:.2f} after, {m['nproc']} cores)."
    )
    cache = (
        "off (`--cache-size 0`): every request runs the query encoder"
        if cfg["cache_size"] == 0
        else f"{cfg['cache_size']} entries ({r['cache_hits']} of {r['ok']} requests hit it)"
    )
    return "\n".join(
        [
            BEGIN,
            "## Search API under load",
            "",
            f"`POST /search` (k={cfg['k']}, candidates={cfg['candidates']}, rerank on) against "
            f"`twinbert-search serve` on loopback: {cfg['concurrency']} concurrent clients "
            f"(asyncio + httpx, one keep-alive connection each) for {cfg['duration_s']:g} s after "
            f"a {cfg['warmup_s']:g} s warm-up, query texts from `{cfg['queries_name']}` "
            f"({cfg['queries']} queries, round-robin). The client runs on the same machine.",
            "",
            "| requests | errors | degraded (reranked=false) | requests/s | p50 ms | p90 ms "
            "| p99 ms | max ms |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {r['requests']} | {r['errors']} | {r['degraded']} | {r['rps']} | {r['p50_ms']} "
            f"| {r['p90_ms']} | {r['p99_ms']} | {r['max_ms']} |",
            "",
            f"Server-side stage times, p50 / p99 ms: {stages}. They include waiting for a CPU; "
            "the gap between the server's total and the client's latency is time queued for a "
            "worker thread (requests beyond the worker count wait).",
            "",
            f"CPU used during the measured {r['wall_s']:g} s: server {cpu['server_s']:g} s "
            f"({per_request:.1f} ms per request), load-test client {cpu['client_s']:g} s, of "
            f"{available:g} CPU-seconds on {m['nproc']} cores.",
            "",
            f"- Index: {cfg['index']}; model: {cfg['model']}.",
            f"- Server: workers {cfg['workers'] or 'default (cores)'}, ONNX Runtime threads "
            f"{cfg['threads'] or 'default'}, rerank budget {cfg['rerank_budget_ms']:g} ms, "
            f"query cache {cache}.",
            f"- Machine: {m['nproc']} cores, {m['cpu']}; Python {m['python']}; "
            f"{m['platform']}; commit {m['commit']}; {report['date']}.",
            f"- {note}",
            "",
            "Reproduce (from the repository root; `runs/scifact-default` is built once with "
            "`twinbert-search index ../shared/datasets/scifact --index-dir runs/scifact-default`):",
            "",
            "```sh",
            report["command"],
            "```",
            END,
        ]
    )


def write_section(path: Path, section: str) -> None:
    """Replace the marked section of `path`, or append it; the rest of the file is kept."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index-dir", type=Path)
    parser.add_argument(
        "--backend", choices=("embedded", "opensearch", "elasticsearch"), default="embedded"
    )
    parser.add_argument("--url", default=None, help="The cluster (--backend other than embedded).")
    parser.add_argument("--alias", default=None, help="The cluster's alias (server --alias).")
    parser.add_argument("--log-level", default="warning", help="Server --log-level.")
    parser.add_argument(
        "--server-log", type=Path, default=None, help="Keep the server's output in this file."
    )
    parser.add_argument(
        "--during",
        default=None,
        metavar="CMD",
        help="Shell command started with the measured run (e.g. stop and restart the node).",
    )
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--queries", type=Path)
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="Measured seconds.")
    parser.add_argument("--warmup", type=float, default=5.0, help="Unmeasured seconds first.")
    parser.add_argument("-k", "--k", type=int, default=10)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="Server --threads.")
    parser.add_argument("--workers", type=int, default=None, help="Server --workers.")
    parser.add_argument(
        "--cache-size", type=int, default=0, help="Server query cache (default 0: off)."
    )
    parser.add_argument("--rerank-budget-ms", type=float, default=250.0)
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument("--json-out", type=Path, default=None, help="Also save the report here.")
    parser.add_argument("--write", type=Path, default=None, help="Update this BENCHMARKS.md.")
    parser.add_argument(
        "--render-only",
        type=Path,
        default=None,
        metavar="REPORT_JSON",
        help="Do not run: write the section of a saved report (needs --write).",
    )
    args = parser.parse_args(argv)
    if args.render_only is None:
        if args.queries is None:
            parser.error("--queries is required (unless --render-only)")
        if args.backend == "embedded" and args.index_dir is None:
            parser.error("--index-dir is required with --backend embedded")
        if args.backend != "embedded" and not args.url:
            parser.error(f"--backend {args.backend} needs --url")
    if not 1 <= args.concurrency <= 256 or not 0 < args.duration <= 600:
        parser.error("keep it bounded: 1..256 clients, 0..600 s")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render_only is not None:
        report = json.loads(args.render_only.read_text())
        if args.write is None:
            print(render_section(report))
        else:
            write_section(args.write, render_section(report))
        return 0
    queries = read_queries(args.queries, args.max_queries)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    payload = {"k": args.k, "candidates": args.candidates}
    loadavg_before = os.getloadavg()
    with tempfile.TemporaryFile(mode="w+") as log:
        server = start_server(args, port, log)
        try:
            wait_ready(base_url, server, READY_TIMEOUT_S)
            if args.warmup > 0:
                asyncio.run(
                    run_clients(base_url, queries, args.concurrency, args.warmup, payload, None, 30)
                )
            stats = Stats()
            server_cpu0, client_cpu0 = cpu_seconds(server.pid), cpu_seconds()
            during = None if args.during is None else subprocess.Popen(args.during, shell=True)
            wall = asyncio.run(
                run_clients(
                    base_url,
                    queries,
                    args.concurrency,
                    args.duration,
                    payload,
                    stats,
                    args.request_timeout,
                )
            )
            cpu = {
                "server_s": round(cpu_seconds(server.pid) - server_cpu0, 1),
                "client_s": round(cpu_seconds() - client_cpu0, 1),
            }
            during_rc = None if during is None else during.wait(timeout=GRACE_S)
        except BaseException:
            stop_server(server)
            log.seek(0)
            sys.stderr.write(log.read()[-4000:])
            raise
        stop_server(server)
        log.seek(0)
        server_log = log.read()
    if args.server_log is not None:
        args.server_log.write_text(server_log)
    loadavg_after = os.getloadavg()
    report = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/load_test.py "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "config": {
            "index": str(args.index_dir) if args.backend == "embedded" else args.url,
            "backend": args.backend,
            "model": str(args.model) if args.model else "the default (MiniLM-L6-v2 TwinBERT)",
            "queries": len(queries),
            "queries_name": args.queries.name,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "k": args.k,
            "candidates": args.candidates,
            "threads": args.threads,
            "workers": args.workers,
            "cache_size": args.cache_size,
            "rerank_budget_ms": args.rerank_budget_ms,
        },
        "machine": machine(),
        "loadavg": {"before": list(loadavg_before), "after": list(loadavg_after)},
        "result": summarize(stats, wall) | {"cpu": cpu, "server_log": log_counts(server_log)},
    }
    if during_rc is not None:
        report["during"] = {"command": args.during, "exit_code": during_rc}
    print(json.dumps(report["result"] | {"report": report}, indent=2))
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    if args.write is not None:
        write_section(args.write, render_section(report))
    return 0 if report["result"]["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
