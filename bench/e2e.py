"""End-to-end benchmark of the platform: REST upload -> Celery worker -> prediction, plus the processes' memory.

    python bench/e2e.py [--n-images 10] [--n-series 5] [--series DIR] [--json-out PATH] [--keep]

Self-contained by default: a temporary folder gets a SQLite database and a kombu filesystem broker
(HEMO_VAR_DIR), then ``manage.py migrate``, ``manage.py register_model ml/models/default --activate``, a verified
clinician in a new organization, ``gunicorn hemoplatform.wsgi`` on a free 127.0.0.1 port and one
``celery -A hemoplatform worker --concurrency=1`` (prefork: a parent and one pool child). When DATABASE_URL and/or
CELERY_BROKER_URL are set they are used instead: pass a SCRATCH database and broker (migrations run on it, rows are
left in it, and the worker consumes whatever is queued on the broker's ``cpu``/``gpu`` queues).

Through the real REST API (token, case, upload, poll ``GET /api/v1/predictions/{id}/`` every 0.1 s) it measures:
one cold image (the worker's first prediction: torch import and model load included), N warm single images from
``$HEMO_DATA_DIR/head_ct`` and M uploads of the 28-slice GE series as a ZIP of its .dcm files. For each: the upload
request time, the time from upload start to ``succeeded`` as the client sees it, and the worker-side timings stored
on the prediction (load/inference/heatmap/total/queue_wait). Memory: VmHWM/VmRSS from /proc of the worker parent and
pool child and of the gunicorn processes.

Prints one JSON object, then a table. Every process it started is stopped (also on errors and Ctrl-C) and the
temporary folder removed (unless --keep).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
POLL_INTERVAL_S = 0.1
WORKER_TIMING_KEYS = ("load", "inference", "heatmap", "total", "queue_wait")

CREATE_USER = """
import os
from allauth.account.models import EmailAddress
from accounts.models import Organization, Role, User
name = os.environ["BENCH_ORGANIZATION"]
organization = Organization.objects.create(name=name, slug=Organization.unique_slug(name))
user = User.objects.create_user(
    username=os.environ["BENCH_USERNAME"], email=os.environ["BENCH_USERNAME"] + "@example.org",
    password=os.environ["BENCH_PASSWORD"], role=Role.CLINICIAN, organization=organization,
)
EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
"""


class BenchError(RuntimeError):
    pass


# --- processes --------------------------------------------------------------------------------------------------------


def _python() -> str:
    """The project's interpreter for the subprocesses (this script itself needs only the standard library)."""
    venv = REPO_ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.is_file() else sys.executable


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _run_manage(args: list[str], env: dict, log: Path, timeout: float = 600) -> float:
    start = time.perf_counter()
    with open(log, "ab") as handle:
        handle.write(f"\n$ manage.py {' '.join(args)}\n".encode())
        handle.flush()
        result = subprocess.run(
            [_python(), "manage.py", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0:
        raise BenchError(f"manage.py {args[0]} failed ({result.returncode}):\n{_tail(log)}")
    return time.perf_counter() - start


class Processes:
    """Long-running subprocesses, each in its own session so that its whole group (gunicorn workers, the celery
    pool child) can be stopped by the group id of the process we started."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, command: list[str], env: dict, log: Path) -> subprocess.Popen:
        with open(log, "wb") as handle:
            process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started.append((name, process))
        return process

    def stop_all(self) -> None:
        for _, process in reversed(self.started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # the parent stops its own children (warm shutdown)
        deadline = time.monotonic() + 30
        for _, process in reversed(self.started):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for _, process in self.started:
            _signal_group(process, signal.SIGKILL)  # what is left of the group (a pool child, a gunicorn worker)
            if process.poll() is None:
                process.wait(timeout=10)
        self.started.clear()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # start_new_session: the group id is the pid of the process we started
    except (ProcessLookupError, PermissionError):
        pass


# --- /proc memory -----------------------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return sorted(children)


def _memory(pid: int) -> dict:
    """VmHWM (peak resident set) and VmRSS of one process, in MiB."""
    values = {"pid": pid}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[f"{key.lower()}_mib"] = round(int(rest.split()[0]) / 1024, 1)
    except OSError:
        values["error"] = "process gone"
    return values


def _worker_memory(worker_pid: int) -> dict:
    return {"parent": _memory(worker_pid), "pool_children": [_memory(pid) for pid in _children(worker_pid)]}


def _web_memory(master_pid: int) -> dict:
    master = _memory(master_pid)
    workers = [_memory(pid) for pid in _children(master_pid)]
    total = master.get("vmrss_mib", 0) + sum(w.get("vmrss_mib", 0) for w in workers)
    return {"master": master, "workers": workers, "total_rss_mib": round(total, 1)}


# --- HTTP -------------------------------------------------------------------------------------------------------------


class Api:
    def __init__(self, base: str) -> None:
        self.base = base
        self.token: str | None = None

    def call(self, method: str, path: str, *, body=None, files=None, timeout: float = 300) -> tuple[int, dict]:
        headers = {"Accept": "application/json"}
        data = None
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        if files:  # multipart/form-data, one "files" part per file
            boundary = uuid.uuid4().hex
            parts = []
            for name, content in files:
                parts += [
                    f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n".encode(),
                    content,
                    b"\r\n",
                ]
            data = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - our own local server
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            text = error.read()
            try:
                return error.code, json.loads(text)
            except ValueError:
                return error.code, {"detail": text[:500].decode(errors="replace")}

    def expect(self, status: int, method: str, path: str, **kwargs) -> dict:
        got, body = self.call(method, path, **kwargs)
        if got != status:
            raise BenchError(f"{method} {path}: expected {status}, got {got}: {body}")
        return body


def _wait_healthy(base: str, processes: list[tuple[str, subprocess.Popen, Path]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for name, process, log in processes:
            if process.poll() is not None:
                raise BenchError(f"{name} exited ({process.returncode}):\n{_tail(log)}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=5) as response:  # noqa: S310
                if response.status == 200:
                    return
        except urllib.error.HTTPError as error:
            last = f"{error.code} {error.read()[:300]!r}"
        except OSError as error:
            last = str(error)
        time.sleep(0.5)
    raise BenchError(f"/health did not answer 200 within {timeout:.0f} s (last: {last})")


def _wait_worker_ready(process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"the Celery worker exited ({process.returncode}):\n{_tail(log)}")
        if " ready." in _tail(log, 20000):
            return
        time.sleep(0.2)
    raise BenchError(f"the Celery worker was not ready within {timeout:.0f} s:\n{_tail(log)}")


# --- measuring --------------------------------------------------------------------------------------------------------


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 4)


def _one(api: Api, case_id: str, name: str, content: bytes, timeout: float) -> dict:
    start = time.perf_counter()
    scan = api.expect(201, "POST", f"/api/v1/cases/{case_id}/scans/", files=[(name, content)])
    upload_s = time.perf_counter() - start
    path = f"/api/v1/predictions/{scan['prediction']['id']}/"
    polls = 0
    while True:
        prediction = api.expect(200, "GET", path)
        polls += 1
        if prediction["status"] in ("succeeded", "failed"):
            break
        if time.perf_counter() - start > timeout:
            raise BenchError(f"prediction {path} still {prediction['status']} after {timeout:.0f} s")
        time.sleep(POLL_INTERVAL_S)
    done_s = time.perf_counter() - start
    if prediction["status"] != "succeeded":
        raise BenchError(f"prediction of {name} failed: {prediction.get('error')}")
    timings = prediction.get("timings") or {}
    worker = {key: timings.get(key) for key in WORKER_TIMING_KEYS}
    known = [timings.get(key) for key in ("load", "inference", "heatmap", "total")]
    if all(isinstance(v, int | float) for v in known):
        # reading the slice files, the overlay PNGs and other work inside `total` that the predictor does not time
        worker["other"] = round(known[3] - known[0] - known[1] - known[2], 4)
    return {
        "file": name,
        "bytes": len(content),
        "slices": scan.get("slice_count"),
        "upload_s": round(upload_s, 4),
        "time_to_succeeded_s": round(done_s, 4),
        "server_created_to_finished_s": _seconds_between(prediction.get("created"), prediction.get("finished")),
        "polls": polls,
        "probability": prediction.get("probability"),
        "worker": worker,
    }


def _stats(values: list[float]) -> dict | None:
    values = sorted(v for v in values if isinstance(v, int | float))
    if not values:
        return None
    if len(values) == 1:
        p95 = values[0]
    else:  # linear interpolation between closest ranks
        p95 = statistics.quantiles(values, n=20, method="inclusive")[18]
    return {"n": len(values), "p50": round(statistics.median(values), 4), "p95": round(p95, 4), "max": values[-1]}


def _summary(runs: list[dict]) -> dict:
    keys = (*WORKER_TIMING_KEYS, "other")
    return {
        "n": len(runs),
        "upload_s": _stats([r["upload_s"] for r in runs]),
        "time_to_succeeded_s": _stats([r["time_to_succeeded_s"] for r in runs]),
        "server_created_to_finished_s": _stats([r["server_created_to_finished_s"] for r in runs]),
        "worker_s": {key: _stats([r["worker"].get(key) for r in runs]) for key in keys},
        "runs": runs,
    }


def _series_zip(directory: Path) -> tuple[bytes, int]:
    paths = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() == ".dcm")
    if not paths:
        raise BenchError(f"no .dcm files in {directory}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in paths:
            archive.write(path, f"{directory.name}/{path.name}")
    return buffer.getvalue(), len(paths)


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


# --- the benchmark ----------------------------------------------------------------------------------------------------


def bench(args: argparse.Namespace, work: Path) -> dict:
    data_dir = Path(os.environ.get("HEMO_DATA_DIR") or REPO_ROOT.parent / "shared" / "data").resolve()
    images = sorted((data_dir / "head_ct").glob("*.png"))
    if len(images) < args.n_images + 1:
        raise BenchError(f"need {args.n_images + 1} PNG images in {data_dir / 'head_ct'}, found {len(images)}")
    series_dir = (args.series or data_dir / "dicom" / "ge_head_series").resolve()
    series_zip, series_slices = _series_zip(series_dir)
    model_dir = args.model.resolve()

    var = work / "var"
    logs = work / "log"
    logs.mkdir(parents=True)
    external_db = bool(os.environ.get("DATABASE_URL"))
    external_broker = bool(os.environ.get("CELERY_BROKER_URL"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "hemoplatform.settings.local"),
        "DEBUG": os.environ.get("DEBUG", "false"),  # no per-query bookkeeping in the web process and worker
        "HEMO_VAR_DIR": str(var),
        "HEMO_MEDIA_ROOT": str(var / "media"),
        "HEMO_MODEL_STORE_DIR": str(var / "models"),
        "HEMO_DATA_DIR": str(data_dir),
        "HEMO_API_THROTTLE_UPLOAD": "100000/hour",  # the default 60/hour would stop a long run
        "HEMO_API_THROTTLE_TOKEN": "1000/minute",
        "PYTHONUNBUFFERED": "1",
    }
    # Explicit embedded defaults, so that an .env file beside manage.py cannot point the run at a real database.
    env.setdefault("DATABASE_URL", f"sqlite:///{var / 'db.sqlite3'}")
    env.setdefault("CELERY_BROKER_URL", "filesystem://")
    env.pop("CACHE_URL", None)  # throttle counters per process: never touch a shared cache

    setup: dict[str, float] = {}
    setup["migrate_s"] = round(_run_manage(["migrate", "--noinput", "-v", "0"], env, logs / "manage.log"), 2)
    setup["register_model_s"] = round(
        _run_manage(["register_model", str(model_dir), "--activate"], env, logs / "manage.log"), 2
    )
    username = f"bench-{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(16)
    user_env = {
        **env,
        "BENCH_USERNAME": username,
        "BENCH_PASSWORD": password,
        "BENCH_ORGANIZATION": f"Bench {username}",
    }
    setup["create_user_s"] = round(_run_manage(["shell", "-c", CREATE_USER], user_env, logs / "manage.log"), 2)

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    node = f"bench-{uuid.uuid4().hex[:8]}@localhost"
    processes = Processes()
    args._processes = processes  # for main()'s cleanup
    start = time.perf_counter()
    worker = processes.start(
        "celery worker",
        [
            _python(),
            "-m",
            "celery",
            "-A",
            "hemoplatform",
            "worker",
            "-Q",
            "cpu,gpu",
            "-n",
            node,
            "--concurrency=1",
            "--prefetch-multiplier=1",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=INFO",
        ],
        env,
        logs / "worker.log",
    )
    web = processes.start(
        "gunicorn",
        [
            _python(),
            "-m",
            "gunicorn",
            "hemoplatform.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(args.web_workers),
            "--timeout",
            "300",
            "--graceful-timeout",
            "5",
            "--access-logfile",
            str(logs / "access.log"),
        ],
        env,
        logs / "web.log",
    )
    _wait_healthy(base, [("gunicorn", web, logs / "web.log"), ("celery worker", worker, logs / "worker.log")], 180)
    setup["web_healthy_s"] = round(time.perf_counter() - start, 2)
    _wait_worker_ready(worker, logs / "worker.log", 180)
    setup["worker_ready_s"] = round(time.perf_counter() - start, 2)
    memory_idle = {"worker": _worker_memory(worker.pid), "web": _web_memory(web.pid)}

    api = Api(base)
    api.token = api.expect(200, "POST", "/api/v1/auth/token/", body={"username": username, "password": password})[
        "token"
    ]
    case = api.expect(201, "POST", "/api/v1/cases/", body={"patient_ref": "BENCH-0001", "title": "Platform bench"})
    case_id = case["id"]
    models = api.expect(200, "GET", "/api/v1/models/")["results"]
    active = next((m for m in models if m.get("is_active")), {})
    model_version = {key: active.get(key) for key in ("name", "version", "sha256")}

    cold = _one(api, case_id, images[0].name, images[0].read_bytes(), args.timeout)
    hwm_after = {"cold": _worker_memory(worker.pid)}
    image_runs = [_one(api, case_id, p.name, p.read_bytes(), args.timeout) for p in images[1 : args.n_images + 1]]
    hwm_after["images"] = _worker_memory(worker.pid)
    series_runs = [_one(api, case_id, f"{series_dir.name}.zip", series_zip, args.timeout) for _ in range(args.n_series)]
    hwm_after["series"] = _worker_memory(worker.pid)
    memory_end = {"worker": _worker_memory(worker.pid), "web": _web_memory(web.pid)}

    series = _summary(series_runs)
    series["slices"] = series_slices
    series["zip_bytes"] = len(series_zip)
    if series["time_to_succeeded_s"]:
        series["slices_per_s_end_to_end_p50"] = round(series_slices / series["time_to_succeeded_s"]["p50"], 2)
    if series["worker_s"]["total"]:
        series["slices_per_s_worker_total_p50"] = round(series_slices / series["worker_s"]["total"]["p50"], 2)

    children = memory_end["worker"]["pool_children"]
    load_end = _loadavg()
    return {
        "benchmark": "platform end-to-end (REST upload -> Celery worker -> succeeded) and process memory",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python bench/e2e.py " + " ".join(sys.argv[1:]),
        "host": {"cpu_count": os.cpu_count(), "loadavg_start": args._load_start, "loadavg_end": load_end},
        "config": {
            "settings": env["DJANGO_SETTINGS_MODULE"],
            "debug": env["DEBUG"],
            "database": _redact(env["DATABASE_URL"]) if external_db else "SQLite file in a temporary folder",
            "broker": _redact(env["CELERY_BROKER_URL"]) if external_broker else "kombu filesystem:// in a temp folder",
            "web": f"gunicorn, {args.web_workers} sync workers",
            "worker": "celery prefork, --concurrency=1 --prefetch-multiplier=1",
            "model_dir": str(model_dir),
            "model_version": model_version,
            "images": f"{data_dir / 'head_ct'}: {images[0].name} (cold), then {args.n_images} warm",
            "series": f"{series_dir} ({series_slices} .dcm in one ZIP, {len(series_zip)} B), {args.n_series} uploads",
            "poll_interval_s": POLL_INTERVAL_S,
        },
        "setup_s": setup,
        "cold": cold,
        "images": _summary(image_runs),
        "series": series,
        "memory": {
            "worker_parent_vmhwm_mib": memory_end["worker"]["parent"].get("vmhwm_mib"),
            "worker_child_vmhwm_mib": max((c.get("vmhwm_mib", 0) for c in children), default=None),
            "worker_child_vmrss_mib": max((c.get("vmrss_mib", 0) for c in children), default=None),
            "worker_child_vmhwm_mib_after": {
                phase: max((c.get("vmhwm_mib", 0) for c in m["pool_children"]), default=None)
                for phase, m in hwm_after.items()
            },
            "web_total_rss_mib": memory_end["web"]["total_rss_mib"],
            "idle": memory_idle,
            "end": memory_end,
        },
        "notes": [
            f"{os.cpu_count()} CPU cores shared with other engineers' test suites running at the same time "
            f"(load average {args._load_start} at start, {load_end} at the end): absolute times are noisy and "
            "pessimistic; compare runs on the same machine only.",
            "time_to_succeeded_s is measured by the client from the start of the upload request to the first poll "
            f"that sees 'succeeded' (polls every {POLL_INTERVAL_S} s, so it overstates by up to that plus one GET).",
            "worker_s comes from prediction.timings: load = reading + preprocessing the slices, inference = the "
            "model, heatmap = Grad-CAM, other = total minus those three (reading files, overlay PNGs), total = "
            "the predictor call in the task, queue_wait = prediction created (in the upload request) -> task start.",
            "worker 'other' can be negative: ml.predict.Predictor.predict_sources counts the crop/resize/normalise "
            "time of predict_slices twice in timings['load'] (once from predict_slices, once again in its own "
            "elapsed-minus-inference-minus-heatmap), so 'load' is overstated by that amount.",
            "The cold run is the worker's first prediction (torch import, weight sha256 check and model load in the "
            "pool child); it is excluded from the warm statistics.",
            "With the embedded filesystem broker the worker polls the queue folder every HEMO_BROKER_POLL_S "
            "(0.1 s by default; kombu's own default, 1 s, added up to a second to every queue_wait before "
            "2026-11-27), so queue_wait includes up to that much broker polling; Redis delivers at once.",
            "Memory: VmHWM is the peak resident set since the process started, read from /proc/<pid>/status; the "
            "pool child is the process that runs predictions.",
        ],
    }


# --- output -----------------------------------------------------------------------------------------------------------


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(result: dict) -> str:
    lines = [
        "| what | n | p50 (s) | p95 (s) | max (s) |",
        "|---|---|---|---|---|",
    ]
    cold = result["cold"]
    lines.append(f"| cold image: upload -> succeeded | 1 | {_fmt(cold['time_to_succeeded_s'])} | | |")
    lines.append(
        f"| cold image: worker total / load+inference+heatmap / queue wait | 1 | {_fmt(cold['worker']['total'])} / "
        f"{_fmt(sum(cold['worker'][k] or 0 for k in ('load', 'inference', 'heatmap')))} / "
        f"{_fmt(cold['worker']['queue_wait'])} | | |"
    )
    for label, key in (("warm image", "images"), (f"series ({result['series']['slices']} slices, ZIP)", "series")):
        block = result[key]
        rows = [
            ("upload request", block["upload_s"]),
            ("upload -> succeeded", block["time_to_succeeded_s"]),
            *((f"worker {k}", block["worker_s"][k]) for k in (*WORKER_TIMING_KEYS, "other")),
        ]
        for name, stats in rows:
            if stats:
                lines.append(
                    f"| {label}: {name} | {stats['n']} | {_fmt(stats['p50'])} | {_fmt(stats['p95'])} | "
                    f"{_fmt(stats['max'])} |"
                )
    series = result["series"]
    memory = result["memory"]
    lines += [
        "",
        "| metric | value |",
        "|---|---|",
        f"| series slices/s, end to end (p50) | {_fmt(series.get('slices_per_s_end_to_end_p50'), 2)} |",
        f"| series slices/s, worker total (p50) | {_fmt(series.get('slices_per_s_worker_total_p50'), 2)} |",
        f"| worker pool child peak RSS (VmHWM) | {_fmt(memory['worker_child_vmhwm_mib'], 0)} MiB |",
        "| worker pool child VmHWM after cold / images / series | "
        + " / ".join(_fmt(v, 0) for v in memory["worker_child_vmhwm_mib_after"].values())
        + " MiB |",
        f"| worker parent peak RSS (VmHWM) | {_fmt(memory['worker_parent_vmhwm_mib'], 0)} MiB |",
        f"| web (gunicorn master + workers) RSS at the end | {_fmt(memory['web_total_rss_mib'], 0)} MiB |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=10, help="warm single images (after one cold image)")
    parser.add_argument("--n-series", type=int, default=5, help="uploads of the DICOM series ZIP")
    parser.add_argument(
        "--series",
        type=Path,
        default=None,
        help="DICOM series folder (default $HEMO_DATA_DIR/dicom/ge_head_series, "
        "HEMO_DATA_DIR defaulting to ../shared/data)",
    )
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "ml" / "models" / "default")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per prediction")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, database)")
    args = parser.parse_args(argv)
    if args.n_images < 1 or args.n_series < 1:
        parser.error("--n-images and --n-series must be at least 1")
    args._processes = None
    args._load_start = _loadavg()

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    work = Path(tempfile.mkdtemp(prefix="hemo-bench-platform-"))
    try:
        result = bench(args, work)
    except BenchError as exc:
        print(f"bench/e2e.py: {exc}", file=sys.stderr)
        return 1
    finally:
        if args._processes is not None:
            args._processes.stop_all()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    print()
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
