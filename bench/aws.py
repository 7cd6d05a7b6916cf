"""The shared benchmark against this service on its AWS backends and on the embedded
ones, side by side: S3 and DynamoDB are a moto server started here on loopback (the
same wire protocols as AWS, not its latency or throughput).

    python bench/aws.py --corpus /tmp/corpus-aws          # made when missing (160 x 512 KB)

Prints one row per backend; ``--profile-dir DIR`` also records a py-spy profile (GIL
holders, raw collapsed stacks) of the service for each run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import REPO, MemorySampler, ours, pick, run_bench

sys.path.insert(0, str(REPO))
from tests.aws import AWS_ENV, MotoServer

CORPUS_ARGS = ["--studies", "8", "--series", "2", "--instances", "10"]


def aws_env(endpoint: str) -> dict[str, str]:
    name = "bench-" + uuid.uuid4().hex[:8]
    env = {
        "DICOMWEB_STORAGE": f"s3://{name}/archive",
        "DICOMWEB_INDEX": f"dynamodb://{name}",
        "DICOMWEB_S3_ENDPOINT_URL": endpoint,
        "DICOMWEB_DYNAMODB_ENDPOINT_URL": endpoint,
    }
    # init-aws, as an operator would run it.
    subprocess.run(
        [sys.executable, "-m", "service", "init-aws"],
        cwd=REPO,
        env={**os.environ, **AWS_ENV, **env},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) / "corpus-aws")
    parser.add_argument("--bench-dir", type=Path, default=REPO.parent / "shared" / "bench")
    parser.add_argument("--port", type=int, default=8093)
    parser.add_argument("--profile-dir", type=Path)
    args = parser.parse_args()
    bench = args.bench_dir / "dicomweb_bench.py"
    if not (args.corpus / "manifest.json").exists():
        subprocess.run(
            [sys.executable, str(bench), "corpus", "--out", str(args.corpus), *CORPUS_ARGS],
            check=True,
        )
    work = Path(tempfile.mkdtemp(prefix="dicomweb-aws-bench-"))
    os.environ.update(AWS_ENV)
    moto = MotoServer(work / "moto.log").start()  # the tests' own moto, on a free port
    rows: list[tuple[str, dict[str, Any], int]] = []
    try:
        endpoint = moto.endpoint
        for backend, env in (("embedded", {}), ("aws (moto)", aws_env(endpoint))):
            with ours(work, args.port, env) as (url, process), MemorySampler(process) as memory:
                spy = None
                if args.profile_dir and shutil.which("py-spy"):
                    args.profile_dir.mkdir(parents=True, exist_ok=True)
                    out = args.profile_dir / f"{backend.split()[0]}.txt"
                    spy = subprocess.Popen(
                        [
                            "py-spy",
                            "record",
                            "--gil",
                            "-r",
                            "100",
                            "-f",
                            "raw",
                            "-o",
                            str(out),
                            "-p",
                            str(process.pid),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                out = work / f"{backend.split()[0]}.json"
                result = run_bench(bench, url, args.corpus, [], out, process)
                if spy is not None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                    spy.wait()
            rows.append((backend, result, memory.peak))
    finally:
        moto.stop()
    columns = ["STOW inst/s", "QIDO p95 ms", "series MB/s", "instance p50 ms"]
    columns += ["metadata p50 ms", "frame p50 ms", "mismatches", "peak RSS"]
    print("| backend | " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|---|---|")
    for backend, r, peak in rows:
        mismatches = sum(int(pick(r, f"{p}.mismatches") or 0) for p in ("stow", "qido", "wado"))
        cells = [
            pick(r, "stow.instances_per_s"),
            pick(r, "qido.all.p95_ms"),
            pick(r, "wado.series_MB_per_s"),
            pick(r, "wado.instance.p50_ms"),
            pick(r, "wado.metadata.p50_ms"),
            pick(r, "wado.frame.p50_ms"),
        ]
        text = " | ".join("-" if c is None else f"{c:,.1f}" for c in cells)
        print(f"| {backend} | {text} | {mismatches} | {peak / 1024**2:,.0f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
