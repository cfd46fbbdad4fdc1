"""Summarise a Hydra multirun sweep: final return per setting, mean and spread over seeds.

    dreamerkit-sweep-summary multirun/2026-11-22/10-00-00

Each job's final return is its last periodic evaluation (eval/learning.csv, from
eval.every) or else the mean of its last 10 training episodes (csv/metrics.csv,
logger=csv). Jobs are grouped by the overrides that differ between them (seeds
pooled). Prints a table
and writes summary.png (bar = mean, whiskers = min..max over seeds) into the sweep folder.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path

import yaml


def final_return(job: Path) -> float | None:
    """A job's final return, or None when it logged none."""
    learning = job / "eval" / "learning.csv"
    if learning.exists():
        rows = list(csv.DictReader(learning.open()))
        if rows:
            return float(rows[-1]["eval_return"])
    metrics = job / "csv" / "metrics.csv"
    if metrics.exists():
        returns = [float(r["episode/return"]) for r in csv.DictReader(metrics.open()) if r.get("episode/return")]
        if returns:
            return statistics.fmean(returns[-10:])
    return None


def overrides(job: Path) -> set[str]:
    """The command-line overrides of one job, without the seed."""
    return {o for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) if not o.startswith("seed=")}


def summarise(sweep: Path) -> dict[str, list[float]]:
    """Final returns grouped by setting: the overrides that differ between jobs (seeds pooled)."""
    jobs = sorted(p for p in sweep.iterdir() if (p / ".hydra" / "overrides.yaml").exists())
    common = set.intersection(*(overrides(j) for j in jobs)) if jobs else set()
    groups: dict[str, list[float]] = defaultdict(list)
    for job in jobs:
        value = final_return(job)
        if value is not None:
            groups[",".join(sorted(overrides(job) - common)) or "(defaults)"].append(value)
    return dict(groups)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="a multirun folder (hydra.sweep.dir)")
    args = parser.parse_args()
    groups = summarise(args.sweep)
    if not groups:
        raise SystemExit(f"no finished jobs with returns under {args.sweep} (use logger=csv or eval.every)")
    width = max(len(k) for k in groups)
    print(f"{'setting':<{width}}  seeds    mean     std      min      max")
    for name, values in groups.items():
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        print(
            f"{name:<{width}}  {len(values):>5} {statistics.fmean(values):>7.1f} {std:>7.1f} "
            f"{min(values):>8.1f} {max(values):>8.1f}"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(groups)
    means = [statistics.fmean(groups[n]) for n in names]
    low = [m - min(groups[n]) for m, n in zip(means, names)]
    high = [max(groups[n]) - m for m, n in zip(means, names)]
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(names)), 4))
    ax.bar(range(len(names)), means, yerr=[low, high], capsize=4)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("final return")
    fig.tight_layout()
    fig.savefig(args.sweep / "summary.png", dpi=110)
    print(f"plot: {args.sweep / 'summary.png'}")


if __name__ == "__main__":
    main()
