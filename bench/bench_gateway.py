"""The gateway's proxy cost, side by side on loopback: the same target reached directly, through nginx
(Debian's, upstream keep-alive) and through the gateway (real Redis, bearer token verified, revocation
list and rate limits checked), each with 1 and 2 worker processes. Prints requests/s and p50/p99
latency, the latency each proxy adds over going direct, and the CPU each server spends per request
(a figure the machine's load changes far less than a rate), as ratios."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coder.bench.support import CpuClock, percentile, process, ready, report, result
from coder.shared.devservers import RedisServer, free_port

CONCURRENCY = 32  # throughput: this many keep-alive clients share REQUESTS
REQUESTS = 4000
LATENCY_REQUESTS = 1000  # latency: one client, one request at a time
WARMUP = 400
WORKERS = (1, 2)  # nginx's worker_processes and the gateway's `run --workers`, compared pairwise
NGINX = "/usr/sbin/nginx"
ADDED_P50_GOAL_MS = 0.5  # the latency the gateway may add over going direct, one request at a time
PAYLOAD = {"id": "b7f1c2", "status": "ok", "items": list(range(16))}


def make_upstream() -> Starlette:
    """The target every path ends at (served by uvicorn, `--factory`)."""

    async def item(request: Request) -> Response:
        return JSONResponse(PAYLOAD)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/v1/item", item), Route("/healthz", healthz)])


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    gateway_ms: float | None = None
    cpu_us: float = 0.0  # the server's processes' CPU per request, under load


def _token() -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    public = json.loads(OKPAlgorithm.to_jwk(key.public_key()))
    jwks = json.dumps({"keys": [{**public, "kid": "bench", "alg": "EdDSA", "use": "sig"}]})
    now = int(time.time())
    claims = {
        "iss": "coder-platform",
        "aud": "coder-platform",
        "sub": str(uuid.uuid4()),
        "org": str(uuid.uuid4()),
        "perms": ["secrets:read"],
        "iat": now,
        "exp": now + 3600,
        "jti": uuid.uuid4().hex,
        "sid": str(uuid.uuid4()),
    }
    return jwks, jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "bench"})


def _nginx_config(prefix: Path, port: int, upstream: int, workers: int) -> Path:
    config = prefix / "nginx.conf"
    config.write_text(
        f"""
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream target {{ server 127.0.0.1:{upstream}; keepalive 64; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port};
        location /api/secrets/ {{
            proxy_pass http://target/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""
    )
    return config


class _Connection:
    """A bare HTTP/1.1 keep-alive client: cheap enough that the servers, not the load, are measured."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
        self.reader, self.writer, self.request = reader, writer, request

    async def get(self) -> tuple[int, dict[bytes, bytes]]:
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if b":" in line:
                key, value = line.split(b":", 1)
                headers[key.strip().lower()] = value.strip()
        if b"content-length" in headers:
            await self.reader.readexactly(int(headers[b"content-length"]))
        else:  # chunked
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        return status, headers


async def _load(
    name: str, port: int, path: str, pid: int, token: str, concurrency: int, requests: int
) -> Result:
    """`concurrency` clients on keep-alive connections share a fixed number of requests, served by the
    process `pid` (with its children)."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode()
    latencies: list[float] = []
    overheads: list[float] = []
    connections = [
        _Connection(*await asyncio.open_connection("127.0.0.1", port), request) for _ in range(concurrency)
    ]
    remaining = WARMUP

    async def worker(connection: _Connection, record: bool) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            began = time.perf_counter()
            status, headers = await connection.get()
            elapsed = time.perf_counter() - began
            if status != 200:
                raise RuntimeError(f"{name}: HTTP {status}")
            if record:
                latencies.append(elapsed)
                if timing := headers.get(b"server-timing"):
                    overheads.append(float(timing.split(b"dur=")[1].split(b",")[0]))

    try:
        await asyncio.gather(*(worker(c, False) for c in connections))
        remaining = requests
        cpu = CpuClock({name: pid})
        began = time.perf_counter()
        await asyncio.gather(*(worker(c, True) for c in connections))
        wall = time.perf_counter() - began
        cpu_us = cpu.per(requests)[name]
    finally:
        for connection in connections:
            connection.writer.close()
    return Result(
        name,
        requests / wall,
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
        percentile(overheads, 50) if overheads else None,
        cpu_us,
    )


async def main() -> None:
    if shutil.which(NGINX) is None or shutil.which("redis-server") is None:
        raise SystemExit("bench_gateway needs nginx and redis-server (make system-deps)")
    work = Path(tempfile.mkdtemp(prefix="coder-bench-gateway-"))
    jwks, token = _token()
    upstream_port = free_port()
    python = sys.executable
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "CODER_"))}
    try:
        with contextlib.ExitStack() as stack:
            redis = RedisServer().start()
            stack.callback(redis.stop)
            upstream_argv = [
                python,
                "-P",
                "-m",
                "uvicorn",
                "--factory",
                "coder.bench.bench_gateway:make_upstream",
            ]
            upstream_argv += ["--host", "127.0.0.1", "--port", str(upstream_port), "--log-level", "warning"]
            upstream = stack.enter_context(process(upstream_argv, env, work / "upstream.log"))
            await ready(f"http://127.0.0.1:{upstream_port}/healthz", upstream, work / "upstream.log")
            gateway_env = {
                **env,
                "CODER_JWKS": jwks,
                "CODER_SERVICE_URLS": json.dumps({"secrets": f"http://127.0.0.1:{upstream_port}"}),
                "CODER_DATA_DIR": str(work / "data"),
                "CODER_LOG_LEVEL": "WARNING",
                "REDIS_URL": redis.url,
                # High enough never to refuse here, yet every request is counted as usual.
                "GATEWAY_RATE_LIMIT_PER_TOKEN": str(10**7),
                "GATEWAY_RATE_LIMIT_PER_IP": str(10**7),
            }
            cli = str(Path(python).with_name("coder-platform"))
            paths = {"direct": (upstream_port, "/v1/item", upstream.pid)}
            for workers in WORKERS:
                gateway_port, nginx_port = free_port(), free_port()
                gateway_argv = [cli, "run", "--target", "gateway", "--port", str(gateway_port)]
                gateway_argv += ["--workers", str(workers), "--metrics-port", "0"]
                log = work / f"gateway-{workers}.log"
                gateway = stack.enter_context(process(gateway_argv, gateway_env, log))
                prefix = work / f"nginx-{workers}"
                prefix.mkdir()
                config = _nginx_config(prefix, nginx_port, upstream_port, workers)
                nginx_log = prefix / "nginx.log"
                nginx = stack.enter_context(
                    process([NGINX, "-p", str(prefix), "-c", str(config)], env, nginx_log)
                )
                await ready(f"http://127.0.0.1:{nginx_port}/api/secrets/healthz", nginx, nginx_log)
                await ready(f"http://127.0.0.1:{gateway_port}/api/secrets/healthz", gateway, log)
                paths[f"nginx x{workers}"] = (nginx_port, "/api/secrets/v1/item", nginx.pid)
                paths[f"gateway x{workers}"] = (gateway_port, "/api/secrets/v1/item", gateway.pid)
            loaded = [await _load(n, *where, token, CONCURRENCY, REQUESTS) for n, where in paths.items()]
            one = [n for n in paths if not n.endswith(tuple(f"x{w}" for w in WORKERS[1:]))]
            single = [await _load(n, *paths[n], token, 1, LATENCY_REQUESTS) for n in one]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _print(loaded, single)

    under = {r.name: r for r in loaded}
    for workers in WORKERS:  # one worker's figures keep the plain names (`rps_vs_nginx`)
        ours, theirs = under[f"gateway x{workers}"], under[f"nginx x{workers}"]
        suffix = "" if workers == 1 else f"_x{workers}"
        result(f"rps_vs_nginx{suffix}", ours.rps / theirs.rps, goal=0.5)
        result(f"p99_vs_nginx{suffix}", ours.p99_ms / theirs.p99_ms, goal=10, higher_is_better=False)
        result(f"cpu_per_request_vs_nginx{suffix}", ours.cpu_us / theirs.cpu_us, higher_is_better=False)
    by = {r.name: r for r in single}
    added = by["gateway x1"].p50_ms - by["direct"].p50_ms
    result("added_p50_ms", added, goal=ADDED_P50_GOAL_MS, higher_is_better=False, unit="ms")


def _print(loaded: list[Result], single: list[Result]) -> None:
    by = {r.name: r for r in single}
    direct, nginx, gateway = by["direct"], by["nginx x1"], by["gateway x1"]
    under = {r.name: r for r in loaded}
    print(f"throughput: {REQUESTS} GETs over {CONCURRENCY} concurrent keep-alive clients, loopback")
    report("  requests per second", [(r.name, r.rps, "req/s") for r in loaded], baseline="direct")
    report("  p99 latency under that load", [(r.name, r.p99_ms, "ms") for r in loaded], baseline="direct")
    report(
        "  CPU per request under that load (the server's processes; direct: the target's)",
        [(r.name, r.cpu_us, "us") for r in loaded],
        baseline="direct",
    )
    print(f"latency: {LATENCY_REQUESTS} GETs, one at a time (one worker each)")
    report("  p50 latency", [(r.name, r.p50_ms, "ms") for r in single], baseline="direct")
    report("  p99 latency", [(r.name, r.p99_ms, "ms") for r in single], baseline="direct")
    added = {
        "nginx": (nginx.p50_ms - direct.p50_ms, nginx.p99_ms - direct.p99_ms),
        "gateway": (gateway.p50_ms - direct.p50_ms, gateway.p99_ms - direct.p99_ms),
    }
    print("latency each proxy adds over going direct")
    for name, (p50, p99) in added.items():
        print(f"  {name:<38} p50 {p50:+8.3f} ms   p99 {p99:+8.3f} ms")
    print("ratios, gateway to nginx")
    for workers in WORKERS:
        ours, theirs = under[f"gateway x{workers}"], under[f"nginx x{workers}"]
        print(f"  {f'requests per second, {workers} worker(s)':<38} {ours.rps / theirs.rps:>10.3f}")
        print(f"  {f'p99 under load, {workers} worker(s)':<38} {ours.p99_ms / theirs.p99_ms:>10.3f}")
        print(f"  {f'CPU per request, {workers} worker(s)':<38} {ours.cpu_us / theirs.cpu_us:>10.3f}")
    for label, index in (("added p50 latency", 0), ("added p99 latency", 1)):
        g, n = added["gateway"][index], added["nginx"][index]
        ratio = f"{g / n:>10.3f}" if n > 0.01 else f"{'n/a':>10} (nginx adds under 0.01 ms)"
        print(f"  {label:<38} {ratio}")
    if gateway.gateway_ms is not None:
        print(f"  {'gateway own time, p50 (Server-Timing)':<38} {gateway.gateway_ms:>10.3f} ms")
