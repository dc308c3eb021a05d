"""Instructions per send on the in-process store, counted by valgrind's callgrind.

Timed figures on a shared VM swing by more than a few per cent between runs; callgrind counts
instructions, which repeat exactly for the same code and inputs, so a small cost added to the
send path (the tracing check, say) shows here when timing cannot resolve it. Runs the
interpreter twice, with 0 and with N sends after one warm-up send, and prints the difference
divided by N. Needs Debian's valgrind; not part of run_all.py (callgrind is slow).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_send_instructions.py [N]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

WORKLOAD = """
import sys, gaesignals
from gaesignals.stores.memory import MemoryStore
gaesignals.configure(store=MemoryStore())
gaesignals.send("x", {"a": 1})
for _ in range(int(sys.argv[1])):
    gaesignals.send("x", {"a": 1})
"""


def instructions(sends: int, out_dir: str) -> int:
    """Instructions the whole interpreter run executed (callgrind's "Collected")."""
    run = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={os.path.join(out_dir, f'cg.{sends}')}",
            sys.executable,
            "-c",
            WORKLOAD,
            str(sends),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", run.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no total:\n{run.stderr}")
    return int(found.group(1))


def main() -> None:
    sends = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install -y valgrind)")
    with tempfile.TemporaryDirectory() as out_dir:
        base, loaded = instructions(0, out_dir), instructions(sends, out_dir)
    print(f"interpreter start and import: {base:,} instructions")
    print(f"per send ({sends:,} sends): {(loaded - base) / sends:,.0f} instructions")


if __name__ == "__main__":
    main()
