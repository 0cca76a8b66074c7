"""Upload latency: one clinician posting real photos through the JSON API, end to end.

Starts the production server as bench/load.py does (gunicorn, DEBUG off, 2 workers, a fresh
SQLite database, the shipped model), then posts photos one at a time, each answer awaited
before the next, and prints p50/p95 latency (request sent -> JSON result received: upload,
checks, decode, storage, model, heat map, database) for two kinds of photo:

- PH2-sized: PH2 dermoscopic photos as the dataset ships them (JPEG, about 765x572);
- 12 megapixels: what a phone-mounted dermatoscope takes. No such photo is in the shared
  datasets, so they are MADE from PH2 images by upscaling them to 4000x3000 with Pillow
  (bicubic) and saving them as JPEG (quality 90), in a temporary folder. They have the
  pixel count and file size of a 12 MP photo, not its detail.

    .venv/bin/python bench/upload.py                 # 20 requests of each kind
    .venv/bin/python bench/upload.py --requests 50 --json out.json

Exit status 0 when every request succeeded and both p50 targets were met
(--target-ph2-ms, --target-12mp-ms; 150 ms and 1000 ms by default).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from bench.load import datasets_dir, multipart, percentile  # noqa: E402
from bench.server import (  # noqa: E402
    BENCHMARK_ENV,
    PROXY_HEADERS,
    SHIPPED_MODEL,
    Gunicorn,
    create_token,
    manage,
    production_env,
    shipped_model_present,
    write_standin,
)

LARGE_SIZE = (4000, 3000)  # 12 megapixels, 4:3 as PH2's own images


def ph2_photos(root: Path, count: int) -> list[Path]:
    found = sorted((root / "ph2" / "images").glob("IMD*.jpg"))
    if not found:
        raise SystemExit(f"no PH2 photos under {root / 'ph2' / 'images'} (set SKINCARE_DATASETS or --datasets)")
    step = max(1, len(found) // count)
    return found[::step][:count]


def make_large_jpeg(source: Path, target: Path) -> Path:
    """A PH2 photo upscaled to 4000x3000 and saved as a camera would (JPEG, quality 90)."""
    with Image.open(source) as image:
        image.convert("RGB").resize(LARGE_SIZE, Image.Resampling.BICUBIC).save(target, format="JPEG", quality=90)
    return target


def post(url: str, token: str, name: str, content: bytes) -> tuple[float, int | None, str]:
    body, content_type = multipart({"patient_ref": "BENCH-UPLOAD", "body_site": ""}, name, content)
    request = urllib.request.Request(
        f"{url}/api/predictions/",
        data=body,
        method="POST",
        headers={"Authorization": f"Token {token}", "Content-Type": content_type, **PROXY_HEADERS},
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            payload = json.loads(response.read())
            code, detail = response.status, str(payload.get("status"))
    except urllib.error.HTTPError as exc:
        code, detail = exc.code, exc.read()[:200].decode(errors="replace")
    except Exception as exc:  # refused, reset, timed out: an error like any other
        code, detail = None, f"{type(exc).__name__}: {exc}"
    return (time.perf_counter() - started) * 1000, code, detail


def measure(url: str, token: str, photos: list[tuple[str, bytes]], requests: int, warmup: int) -> dict:
    for i in range(warmup):  # first requests of a kind pay for first-use costs in the worker
        post(url, token, *photos[i % len(photos)])
    latencies, errors, statuses = [], [], {}
    for i in range(requests):
        ms, code, detail = post(url, token, *photos[i % len(photos)])
        if code == 201:
            latencies.append(ms)
            statuses[detail] = statuses.get(detail, 0) + 1
        else:
            errors.append(f"{code}: {detail}")
    return {
        "requests": requests,
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "statuses": statuses,
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p95_ms": round(percentile(latencies, 0.95), 1),
        "min_ms": round(min(latencies), 1) if latencies else None,
        "max_ms": round(max(latencies), 1) if latencies else None,
        "latencies_ms": [round(ms, 1) for ms in latencies],  # in order sent: shows what the noise did
    }


def run(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="skincare-bench-upload-"))
    with ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, workdir, True)
        if args.model_dir:
            model_dir, model = Path(args.model_dir), f"given ({args.model_dir})"
        elif shipped_model_present() and not args.standin:
            model_dir, model = SHIPPED_MODEL, "shipped (ml/artifacts/model)"
        else:
            model_dir, model = write_standin(workdir / "standin-model"), "stand-in (ml.testing.write_standin_model)"

        root = Path(args.datasets) if args.datasets else datasets_dir()
        sources = ph2_photos(root, args.photos)
        photo_dir = workdir / "photos"
        photo_dir.mkdir()
        print(
            f"bench: making {args.large_photos} 12-megapixel JPEGs by upscaling PH2 photos to "
            f"{LARGE_SIZE[0]}x{LARGE_SIZE[1]} (Pillow, bicubic; JPEG quality 90) in {photo_dir}",
            flush=True,
        )
        large = [make_large_jpeg(p, photo_dir / f"{p.stem}_12mp.jpg") for p in sources[: args.large_photos]]
        kinds = {
            "ph2_sized": [(p.name, p.read_bytes()) for p in sources],
            "12_megapixel": [(p.name, p.read_bytes()) for p in large],
        }
        sizes = {}
        for kind, photos in kinds.items():
            with Image.open(io.BytesIO(photos[0][1])) as first:
                sizes[kind] = (
                    f"{first.width}x{first.height} JPEG, {sum(len(c) for _, c in photos) / len(photos) / 1e6:.2f} MB on average"
                )

        env = production_env(
            workdir,
            f"sqlite:///{workdir / 'db.sqlite3'}",
            model_dir,
            **BENCHMARK_ENV,
        )
        print(
            f"bench: SQLite; model: {model}; {args.workers} gunicorn workers; one client, one request at a time; "
            f"{args.requests} requests per kind after {args.warmup} warm-up; work folder {workdir}",
            flush=True,
        )
        manage(env, "migrate", "--noinput")
        manage(env, "collectstatic", "--noinput")
        token = create_token(env)
        server = stack.enter_context(Gunicorn(env, workdir / "gunicorn.log", workers=args.workers))
        server.wait_ready()
        results = {}
        for kind, photos in kinds.items():
            results[kind] = {"photo": sizes[kind], **measure(server.url, token, photos, args.requests, args.warmup)}
            print(
                f"bench: {kind}: {json.dumps({k: v for k, v in results[kind].items() if k != 'latencies_ms'})}",
                flush=True,
            )
    return {"model": model, "workers": args.workers, "load_average": os.getloadavg(), **results}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20, help="measured requests per kind of photo (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured requests first, per kind (default 2)")
    parser.add_argument("--photos", type=int, default=10, help="distinct PH2 photos to cycle through (default 10)")
    parser.add_argument("--large-photos", type=int, default=2, help="distinct 12 MP photos made (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--model-dir", help="model folder (default: the shipped model if present, else the stand-in)")
    parser.add_argument(
        "--standin", action="store_true", help="use the stand-in model even where the shipped one is present"
    )
    parser.add_argument("--datasets", help="shared datasets folder (default $SKINCARE_DATASETS or ../shared/datasets)")
    parser.add_argument(
        "--target-ph2-ms", type=float, default=150.0, help="p50 target for PH2-sized photos (default 150)"
    )
    parser.add_argument(
        "--target-12mp-ms", type=float, default=1000.0, help="p50 target for 12 MP photos (default 1000)"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, database, uploads, photos)")
    args = parser.parse_args(argv)

    report = run(args)
    targets = {"ph2_sized": args.target_ph2_ms, "12_megapixel": args.target_12mp_ms}
    report["targets_p50_ms"] = targets
    print(json.dumps(report, indent=2))
    failed = False
    print()
    for kind, target in targets.items():
        figures = report[kind]
        met = figures["errors"] == 0 and figures["p50_ms"] <= target
        failed |= not met
        print(
            f"{kind} ({figures['photo']}): p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms, "
            f"{figures['errors']} errors of {figures['requests']}; target p50 <= {target:.0f} ms: "
            f"{'met' if met else 'NOT met'}"
        )
    print(
        f"(12 MP photos made by upscaling PH2 photos; {report['model']} model; load average {report['load_average']})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
