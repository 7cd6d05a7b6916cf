"""Side-by-side benchmark: this service against Orthanc + DICOMweb plugin, same machine.

Runs the shared DICOMweb benchmark (``dicomweb_bench.py``, which checks every answer)
against a fresh Orthanc and a fresh service, one after the other (who goes first
alternates from run to run, so that a drift of the machine does not always favour the
same server), measures what ``dd`` with ``conv=fdatasync`` writes per second on the
disk the service stores to (the durable-write limit) just before and just after each
server's STOW phase (both alike, at the same moment), samples the service's memory
through the run, and prints a table of ratios against the targets of the performance
issue.

    python bench/compare.py                      # default corpus (2,000 x 512 KB)
    python bench/compare.py --profile tiny       # 100,000 tiny instances, STOW + QIDO
    python bench/compare.py --runs 3             # medians of three runs of each
    python bench/compare.py --workers 1          # our service in one process

Our service runs with one HTTP worker per core (``DICOMWEB_WORKERS``), as it would be
deployed on the machine; Orthanc uses its own threads on every core.

Needs Debian's ``orthanc`` and ``orthanc-dicomweb`` (installed when missing, as root)
and the shared benchmark scripts (``--bench-dir``, by default ``../shared/bench``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
PROFILES = {
    # name: (corpus arguments, run arguments)
    "default": ([], ["--phases", "stow,qido,wado"]),
    "tiny": (
        ["--studies", "2000", "--series", "2", "--instances", "25", "--rows", "8", "--cols", "8"],
        ["--phases", "stow,qido", "--batch", "50"],
    ),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the servers ---------------------------------------------------------------------


@contextmanager
def orthanc(bench_dir: Path, work: Path) -> Iterator[tuple[str, psutil.Process]]:
    """A fresh Orthanc with the DICOMweb plugin on 127.0.0.1:8042."""
    if not Path("/usr/sbin/Orthanc").exists():
        log("installing Debian's orthanc and orthanc-dicomweb")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "orthanc", "orthanc-dicomweb"],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        # The package starts a system instance on the same ports; the benchmark runs
        # its own with a known configuration.
        subprocess.run(["service", "orthanc", "stop"], check=False, capture_output=True)
    folder = work / "orthanc"
    shutil.rmtree(folder, ignore_errors=True)
    script = bench_dir / "orthanc.sh"
    subprocess.run(["bash", str(script), "start", str(folder)], check=True)
    try:
        pid = int((folder / "orthanc.pid").read_text())
        yield "http://127.0.0.1:8042/dicom-web", psutil.Process(pid)
    finally:
        subprocess.run(["bash", str(script), "stop", str(folder)], check=False)


@contextmanager
def ours(work: Path, port: int, env: dict[str, str]) -> Iterator[tuple[str, psutil.Process]]:
    """A fresh service on the embedded backends."""
    data = work / "ours"
    shutil.rmtree(data, ignore_errors=True)
    args = [sys.executable, "-m", "service", "serve", "--port", str(port)]
    args += ["--data-dir", str(data)]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DICOMWEB_")}
    environ.update(env)
    logfile = (work / "ours.log").open("wb")
    proc = subprocess.Popen(args, cwd=REPO, env=environ, stdout=logfile, stderr=logfile)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"the service did not start; see {work / 'ours.log'}")
        yield url + "/dicom-web", psutil.Process(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        logfile.close()


class MemorySampler:
    """Peak resident memory of a process and its children, sampled every 100 ms."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                procs = [self.process, *self.process.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                return

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- measuring -----------------------------------------------------------------------


def dd_fdatasync(folder: Path, megabytes: int = 1024) -> float:
    """MB/s that ``dd conv=fdatasync`` writes in ``folder``: the durable-write limit."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "dd.tmp"
    started = time.perf_counter()
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={megabytes}", "conv=fdatasync"],
        check=True,
        capture_output=True,
    )
    elapsed = time.perf_counter() - started
    target.unlink()
    return megabytes * 1024**2 / elapsed / 1e6


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User plus system CPU time of these processes."""
    total = 0.0
    for p in processes:
        with contextlib.suppress(psutil.Error):
            times = p.cpu_times()
            total += times.user + times.system
    return total


class CpuWatch:
    """CPU seconds of the server, of the benchmark client and of the whole machine,
    sampled every 50 ms while the client runs.

    The client first reads the corpus and builds its requests, alone; the window that
    counts is the longest stretch of samples in which the server was busy (over a fifth
    of a core, with pauses of at most 200 ms), so the client's set-up counts nothing.
    """

    PERIOD = 0.05
    GAP = 4  # samples: 200 ms

    def __init__(self, server: psutil.Process, client: psutil.Process) -> None:
        # The server's workers are listed once: walking /proc at every sample would
        # cost the machine more than the sampling itself.
        self.server = [server, *server.children(recursive=True)]
        self.client = [client]
        self.samples: list[tuple[float, float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        machine = psutil.cpu_times()
        busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        client = cpu_seconds(self.client)
        self.samples.append((time.monotonic(), cpu_seconds(self.server), client, busy))

    def _run(self) -> None:
        self._sample()
        while not self._stop.wait(self.PERIOD):
            self._sample()

    def stop(self, first_seconds: float | None = None) -> dict[str, float]:
        """Over the busy window (or its first ``first_seconds``): CPU seconds of server
        and client, their shares of one core, and the share of all cores busy."""
        self._stop.set()
        self._thread.join()
        rows = self.samples
        busy = [
            i
            for i in range(1, len(rows))
            if rows[i][1] - rows[i - 1][1] > 0.2 * (rows[i][0] - rows[i - 1][0])
        ]
        if not busy:
            return {}
        # The longest stretch of busy samples (gaps up to GAP samples): a lone busy
        # sample of a server finishing its start-up had put the client's set-up (over a
        # second of reading the corpus) into the window.
        stretches, start = [], busy[0]
        for before, after in itertools.pairwise(busy):
            if after - before > self.GAP:
                stretches.append((start, before))
                start = after
        stretches.append((start, busy[-1]))
        begin, end = max(stretches, key=lambda s: rows[s[1]][1] - rows[s[0] - 1][1])
        first, last = rows[begin - 1], rows[end]
        if first_seconds is not None:
            last = next((r for r in rows if r[0] >= first[0] + first_seconds), last)
        wall = last[0] - first[0]
        if wall <= 0:
            return {}
        server, client = last[1] - first[1], last[2] - first[2]
        return {
            "wall_s": wall,
            "server_cpu_s": server,
            "client_cpu_s": client,
            "server_core_pct": 100 * server / wall,
            "client_core_pct": 100 * client / wall,
            "machine_busy_pct": 100 * (last[3] - first[3]) / wall / (psutil.cpu_count() or 1),
        }


class DdBesideStow:
    """``dd`` right before a server's STOW phase and again right after it.

    The same for both servers, at the same moment of each run: ``dd`` writes 1 GB
    through the page cache and frees it, and on a virtual machine whose host takes
    freed memory back, what writing to the page cache costs moves with what ran just
    before (measured: from 0.2 to 1.4 ms of kernel time per 512 KB file). So it runs
    as the STOW client starts, not before the server does: servers take different times
    to start, and the STOW would otherwise follow the ``dd`` sooner for one of them.
    """

    def __init__(self, folder: Path, who: str) -> None:
        self.folder = folder
        self.who = who
        self.first = 0.0

    def before(self) -> None:
        self.first = dd_fdatasync(self.folder)

    def after(self, found: dict[str, Any]) -> None:
        later = dd_fdatasync(self.folder)
        found["dd_MB_per_s"] = [self.first, later]
        found["dd_share"] = found["MB_per_s"] / statistics.mean([self.first, later])
        log(f"dd conv=fdatasync beside {self.who} STOW: {self.first:,.0f} and {later:,.0f} MB/s")


def run_bench(
    bench: Path,
    url: str,
    corpus: Path,
    args: list[str],
    out: Path,
    server: psutil.Process,
    dd: DdBesideStow | None = None,
) -> dict[str, Any]:
    """One benchmark run, a client process per phase, so that the CPU time of the
    server and of the client can be told apart per phase: what each side spends per
    stored instance, and which side limits the series retrieve. ``dd`` measures the
    disk right before and right after the STOW phase."""
    cmd = [sys.executable, str(bench), "run", "--url", url, "--corpus", str(corpus)]
    phases, rest = ["stow", "qido", "wado"], list(args)
    if "--phases" in args:
        at = args.index("--phases")
        phases, rest = args[at + 1].split(","), args[:at] + args[at + 2 :]
    result: dict[str, Any] = {}
    for phase in phases:
        part = out.with_suffix(f".{phase}.json")
        run = [*cmd, *rest, "--phases", phase, "--out", str(part)]
        if dd is not None and phase == "stow":
            dd.before()
        client = subprocess.Popen(run, stdout=subprocess.DEVNULL)
        watch = CpuWatch(server, psutil.Process(client.pid))
        if client.wait() != 0:
            watch.stop()
            raise subprocess.CalledProcessError(client.returncode, run)
        found = json.loads(part.read_text())[phase]
        # The series retrieve comes first in the WADO phase: its own window.
        series_s = None
        if phase == "wado" and found.get("series_MB_per_s"):
            series_s = _series_seconds(corpus, found["series_MB_per_s"])
        found["cpu"] = watch.stop(series_s)
        result[phase] = found
        instances = found.get("instances")
        if phase == "stow" and instances and found["cpu"]:
            found["server_cpu_ms"] = 1000 * found["cpu"]["server_cpu_s"] / instances
            found["client_cpu_ms"] = 1000 * found["cpu"]["client_cpu_s"] / instances
        if dd is not None and phase == "stow":
            dd.after(found)
    out.write_text(json.dumps(result, indent=1))
    return result


def _series_seconds(corpus: Path, mb_per_s: float) -> float:
    """How long the series retrieve took: every instance once, at the rate it reports."""
    manifest = json.loads((corpus / "manifest.json").read_text())
    total = sum(
        i["size"] for st in manifest["studies"] for se in st["series"] for i in se["instances"]
    )
    return float(total) / 1e6 / mb_per_s


def pick(result: dict[str, Any], path: str) -> float | None:
    node: Any = result
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) else None


# -- the report ----------------------------------------------------------------------

# (label, path in the result, better when "higher"/"lower", target ratio ours/orthanc)
METRICS: list[tuple[str, str, str, float | None]] = [
    ("STOW instances/s", "stow.instances_per_s", "higher", 1.5),
    ("STOW MB/s", "stow.MB_per_s", "higher", None),
    ("STOW server CPU ms per instance", "stow.server_cpu_ms", "lower", None),
    ("STOW client CPU ms per instance", "stow.client_cpu_ms", "lower", None),
    ("STOW machine busy %", "stow.cpu.machine_busy_pct", "lower", None),
    ("WADO series MB/s", "wado.series_MB_per_s", "higher", 1.5),
    ("WADO series: client % of a core", "wado.cpu.client_core_pct", "lower", None),
    ("WADO series: server % of a core", "wado.cpu.server_core_pct", "lower", None),
    ("WADO instance p50 ms", "wado.instance.p50_ms", "lower", 0.5),
    ("WADO study metadata p50 ms", "wado.metadata.p50_ms", "lower", 0.5),
    ("WADO frame p50 ms", "wado.frame.p50_ms", "lower", 0.5),
    ("QIDO all p95 ms", "qido.all.p95_ms", "lower", 1 / 3),
]


def median_of(results: list[dict[str, Any]], path: str) -> float | None:
    values = [v for v in (pick(r, path) for r in results) if v is not None]
    return statistics.median(values) if values else None


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"


class Table:
    """The ratio table, and whether every target was met."""

    def __init__(self) -> None:
        self.lines = [
            "| metric | Orthanc | ours | ours/Orthanc | target | met |",
            "|---|---|---|---|---|---|",
        ]
        self.ok = True

    def row(
        self, label: str, a: str, b: str, ratio: float | None, want: str, good: bool | None
    ) -> None:
        if good is not None:
            self.ok &= good
        met = "-" if good is None else ("yes" if good else "NO")
        share = "-" if ratio is None else f"{ratio:.2f}"
        self.lines.append(f"| {label} | {a} | {b} | {share} | {want} | {met} |")


def report(
    theirs: list[dict[str, Any]],
    mine: list[dict[str, Any]],
    peak_rss: int,
    profile: str,
) -> Table:
    table = Table()
    metrics = list(METRICS)
    if profile == "tiny":
        metrics = [("STOW instances/s", "stow.instances_per_s", "higher", 1.0)]
        metrics += [m for m in METRICS if m[1].startswith("stow.") and m[3] is None]
        metrics += [m for m in METRICS if m[1].startswith("qido")]
    for label, path, better, target in metrics:
        a, b = median_of(theirs, path), median_of(mine, path)
        ratio = b / a if a and b is not None else None
        good = None
        if target is not None and ratio is not None:
            good = ratio >= target if better == "higher" else ratio <= target
        sign = "≥" if better == "higher" else "≤"
        want = "-" if target is None else f"{sign} {target:.2f}"
        table.row(label, _num(a), _num(b), ratio, want, good)
    # Every QIDO case against a third of Orthanc's p95: the worst one decides.
    cases = sorted({k for r in theirs for k in (r.get("qido", {}).get("by_case") or {})})
    ratios = []
    for case in cases:
        a = median_of(theirs, f"qido.by_case.{case}.p95_ms")
        b = median_of(mine, f"qido.by_case.{case}.p95_ms")
        if a and b is not None:
            ratios.append((b / a, case))
    if ratios:
        worst, case = max(ratios)
        table.row(f"QIDO worst case p95 ({case})", "", "", worst, "≤ 0.33", worst <= 1 / 3)
    # Each STOW run against the dd figures taken just before and after it: the
    # machine's write speed moves by 2x from one minute to the next, so a dd taken once
    # per session says little about the minute a run had. The ratio column is ours.
    shares = [v for v in (pick(r, "stow.dd_share") for r in mine) if v is not None]
    dds = [v for r in mine + theirs for v in r.get("stow", {}).get("dd_MB_per_s", [])]
    if shares:
        share = statistics.median(shares)
        label = f"STOW MB/s vs dd conv=fdatasync beside it ({min(dds):,.0f}–{max(dds):,.0f} MB/s)"
        theirs_share = median_of(theirs, "stow.dd_share")
        table.row(label, _num(theirs_share), _num(share), share, "≥ 0.60", share >= 0.6)
    rss = f"{peak_rss / 1024**2:,.0f} MiB"
    table.row("service peak RSS", "", rss, None, "< 300 MiB", peak_rss < 300 * 1024**2)
    # Each server's own: the target is ours, and Orthanc's wrong answers (it has failed
    # a few STOW parts under load) say nothing about our service.
    wrong = _mismatches(mine)
    table.row("mismatches, all runs", str(_mismatches(theirs)), str(wrong), None, "0", wrong == 0)
    return table


def _mismatches(results: list[dict[str, Any]]) -> int:
    phases = ("stow", "qido", "wado")
    return sum(int(pick(r, f"{phase}.mismatches") or 0) for r in results for phase in phases)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="default")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--corpus", type=Path, help="corpus folder (made when missing)")
    parser.add_argument("--bench-dir", type=Path, default=REPO.parent / "shared" / "bench")
    parser.add_argument("--work", type=Path, help="scratch folder for both servers' data")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--out", type=Path, help="write all results as JSON here")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="DICOMWEB_WORKERS for our service (default: one per core, as deployed)",
    )
    parser.add_argument(
        "--env", action="append", default=[], help="DICOMWEB_X=value for our service"
    )
    args = parser.parse_args()
    bench = args.bench_dir / "dicomweb_bench.py"
    corpus_args, run_args = PROFILES[args.profile]
    corpus = args.corpus or Path(tempfile.gettempdir()) / f"corpus-{args.profile}"
    if not (corpus / "manifest.json").exists():
        log(f"writing the {args.profile} corpus to {corpus}")
        subprocess.run(
            [sys.executable, str(bench), "corpus", "--out", str(corpus), *corpus_args], check=True
        )
    work = args.work or Path(tempfile.mkdtemp(prefix="dicomweb-compare-"))
    env = {"DICOMWEB_WORKERS": str(args.workers)}
    env.update(item.split("=", 1) for item in args.env)
    theirs: list[dict[str, Any]] = []
    mine: list[dict[str, Any]] = []
    peak = 0

    def run_theirs(run: int) -> None:
        log(f"run {run + 1}/{args.runs}: Orthanc")
        dd = DdBesideStow(work, "Orthanc's") if args.profile == "default" else None
        with orthanc(args.bench_dir, work) as (url, server):
            out = work / f"orthanc-{run}.json"
            theirs.append(run_bench(bench, url, corpus, run_args, out, server, dd))

    def run_mine(run: int) -> None:
        nonlocal peak
        log(f"run {run + 1}/{args.runs}: ours")
        dd = DdBesideStow(work, "our") if args.profile == "default" else None
        with ours(work, args.port, env) as (url, process), MemorySampler(process) as memory:
            out = work / f"ours-{run}.json"
            mine.append(run_bench(bench, url, corpus, run_args, out, process, dd))
        peak = max(peak, memory.peak)

    for run in range(args.runs):
        # Alternate who goes first, so that a machine that slows down (or speeds up)
        # through the session does not always favour the same server.
        for step in (run_theirs, run_mine) if run % 2 == 0 else (run_mine, run_theirs):
            step(run)
    table = report(theirs, mine, peak, args.profile)
    print("\n".join(table.lines))
    if args.out:
        args.out.write_text(
            json.dumps({"peak_rss": peak, "orthanc": theirs, "ours": mine}, indent=1)
        )
    return 0 if table.ok else 1


if __name__ == "__main__":
    sys.exit(main())
