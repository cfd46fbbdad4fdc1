"""Config composition: recipes, command-line precedence, paper hyperparameters, start-up validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from recipes.train import validate
from registry import ConfigError

RECIPES = ["dreamerv2_atari", "dreamerv2_dmc", "dreamerv1_dmc", "dreamerv2_atari_nokl", "dreamerv2_cartpole"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_validates(make_cfg, recipe):
    run, components = validate(make_cfg(f"recipe={recipe}"))
    assert run.train.batch > 0 and components["latent"]["name"] in ("categorical", "gaussian")


def test_atari_recipe_has_the_paper_hyperparameters(make_cfg):
    run, c = validate(make_cfg("recipe=dreamerv2_atari"))
    assert c["env"] == {
        "name": "atari",
        "task": "pong",
        "sticky": 0.25,
        "action_repeat": 4,
        "size": 64,
        "grayscale": True,
        "noops": 30,
        "life_done": False,
        "time_limit": 108000,
        "full_action_space": True,
    }
    assert (run.model.rssm.deter, run.model.rssm.hidden) == (600, 600)
    assert (c["latent"]["variables"], c["latent"]["classes"]) == (32, 32)
    assert c["kl"] == {"name": "balanced", "alpha": 0.8, "free": 0.0, "free_avg": True, "scale": 0.1}
    assert c["actor_grad"]["name"] == "reinforce" and c["replay"]["name"] == "prioritize_ends"
    assert c["encoder"]["conv"]["depth"] == 48 and c["encoder"]["conv"]["kernels"] == [4, 4, 4, 4]
    assert c["decoder"]["conv"]["kernels"] == [5, 5, 6, 6]
    assert run.model.loss_scales == {"decoder": 1.0, "reward": 1.0, "discount": 5.0}
    assert (run.model.opt.lr, run.behavior.actor_opt.lr, run.behavior.critic_opt.lr) == (2e-4, 4e-5, 1e-4)
    assert (run.model.opt.eps, run.model.opt.clip, run.model.opt.wd) == (1e-5, 100.0, 1e-6)
    b = run.behavior
    assert (b.discount, b.lambda_, b.horizon, b.ent_scale, b.slow_critic_every) == (0.999, 0.95, 15, 1e-3, 100)
    assert (run.train.batch, run.train.length, run.train.prefill) == (50, 50, 50_000)
    assert run.train.train_ratio == 50 * 50 / 16
    assert run.model.reward_transform == "tanh"


def test_dmc_recipe_has_the_paper_hyperparameters(make_cfg):
    run, c = validate(make_cfg("recipe=dreamerv2_dmc"))
    assert c["env"]["action_repeat"] == 2 and c["env"]["size"] == 64
    assert (run.model.rssm.deter, run.model.rssm.hidden) == (200, 200)
    assert c["kl"]["free"] == 1.0 and c["kl"]["scale"] == 1.0
    assert c["actor_grad"]["name"] == "dynamics" and c["replay"]["name"] == "episodes"
    assert run.model.discount_head is None and run.model.grad_heads == ["decoder", "reward"]
    assert (run.model.opt.lr, run.behavior.actor_opt.lr, run.behavior.critic_opt.lr) == (3e-4, 8e-5, 8e-5)
    assert (run.behavior.discount, run.behavior.ent_scale) == (0.99, 1e-4)
    assert (run.train.prefill, run.train.pretrain, run.train.train_ratio) == (2500, 100, 500)
    assert c["env"]["fast_render"] is False  # the official frames: MuJoCo's default quality


OFFICIAL_REPLAY = {"ongoing": False, "short": "skip", "reset_start": True}


@pytest.mark.parametrize(
    "recipe, prefill, replay",
    [
        # 0216d33 divides its prefill by the action repeat: Atari 200000 frames / 4, DMC 5000 / 2
        ("dreamerv2_atari", 50_000, {"name": "prioritize_ends", **OFFICIAL_REPLAY}),
        ("dreamerv2_atari_nokl", 50_000, {"name": "prioritize_ends", **OFFICIAL_REPLAY}),
        ("dreamerv2_dmc", 2_500, {"name": "episodes", **OFFICIAL_REPLAY}),
        # DreamerV1: 5000 frames / 2, and windows kept the stored previous action
        ("dreamerv1_dmc", 2_500, {"name": "episodes", **OFFICIAL_REPLAY, "reset_start": False}),
        # the sanity recipe chains CartPole's short episodes (its YAML says why)
        (
            "dreamerv2_cartpole",
            1_000,
            {"name": "prioritize_ends", "ongoing": True, "short": "chain", "reset_start": False},
        ),
    ],
)
def test_recipes_prefill_in_agent_steps_and_replay_as_the_official_code(make_cfg, recipe, prefill, replay):
    run, c = validate(make_cfg(f"recipe={recipe}"))
    assert run.train.prefill == prefill
    assert {k: c["replay"][k] for k in replay} == replay


def test_v1_recipe_is_gaussian_plain_dynamics(make_cfg):
    run, c = validate(make_cfg("recipe=dreamerv1_dmc"))
    assert c["latent"] == {"name": "gaussian", "size": 30, "min_std": 0.1, "std_act": "softplus"}
    assert c["kl"]["name"] == "plain" and c["kl"]["free"] == 3.0
    assert c["actor_grad"]["name"] == "dynamics" and run.model.discount_head is None
    assert run.model.opt.lr == 6e-4
    # DreamerV1's code: a GRU without layer norm, no weight decay, exploration noise 0.3, no target critic
    assert not run.model.rssm.gru_norm and not run.model.rssm.norm
    assert (run.model.opt.wd, run.behavior.actor_opt.wd, run.behavior.critic_opt.wd) == (0.0, 0.0, 0.0)
    assert (run.model.opt.eps, run.behavior.actor_opt.eps, run.behavior.critic_opt.eps) == (1e-7, 1e-7, 1e-7)
    assert (run.behavior.expl_noise, run.behavior.slow_critic_every) == (0.3, 1)


@pytest.mark.parametrize("recipe", ["dreamerv2_atari", "dreamerv2_dmc", "dreamerv2_atari_nokl"])
def test_v2_recipes_have_the_official_network_details(make_cfg, recipe):
    run, c = validate(make_cfg(f"recipe={recipe}"))
    assert (run.model.rssm.norm, run.model.rssm.gru_norm, run.model.init) == (False, True, "keras")
    assert not c["encoder"]["mlp"]["norm"] and not c["decoder"]["mlp"]["norm"]
    assert run.behavior.expl_noise == 0.0
    # the Gaussian-latent ablation: official std_act sigmoid2
    _, c = validate(make_cfg(f"recipe={recipe}", "latent=gaussian"))
    assert c["latent"]["std_act"] == "sigmoid2"


def test_nokl_recipe_is_atari_with_plain_kl(make_cfg):
    _, c = validate(make_cfg("recipe=dreamerv2_atari_nokl"))
    assert c["kl"]["name"] == "plain" and c["env"]["name"] == "atari" and c["latent"]["name"] == "categorical"


def test_command_line_beats_recipe(make_cfg):
    _, c = validate(make_cfg("recipe=dreamerv2_atari", "latent=gaussian", "kl=plain", "actor_grad=dynamics"))
    assert (c["latent"]["name"], c["kl"]["name"], c["actor_grad"]["name"]) == ("gaussian", "plain", "dynamics")
    assert c["kl"]["scale"] == 0.1  # the recipe's value still applies to the swapped component


def test_unknown_component_lists_choices(make_cfg):
    with pytest.raises(ConfigCompositionException, match="gausian"):
        make_cfg("latent=gausian")


def test_misspelt_top_level_key_fails_at_compose(make_cfg):
    with pytest.raises(ConfigCompositionException):
        make_cfg("train.bacth=4")


def test_misspelt_component_key_names_path(make_cfg):
    with pytest.raises(ConfigError, match=r"kl\.alhpa.*valid keys"):
        validate(make_cfg("+kl.alhpa=0.5"))


def test_wrong_type_names_key(make_cfg):
    with pytest.raises((ConfigCompositionException, ValidationError, ConfigKeyError), match="train.batch"):
        make_cfg("train.batch=abc")


def test_component_wrong_type_names_key(make_cfg):
    with pytest.raises(ConfigError, match=r"latent\.classes"):
        validate(make_cfg("latent.classes=many"))


def test_prefill_shorter_than_length_is_rejected(make_cfg):
    with pytest.raises(ConfigError, match="train.prefill"):
        validate(make_cfg("train.prefill=10", "train.length=50"))


def test_slurm_launcher_preset_sizes_jobs_from_the_run():
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["hydra/launcher=slurm", "train.devices=4", "train.num_nodes=2", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (2, 4, 4)
    assert launcher.partition == "gpu" and launcher.timeout_min == 4320


def test_bf16_on_a_cpu_without_bf16_instructions_warns(make_cfg, monkeypatch, caplog):
    """bf16 asked for on such a CPU is kept but warned about; auto stays fp32 on the CPU."""
    import recipes.train as train

    run, _ = validate(make_cfg("recipe=dreamerv2_dmc", "train.accelerator=cpu", "train.precision=bf16-mixed"))
    monkeypatch.setattr(train, "cpu_has_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="recipes.train"):
        assert train.precision(run) == "bf16-mixed"
    assert "without bf16 instructions" in caplog.text and "train.precision=32-true" in caplog.text

    caplog.clear()
    monkeypatch.setattr(train, "cpu_has_bf16", lambda: True)
    assert train.precision(run) == "bf16-mixed" and not caplog.text
    run, _ = validate(make_cfg("recipe=dreamerv2_dmc", "train.accelerator=cpu"))
    assert train.precision(run) == "32-true"


def test_a_directory_that_is_not_a_run_is_named_by_each_command(tmp_path):
    """resume=, evaluate= and the benchmark scripts share one check for a run's saved config."""
    from recipes.evaluate import load_agent
    from recipes.train import resume_config

    with pytest.raises(ConfigError, match=r"^resume: .* is not a run directory \(no config.yaml\)"):
        resume_config(tmp_path, ["train.steps=10"])
    with pytest.raises(ConfigError, match=r"^evaluate: .* is not a run directory"):
        load_agent(tmp_path, "last.ckpt", 10_000, "evaluate")
