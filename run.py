"""dreamerkit entry point: compose the Hydra config and hand it to recipes.train.

    python run.py recipe=dreamerv2_atari latent=categorical
    python run.py -m recipe=dreamerv2_atari latent=categorical,gaussian seed=0,1,2
"""

import hydra
from omegaconf import DictConfig

from recipes.config import register_schema

register_schema()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from recipes.train import train
    from registry import ConfigError

    try:
        train(cfg)
    except ConfigError as err:  # a config mistake: say what and what is valid, no traceback
        raise SystemExit(f"config error: {err}") from None


if __name__ == "__main__":
    main()
