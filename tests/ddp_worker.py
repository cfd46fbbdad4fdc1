"""Run by tests/test_ddp.py (``python tests/ddp_worker.py <run dir> [--resume] <overrides>``): a
data-parallel smoke run (or its resumption) that saves what each rank ends with to ``<run dir>/rank<r>.pt``.

Lightning's DDP launcher starts the other ranks by running this script again.
"""

import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.checkpoint import resume_checkpoint  # noqa: E402
from runner.config import register_schema  # noqa: E402
from runner.train import build, resume_config  # noqa: E402


def main(run_dir: str, *overrides: str) -> None:
    register_schema()
    ckpt = None
    if overrides and overrides[0] == "--resume":
        cfg, (ckpt, _) = resume_config(run_dir, overrides[1:]), resume_checkpoint(run_dir)
    else:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[f"run_dir={run_dir}", *overrides])
    module, experience, trainer = build(cfg)
    # What a rank draws: the same weights fed the same observation sample their latents and action
    # from the rank's own random stream.
    obs = experience.observation()[:1].zero_()
    obs["is_first"] = torch.ones(1, dtype=torch.bool)
    probe_action, (probe_latent, _) = module.policy(obs, None, "sample")
    try:
        trainer.fit(module, train_dataloaders=experience.batches(module.policy), ckpt_path=ckpt)
    finally:
        experience.close()
    stored = experience.replay.buffer.storage
    torch.save(
        {
            "params": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
            "agent_steps": experience.agent_steps,
            "global_steps": experience.global_steps,
            "updates": experience.sampled,
            "actions": stored[: len(stored)]["action"].clone(),
            "probe": {"action": probe_action, "latent": probe_latent},
        },
        Path(run_dir) / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
