"""Sharding on 8 virtual CPU devices: every mesh preset gives the unsharded forward and gradient step, and
parameter shardings match the committed golden tables.

Regenerate the golden tables (after an intended change of names or rules) with:

    OMNIDIRECTOR_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/models/test_sharding.py -k golden
"""

import json
import os
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from omnidirector_jax.config import load_config
from omnidirector_jax.models import mmdit
from omnidirector_jax.parallel import rules as rules_lib
from omnidirector_jax.parallel.mesh import make_mesh
from omnidirector_jax.train.partition import ShardedModel

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
PRESETS = ["data", "fsdp", "fsdp_tensor", "context"]
# Small enough to compile fast, both block kinds, 80 visual + 16 text tokens (divisible by context=4).
SMALL = ["model.hidden_size=64", "model.depth=1", "model.single_depth=1"]


def _rel(a, b) -> float:
    a = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(a)])
    b = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(b)])
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _run(cfg, devices):
    """(forward output, loss, gradient) on a mesh over `devices`; the gradient is read back from one
    jitted SGD(lr=1) train step (state donated), so it goes through the real train-step shardings."""
    mesh = make_mesh(cfg.mesh, devices)
    sm = ShardedModel.from_abstract(cfg, mesh)
    host_state = mmdit.random_state(mmdit.abstract_model(cfg.model)[1], 0.05, seed=1)
    batch = mmdit.dummy_batch(cfg.model, cfg.shape, 2)
    out = sm.forward(batch)(sm.place(host_state), batch)
    tx = optax.sgd(1.0)
    state = sm.place(host_state)
    new_state, _, loss = sm.train_step(tx, batch)(state, sm.init_optimizer(tx, state), batch)
    # Placed parameters really are sharded as the rules say.
    for leaf, sharding in zip(jax.tree.leaves(new_state), jax.tree.leaves(sm.state_shardings), strict=True):
        assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
    grads = jax.tree.map(lambda old, new: old - np.asarray(new), host_state, new_state)
    return np.asarray(out), float(loss), grads


@pytest.fixture(scope="module")
def unsharded():
    cfg = load_config(ROOT / "configs/tiny_cpu.yaml", SMALL + ["mesh.data=1"], num_devices=1)
    return _run(cfg, jax.devices()[:1])


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_matches_unsharded(preset, unsharded):
    assert jax.device_count() == 8
    cfg = load_config(ROOT / "configs/tiny_cpu.yaml", SMALL + [f"mesh={preset}"], num_devices=8)
    out, loss, grads = _run(cfg, jax.devices())
    ref_out, ref_loss, ref_grads = unsharded
    assert _rel(out, ref_out) < 1e-5
    assert abs(loss - ref_loss) <= 1e-5 * abs(ref_loss)
    assert _rel(grads, ref_grads) < 1e-5


def _table(preset: str) -> dict:
    cfg = load_config(ROOT / "configs/tiny_cpu.yaml", [f"mesh={preset}"], num_devices=8)
    _, abstract = mmdit.abstract_model(cfg.model)
    mesh = make_mesh(cfg.mesh)
    return {"mesh": dict(mesh.shape), "params": rules_lib.spec_table(abstract, mesh, cfg.mesh.rules)}


@pytest.mark.parametrize("preset", PRESETS)
def test_param_shardings_match_golden(preset):
    path = GOLDEN / f"sharding_tiny_cpu_{preset}.json"
    table = _table(preset)
    if os.environ.get("OMNIDIRECTOR_REGEN_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(table["params"].items()))
        path.write_text(f'{{"mesh": {json.dumps(table["mesh"])},\n "params": {{\n{rows}\n }}}}\n')
    golden = json.loads(path.read_text())
    assert table == golden, f"shardings changed for {preset}; regenerate as the module docstring says if intended"


def test_every_parameter_has_logical_names():
    cfg = load_config(ROOT / "configs/tiny_cpu.yaml", num_devices=8)
    _, abstract = mmdit.abstract_model(cfg.model)
    for path, var in nnx.to_flat_state(abstract):
        names = var.get_metadata().get("out_sharding")
        assert names is not None and len(names) == len(var.shape), path
        if "blocks" in path[0]:
            assert names[0] == "layers", path  # stacked by nnx.vmap with the layers axis


def test_logical_to_spec_rules():
    sizes = {"data": 2, "fsdp": 2, "context": 1, "tensor": 2}
    rules = {"embed": "fsdp", "mlp": "tensor", "activation_batch": ["data", "fsdp"], "layers": None,
             "activation_embed": "fsdp"}
    P = jax.sharding.PartitionSpec
    assert rules_lib.logical_to_spec(("layers", "embed", "mlp"), rules, sizes, (3, 8, 8)) == P(None, "fsdp", "tensor")
    assert rules_lib.logical_to_spec(("activation_batch", None), rules, sizes, (8, 3)) == P(("data", "fsdp"))
    # A mesh axis is used once per array; non-dividing axes are dropped (replicated).
    assert rules_lib.logical_to_spec(("activation_batch", "activation_embed"), rules, sizes, (8, 8)) == P(
        ("data", "fsdp"))
    assert rules_lib.logical_to_spec(("embed", "mlp"), rules, sizes, (3, 5)) == P()
    with pytest.raises(KeyError, match="nope"):
        rules_lib.logical_to_spec(("nope",), rules, sizes)
