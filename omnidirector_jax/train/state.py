"""The training state: one pytree of arrays, sharded by the logical names on the parameters.

    state = {"params": ..., "opt_state": ..., ["ema": ...,] "step": int32[], "rng": uint32[2], "bad_steps": int32[]}

`params` (and `ema`) are the model's parameters as a plain nested dict (`nnx.State.to_pure_dict()`); the
graphdef is static and lives beside the state, never inside it. `rng` is the run's base key (raw key data, so
Orbax stores it like any array); step `i` draws from `fold_in(rng, i)`, so a resumed run draws what the
uninterrupted one drew. `bad_steps` counts consecutive non-finite steps (their updates were skipped).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from omnidirector_jax.config import Config, ModelConfig
from omnidirector_jax.models import backbones
from omnidirector_jax.parallel import rules as rules_lib

State = dict[str, Any]


def create_model(cfg: ModelConfig, seed: int = 0) -> nnx.Module:
    """The configured backbone (`model.backbone`) with unsharded parameters."""
    return backbones.create_model(cfg, seed)


def trainable_labels(model: nnx.Module, cfg: ModelConfig) -> Any:
    """Pure-dict tree like the parameters: 'train' where `model.trainable` trains them, else 'freeze'."""
    trained = {path for path, _ in nnx.to_flat_state(nnx.state(model, backbones.trainable_filter(cfg)))}
    flat = nnx.to_flat_state(nnx.state(model))
    labels = nnx.State.from_flat_path([(path, "train" if path in trained else "freeze") for path, _ in flat])
    return labels.to_pure_dict()


def learning_rate_schedule(cfg: Config) -> optax.Schedule:
    """Linear warm-up to `train.learning_rate`, then cosine decay to `min_lr_ratio` of it (or constant)."""
    t = cfg.train
    if t.schedule == "constant":
        return optax.join_schedules([optax.linear_schedule(0.0, t.learning_rate, max(t.warmup_steps, 1)),
                                     optax.constant_schedule(t.learning_rate)], [max(t.warmup_steps, 1)])
    return optax.warmup_cosine_decay_schedule(0.0, t.learning_rate, max(t.warmup_steps, 1),
                                              max(t.steps, t.warmup_steps + 1), t.learning_rate * t.min_lr_ratio)


def make_optimizer(cfg: Config, labels: Any | None = None) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW (weight decay on matrices only, not on norms and biases). `labels`
    ('train' / 'freeze' per parameter) keeps frozen parameters fixed (no moments are kept for them)."""
    t = cfg.train
    adamw = optax.adamw(learning_rate_schedule(cfg), b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay,
                        mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params))
    tx = optax.chain(optax.clip_by_global_norm(t.grad_clip), adamw) if t.grad_clip > 0 else adamw
    if labels is not None and any(v == "freeze" for v in jax.tree.leaves(labels)):
        tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)
    return tx


@dataclasses.dataclass(frozen=True)
class StateLayout:
    """The static half of the state: graphdef, optimizer, and the shardings of every leaf on `mesh`."""

    cfg: Config
    mesh: Mesh
    graphdef: Any
    tx: optax.GradientTransformation
    shardings: Any  # like the state, NamedSharding leaves
    abstract: Any  # like the state, ShapeDtypeStruct leaves carrying their shardings (restore target)

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())


def make_layout(cfg: Config, mesh: Mesh) -> StateLayout:
    """Shapes and shardings of the state for `cfg` on `mesh`, computed without allocating anything."""
    model_abs = nnx.eval_shape(lambda: create_model(cfg.model, cfg.train.seed))
    graphdef, abs_params = nnx.split(model_abs)
    param_sh = rules_lib.param_shardings(abs_params, mesh, cfg.mesh.rules).to_pure_dict()
    abs_params = abs_params.to_pure_dict()
    labels = trainable_labels(model_abs, cfg.model)
    tx = make_optimizer(cfg, labels)
    replicated = NamedSharding(mesh, PartitionSpec())
    abs_opt = jax.eval_shape(tx.init, abs_params)
    # Moments sharded like their parameters. Under multi_transform the moments of frozen parameters are
    # MaskedNode placeholders (no state kept), so the sharding tree gets the same placeholders there.
    moment_sh = jax.tree.map(lambda s, label: s if label == "train" else optax.MaskedNode(), param_sh, labels)
    opt_sh = optax.tree_map_params(tx, lambda _, s: s, abs_opt, moment_sh, transform_non_params=lambda _: replicated)
    shardings: State = {"params": param_sh, "opt_state": opt_sh, "step": replicated, "rng": replicated,
                        "bad_steps": replicated}
    abstract: State = {"params": abs_params, "opt_state": abs_opt,
                       "step": jax.ShapeDtypeStruct((), jnp.int32), "rng": jax.ShapeDtypeStruct((2,), jnp.uint32),
                       "bad_steps": jax.ShapeDtypeStruct((), jnp.int32)}
    if cfg.train.ema_decay > 0:
        shardings["ema"], abstract["ema"] = param_sh, abs_params
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return StateLayout(cfg, mesh, graphdef, tx, shardings, abstract)


def init_state(layout: StateLayout, params: Any | None = None) -> State:
    """A fresh state created directly in its shardings (one jit; nothing is materialised unsharded).

    `params`: starting parameters (a pure dict, e.g. converted weights) instead of a random init."""
    cfg = layout.cfg

    def init(params):
        if params is None:
            params = nnx.state(create_model(cfg.model, cfg.train.seed)).to_pure_dict()
        state = {"params": params, "opt_state": layout.tx.init(params), "step": jnp.zeros((), jnp.int32),
                 "rng": jax.random.key_data(jax.random.key(cfg.train.seed)).astype(jnp.uint32),
                 "bad_steps": jnp.zeros((), jnp.int32)}
        if cfg.train.ema_decay > 0:
            state["ema"] = params
        return state

    if params is None:
        return jax.jit(lambda: init(None), out_shardings=layout.shardings)()
    return jax.jit(init, in_shardings=(layout.shardings["params"],), out_shardings=layout.shardings)(params)
