"""Learning benchmark: train a recipe with periodic evaluation, then plot it beside the official curve.

    dreamerkit-learn --name balance recipe=dreamerv2_dmc env.task=cartpole_balance size=small \
        train.steps=50000
    dreamerkit-learn --plot runs/learn/balance          # plot an existing (or running) run
    dreamerkit-learn --official v3 --out seeds.png --plot runs/learn/v3_s{0,1,2}   # seeds pooled
    dreamerkit-learn --plot runs/learn/balance_s{0,1,2} --beside runs/official/balance_s{0,1,2}

Writes <run dir>/eval/learning.csv (frames, agent_steps, updates, eval_return,
train_return, wall_s) and eval/episodes.csv (each evaluation episode's return) during
training, and <run dir>/learning_curve.png (our eval mean with its episodes' min-max)
with the official mean and min-max band at equal x: environment frames for Atari, environment
steps for DMC. ``--official v2`` (default) reads tools/reference/dreamerv2_official_curves.csv,
``v3`` (default for recipe=dreamerv3_*) dreamerv3_official_curves.csv, whose DMC rows are split into
proprio and vision suites (tools/reference/README.md names their sources). Prints the final
figures with updates/s and env steps/s. Several run directories (seeds of one command) are pooled:
a table of each evaluation's return per seed with mean and min-max over seeds, and one plot of the
seed mean with its min-max beside the official band. ``--beside`` adds the official DreamerV2 trained here
(``official_train.py`` logdirs, read from their ``metrics.jsonl``) as a second pooled curve and table
column: the same budget on both sides, beside the published band. A SIGTERM to this script reaches the run, which
checkpoints and stops (resume it with ``python run.py resume=runs/learn/<name>``).
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent  # the checkout: run.py and runs/ (an editable install)
REFERENCE = Path(__file__).resolve().parent / "reference"  # the official curves, shipped with the package
OFFICIAL = REFERENCE / "dreamerv2_official_curves.csv"
OFFICIAL_CURVES = {"v2": OFFICIAL, "v3": REFERENCE / "dreamerv3_official_curves.csv"}


def read_csv(path: Path) -> list[dict]:
    """Rows of a CSV file (comment lines starting with # skipped)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def official_task(run_dir: Path) -> str:
    """The official curve's task name for a run: atari_<game> or dmc_<domain>_<task>."""
    env = yaml.safe_load((run_dir / "config.yaml").read_text())["env"]
    return f"{env['name']}_{env['task']}"


def official_rows(run_dir: Path, official: Path) -> list[dict]:
    """The official curve's rows for a run's task; the V3 file splits DMC into proprio and vision suites."""
    if not official.exists():
        return []
    env = yaml.safe_load((run_dir / "config.yaml").read_text())["env"]
    rows = read_csv(official)
    if rows and "suite" in rows[0]:
        suite = f"{env['name']}_{'vision' if env.get('pixels', True) else 'proprio'}"
        return [r for r in rows if r["suite"] == suite and r["task"] == env["task"]]
    return [r for r in rows if r["task"] == official_task(run_dir)]


def draw_official(ax, rows: list[dict], version: str) -> None:
    """The official mean as a dashed line over its min-max band."""
    rx = [float(r["x"]) for r in rows]
    ax.plot(rx, [float(r["mean"]) for r in rows], "k--", label=f"official Dreamer{version.upper()} mean")
    lows, highs = [float(r["min"]) for r in rows], [float(r["max"]) for r in rows]
    ax.fill_between(rx, lows, highs, color="k", alpha=0.12, label="official min-max")


def plot(run_dir: Path, official: Path = OFFICIAL) -> Path:
    """Draw our eval (and train) returns against the official curve; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_csv(run_dir / "eval" / "learning.csv")
    task = official_task(run_dir)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = [float(r["frames"]) for r in rows]
    policy = yaml.safe_load((run_dir / "config.yaml").read_text()).get("eval", {}).get("policy", "mode")
    (line,) = ax.plot(x, [float(r["eval_return"]) for r in rows], "o-", label=f"dreamerkit (eval, policy {policy})")
    if (run_dir / "eval" / "episodes.csv").exists():  # absent in runs from before it was written
        by_frames: dict[float, list[float]] = {}
        for r in read_csv(run_dir / "eval" / "episodes.csv"):
            by_frames.setdefault(float(r["frames"]), []).append(float(r["return"]))
        ex = sorted(by_frames)
        ax.fill_between(
            ex,
            [min(by_frames[f]) for f in ex],
            [max(by_frames[f]) for f in ex],
            color=line.get_color(),
            alpha=0.2,
            label="dreamerkit (eval episodes, min-max)",
        )
    ax.plot(x, [float(r["train_return"]) for r in rows], ".", alpha=0.5, label="dreamerkit (last train episode)")
    ref = official_rows(run_dir, official)
    if ref:
        draw_official(ax, ref, "v3" if official.name.startswith("dreamerv3") else "v2")
        ax.set_xlim(0, max(x[-1] if x else 1, 1) * 1.05)
    ax.set_xlabel("environment frames" if task.startswith("atari") else "environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(f"{task}: {run_dir.name}")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out = run_dir / "learning_curve.png"
    fig.savefig(out, dpi=110)
    return out


def official_run_returns(logdir: Path) -> dict[float, float]:
    """Mean eval return per env step of the official DreamerV2 ``train.py`` (an ``official_train.py`` logdir).

    Its ``metrics.jsonl`` has one line per evaluation episode (``step`` in env steps, ``eval_return``).
    The first such line is the random agent's episode that ``train.py`` plays during a fresh run's
    prefill, not an evaluation of the policy: it is skipped (a resumed run plays none).
    """
    lines = [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    by_step: dict[float, list[float]] = {}
    for line in [line for line in lines if "eval_return" in line][1:]:
        by_step.setdefault(float(line["step"]), []).append(float(line["eval_return"]))
    return {x: sum(v) / len(v) for x, v in by_step.items()}


def near(items, x: float, key=float):
    """The item of ``items`` whose ``key`` is within 2% of ``x`` and closest to it, or None: evaluations
    land a few steps past a round number (after the env steps that cross it)."""
    close = [item for item in items if abs(key(item) - x) <= 0.02 * x]
    return min(close, key=lambda item: abs(key(item) - x)) if close else None


def shared_returns(per_run: list[dict[float, float]]) -> dict[float, list[float]]:
    """Each x that every run evaluated at, in order, with the runs' returns there."""
    shared = sorted(set.intersection(*(set(runs) for runs in per_run))) if per_run else []
    return {x: [runs[x] for runs in per_run] for x in shared}


def seeds_table(run_dirs: list[Path], official: Path = OFFICIAL, beside: list[Path] = ()) -> list[dict]:
    """Each evaluation that every run reached: x, the runs' returns, their mean, min, max, the official
    mean (min-max) at the official x within 2% of it, and with ``beside`` (official runs made here) their
    returns and mean (min-max) at an evaluation within 2% that every one of them reached."""
    per_run = [
        {float(r["frames"]): float(r["eval_return"]) for r in read_csv(d / "eval" / "learning.csv")} for d in run_dirs
    ]
    ref = official_rows(run_dirs[0], official)
    theirs = shared_returns([official_run_returns(d) for d in beside])
    table = []
    for x, returns in shared_returns(per_run).items():
        row = {
            "x": x,
            "returns": returns,
            "mean": sum(returns) / len(returns),
            "min": min(returns),
            "max": max(returns),
        }
        r = near(ref, x, key=lambda r: float(r["x"]))
        if r is not None:
            row["official"] = f"{float(r['mean']):.0f} ({float(r['min']):.0f}-{float(r['max']):.0f})"
        tx = near(theirs, x)
        if tx is not None:
            row["beside"] = theirs[tx]
        table.append(row)
    return table


def plot_seeds(run_dirs: list[Path], out: Path, official: Path = OFFICIAL, beside: list[Path] = ()) -> Path:
    """The seeds' mean eval return with their min-max, beside the official band (and the official runs of
    ``beside`` at every evaluation they all reached); returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = seeds_table(run_dirs, official)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = [row["x"] for row in table]
    (line,) = ax.plot(x, [row["mean"] for row in table], "o-", label=f"dreamerkit mean of {len(run_dirs)} seeds")
    ax.fill_between(
        x,
        [r["min"] for r in table],
        [r["max"] for r in table],
        color=line.get_color(),
        alpha=0.2,
        label="dreamerkit min-max over seeds",
    )
    if beside:
        theirs = shared_returns([official_run_returns(d) for d in beside])
        tx = list(theirs)
        (line,) = ax.plot(
            tx,
            [sum(theirs[x]) / len(beside) for x in tx],
            "s-",
            label=f"official code here, mean of {len(beside)} seeds",
        )
        ax.fill_between(
            tx,
            [min(theirs[x]) for x in tx],
            [max(theirs[x]) for x in tx],
            color=line.get_color(),
            alpha=0.2,
            label="official code here, min-max over seeds",
        )
    ref = official_rows(run_dirs[0], official)
    if ref:
        draw_official(ax, ref, "v3" if official.name.startswith("dreamerv3") else "v2")
        ax.set_xlim(0, max(x[-1] if x else 1, 1) * 1.05)
    task = official_task(run_dirs[0])
    ax.set_xlabel("environment frames" if task.startswith("atari") else "environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(f"{task}: {', '.join(d.name for d in run_dirs)}", fontsize=8)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def summary(run_dir: Path) -> str:
    """The last evaluation with speed figures."""
    rows = read_csv(run_dir / "eval" / "learning.csv")
    if not rows:
        return "no evaluation yet"
    last = rows[-1]
    wall = float(last["wall_s"])
    return (
        f"frames {int(float(last['frames']))}: eval return {float(last['eval_return']):.1f}, "
        f"{int(last['updates'])} updates in {wall / 60:.1f} min "
        f"({int(last['updates']) / wall:.2f} updates/s, {int(last['agent_steps']) / wall:.1f} agent steps/s)"
    )


def train(cmd: list[str]) -> int:
    """Run the training command; a SIGTERM to this script is passed on, so the run checkpoints and stops."""
    child = subprocess.Popen(cmd, cwd=ROOT)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    return child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plot", type=Path, nargs="+", help="only plot these run directories (several: seeds pooled)")
    parser.add_argument(
        "--official",
        choices=sorted(OFFICIAL_CURVES),
        help="official curves: v2, or v3 (default for recipe=dreamerv3_*)",
    )
    parser.add_argument("--out", type=Path, help="PNG of several pooled runs (default: <first run>_seeds.png)")
    parser.add_argument(
        "--beside", type=Path, nargs="+", default=[], help="official_train.py logdirs to pool beside --plot's runs"
    )
    parser.add_argument("--name", default="run", help="run directory name under runs/learn/")
    parser.add_argument("--eval-every", type=int, default=5000, help="agent steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="run.py overrides (recipe=..., env.task=..., ...)")
    args = parser.parse_args()
    v3 = any(o.startswith("recipe=dreamerv3") for o in args.overrides)
    official = OFFICIAL_CURVES[args.official or ("v3" if v3 else "v2")]
    if args.beside and not args.plot:
        parser.error("--beside needs --plot: the official runs are drawn beside dreamerkit runs")
    if args.plot and (len(args.plot) > 1 or args.beside):
        default_out = args.plot[0].with_name(args.plot[0].name + "_seeds.png")
        out = plot_seeds(args.plot, args.out or default_out, official, args.beside)
        head = "| x | " + " | ".join(d.name for d in args.plot) + " | mean | min-max | official |"
        if args.beside:
            head += f" official code here ({', '.join(d.name for d in args.beside)}) | its mean (min-max) |"
        print(head)
        for row in seeds_table(args.plot, official, args.beside):
            seeds = " | ".join(f"{r:.0f}" for r in row["returns"])
            spread = f"{row['min']:.0f}-{row['max']:.0f}"
            line = f"| {row['x']:.0f} | {seeds} | {row['mean']:.0f} | {spread} | {row.get('official', '')} |"
            theirs = row.get("beside")
            if theirs:
                mean = sum(theirs) / len(theirs)
                line += (
                    f" {' / '.join(f'{r:.0f}' for r in theirs)} | {mean:.0f} ({min(theirs):.0f}-{max(theirs):.0f}) |"
                )
            elif args.beside:
                line += " | |"
            print(line)
        print(f"curve: {out}")
        return
    run_dir, returncode = (args.plot[0] if args.plot else None), 0
    if run_dir is None:
        if not (ROOT / "run.py").is_file():
            parser.error(
                f"training goes through run.py, which is not beside the package ({ROOT}): install dreamerkit "
                "from its checkout with pip install -e . (or pass --plot to plot existing runs)"
            )
        run_dir = ROOT / "runs" / "learn" / args.name
        cmd = [
            sys.executable,
            str(ROOT / "run.py"),
            *args.overrides,
            f"eval.every={args.eval_every}",
            f"eval.during_episodes={args.eval_episodes}",
            f"hydra.run.dir={run_dir}",
        ]
        print("running:", " ".join(cmd), flush=True)
        returncode = train(cmd)
    print(f"curve: {plot(run_dir, official)}")
    print(summary(run_dir))
    sys.exit(returncode)


if __name__ == "__main__":
    main()
