"""Training speed of two revisions of annealbench, side by side on this machine.

Each round runs ``annealbench bench --json`` once for the old revision and once for the
new one, alternating which goes first, so both see the same load; the figures to compare
are the per-round ratios new/old. Usage (from the repository root)::

    git worktree add /tmp/annealbench-old <old-revision>
    .venv/bin/python benchmarks/before_after.py /tmp/annealbench-old/src src \\
        --rounds 3 --threads 1 --threads 2 > benchmarks/results/before_after-....json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

KEYS = ("engine_samples_per_s", "batched_samples_per_s", "reference_samples_per_s")


def bench(src: str, threads: int, steps: int) -> dict:
    env = {**os.environ, "PYTHONPATH": src}
    command = [sys.executable, "-m", "annealbench.cli", "bench", "--model", "nn2", "--dataset",
               "fashion-mnist", "--steps", str(steps), "--repeats", "1", "--threads",
               str(threads), "--json"]  # fmt: skip
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old_src")
    parser.add_argument("new_src")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, action="append")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    report: dict = {"old_src": args.old_src, "new_src": args.new_src, "by_threads": {}}
    for threads in args.threads or [1]:
        rounds = []
        for i in range(args.rounds):
            order = ("old", "new") if i % 2 == 0 else ("new", "old")
            figures = {
                side: bench(args.old_src if side == "old" else args.new_src, threads, args.steps)
                for side in order
            }
            figures["load"] = os.getloadavg()[0]
            rounds.append(figures)
            print(f"threads {threads} round {i}: " + ", ".join(
                f"{k} new/old {figures['new'][k] / figures['old'][k]:.3f}" for k in KEYS
            ), file=sys.stderr)  # fmt: skip
        report["by_threads"][threads] = {
            "median_ratio_new_over_old": {
                k: statistics.median(r["new"][k] / r["old"][k] for r in rounds) for k in KEYS
            },
            "rounds": rounds,
        }
    json.dump(report, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
