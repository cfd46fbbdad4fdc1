"""What the world model sees: posterior reconstructions along a trained agent's evaluation episodes.

    dreamerkit-reconstructions runs/learn/balance --checkpoint step_000000003126.ckpt --episodes 3

Plays policy-mode episodes with a run's checkpoint (image observations only) and, at
every step, decodes the posterior state the actor acts on. Prints, per episode:

- the return and the reward head's mean absolute error against the rewards received;
- the reconstruction's squared error (summed over RGB, in [0, 1] units) on the
  foreground, the pixels that differ from the episode's median frame by more than
  ``--threshold`` (what moves: a pole, a ball, a paddle), and on the background;
  ``median_err`` is the foreground error of the median frame, a model that draws no foreground.

A world model that draws the background and misses the foreground gives the actor
nothing to act on but what the reward head conveys. Writes
``<run dir>/reconstructions/<checkpoint>_episode<i>.png``: observations over their
reconstructions, every ``--every`` steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from tensordict import TensorDict

from registry import ConfigError
from runner.evaluate import load_agent


@torch.no_grad()
def episode(module, env, seed: int) -> dict:
    """One policy-mode episode: observations, posterior reconstructions, rewards and predicted rewards."""
    wm, actor = module.world_model, module.behavior.actor
    obs, _ = env.reset(seed=seed)
    state, action = wm.rssm.initial(1, "cpu"), torch.zeros(1, module.env_info.action_dim)
    frames, recons, rewards, predicted, reward = [], [], [], [], 0.0
    while True:
        td = TensorDict({k: torch.as_tensor(np.asarray(v))[None] for k, v in obs.items()}, batch_size=[1])
        state = wm.act_step(state, td, action)
        feat = wm.rssm.features(state)
        frames.append(td["image"][0].float() / 255)
        recons.append(wm.decode_image(feat[:, None])[0, 0].clamp(0, 1))
        if len(frames) > 1:  # the reward head at a state predicts the reward that came with it
            rewards.append(reward)
            predicted.append(float(wm.reward_head(feat).mean))
        action = actor(feat).mode
        env_action = int(action[0].argmax()) if module.env_info.discrete else action[0].numpy()
        obs, reward, terminated, truncated, _ = env.step(env_action)
        if terminated or truncated:
            return {
                "frames": torch.stack(frames),
                "recons": torch.stack(recons),
                "rewards": np.asarray(rewards + [reward]),
                "predicted": np.asarray(predicted),
            }


def errors(frames: torch.Tensor, recons: torch.Tensor, threshold: float) -> dict[str, float]:
    """Squared errors of ``[T, C, H, W]`` reconstructions in [0, 1] on the foreground and the background.

    ``median_err`` is the foreground error of the median frame itself: what a model that
    draws only the background scores there.
    """
    median = frames.median(0).values
    foreground = (frames - median).abs().sum(1) > threshold  # [T, H, W]
    err = (recons - frames).square().sum(1)
    nan = float("nan")
    return {
        "foreground_err": float(err[foreground].mean()) if foreground.any() else nan,
        "median_err": float((median - frames).square().sum(1)[foreground].mean()) if foreground.any() else nan,
        "background_err": float(err[~foreground].mean()),
        "foreground_share": float(foreground.float().mean()),
    }


def strip(frames: torch.Tensor, recons: torch.Tensor, every: int, scale: int = 3) -> np.ndarray:
    """Observations (top) over reconstructions (bottom), one column every ``every`` steps, HWC uint8."""
    picks = list(range(0, len(frames), every))[:24]
    grid = torch.cat([torch.cat([frames[i], recons[i]], 1) for i in picks], 2)  # [C, 2H, n*W]
    image = (grid.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    return np.kron(image, np.ones((scale, scale, 1), np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--checkpoint", default="last.ckpt", help="a file in <run dir>/checkpoints")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--every", type=int, default=6, help="steps between the columns of the PNG")
    parser.add_argument("--threshold", type=float, default=0.1, help="foreground: |frame - median| summed over RGB")
    args = parser.parse_args()

    run, env, module = load_agent(args.run_dir, args.checkpoint, 30_000, "reconstructions")
    if "image" not in env.observation_space.spaces:
        raise ConfigError(f"{args.run_dir}: its env has no image observation, so there is nothing to reconstruct")
    out = args.run_dir / "reconstructions"
    out.mkdir(exist_ok=True)
    print(
        f"# {args.run_dir} {args.checkpoint}: foreground = pixels off the episode's median frame by > {args.threshold}"
    )
    print("episode  return  steps  reward_mae  foreground_err  median_err  background_err  foreground_share")
    for i in range(args.episodes):
        ep = episode(module, env, run.seed + 30_000 + i)
        e = errors(ep["frames"], ep["recons"], args.threshold)
        mae = float(np.abs(ep["predicted"] - ep["rewards"][:-1]).mean()) if len(ep["predicted"]) else float("nan")
        print(
            f"{i:7d}  {ep['rewards'].sum():6.1f}  {len(ep['frames']):5d}  {mae:10.3f}  {e['foreground_err']:14.4f}  "
            f"{e['median_err']:10.4f}  {e['background_err']:14.5f}  {e['foreground_share']:16.4f}"
        )
        imageio.imwrite(
            out / f"{Path(args.checkpoint).stem}_episode{i}.png", strip(ep["frames"], ep["recons"], args.every)
        )
    env.close()
    print(f"images: {out}")


if __name__ == "__main__":
    main()
