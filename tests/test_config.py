"""Config composition: recipes, command-line precedence, paper hyperparameters, start-up validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from registry import ConfigError, build
from runner.train import validate

RECIPES = ["dreamerv2_atari", "dreamerv2_dmc", "dreamerv1_dmc", "dreamerv2_atari_nokl", "dreamerv2_cartpole"]
V3_RECIPES = ["dreamerv3_dmc_proprio", "dreamerv3_dmc_vision", "dreamerv3_atari100k", "dreamerv3_crafter"]


@pytest.mark.parametrize("recipe", RECIPES + V3_RECIPES)
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
    assert run.model.opt.keras_eps and run.behavior.actor_opt.keras_eps and run.behavior.critic_opt.keras_eps
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


def test_a_swapped_option_keeps_its_own_defaults(make_cfg):
    """An option the recipe has no tuning file for gets its own YAML, not the recipe's other option's."""
    _, c = validate(make_cfg("recipe=dreamerv2_cartpole", "env=atari"))
    assert c["env"]["task"] == "pong"  # not the recipe's CartPole-v1
    _, c = validate(make_cfg("recipe=dreamerv3_dmc_vision", "kl=plain"))
    assert c["kl"] == {"name": "plain", "free": 0.0, "free_avg": True, "scale": 0.1}  # conf/kl/plain.yaml


# recipe, KL swap -> (free, free_avg, scale): the paper's ablation keeps the recipe's KL settings; the
# official DreamerV2 plain KL clips per [b, t] value, DreamerV1's the batch mean.
KL_SWAPS = {
    ("dreamerv2_dmc", "balanced"): (1.0, True, 1.0),
    ("dreamerv2_dmc", "plain"): (1.0, False, 1.0),
    ("dreamerv2_atari", "plain"): (0.0, False, 0.1),
    ("dreamerv2_atari_nokl", "plain"): (0.0, False, 0.1),
    ("dreamerv2_atari_nokl", "balanced"): (0.0, True, 0.1),
    ("dreamerv2_cartpole", "plain"): (0.0, False, 0.1),
    ("dreamerv1_dmc", "plain"): (3.0, True, 1.0),
    ("dreamerv1_dmc", "balanced"): (3.0, True, 1.0),
}


@pytest.mark.parametrize(("recipe", "kl"), list(KL_SWAPS))
def test_a_kl_ablation_swap_keeps_the_recipes_kl_settings(make_cfg, recipe, kl):
    _, c = validate(make_cfg(f"recipe={recipe}", f"kl={kl}"))
    assert (c["kl"]["name"], c["kl"]["free"], c["kl"]["free_avg"], c["kl"]["scale"]) == (kl, *KL_SWAPS[recipe, kl])


class _SumKL:
    """A latent whose KL is post + prior, so the KL values are set by hand."""

    @staticmethod
    def kl(post, prior):
        return post + prior


@pytest.mark.parametrize(("recipe", "expected"), [("dreamerv2_dmc", 1.5), ("dreamerv1_dmc", 3.0)])
def test_the_dmc_plain_kl_clips_as_each_recipes_official_code(make_cfg, recipe, expected):
    """KL values 0.5 and 2.0. DreamerV2 (free 1, per value): mean(max(0.5, 1), max(2, 1)) = 1.5, gradient
    only through the 2.0. DreamerV1 (free 3, batch mean): max(1.25, 3) = 3, no gradient."""
    _, components = validate(make_cfg(f"recipe={recipe}", "kl=plain"))
    kl = build("kl", components["kl"])
    post = torch.tensor([0.3, 1.5], requires_grad=True)
    loss, metrics = kl(_SumKL, post, torch.tensor([0.2, 0.5]))
    assert loss.item() == pytest.approx(expected) and metrics["kl"].item() == pytest.approx(1.25)
    grad = torch.autograd.grad(loss, post)[0].tolist()
    assert grad == ([0.0, 0.5] if recipe == "dreamerv2_dmc" else [0.0, 0.0])


def test_a_misspelt_top_level_key_lists_the_valid_ones():
    import run

    with pytest.raises(SystemExit, match=r"^config error: trian.batch: unknown top-level key 'trian'; .*train"):
        run.check_top_level_keys(["debug=smoke", "trian.batch=4"])
    run.check_top_level_keys(["train.batch=4", "+kl.alpha=0.5", "kl=plain", "hydra.run.dir=x", "-m", "--help"])


def test_a_bad_value_names_its_section_path(make_cfg):
    with pytest.raises(ConfigError, match=r"^model\.opt\.lr: must be > 0, got -1\.0$"):
        validate(make_cfg("model.opt.lr=-1"))
    with pytest.raises(ConfigError, match=r"^behavior\.actor\.units: must be >= 1, got 0$"):
        validate(make_cfg("behavior.actor.units=0"))
    with pytest.raises(ConfigError, match=r"^replay\.capacity: 10 steps over 4 envs cannot hold one window of 8"):
        validate(make_cfg("debug=smoke", "replay.capacity=10", "train.num_envs=4"))
    # ``auto`` stands for an actor head only; elsewhere it is an unknown head
    with pytest.raises(ConfigError, match=r"^model\.reward_head: unknown head 'auto'; valid: bernoulli, "):
        validate(make_cfg("model.reward_head.name=auto"))
    with pytest.raises(ConfigError, match=r"^behavior\.actor_continuous: unknown head 'foo'; valid: "):
        validate(make_cfg("behavior.actor_continuous=foo"))


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
    import runner.train as train

    run, _ = validate(make_cfg("recipe=dreamerv2_dmc", "train.accelerator=cpu", "train.precision=bf16-mixed"))
    monkeypatch.setattr(train, "cpu_has_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="runner.train"):
        assert train.precision(run) == "bf16-mixed"
    assert "without bf16 instructions" in caplog.text and "train.precision=32-true" in caplog.text

    caplog.clear()
    monkeypatch.setattr(train, "cpu_has_bf16", lambda: True)
    assert train.precision(run) == "bf16-mixed" and not caplog.text
    run, _ = validate(make_cfg("recipe=dreamerv2_dmc", "train.accelerator=cpu"))
    assert train.precision(run) == "32-true"


def test_a_directory_that_is_not_a_run_is_named_by_each_command(tmp_path):
    """resume=, evaluate= and the benchmark scripts share one check for a run's saved config."""
    from runner.evaluate import load_agent
    from runner.train import resume_config

    with pytest.raises(ConfigError, match=r"^resume: .* is not a run directory \(no config.yaml\)"):
        resume_config(tmp_path, ["train.steps=10"])
    with pytest.raises(ConfigError, match=r"^evaluate: .* is not a run directory"):
        load_agent(tmp_path, "last.ckpt", 10_000, "evaluate")


@pytest.mark.parametrize("recipe", V3_RECIPES)
def test_dreamerv3_recipes_have_the_v1_hyperparameters(make_cfg, recipe):
    """Official configs.yaml at the arXiv-v1 commit ec526b9 (danijar/dreamerv3)."""
    run, c = validate(make_cfg(f"recipe={recipe}"))
    assert c["kl"] == {"name": "free_bits", "dyn": 0.5, "rep": 0.1, "free": 1.0, "free_avg": False, "scale": 1.0}
    assert c["latent"]["unimix"] == 0.01 and (c["latent"]["variables"], c["latent"]["classes"]) == (32, 32)
    assert c["encoder"]["mlp"]["symlog"] and c["decoder"]["mlp"]["dist"] == "symlog_mse"
    assert c["decoder"]["conv"]["dist"] == "mse" and c["replay"]["name"] == "uniform"
    assert all(part["act"] == "silu" and part["norm"] for part in (*c["encoder"].values(), *c["decoder"].values())
               if isinstance(part, dict))  # fmt: skip
    m, b = run.model, run.behavior
    assert m.reward_head["name"] == b.critic["name"] == "twohot" and m.reward_transform == "identity"
    assert (m.rssm.act, m.rssm.norm, m.rssm.learned_initial) == ("silu", True, True)
    assert all(h["act"] == "silu" and h["norm"] for h in (m.reward_head, m.discount_head, b.actor, b.critic))
    assert (m.opt.lr, m.opt.eps, m.opt.clip, m.opt.wd) == (1e-4, 1e-8, 1000.0, 0.0)
    for opt in (b.actor_opt, b.critic_opt):
        assert (opt.lr, opt.eps, opt.clip, opt.wd) == (3e-5, 1e-5, 100.0, 0.0)
    assert not any(opt.keras_eps for opt in (m.opt, b.actor_opt, b.critic_opt))  # optax's eps placement
    assert (b.horizon, b.lambda_, b.ent_scale) == (15, 0.95, 3e-4) and b.discount == 1 - 1 / 333  # exactly, as v1
    assert (b.slow_critic_every, b.slow_critic_fraction, b.slow_target, b.slow_reg) == (1, 0.02, False, 1.0)
    assert b.return_norm == {"name": "percentile"}
    assert (run.train.batch, run.train.length, c["replay"]["capacity"]) == (16, 64, 1_000_000)
    discrete = recipe in ("dreamerv3_atari100k", "dreamerv3_crafter")
    assert c["actor_grad"]["name"] == ("reinforce" if discrete else "dynamics")
    assert run.train.train_ratio == (1024 if recipe == "dreamerv3_atari100k" else 512)
    size = (run.size.deter, run.size.mlp_units, run.size.mlp_layers, run.size.cnn_depth, run.size.hidden)
    assert size == ((4096, 1024, 5, 96, 1024) if recipe == "dreamerv3_crafter" else (512, 512, 2, 32, 512))
    if discrete:
        assert b.actor == {**b.actor, "name": "onehot", "unimix": 0.01}
    if recipe == "dreamerv3_atari100k":
        env = c["env"]
        assert (env["sticky"], env["noops"], env["grayscale"], env["action_repeat"], env["size"]) == (
            0,
            30,
            False,
            4,
            64,
        )
        assert not env["full_action_space"] and not env["life_done"] and run.train.steps == 100_000


@pytest.mark.parametrize(
    "size, expected",
    [("v3_small", (512, 512, 2, 32)), ("v3_medium", (1024, 640, 3, 48)), ("v3_large", (2048, 768, 4, 64)),
     ("v3_xlarge", (4096, 1024, 5, 96)), ("v3_1m", (512, 64, 3, 4))],
)  # fmt: skip
def test_dreamerv3_size_presets(make_cfg, size, expected):
    run, _ = validate(make_cfg("recipe=dreamerv3_atari100k", f"size={size}"))
    assert (run.size.deter, run.size.mlp_units, run.size.mlp_layers, run.size.cnn_depth) == expected
    assert run.size.stoch == 32 and run.size.classes == (4 if size == "v3_1m" else 32)


def test_help_lists_the_groups_and_composes_the_overrides(capsys):
    import run

    run.print_help(["recipe=dreamerv3_dmc_proprio", "--help", "seed=7"])
    out = capsys.readouterr().out
    assert "  kl: balanced, free_bits, plain" in out and "tuning" not in out
    assert "name: free_bits" in out and "seed: 7" in out


def test_a_run_saved_before_the_runner_package_names_its_logger_there(tmp_path):
    """Runs saved before the run plumbing moved to runner/ name recipes.loggers.*: they still resume."""
    from runner.config import saved_config

    (tmp_path / "config.yaml").write_text("logger: {_target_: recipes.loggers.TensorBoardLogger, name: tb}\n")
    assert saved_config(tmp_path, "resume").logger._target_ == "runner.loggers.TensorBoardLogger"
    (tmp_path / "config.yaml").write_text("logger: null\n")
    assert saved_config(tmp_path, "resume").logger is None
