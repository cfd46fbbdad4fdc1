"""dreamerkit entry point: compose the Hydra config and hand it to recipes.train.

python run.py recipe=dreamerv2_atari latent=categorical
python run.py -m recipe=dreamerv2_atari latent=categorical,gaussian seed=0,1,2

The config is validated before the training code (Lightning, TorchRL's replay, the
environments) is imported, so a mistake is reported in seconds.
"""

import dataclasses
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from recipes.config import RunConfig, register_schema
from recipes.preflight import check_run_dir_args
from registry import ConfigError

register_schema()
CONF = Path(__file__).resolve().parent / "conf"


def check_top_level_keys(args: list[str]) -> None:
    """Name a misspelt top-level key of a command-line override with the valid ones.

    Hydra would only suggest appending it (``+trian.batch=4``).
    """
    keys = [arg.split("=", 1)[0].lstrip("+~") for arg in args if not arg.startswith("-") and "=" in arg]
    tops = {key: key.split(".", 1)[0].split("@", 1)[0].split("/", 1)[0] for key in keys}  # +key, ++key, ~key
    valid = {f.name for f in dataclasses.fields(RunConfig)} | {p.name for p in CONF.iterdir() if p.is_dir()}
    valid.add("hydra")
    if all(top in valid for top in tops.values()):
        return
    from registry import unknown
    from registry.cli import conf_options

    valid |= set(conf_options(CONF))  # the plug-ins' config groups too
    for key, top in tops.items():
        if top not in valid:
            raise SystemExit(f"config error: {unknown(key, top, sorted(valid), what='top-level key')}")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from recipes.config import validate

    try:
        if not cfg.get("resume"):  # a resume is validated on its saved config, by recipes.train
            validate(cfg)  # before the heavy imports below
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
        except (CheckpointError, NonFiniteLoss, NoSpace) as err:
            raise SystemExit(f"error: {err}") from None
    except ConfigError as err:  # a config mistake: say what and what is valid, no traceback
        raise SystemExit(f"config error: {err}") from None


if __name__ == "__main__":
    check_top_level_keys(sys.argv[1:])
    try:
        check_run_dir_args(sys.argv[1:])  # before Hydra makes its job folder inside the path given
    except ConfigError as err:
        raise SystemExit(f"config error: {err}") from None
    main()
