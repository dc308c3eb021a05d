"""Run every benchmark and print a summary of the targets.

    .venv/bin/python benchmarks/run_all.py            # full: 7 repetitions
    .venv/bin/python benchmarks/run_all.py --quick    # 3 repetitions

Each script runs in its own process (its own CPU pinning, configuration and App Engine
testbed) and prints its table; this script then prints the machine and every row that has a
target. ``--markdown FILE`` also writes all rows as Markdown tables. Exit status is 0 whatever
the verdicts: these are measurements, not tests.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Row, machine, print_table

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "bench_send.py",
    "bench_deliver.py",
    "bench_hot.py",
    "bench_middleware.py",
    "bench_peers.py",
    "bench_latency.py",
    "bench_memory.py",
    "bench_otel.py",
]


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (0 without /proc/stat)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    """CPU seconds used by this process and every benchmark process it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def markdown(rows: list[Row]) -> str:
    out: list[str] = []
    bench = None
    for row in rows:
        if row.bench != bench:
            bench = row.bench
            out += ["", f"**{bench}**", ""]
            out += ["| metric | value (median) | baseline (median) | ratio (range) | target | |"]
            out += ["|---|---|---|---|---|---|"]
        cells = [row.metric.strip(), row.value, row.baseline, row.ratio, row.target, row.result]
        cells = [c.replace("|", "\\|") for c in cells]
        if row.metric.startswith("  "):
            cells[0] = "&nbsp;&nbsp;" + cells[0]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--only", default="", help="comma-separated script names, e.g. send,hot")
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    only = {f"bench_{name.strip()}.py" for name in args.only.split(",") if name.strip()}
    flags = ["--quick"] if args.quick else []
    flags += ["--reps", str(args.reps)] if args.reps else []
    rows: list[Row] = []
    started = time.monotonic()
    failed: list[str] = []
    noise: list[str] = []
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        for script in SCRIPTS:
            if only and script not in only:
                continue
            out = Path(tmp) / f"{script}.json"
            began = time.monotonic()
            busy, own = busy_seconds(), own_seconds()
            print(f"\n##### {script} {' '.join(flags)}", flush=True)
            try:
                code = subprocess.run(
                    [sys.executable, str(HERE / script), *flags, "--json", str(out)],
                    timeout=900,
                ).returncode
            except subprocess.TimeoutExpired:
                code = -1
            elapsed = time.monotonic() - began
            foreign = max(0.0, (busy_seconds() - busy) - (own_seconds() - own))
            noise.append(f"{script}: {foreign:.1f} CPU-s ({foreign / elapsed / cpus:.0%})")
            print(
                f"##### {script}: {elapsed:.0f} s; other processes used {foreign:.1f} CPU-s "
                f"({foreign / elapsed / cpus:.0%} of the machine) meanwhile",
                flush=True,
            )
            if code != 0 or not out.exists():
                failed.append(f"{script} (exit {code})")
                continue
            rows += [Row(**item) for item in json.loads(out.read_text())]
    print("\n##### machine")
    for key, value in machine().items():
        print(f"{key}: {value}")
    print(f"total: {time.monotonic() - started:.0f} s")
    print("CPU used by other processes while each script ran: " + "; ".join(noise))
    targets = [row for row in rows if row.target]
    print_table("targets", [Row(r.bench, f"[{r.bench}] {r.metric.strip()}", r.value, r.baseline,
                                r.ratio, r.target, r.result) for r in targets])  # fmt: skip
    passed = sum(row.result == "PASS" for row in targets)
    print(f"\n{passed} PASS, {len(targets) - passed} MISS")
    if failed:
        print("scripts that failed: " + ", ".join(failed))
    if args.markdown is not None:
        args.markdown.write_text(markdown(rows))
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
