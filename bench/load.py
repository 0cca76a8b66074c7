"""Load test: the production server under concurrent uploads through the JSON API.

Starts gunicorn (DEBUG off, the repository's gunicorn.conf.py, 2 workers) on a fresh
database, SQLite by default or PostgreSQL (`--database postgres`: a throwaway server from
Debian's package, or `--database-url`), creates a user and its token with manage.py, and
runs concurrent clients that upload real dermoscopic photos from the shared datasets for
`--duration` seconds. Prints requests per second, p50/p95/p99 latency and errors, then
checks that every successful response has exactly one stored prediction (and upload,
and image file): nothing lost, nothing doubled.

    .venv/bin/python bench/load.py                        # SQLite, 60 s, 4 clients
    .venv/bin/python bench/load.py --database postgres    # the same on PostgreSQL
    .venv/bin/python bench/load.py --duration 10 --json out.json

Only loopback addresses are used. Exit status 0 when there were no errors and nothing was
lost or doubled (the p95 target is reported, and enforced with --max-p95-ms).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.server import (  # noqa: E402
    BENCHMARK_ENV,
    PROXY_HEADERS,
    SHIPPED_MODEL,
    Gunicorn,
    Postgres,
    count_rows,
    create_token,
    manage,
    production_env,
    shipped_model_present,
    write_standin,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def datasets_dir() -> Path:
    configured = os.environ.get("SKINCARE_DATASETS")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "datasets"


def pick_photos(root: Path, count: int, seed: int) -> list[tuple[str, bytes]]:
    """Real photos: HAM10000/ISIC (224x224) and PH2 (about 765x572), as clinicians would send them."""
    candidates = sorted((root / "ham10000" / "images").glob("*.jpg")) + sorted((root / "ph2" / "images").glob("*.jpg"))
    if not candidates:
        raise SystemExit(f"no photos under {root} (set SKINCARE_DATASETS to the shared datasets folder)")
    chosen = random.Random(seed).sample(candidates, min(count, len(candidates)))
    return [(path.name, path.read_bytes()) for path in chosen]


def multipart(fields: dict[str, str], filename: str, content: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        f"Content-Type: image/jpeg\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class Client(threading.Thread):
    """Uploads photos one after another until the deadline; records every answer."""

    def __init__(self, number: int, url: str, token: str, photos, deadline: float, results: list, lock):
        super().__init__(name=f"client-{number}", daemon=True)
        self.number, self.url, self.token, self.photos = number, url, token, photos
        self.deadline, self.results, self.lock = deadline, results, lock

    def run(self) -> None:
        sent = 0
        while time.monotonic() < self.deadline:
            name, content = self.photos[(self.number + sent * 7) % len(self.photos)]
            sent += 1
            body, content_type = multipart(
                {"patient_ref": f"BENCH-{self.number}-{sent}", "body_site": ""}, name, content
            )
            request = urllib.request.Request(
                f"{self.url}/api/predictions/",
                data=body,
                method="POST",
                headers={"Authorization": f"Token {self.token}", "Content-Type": content_type, **PROXY_HEADERS},
            )
            started = time.perf_counter()
            record = {"client": self.number}
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    payload = json.loads(response.read())
                    record.update(code=response.status, id=payload.get("id"), status=payload.get("status"))
            except urllib.error.HTTPError as exc:
                record.update(code=exc.code, error=exc.read()[:300].decode(errors="replace"))
            except Exception as exc:  # connection refused or reset, timeout: an error like any other
                record.update(code=None, error=f"{type(exc).__name__}: {exc}")
            record["ms"] = (time.perf_counter() - started) * 1000
            with self.lock:
                self.results.append(record)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = fraction * (len(ordered) - 1)
    low, high = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def run(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="skincare-bench-"))
    with ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, workdir, True)
        if args.model_dir:
            model_dir, model = Path(args.model_dir), f"given ({args.model_dir})"
        elif shipped_model_present() and not args.standin:
            model_dir, model = SHIPPED_MODEL, "shipped (ml/artifacts/model)"
        else:
            model_dir, model = write_standin(workdir / "standin-model"), "stand-in (ml.testing.write_standin_model)"

        if args.database_url:
            database_url, database = args.database_url, "given DATABASE_URL"
        elif args.database == "postgres":
            # Its own folder: the server runs as the postgres user, which cannot enter workdir.
            pg_dir = Path(tempfile.mkdtemp(prefix="skincare-bench-postgres-"))
            if not args.keep:
                stack.callback(shutil.rmtree, pg_dir, True)
            database_url = stack.enter_context(Postgres(pg_dir)).url
            database = "PostgreSQL (throwaway server, .ci/postgres.sh)"
        else:
            database_url, database = f"sqlite:///{workdir / 'db.sqlite3'}", "SQLite (the default, WAL)"

        env = production_env(
            workdir,
            database_url,
            model_dir,
            **BENCHMARK_ENV,
        )
        print(
            f"bench: {database}; model: {model}; {args.workers} gunicorn workers; {args.clients} clients; "
            f"{args.duration:.0f} s; work folder {workdir}",
            flush=True,
        )
        manage(env, "migrate", "--noinput")
        manage(env, "collectstatic", "--noinput")
        token = create_token(env)
        photos = pick_photos(Path(args.datasets) if args.datasets else datasets_dir(), args.photos, args.seed)
        before = count_rows(env)

        server = stack.enter_context(Gunicorn(env, workdir / "gunicorn.log", workers=args.workers))
        server.wait_ready()
        results: list[dict] = []
        lock = threading.Lock()
        started = time.monotonic()
        deadline = started + args.duration
        clients = [Client(n, server.url, token, photos, deadline, results, lock) for n in range(args.clients)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(args.duration + 120)
        elapsed = time.monotonic() - started
        server.__exit__(None, None, None)  # stop serving before counting what was stored
        after = count_rows(env)
        stored_images = (
            len([p for p in (workdir / "media" / "uploads").glob("*") if p.is_file()])
            if (workdir / "media" / "uploads").is_dir()
            else 0
        )

    ok = [r for r in results if r["code"] == 201]
    errors = [r for r in results if r["code"] != 201]
    ids = [r["id"] for r in ok]
    new_ids = set(after["prediction_ids"]) - set(before["prediction_ids"])
    latencies = [r["ms"] for r in ok]
    report = {
        "database": database,
        "model": model,
        "workers": args.workers,
        "clients": args.clients,
        "duration_s": round(elapsed, 1),
        "requests": len(results),
        "successes": len(ok),
        "errors": len(errors),
        "error_kinds": dict(Counter(f"{r['code']}: {r.get('error', '')[:120]}" for r in errors).most_common(5)),
        "statuses": dict(Counter(r["status"] for r in ok)),
        "requests_per_second": round(len(ok) / elapsed, 2) if elapsed else 0.0,
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p95_ms": round(percentile(latencies, 0.95), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1) if latencies else None,
        "mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
        "new_predictions": after["predictions"] - before["predictions"],
        "new_uploads": after["uploads"] - before["uploads"],
        "stored_images": stored_images,
        "distinct_ids_returned": len(set(ids)),
        "load_average": os.getloadavg(),
    }
    report["nothing_lost_or_doubled"] = (
        report["new_predictions"] == report["new_uploads"] == len(ok) == len(set(ids))
        and set(ids) == new_ids
        and (args.database_url or stored_images == len(ok))
    )
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=60, help="seconds of load (default 60)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--database-url", help="an existing database instead (its predictions are counted before and after)"
    )
    parser.add_argument("--model-dir", help="model folder (default: the shipped model if present, else the stand-in)")
    parser.add_argument(
        "--standin", action="store_true", help="use the stand-in model even where the shipped one is present"
    )
    parser.add_argument("--datasets", help="shared datasets folder (default $SKINCARE_DATASETS or ../shared/datasets)")
    parser.add_argument("--photos", type=int, default=200, help="distinct photos to cycle through (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-p95-ms", type=float, help="fail when p95 latency is above this")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, database, uploads)")
    args = parser.parse_args(argv)

    report = run(args)
    print(json.dumps(report, indent=2))
    print(
        f"\n{report['database']}, {report['model']} model, {report['workers']} workers, {report['clients']} clients, "
        f"{report['duration_s']} s: {report['requests_per_second']} requests/s, p50 {report['p50_ms']} ms, "
        f"p95 {report['p95_ms']} ms, {report['errors']} errors of {report['requests']}; "
        f"stored {report['new_predictions']} predictions for {report['successes']} successful responses "
        f"({'nothing lost or doubled' if report['nothing_lost_or_doubled'] else 'MISMATCH'})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    failed = report["errors"] > 0 or not report["nothing_lost_or_doubled"] or report["successes"] == 0
    if args.max_p95_ms is not None and not report["p95_ms"] <= args.max_p95_ms:
        print(f"p95 {report['p95_ms']} ms is above the target {args.max_p95_ms} ms")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
