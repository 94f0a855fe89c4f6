"""When does a batched group beat one run at a time?  Side by side, interleaved rounds.

For each model and group size K: the engine's samples/s for one run (what one-at-a-time
achieves) and the batched group's samples/s over its K runs; the ratio is the speedup of
batching. The figures behind ``annealbench.batched.should_batch``.

    .venv/bin/python benchmarks/batched_vs_alone.py --threads 2 --steps 60 \
        --models nn2 nn3 lenet4 vgg9 --ks 2 4 12 --out benchmarks/results/batched_vs_alone.json
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from annealbench import bench, engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["nn2", "nn3", "lenet4", "vgg9"])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--ks", nargs="+", type=int, default=[2, 4, 12])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for model in args.models:
        base = engine.RunConfig(args.dataset, model, "sig+", device=args.device)
        best_alone = 0.0
        best_group = {k: 0.0 for k in args.ks}
        for _ in range(args.repeats):
            best_alone = max(best_alone, bench.engine_throughput(base, args.steps))
            for k in args.ks:
                group = bench.batched_configs(base, k)
                best_group[k] = max(best_group[k], bench.batched_throughput(group, args.steps))
        for k in args.ks:
            row = {
                "model": model,
                "k": k,
                "alone_samples_per_s": best_alone,
                "batched_samples_per_s": best_group[k],
                "batched_over_alone": best_group[k] / best_alone,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "dataset": args.dataset,
        "steps": args.steps,
        "repeats": args.repeats,
        "threads": args.threads,
        "device": args.device,
        "cpu": platform.processor() or platform.machine(),
        "torch_version": torch.__version__,
        "rows": rows,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
