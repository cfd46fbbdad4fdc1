"""Learning benchmark: train a recipe with periodic evaluation, then plot it beside the official curve.

    python benchmarks/learn.py --name balance recipe=dreamerv2_dmc env.task=cartpole_balance size=small \
        train.steps=50000
    python benchmarks/learn.py --plot runs/learn/balance          # plot an existing (or running) run

Writes <run dir>/eval/learning.csv (frames, agent_steps, updates, eval_return,
train_return, wall_s) and eval/episodes.csv (each evaluation episode's return) during
training, and <run dir>/learning_curve.png (our eval mean with its episodes' min-max)
with the official DreamerV2 mean and min-max band (../shared/reference/dreamerv2_official_curves.csv)
at equal x: environment frames for Atari, environment steps for DMC. Prints the
final figures with updates/s and env steps/s. A SIGTERM to this script reaches the run, which
checkpoints and stops (resume it with ``python run.py resume=runs/learn/<name>``).
"""

from __future__ import annotations

import argparse
import csv
import signal
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OFFICIAL = ROOT.parent / "shared" / "reference" / "dreamerv2_official_curves.csv"


def read_csv(path: Path) -> list[dict]:
    """Rows of a CSV file (comment lines starting with # skipped)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def official_task(run_dir: Path) -> str:
    """The official curve's task name for a run: atari_<game> or dmc_<domain>_<task>."""
    env = yaml.safe_load((run_dir / "config.yaml").read_text())["env"]
    return f"{env['name']}_{env['task']}"


def plot(run_dir: Path, official: Path = OFFICIAL) -> Path:
    """Draw our eval (and train) returns against the official curve; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_csv(run_dir / "eval" / "learning.csv")
    task = official_task(run_dir)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = [float(r["frames"]) for r in rows]
    (line,) = ax.plot(x, [float(r["eval_return"]) for r in rows], "o-", label="dreamerkit (eval, policy mode)")
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
    if official.exists():
        ref = [r for r in read_csv(official) if r["task"] == task]
        if ref:
            rx = [float(r["x"]) for r in ref]
            ax.plot(rx, [float(r["mean"]) for r in ref], "k--", label="official DreamerV2 mean")
            ax.fill_between(
                rx,
                [float(r["min"]) for r in ref],
                [float(r["max"]) for r in ref],
                color="k",
                alpha=0.12,
                label="official min-max",
            )
            ax.set_xlim(0, max(x[-1] if x else 1, 1) * 1.05)
    ax.set_xlabel("environment frames" if task.startswith("atari") else "environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(f"{task}: {run_dir.name}")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out = run_dir / "learning_curve.png"
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
    parser.add_argument("--plot", type=Path, help="only plot this run directory")
    parser.add_argument("--name", default="run", help="run directory name under runs/learn/")
    parser.add_argument("--eval-every", type=int, default=5000, help="agent steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="run.py overrides (recipe=..., env.task=..., ...)")
    args = parser.parse_args()
    run_dir, returncode = args.plot, 0
    if run_dir is None:
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
    print(f"curve: {plot(run_dir)}")
    print(summary(run_dir))
    sys.exit(returncode)


if __name__ == "__main__":
    main()
