"""Fit a fresh world model, alone, on a run's stored replay: which setting learns to draw the foreground soonest?

    dreamerkit-world-model-fit runs/learn/balance --updates 300 model.opt.lr=1e-3
    dreamerkit-world-model-fit runs/learn/balance --updates 300 encoder.conv.depth=32 decoder.conv.depth=32

Opens the replay of ``<run dir>`` (``replay.storage=disk``) as its checkpoint left it,
builds the run's world model with the given ``key=value`` overrides of its saved
config, and trains only that model (no actor, no critic, no new experience) on
replayed batches with the run's optimizer settings. Every ``--report`` updates it
prints, on one held batch, the image, reward and KL terms and the posterior
reconstruction's error on foreground and background pixels (as
``tools/reconstructions.py`` defines them, against the held batch's median frame), so world-model settings can be
compared on the same data in minutes instead of a whole learning run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import registry
from components.envs import env_info
from components.nets import initialize
from recipes.agent import rank_states
from recipes.dreamer import adamw
from recipes.world_model import WorldModel
from registry import ConfigError
from runner.evaluate import load_run
from runner.train import make_replay, replay_folder
from tools.reconstructions import errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--checkpoint", default="last.ckpt", help="whose replay position to open")
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--report", type=int, default=100, help="updates between report lines")
    parser.add_argument("--threshold", type=float, default=0.1, help="foreground: |frame - median| summed over RGB")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("override", nargs="*", help="key=value changes of the run's config, e.g. model.opt.lr=1e-3")
    args = parser.parse_intermixed_args()  # overrides may follow the options

    try:
        run, components, checkpoint = load_run(args.run_dir, args.checkpoint, "world_model_fit", args.override)
    except ConfigError as err:
        parser.error(str(err))
    replay_dir = args.run_dir / replay_folder(0)
    if not replay_dir.is_dir():
        parser.error(f"{args.run_dir} has no replay on disk (it ran with replay.storage=memory)")
    torch.manual_seed(args.seed)
    env = registry.build("env", components["env"], path="env", seed=run.seed)
    info = env_info(env)
    env.close()
    replay = make_replay(run, components, replay_dir, args.seed)
    replay.load_state_dict(rank_states(checkpoint)[0]["experience"]["replay"])
    model = WorldModel(run.model, components, info.obs_space, info.action_dim, run.behavior.discount)
    initialize(model, run.model.init)
    optimizer = adamw(model.parameters(), run.model.opt)
    held = replay.sample(run.train.batch)
    print(
        f"# {args.run_dir}: {replay.steps} stored steps, batch {run.train.batch} x {run.train.length}, "
        f"overrides: {' '.join(args.override) or 'none'}"
    )
    print("updates  image_loss  reward_loss      kl  foreground_err  median_err  background_err  seconds")
    start = time.time()
    for update in range(args.updates + 1):
        if update % args.report == 0 or update == args.updates:
            with torch.no_grad():
                _, post, metrics = model.loss(held)
                recon = model.decode_image(model.rssm.features(post)).clamp(0, 1)
            truth = held["image"].float() / 255
            e = errors(truth.flatten(0, 1), recon.flatten(0, 1), args.threshold)
            print(
                f"{update:7d}  {float(metrics['model/decoder_loss']):10.1f}  "
                f"{float(metrics['model/reward_loss']):11.3f}  "
                f"{float(metrics['model/kl']):6.2f}  {e['foreground_err']:14.4f}  {e['median_err']:10.4f}  "
                f"{e['background_err']:14.5f}  {time.time() - start:7.0f}",
                flush=True,
            )
        if update == args.updates:
            break
        loss, _, _ = model.loss(replay.sample(run.train.batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), run.model.opt.clip)
        optimizer.step()


if __name__ == "__main__":
    main()
