"""Chaos run against a real ``srgan serve``: bad inputs, killed processes, a restart with jobs queued, slow
and idle connections, a worker that keeps dying.

Run from the repository root: ``srgan bench chaos [--mutated 300] [--wait-s 90] [--connections]
[--restart-budget] [--skip-corpus] [--skip-faults] [--json OUT]``.

Part 1, the corpus: every upload is sent to a fresh ``srgan serve`` (embedded
Redis, one worker) and its fate counted: a clean 4xx (JSON error), a clear
job failure (``failed`` with a typed code other than ``internal_error``), a
success, or a 5xx. The files are generated: whole images in every input format
(which must succeed), the damaged and refused shapes of issue 10 (truncated
PNG/JPEG/TIFF/BMP/WebP, a JPEG whose last tenth is zeroed, corrupt JPEG entropy
data, APNG, animated WebP, multi-page TIFF, a palette PNG with tRNS asked as
JPEG, text, empty, a decompression-bomb header), and ``--mutated`` files made
from whole ones by flipping, zeroing, inserting and cutting bytes. A success
is *silent* when the input was damaged: it is one of the bad shapes, or, for
a mutated file, Pillow cannot decode it or decodes it into other pixels than
the file it came from (a mutation of metadata only leaves the pixels alone).

Part 2, faults, each on a fresh service, with ``--jobs`` jobs queued behind a
running one: ``kill -9`` of the worker's pool process, of the worker's main
process (its whole process group, as a container kill does), of Redis, each
while the first job is under way; then ``srgan serve`` stopped (SIGTERM) and
started again on the same data folder while jobs are queued. Per fault: jobs
lost (not finished ``--wait-s`` after the fault, or gone), jobs duplicated
(more attempts than the fault explains: one more for the job that was
running), jobs failed, and seconds from the fault until every job had
finished and a new job had succeeded. Goals with default settings: 0 lost,
0 duplicated, 0 silent successes, 0 5xx, recovery within 60 s.

The faults use a tiny random conv model with ``SRGAN_TILE=32`` and
``SRGAN_DEBUG_TILE_DELAY_S=0.05`` so that a job runs for seconds and can be
hit mid-way; every other setting is the default.

Part 3, connections (``--connections``), on a service with the default connection settings (idle 5 s,
headers 10 s, at most 1000 connections): ``--slow`` sockets sending their request head one byte every 2 s
and as many idle sockets (no byte at all), and the seconds until the server closed each (goal: all within
15 s); then ``--flood`` idle sockets held open while ``/healthz`` is timed (goal: under 1 s) and a job is
uploaded and run (goal: it succeeds), with the growth of the service's log meanwhile (goal: under 1 MB).

Part 4, the worker's restart budget (``--restart-budget``), with a 60 s window standing in for the default
600 s: six worker crashes spaced over 1.5 window (each is restarted), then crashes in a row until the budget
is used up (an upload gets 503 ``no_worker``, not 202), and the seconds until a worker runs jobs again.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from PIL import Image

from bench.tiny_models import make_conv_model
from core.redis_server import free_port

REPO = Path(__file__).resolve().parents[1]
TERMINAL = ("succeeded", "failed", "canceled")
FAULT_ENV = {"SRGAN_TILE": "32", "SRGAN_OVERLAP": "4", "SRGAN_DEBUG_TILE_DELAY_S": "0.05"}


# --- the service ---------------------------------------------------------------------------
class Serve:
    """``srgan serve`` as a subprocess on a free port, with its process tree at hand."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir, self.extra_env = data_dir, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 180) -> Serve:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SRGAN_")}
        env.update(self.extra_env, SRGAN_DATA_DIR=str(self.data_dir))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.log = open(self.data_dir / "serve.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "cli.main", "serve", "--port", str(self.port), "--log-level", "warning"],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"srgan serve exited with {self.process.returncode}; see {self.data_dir}/serve.log")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            time.sleep(0.3)
        raise RuntimeError("srgan serve was not ready in time")

    def descendants(self) -> list[psutil.Process]:
        assert self.process is not None
        return psutil.Process(self.process.pid).children(recursive=True)

    def find(self, what: str) -> int:
        assert self.process is not None
        serve_pid = self.process.pid
        for proc in self.descendants():
            with contextlib.suppress(psutil.Error):
                cmd = " ".join(proc.cmdline())
                if what == "redis" and "redis-server" in cmd:
                    return proc.pid
                if what in ("worker", "pool") and "celery" in cmd and " worker" in cmd and "webhooks" not in cmd:
                    parent = proc.parent()  # the job worker's main process is a child of srgan serve itself
                    is_main = parent is not None and parent.pid == serve_pid
                    is_pool = parent is not None and "celery" in " ".join(parent.cmdline())
                    if (what == "pool" and is_pool) or (what == "worker" and is_main):
                        return proc.pid
        raise RuntimeError(f"no {what} process under srgan serve")

    def stop(self, timeout_s: float = 60) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                for proc in self.descendants():
                    with contextlib.suppress(psutil.Error):
                        proc.kill()
                self.process.kill()
                self.process.wait(10)
        for proc in psutil.process_iter(["cmdline"]):  # an embedded Redis left without its parent
            with contextlib.suppress(psutil.Error, TypeError):
                if str(self.data_dir) in " ".join(proc.info["cmdline"] or []) and proc.pid != os.getpid():
                    proc.kill()
        self.log.close()


# --- images --------------------------------------------------------------------------------
def encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def photo(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack([x * 255 / width, y * 255 / height, (x * y) % 256], -1) + rng.integers(-20, 20, (height, width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


WHOLE: dict[str, tuple[str, dict[str, Any]]] = {
    "png": ("PNG", {}), "jpeg": ("JPEG", {"quality": 90}), "webp": ("WEBP", {"quality": 90}),
         "bmp": ("BMP", {}), "tiff": ("TIFF", {"compression": "tiff_lzw"})}


def whole_files() -> dict[str, bytes]:
    return {f"whole {name}": encode(photo(48, 40, i), fmt, **opts)
            for i, (name, (fmt, opts)) in enumerate(WHOLE.items())}


def bad_files() -> dict[str, tuple[bytes, dict[str, str]]]:
    img, other = photo(48, 40, 7), photo(48, 40, 8)
    files: dict[str, tuple[bytes, dict[str, str]]] = {}
    for name, (fmt, opts) in WHOLE.items():
        data = encode(img, fmt, **opts)
        files[f"truncated {name}"] = (data[: len(data) * 9 // 10], {})
    jpeg = encode(img, "JPEG", quality=90)
    n = len(jpeg) // 10
    files["jpeg last tenth zeroed"] = (jpeg[:-n] + b"\0" * n, {})
    mid = len(jpeg) * 2 // 3
    files["jpeg corrupt entropy data"] = (jpeg[:mid] + bytes(b ^ 0x5A for b in jpeg[mid:mid + 8]) + jpeg[mid + 8:], {})
    for name, fmt in (("apng", "PNG"), ("animated webp", "WEBP"), ("multi-page tiff", "TIFF")):
        files[name] = (encode(img, fmt, save_all=True, append_images=[other]), {})
    files["palette png with tRNS as jpeg"] = (encode(img.quantize(16), "PNG", transparency=0), {"format": "jpeg"})
    files["text"] = (b"not an image at all\n" * 20, {})
    files["empty"] = (b"", {})

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")
    files["decompression bomb header"] = (bomb, {})
    return files


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    kind = rng.choice(["flip", "flip", "zero", "insert", "cut", "byte"])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif kind == "byte":
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] = rng.randrange(256)
    elif kind == "zero":
        start, length = rng.randrange(len(out)), rng.randint(1, 64)
        out[start:start + length] = b"\0" * len(out[start:start + length])
    elif kind == "insert":
        at = rng.randrange(len(out))
        out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    else:
        del out[rng.randrange(len(out) // 2, len(out)):]
    return bytes(out)


def pixels(data: bytes) -> tuple | None:
    """The decoded image (size, mode, bytes) as Pillow sees it, or None when it cannot decode it."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.size, img.mode, img.tobytes()
    except Exception:  # noqa: BLE001 - any failure means "not a readable image"
        return None


# --- jobs ----------------------------------------------------------------------------------
def post(client: httpx.Client, data: bytes, fields: dict[str, str] | None = None) -> httpx.Response:
    return client.post("/v1/jobs", files={"file": ("upload", data, "application/octet-stream")}, data=fields or {})


def finish(client: httpx.Client, location: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(location, params={"wait": 10}).json()
        if job["status"] in TERMINAL:
            return job
    raise RuntimeError(f"{location} did not finish in {timeout_s} s")


def run_corpus(tmp: Path, env: dict[str, str], mutated: int, seed: int) -> dict:
    rng = random.Random(seed)
    whole = whole_files()
    cases: list[tuple[str, str, bytes, dict[str, str], bool]] = []  # group, name, data, fields, damaged
    cases += [("whole", name, data, {}, False) for name, data in whole.items()]
    cases += [("bad", name, data, fields, True) for name, (data, fields) in bad_files().items()]
    sources = list(whole.items())
    for i in range(mutated):
        name, original = sources[i % len(sources)]
        data = mutate(original, rng)
        damaged = pixels(data) != pixels(original)
        cases.append(("mutated", f"{name.split()[-1]} #{i}", data, {}, damaged))
    counts: Counter[str] = Counter()
    silent: list[str] = []
    examples: dict[str, str] = {}
    serve = Serve(tmp / "corpus", env).start()
    try:
        with httpx.Client(base_url=serve.url, timeout=60) as client:
            for group, name, data, fields, damaged in cases:
                response = post(client, data, fields)
                if response.status_code >= 500:
                    outcome = "5xx"
                elif response.status_code != 202:
                    is_json = response.headers.get("content-type", "").startswith("application/json")
                    clean = is_json and response.json().get("error", {}).get("code")
                    outcome = "clean 4xx" if clean else "unclear 4xx"
                else:
                    job = finish(client, response.headers["location"])
                    code = (job.get("error") or {}).get("code")
                    if job["status"] == "succeeded":
                        outcome = "silent success" if damaged else "success"
                        if damaged:
                            silent.append(f"{group}: {name}")
                    else:
                        outcome = "clear job failure" if code and code != "internal_error" else "unclear job failure"
                counts[f"{group}: {outcome}"] += 1
                examples.setdefault(f"{group}: {outcome}", name)
    finally:
        serve.stop()
    return {"counts": dict(sorted(counts.items())), "silent_successes": silent, "examples": examples,
            "files": {"whole": len(whole), "bad": len(cases) - len(whole) - mutated, "mutated": mutated}}


# --- faults --------------------------------------------------------------------------------
@contextlib.contextmanager
def service(tmp: Path, name: str, env: dict[str, str]) -> Iterator[Serve]:
    serve = Serve(tmp / name, env).start()
    try:
        yield serve
    finally:
        serve.stop()


def submit_jobs(client: httpx.Client, count: int) -> list[str]:
    slow = encode(photo(128, 128, 1), "PNG")  # 16 tiles of 32 px: a couple of seconds
    return [post(client, slow).headers["location"] for _ in range(count)]


def statuses(client: httpx.Client, locations: list[str]) -> dict[str, dict | None]:
    out: dict[str, dict | None] = {}
    for loc in locations:
        try:
            response = client.get(loc, timeout=5)
            out[loc] = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            out[loc] = None
    return out


def measure_recovery(serve: Serve, locations: list[str], running_at_fault: set[str], fault_at: float,
                     wait_s: float) -> dict:
    probe: str | None = None
    probe_done = False
    jobs: dict[str, dict | None] = {}
    recovered_after: float | None = None
    with httpx.Client(base_url=serve.url, timeout=10) as client:
        while time.monotonic() - fault_at < wait_s:
            jobs = statuses(client, locations)
            if probe is None:
                with contextlib.suppress(httpx.HTTPError):
                    response = post(client, encode(photo(16, 16, 3), "PNG"))
                    if response.status_code == 202:
                        probe = response.headers["location"]
            elif not probe_done:
                probe_job = statuses(client, [probe])[probe]
                probe_done = bool(probe_job and probe_job["status"] == "succeeded")
            if probe_done and all(j is not None and j["status"] in TERMINAL for j in jobs.values()):
                recovered_after = time.monotonic() - fault_at
                break
            time.sleep(0.5)
    lost = sum(1 for j in jobs.values() if j is None or j["status"] not in TERMINAL)
    duplicated = sum(1 for loc, j in jobs.items()
                     if j is not None and j["attempts"] > (2 if loc in running_at_fault else 1))
    failed = Counter((j.get("error") or {}).get("code", "?") for j in jobs.values() if j and j["status"] == "failed")
    return {"jobs": len(locations), "lost": lost, "duplicated": duplicated, "failed": dict(failed),
            "succeeded": sum(1 for j in jobs.values() if j and j["status"] == "succeeded"),
            "recovery_s": None if recovered_after is None else round(recovered_after, 1)}


def run_fault(tmp: Path, env: dict[str, str], fault: str, jobs: int, wait_s: float) -> dict:
    with service(tmp, fault, env) as serve, httpx.Client(base_url=serve.url, timeout=30) as client:
        locations = submit_jobs(client, jobs)
        first = locations[0]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = client.get(first).json()
            if job["status"] == "running" and job["progress"] >= 0.2:
                break
            time.sleep(0.05)
        running = {loc for loc, j in statuses(client, locations).items() if j and j["status"] == "running"}
        fault_at = time.monotonic()
        if fault == "kill -9 pool process":
            os.kill(serve.find("pool"), signal.SIGKILL)
        elif fault == "kill -9 worker main process":
            os.killpg(serve.find("worker"), signal.SIGKILL)
        elif fault == "kill -9 redis":
            os.kill(serve.find("redis"), signal.SIGKILL)
        elif fault == "restart with jobs queued":
            serve.stop()
            serve.start()
        else:
            raise ValueError(fault)
        return measure_recovery(serve, locations, running, fault_at, wait_s)


# --- connections ---------------------------------------------------------------------------
def _open_sockets(url: str, count: int) -> list[socket.socket]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def run_connections(tmp: Path, env: dict[str, str], slow: int, flood: int) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process holds the flood's sockets
    head = b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10_000
    results: dict[str, Any] = {}
    with service(tmp, "connections", env) as serve:
        slow_socks, idle_socks = _open_sockets(serve.url, slow), _open_sockets(serve.url, slow)
        closed_at: dict[socket.socket, float] = {}
        opened, sent = time.monotonic(), 0
        next_byte = opened
        while len(closed_at) < 2 * slow and time.monotonic() - opened < 60:
            if time.monotonic() >= next_byte:  # one byte every 2 s on each slow socket
                for sock in slow_socks:
                    if sock not in closed_at:
                        with contextlib.suppress(OSError):
                            sock.send(head[sent:sent + 1])
                sent, next_byte = sent + 1, next_byte + 2.0
            for sock in slow_socks + idle_socks:
                if sock not in closed_at and _closed(sock):
                    closed_at[sock] = time.monotonic() - opened
            time.sleep(0.05)
        for name, socks in (("slow_headers", slow_socks), ("idle", idle_socks)):
            times = [closed_at.get(s) for s in socks]
            done = [t for t in times if t is not None]
            results[name] = {"sockets": len(socks), "closed": len(done),
                             "closed_within_15_s": sum(1 for t in done if t <= 15),
                             "max_s": round(max(done), 1) if done else None}
            for sock in socks:
                sock.close()
        log_path = serve.data_dir / "serve.log"
        log_before = log_path.stat().st_size
        flood_socks = _open_sockets(serve.url, flood)
        try:
            started = time.monotonic()
            health = httpx.get(serve.url + "/healthz", timeout=30)
            health_s = time.monotonic() - started
            with httpx.Client(base_url=serve.url, timeout=60) as client:
                response = post(client, encode(photo(64, 64, 5), "PNG"))
                job = finish(client, response.headers["location"]) if response.status_code == 202 else {}
        finally:
            for sock in flood_socks:
                sock.close()
        results["flood"] = {"sockets": flood, "healthz_status": health.status_code, "healthz_s": round(health_s, 3),
                            "upload": job.get("status", f"HTTP {response.status_code}"),
                            "log_growth_bytes": log_path.stat().st_size - log_before}
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return results


def run_restart_budget(tmp: Path, env: dict[str, str], window_s: float = 60.0) -> dict:
    budget_env = {**env, "SRGAN_WORKER_RESTART_BUDGET": "5", "SRGAN_WORKER_RESTART_WINDOW_S": str(window_s)}
    results: dict[str, Any] = {}
    with service(tmp, "restart-budget", budget_env) as serve, \
            httpx.Client(base_url=serve.url, timeout=30) as client:
        spaced = []
        for _ in range(6):  # spread over 1.5 windows: never more than 4 restarts inside one
            killed = serve.find("worker")
            os.killpg(killed, signal.SIGKILL)
            spaced.append(_wait_restarted(serve, killed, timeout_s=window_s))
            time.sleep(max(0.0, window_s / 4 - (spaced[-1] or 0)))
        results["spaced_crashes"] = {"crashes": 6, "restarted": sum(1 for t in spaced if t is not None),
                                     "restart_s": [None if t is None else round(t, 1) for t in spaced]}
        time.sleep(window_s)  # a fresh window
        crashes, refused = 0, None
        while refused is None and crashes < 12:
            killed = serve.find("worker")
            os.killpg(killed, signal.SIGKILL)
            crashes += 1
            time.sleep(1.0)
            response = post(client, encode(photo(16, 16, 3), "PNG"))
            if response.status_code == 503:
                refused = response
            elif _wait_restarted(serve, killed, timeout_s=window_s) is None:
                break
        exhausted_at = time.monotonic()
        ready_after = None
        if refused is not None:
            while time.monotonic() - exhausted_at < 2 * window_s:
                response = post(client, encode(photo(16, 16, 3), "PNG"))
                if response.status_code == 202 and finish(client, response.headers["location"])["status"] == \
                        "succeeded":
                    ready_after = time.monotonic() - exhausted_at
                    break
                time.sleep(1.0)
        results["crashes_in_a_row"] = {
            "crashes_until_refused": crashes,
            "refused": None if refused is None else f"{refused.status_code} {refused.json()['error']['code']}",
            "retry_after_s": None if refused is None else int(refused.headers.get("retry-after", "0")),
            "jobs_run_again_after_s": None if ready_after is None else round(ready_after, 1)}
    return results


def _wait_restarted(serve: Serve, killed: int, timeout_s: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        with contextlib.suppress(RuntimeError):
            if serve.find("worker") != killed:
                return time.monotonic() - started
        time.sleep(0.1)
    return None


FAULTS = ("kill -9 pool process", "kill -9 worker main process", "kill -9 redis", "restart with jobs queued")


def run(args: argparse.Namespace) -> int:
    """``srgan bench chaos`` (arguments: ``cli/bench.py``)."""


    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="srgan-chaos-") as tmp_name:
        tmp = Path(tmp_name)
        model = make_conv_model(tmp / "tinyconv.onnx")
        if not args.skip_corpus:
            corpus = run_corpus(tmp, {}, args.mutated, args.seed)  # the default model and settings
            results["corpus"] = corpus
            print(f"corpus: {corpus['files']}")
            for key, count in corpus["counts"].items():
                print(f"  {key:40s} {count:5d}   e.g. {corpus['examples'][key]}")
            for item in corpus["silent_successes"]:
                print(f"  silent success: {item}")
        env = {**FAULT_ENV, "SRGAN_MODEL": str(model)}
        if args.connections:
            results["connections"] = connections = run_connections(tmp, {"SRGAN_MODEL": str(model)}, args.slow,
                                                                    args.flood)
            print(f"connections: {json.dumps(connections)}", flush=True)
        if args.restart_budget:
            results["restart_budget"] = budget = run_restart_budget(tmp, {"SRGAN_MODEL": str(model)})
            print(f"restart budget: {json.dumps(budget)}", flush=True)
        if args.skip_faults:
            if args.json:
                args.json.write_text(json.dumps(results, indent=2))
            return 0
        results["faults"] = {}
        print(f"\n{'fault':32s} {'jobs':>4s} {'lost':>4s} {'dup':>4s} {'ok':>4s} {'recovery':>10s}  failed")
        for fault in [f.strip() for f in (args.faults or ",".join(FAULTS)).split(",") if f.strip()]:
            r = run_fault(tmp, env, fault, args.jobs, args.wait_s)
            results["faults"][fault] = r  # type: ignore[index]
            rec = f"{r['recovery_s']} s" if r["recovery_s"] is not None else f"> {args.wait_s:g} s"
            print(f"{fault:32s} {r['jobs']:4d} {r['lost']:4d} {r['duplicated']:4d} {r['succeeded']:4d} {rec:>10s}  "
                  f"{r['failed'] or ''}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0

