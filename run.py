"""dreamerkit entry point: compose the Hydra config and hand it to recipes.train.

python run.py recipe=dreamerv2_atari latent=categorical
python run.py -m recipe=dreamerv2_atari latent=categorical,gaussian seed=0,1,2
"""

import sys

import hydra
from omegaconf import DictConfig

from recipes.config import register_schema
from recipes.preflight import check_run_dir_args
from registry import ConfigError

register_schema()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from recipes.checkpoint import CheckpointError, NonFiniteLoss
    from recipes.diskspace import NoSpace
    from recipes.evaluate import evaluate
    from recipes.train import train

    try:
        if cfg.get("evaluate"):
            evaluate(cfg)
        else:
            train(cfg, overrides=list(HydraConfig.get().overrides.task))
    except ConfigError as err:  # a config mistake: say what and what is valid, no traceback
        raise SystemExit(f"config error: {err}") from None
    except (CheckpointError, NonFiniteLoss, NoSpace) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    try:
        check_run_dir_args(sys.argv[1:])  # before Hydra makes its job folder inside the path given
    except ConfigError as err:
        raise SystemExit(f"config error: {err}") from None
    main()
