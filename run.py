"""dreamerkit entry point: compose the Hydra config and hand it to runner.train.

python run.py recipe=dreamerv2_atari latent=categorical
python run.py -m recipe=dreamerv2_atari latent=categorical,gaussian seed=0,1,2

The config is validated before the training code (Lightning, TorchRL's replay, the
environments) is imported, so a mistake is reported in seconds.
"""

import dataclasses
import shutil
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from registry import ConfigError
from runner.config import RunConfig, register_schema
from runner.lock import RunInUse
from runner.preflight import check_run_dir_args

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


def print_help(args: list[str]) -> None:
    """``--help``: how to run, the config groups with their options, and the config ``args`` compose.

    Written here rather than left to Hydra's help, which lists every group's options by copying its
    config repository once per group: about 4 s with the per-recipe ``conf/tuning`` groups.
    ``--hydra-help`` still prints Hydra's own flags.
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from registry.cli import conf_options

    overrides = [a for a in args if a not in ("--help", "-h")]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    groups = {g: o for g, o in conf_options(CONF).items() if g not in ("tuning", "hydra")}
    print(__doc__.strip().splitlines()[0], "\n")
    print("Usage: python run.py [group=option ...] [key=value ...]   (-m sweeps comma-separated values)")
    print("       python run.py resume=<run dir> | evaluate=<run dir>; python -m registry [kind] for settings\n")
    print("Config groups (group=option):")
    print("\n".join(f"  {g}: {', '.join(o)}" for g, o in groups.items()))
    print("\nThe composed config (Hydra's own flags: --hydra-help):\n")
    print(OmegaConf.to_yaml(cfg))


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from runner.config import validate

    try:
        if not cfg.get("resume"):  # a resume is validated on its saved config, by runner.train
            validate(cfg)  # before the heavy imports below
        from hydra.core.hydra_config import HydraConfig

        from components.diskspace import NoSpace
        from recipes.agent import NonFiniteLoss
        from runner.checkpoint import CheckpointError
        from runner.evaluate import evaluate
        from runner.train import train

        try:
            if cfg.get("evaluate"):
                evaluate(cfg)
            else:
                train(cfg, overrides=list(HydraConfig.get().overrides.task))
        except (CheckpointError, NonFiniteLoss, NoSpace) as err:
            raise SystemExit(f"error: {err}") from None
    except ConfigError as err:  # a config mistake or a run in use: say what and what is valid, no traceback
        remove_job_dir()
        raise SystemExit(f"{'error' if isinstance(err, RunInUse) else 'config error'}: {err}") from None


def remove_job_dir() -> None:
    """Remove the folder Hydra made for this job, when it holds only Hydra's own files.

    Hydra makes the job folder (``.hydra/`` and ``run.log``) before ``main`` runs, so without this
    every refused config left a folder in runs/. Its parents go too while empty (the day's folder, a
    run's ``resumed/`` or ``eval/``), so a refused command changes no file of a run.
    """
    from hydra.core.hydra_config import HydraConfig

    job = Path(HydraConfig.get().runtime.output_dir).resolve()
    if not job.is_dir() or any(p.name != ".hydra" and p.suffix != ".log" for p in job.iterdir()):
        return  # something of ours is in there (a resumed or evaluated run's folder is its parent)
    shutil.rmtree(job, ignore_errors=True)
    cwd = Path.cwd().resolve()
    for parent in job.parents:  # empty folders below the working directory (runs/<day>/) or of the run
        ours = parent.name in ("resumed", "eval") and (parent.parent / "config.yaml").is_file()
        if any(parent.iterdir()) or not (ours or cwd in parent.parents):
            break
        parent.rmdir()


if __name__ == "__main__":
    check_top_level_keys(sys.argv[1:])
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        print_help(sys.argv[1:])
        raise SystemExit(0)
    try:
        check_run_dir_args(sys.argv[1:])  # before Hydra makes its job folder inside the path given
    except ConfigError as err:
        raise SystemExit(f"config error: {err}") from None
    main()
