"""The user tools (``dreamerkit-learn``, ``-reconstructions``, ``-world-model-fit``, ``-replay-actions``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from tools import learn, replay_actions

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # a tool's own check: a minute of training
def test_reconstructions_and_world_model_fit_print_the_foreground_error(tmp_path):
    run_dir = tmp_path / "run"
    trained = subprocess.run(
        [
            sys.executable,
            "run.py",
            "recipe=dreamerv2_dmc",
            "debug=smoke",
            "logger=none",
            "env.time_limit=30",
            "replay.storage=disk",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    out = subprocess.run(
        ["dreamerkit-reconstructions", str(run_dir), "--episodes", "2", "--every", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = re.findall(
        r"^\s+(\d)\s+(-?[0-9.]+)\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$", out.stdout, re.M
    )
    assert [r[0] for r in rows] == ["0", "1"] and all(int(r[2]) == 15 for r in rows), out.stdout  # 30 frames, repeat 2
    # squared errors of [0, 1] RGB; the median frame differs from every foreground pixel by more than the threshold
    assert all(0 < float(r[4]) < 3 and 0.1**2 / 3 < float(r[5]) < 3 and 0 < float(r[6]) < 3 for r in rows), out.stdout
    assert all(0 < float(r[7]) < 1 for r in rows), out.stdout  # the cart and pole move: a foreground exists
    strips = sorted((run_dir / "reconstructions").glob("last_episode*.png"))
    assert [p.name for p in strips] == ["last_episode0.png", "last_episode1.png"]
    image = imageio.imread(strips[0])
    assert image.shape == (2 * 64 * 3, 3 * 64 * 3, 3)  # observation over reconstruction, steps 0, 5, 10; x3

    fit = ["dreamerkit-world-model-fit", str(run_dir), "--updates", "4", "--report", "2"]
    out = subprocess.run([*fit, "model.opt.lr=1e-3"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = re.findall(
        r"^\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+\d+$", out.stdout, re.M
    )
    assert [r[0] for r in rows] == ["0", "2", "4"] and "overrides: model.opt.lr=1e-3" in out.stdout, out.stdout
    assert all(0 < float(r[4]) < 3 for r in rows), out.stdout
    typo = subprocess.run([*fit, "model.opt.learning_rate=1e-3"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert typo.returncode != 0 and "'model.opt.learning_rate' is not a key" in typo.stderr


def test_learn_plot_draws_our_episodes_spread_beside_the_official_band(tmp_path):
    """learn.py --plot shades the min-max of each evaluation's episodes; runs without episodes.csv still plot."""
    import matplotlib.pyplot as plt

    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text("env: {name: dmc, task: cartpole_balance}\n")
    (run / "eval" / "learning.csv").write_text(
        "frames,agent_steps,updates,eval_return,train_return,wall_s\n"
        "1000,500,10,150.0,90.0,60.0\n2000,1000,40,300.0,250.0,120.0\n"
    )
    official = tmp_path / "official.csv"
    official.write_text("task,x,mean,min,max,seeds\ndmc_cartpole_balance,2000,280,200,330,5\n")
    learn.plot(run, official)
    assert len(plt.gca().collections) == 1  # only the official band
    assert "dreamerkit (eval, policy mode)" in [line.get_label() for line in plt.gca().lines]  # eval.policy unset
    plt.close("all")
    (run / "config.yaml").write_text("env: {name: dmc, task: cartpole_balance}\neval: {policy: sample}\n")
    learn.plot(run, official)
    assert "dreamerkit (eval, policy sample)" in [line.get_label() for line in plt.gca().lines]
    plt.close("all")

    (run / "eval" / "episodes.csv").write_text(
        "frames,agent_steps,episode,return\n1000,500,0,100.0\n1000,500,1,200.0\n2000,1000,0,290.0\n2000,1000,1,310.0\n"
    )
    assert learn.plot(run, official).exists()
    ours = [c for c in plt.gca().collections if "episodes" in c.get_label()]
    assert len(ours) == 1
    ys = sorted({round(float(y), 6) for y in ours[0].get_paths()[0].vertices[:, 1]})
    assert ys == [100.0, 200.0, 290.0, 310.0]
    plt.close("all")
    assert "eval return 300.0" in learn.summary(run) and "40 updates in 2.0 min" in learn.summary(run)


def test_learn_pools_seeds_and_reads_the_v3_suite_of_the_run(tmp_path, capsys, monkeypatch):
    """Several runs: per-seed returns at the evaluations all reached, their mean and min-max, and the
    official V3 row of the run's suite (proprio here, not vision)."""
    import matplotlib.pyplot as plt

    official = tmp_path / "v3.csv"
    official.write_text(
        "# comment line\nsuite,task,x,mean,min,max,seeds\n"
        "dmc_proprio,cartpole_balance,2000,280,200,330,5\ndmc_vision,cartpole_balance,2000,900,850,950,10\n"
    )
    runs = []
    for seed, returns in enumerate([(100, 400), (200, 500), (300, 900, 950)]):  # the third ran further
        run = tmp_path / f"s{seed}"
        (run / "eval").mkdir(parents=True)
        (run / "config.yaml").write_text("env: {name: dmc, task: cartpole_balance, pixels: false, proprio: true}\n")
        rows = [
            f"{1000 * (i + 1) + 8 * i},{500 * (i + 1)},{10 * (i + 1)},{r},0,{60 * (i + 1)}"
            for i, r in enumerate(returns)
        ]
        (run / "eval" / "learning.csv").write_text(
            "frames,agent_steps,updates,eval_return,train_return,wall_s\n" + "\n".join(rows) + "\n"
        )
        runs.append(run)

    table = learn.seeds_table(runs, official)
    assert [row["x"] for row in table] == [1000.0, 2008.0]  # 8 steps past 2000: the 2000 row
    assert table[1]["returns"] == [400.0, 500.0, 900.0] and table[1]["mean"] == 600.0
    assert (table[1]["min"], table[1]["max"]) == (400.0, 900.0)
    assert table[1]["official"] == "280 (200-330)" and "official" not in table[0]
    assert learn.plot_seeds(runs, tmp_path / "pooled.png", official).exists()
    plt.close("all")

    cli = ["learn.py", "--official", "v3", "--plot", *map(str, runs), "--out", str(tmp_path / "cli.png")]
    monkeypatch.setattr(sys, "argv", cli)
    monkeypatch.setitem(learn.OFFICIAL_CURVES, "v3", official)
    learn.main()
    assert "| 2008 | 400 | 500 | 900 | 600 | 400-900 | 280 (200-330) |" in capsys.readouterr().out
    plt.close("all")


def test_learn_pools_official_runs_beside_ours_from_their_metrics_jsonl(tmp_path, capsys, monkeypatch):
    """--beside reads official_train.py logdirs: one metrics.jsonl line per eval episode, the first (the
    random agent's, played during the prefill) skipped; their mean per x within 2% of ours."""
    import matplotlib.pyplot as plt

    official = tmp_path / "v2.csv"
    official.write_text("task,x,mean,min,max,seeds\ndmc_cartpole_balance,10000,300,250,350,5\n")
    ours = []
    for seed, ret in enumerate([200, 400]):
        run = tmp_path / f"ours{seed}"
        (run / "eval").mkdir(parents=True)
        (run / "config.yaml").write_text("env: {name: dmc, task: cartpole_balance}\n")
        (run / "eval" / "learning.csv").write_text(
            f"frames,agent_steps,updates,eval_return,train_return,wall_s\n10008,1251,300,{ret},0,60\n"
        )
        ours.append(run)
    theirs = []
    for seed, (first, second) in enumerate([((100, 200), (310, 330)), ((150, 150), (500, 520))]):
        logdir = tmp_path / f"official{seed}"
        logdir.mkdir()
        lines = [
            {"step": 5000, "eval_return": 999.0},  # the random agent's prefill episode
            {"step": 5000, "train_return": 20.0},
            {"step": 5000, "eval_return": first[0]},
            {"step": 5000, "eval_return": first[1]},
            {"step": 10000, "model_loss": 1.0},
            {"step": 10000, "eval_return": second[0]},
            {"step": 10000, "eval_return": second[1]},
        ]
        (logdir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        theirs.append(logdir)

    assert learn.official_run_returns(theirs[0]) == {5000.0: 150.0, 10000.0: 320.0}
    table = learn.seeds_table(ours, official, theirs)
    assert len(table) == 1 and table[0]["beside"] == [320.0, 510.0] and table[0]["official"] == "300 (250-350)"
    assert "beside" not in learn.seeds_table(ours, official)[0]
    cli = ["learn.py", "--plot", *map(str, ours), "--beside", *map(str, theirs), "--out", str(tmp_path / "b.png")]
    monkeypatch.setattr(sys, "argv", cli)
    monkeypatch.setitem(learn.OFFICIAL_CURVES, "v2", official)
    learn.main()
    assert (
        "| 10008 | 200 | 400 | 300 | 200-400 | 300 (250-350) | 320 / 510 | 415 (320-510) |" in capsys.readouterr().out
    )
    labels = [line.get_label() for line in plt.gca().lines]
    assert "official code here, mean of 2 seeds" in labels and (tmp_path / "b.png").exists()
    plt.close("all")


def test_replay_actions_reads_both_replays_in_blocks_of_agent_steps(tmp_path):
    """Blocks of 2 agent steps, 2 envs, repeat 2: a block ending at step 2 ends at env step 8."""
    # dreamerkit: 6 rows of which 4 written (zeros after), env 0 pushes +1, env 1 alternates around 0.5
    run = tmp_path / "ours"
    (run / "replay").mkdir(parents=True)
    action = np.zeros((6, 2, 1), np.float32)
    action[:4, 0, 0] = [1.0, 1.0, 0.5, 0.5]
    action[:4, 1, 0] = [0.5, -1.5, 0.25, 0.25]
    reward = np.zeros((6, 2), np.float32)
    reward[:4] = 1.0
    for key, value in {"action": action, "reward": reward, "is_first": np.zeros((6, 2), bool)}.items():
        np.memmap(run / "replay" / f"{key}.memmap", value.dtype, "w+", shape=value.shape)[:] = value
    meta = {k: {"shape": [6, 2]} for k in ("is_first", "action", "reward")}
    (run / "replay" / "meta.json").write_text(json.dumps(meta))
    streams = replay_actions.dreamerkit_streams(run)
    rows = replay_actions.blocks(*streams, block=2, repeat=2)
    assert sorted(rows) == [(8, 0.5, 2.0), (8, 1.0, 2.0), (16, 0.25, 2.0), (16, 0.5, 2.0)]
    # the printed rows, with env steps in thousands (repeat 2000): per bin the mean over its blocks
    lines = replay_actions.table(replay_actions.blocks(*streams, 2, 2000), 8000)
    assert [line.split() for line in lines[1:]] == [["0-8k", "2", "0.75", "2.0"], ["8-16k", "2", "0.38", "2.0"]]
    # official: worker a = chunk a1 (whole) -> a2 (saved twice, the longer save counts); worker b = b1
    logdir = tmp_path / "official"
    (logdir / "replay").mkdir(parents=True)

    def chunk(name: str, actions: list[float]) -> None:
        data = {"action": np.array(actions, np.float32)[:, None], "reward": np.ones(len(actions), np.float32)}
        np.savez(logdir / "replay" / f"{name}.npz", **data)

    chunk("T1-a1-a2-2", [-1.0, -1.0])
    chunk("T2-a2-0000-1", [0.5, 9.0])  # saved early: only its first step was filled
    chunk("T3-a2-0000-2", [0.5, 0.0])
    chunk("T1-b1-0000-4", [1.0, 0.0, 0.0, 0.0])
    actions, rewards = replay_actions.official_streams(logdir)
    assert sorted(a.tolist() for a in actions) == [[-1.0, -1.0, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0]]
    rows = replay_actions.blocks(actions, rewards, block=2, repeat=2)
    assert sorted(rows) == [(8, 0.5, 2.0), (8, 1.0, 2.0), (16, 0.0, 2.0), (16, 0.25, 2.0)]
