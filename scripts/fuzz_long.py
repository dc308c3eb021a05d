#!/usr/bin/env python
"""Run the properties of tests/test_fuzz_*.py with many more examples, by hand.

    python scripts/fuzz_long.py --examples 200000
    python scripts/fuzz_long.py --examples 50000 --only parse --only tampering --seed 1234
    python scripts/fuzz_long.py --list

Each property gets ``--examples`` random (not derandomized) examples from a seed that is
printed, so a failure can be replayed with ``--seed``. Nothing is written to a hypothesis
database. At the end a timing probe parses adversarial values (false headers that declare long
in-range bodies) of growing size, to watch the parser's worst case. Exits 1 if any property
failed.
"""

from __future__ import annotations

import argparse
import functools
import logging
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

from gaesignals import config, frames  # noqa: E402
from tests import test_fuzz_delivery, test_fuzz_frames, test_fuzz_keys  # noqa: E402, F401 (register)
from tests.fuzz_support import KEY, PROPERTIES, SIGNAL_KEY, Property, fake_header  # noqa: E402


def run_property(prop: Property, examples: int, run_seed: int) -> tuple[bool, int, float]:
    """Run one property; returns (passed, examples run, seconds)."""
    count = 0

    @functools.wraps(prop.check)
    def counted(**kwargs: Any) -> None:
        nonlocal count
        count += 1
        prop.check(**kwargs)

    test = seed(run_seed)(
        settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=False,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )(given(**prop.strategies)(counted))
    )
    started = time.perf_counter()
    try:
        test()
        passed = True
    except Exception:
        traceback.print_exc()
        passed = False
    finally:
        config.reset()
    return passed, count, time.perf_counter() - started


def probe_worst_case(sizes: list[int]) -> None:
    """Time parse on values packed with false headers declaring half-the-value bodies."""
    print("\nworst-case parse probe (false headers declaring long in-range bodies):")
    for size in sizes:
        header = fake_header(0, size // 2)
        value = (header * (size // len(header) + 1))[:size]
        started = time.perf_counter()
        frames.parse(value, SIGNAL_KEY, [KEY])
        elapsed = time.perf_counter() - started
        print(f"  {size:>9,} bytes: {elapsed:8.3f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=20_000, help="examples per property")
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: random)")
    parser.add_argument(
        "--only", action="append", default=[], help="run properties whose name contains this"
    )
    parser.add_argument("--list", action="store_true", help="list the properties and exit")
    parser.add_argument("--no-probe", action="store_true", help="skip the worst-case probe")
    parser.add_argument("--logs", action="store_true", help="show the library's log output")
    args = parser.parse_args(argv)

    selected = [
        p for p in PROPERTIES.values() if not args.only or any(o in p.name for o in args.only)
    ]
    if args.list:
        for prop in PROPERTIES.values():
            doc = (prop.check.__doc__ or "").split("\n")[0]
            print(f"{prop.name}  (CI: {prop.examples} examples)\n    {doc}")
        return 0
    if not selected:
        parser.error(f"no property matches {args.only}")
    if not args.logs:
        logging.disable(logging.CRITICAL)  # deliveries log every garbage region they drop

    run_seed = random.SystemRandom().randrange(2**32) if args.seed is None else args.seed
    print(f"seed {run_seed}, up to {args.examples:,} examples per property\n")
    results = []
    for prop in selected:
        print(f"{prop.name} ...", flush=True)
        passed, count, seconds = run_property(prop, args.examples, run_seed)
        results.append((prop.name, passed, count, seconds))
        status = "ok" if passed else "FAILED"
        print(f"  {status}: {count:,} examples in {seconds:.1f} s", flush=True)

    print(f"\nsummary (seed {run_seed}):")
    width = max(len(name) for name, *_ in results)
    for name, passed, count, seconds in results:
        status = "ok" if passed else "FAILED"
        print(f"  {name:<{width}}  {status:<6}  {count:>9,} examples  {seconds:8.1f} s")
    total = sum(count for _, _, count, _ in results)
    failed = [name for name, passed, *_ in results if not passed]
    print(f"  {total:,} examples, {len(failed)} failed property(ies)")
    if not args.no_probe:
        probe_worst_case([100_000, 300_000, 1_000_000])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
