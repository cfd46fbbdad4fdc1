"""The runners of outside code in verify/ (SheepRL, the official DreamerV3): what they hand the other side."""

from __future__ import annotations

import pytest
from conftest import verify_module


def test_sheeprl_compare_maps_our_size_and_its_precision_onto_sheeprl_overrides(tmp_path):
    """The SheepRL side gets the same sizes and schedule, and its own precision when one is given."""
    sheeprl_compare = verify_module("sheeprl_compare")
    size = {"deter": 200, "hidden": 150, "stoch": 32, "classes": 16, "cnn_depth": 48, "mlp_layers": 4, "mlp_units": 400}
    for expected in (
        "algo.world_model.recurrent_model.recurrent_state_size=200",
        "algo.world_model.transition_model.hidden_size=150",
        "algo.world_model.discrete_size=16",
        "algo.world_model.encoder.cnn_channels_multiplier=48",
        "algo.mlp_layers=4",
        "algo.dense_units=400",
    ):
        assert expected in sheeprl_compare.v2_size_overrides(size)
    args = type("Args", (), {"warmup": 2, "updates": 5, "threads": 2, "sheeprl_precision": "bf16-mixed"})()
    overrides = sheeprl_compare.sheeprl_overrides("dreamer_v2", "small", "vision", args, tmp_path)
    for expected in (
        "exp=dreamer_v2",
        "algo.world_model.recurrent_model.recurrent_state_size=200",  # conf/size/small.yaml
        "algo.world_model.discrete_size=16",
        "env.wrapper.from_pixels=True",
        "algo.cnn_keys.encoder=[rgb]",
        "algo.per_rank_sequence_length=50",
        "fabric.precision=bf16-mixed",
        "num_threads=2",
        "algo.total_steps=56",  # 50 random steps, then 2 + 5 updates, one per step from step 50
    ):
        assert expected in overrides


def test_sheeprl_compare_runs_sheeprls_v3_preset_from_the_state_vectors(tmp_path):
    """DreamerV3: SheepRL's own size preset, the vectors alone, the V3 batch; its sizes are ours or the run stops."""
    sheeprl_compare = verify_module("sheeprl_compare")
    args = type("Args", (), {"warmup": 1, "updates": 3, "threads": 1, "sheeprl_precision": "32-true"})()
    overrides = sheeprl_compare.sheeprl_overrides("dreamer_v3", "XS", "proprio", args, tmp_path)
    for expected in (
        "exp=dreamer_v3",
        "algo=dreamer_v3_XS",
        "env.wrapper.from_pixels=False",
        "env.wrapper.from_vectors=True",
        "algo.cnn_keys.encoder=[]",
        "algo.cnn_keys.decoder=[]",
        "algo.mlp_keys.encoder=[state]",
        "algo.mlp_keys.decoder=[state]",
        "algo.per_rank_sequence_length=64",
        "algo.total_steps=67",  # 64 random steps, then 1 + 3 updates
    ):
        assert expected in overrides
    assert not any(o.startswith("algo.dense_units") for o in overrides)  # the preset's sizes, not set here
    # SheepRL's dreamer_v3_S preset: dense 512 x 2, CNN multiplier 32, recurrent 512, hidden 512, 32 x 32
    small = {"deter": 512, "hidden": 512, "mlp_units": 512, "mlp_layers": 2, "cnn_depth": 32}
    small.update(stoch=32, classes=32)
    assert sheeprl_compare.sizes("dreamer_v3", "S") == small
    assert sheeprl_compare.sizes("dreamer_v3", "XS")["cnn_depth"] == 24
    theirs = {"deter": [512], "hidden": [512, 512, 256], "mlp_layers": [2, 2]}
    assert sheeprl_compare.mismatched_sizes(small, theirs) == {"hidden": [512, 512, 256]}
    # dreamerkit's side: the same sizes on its V3 recipe, compiled only when asked
    recipe, preset, ours = sheeprl_compare.dreamerkit_run("dreamer_v3", "XS", "proprio")
    assert recipe == "dreamerv3_dmc_proprio" and "size.deter=256" in ours and "train.compile=true" not in ours
    assert "train.compile=true" in sheeprl_compare.dreamerkit_run("dreamer_v3", "XS", "proprio", compile=True)[2]


def test_official_v3_train_drops_only_the_delete_of_discarded_tracers():
    official_v3_train = verify_module("official_v3_train")
    source = "  jax.tree_util.tree_map(\n      lambda x: hasattr(x, 'delete') and x.delete(), discarded)\n"
    assert official_v3_train.patched_source(source) == "  jax.tree_util.tree_map(\n      lambda x: None, discarded)\n"
    with pytest.raises(RuntimeError, match="not danijar/dreamerv3 ec526b9"):
        official_v3_train.patched_source("def _prerun(fun, *args): pass\n")
