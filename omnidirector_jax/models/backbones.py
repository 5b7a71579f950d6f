"""Backbone dispatch by `model.backbone` (`mmdit` | `wan`): one place the train step, bench and AOT build from.

    model = create_model(cfg.model, seed)             # an MMDiT or a WanModel, same call signature
    graphdef, abstract = abstract_model(cfg.model)    # shapes and logical names only
    trainable = trainable_filter(cfg.model)           # nnx filter of the parameters the optimizer updates

Both backbones take `(latents [B, F, H, W, C], frame_t [B, F], text [B, L, Dt], text_mask [B, L])` and return the
velocity `[B, F, H, W, C]` in float32, so the flow loss, conditioning layout and sharding rules are shared.
"""

from __future__ import annotations

import json
import os
from typing import Any

from flax import nnx

from omnidirector_jax.config import ModelConfig


def create_model(cfg: ModelConfig, seed: int = 0) -> nnx.Module:
    """A randomly initialised model of `cfg.backbone` with unsharded parameters."""
    if cfg.backbone == "wan":
        from omnidirector_jax.models import wan

        return wan.create_model(cfg, seed)
    if cfg.backbone == "mmdit":
        from omnidirector_jax.models import mmdit

        return mmdit.create_model(cfg, seed)
    raise ValueError(f"unknown model.backbone '{cfg.backbone}' (known: mmdit, wan)")


def abstract_model(cfg: ModelConfig) -> tuple[Any, Any]:
    """`(graphdef, state)` with `jax.ShapeDtypeStruct` leaves for `cfg.backbone`: no compute."""
    return nnx.split(nnx.eval_shape(lambda: create_model(cfg)))


def trainable_filter(cfg: ModelConfig) -> Any:
    """The `nnx` filter of trained parameters: every `nnx.Param` (`model.trainable: all`), or, for
    `self_attention` (the camera-cloning fine-tuning recipe), the blocks' self-attention (fused q/k/v, QK norms,
    output) and the new segment embedding; everything else stays frozen."""
    if cfg.trainable == "all":
        return nnx.Param
    if cfg.trainable == "self_attention":
        return nnx.All(nnx.Param, nnx.Any(nnx.PathContains("self_attn"), nnx.PathContains("segment_embed")))
    raise ValueError(f"unknown model.trainable '{cfg.trainable}' (known: all, self_attention)")


# ----------------------------------------------------------------------------------- converted checkpoints


def save_converted(model: nnx.Module, cfg: ModelConfig, ckpt_dir: str | os.PathLike) -> None:
    """Writes `CKPT/params` (Orbax StandardCheckpointer, the `nnx.Param` pure dict exactly as the module holds
    it) and `CKPT/model_config.json` (the ModelConfig fields); `ckpt_dir` must not hold a checkpoint yet."""
    import dataclasses

    import orbax.checkpoint as ocp

    ckpt_dir = os.path.abspath(os.fspath(ckpt_dir))
    os.makedirs(ckpt_dir, exist_ok=True)
    params = nnx.state(model, nnx.Param).to_pure_dict()
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(ckpt_dir, "params"), params)
    checkpointer.wait_until_finished()
    with open(os.path.join(ckpt_dir, "model_config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=1)


def load_converted(ckpt_dir: str | os.PathLike, **overrides: Any) -> tuple[ModelConfig, dict]:
    """`(ModelConfig, params)` of a checkpoint written by `omnidirector convert-wan` (or :func:`save_converted`):
    the pure-dict parameters as host/device arrays, ready for `nnx.replace_by_pure_dict`. `overrides` replace
    config fields (dtype, attention, remat... not the shapes)."""
    import dataclasses

    import jax
    import orbax.checkpoint as ocp

    from omnidirector_jax.config import _build

    ckpt_dir = os.path.abspath(os.fspath(ckpt_dir))
    with open(os.path.join(ckpt_dir, "model_config.json")) as f:
        cfg = _build(ModelConfig, json.load(f), "model_config.")
    cfg = dataclasses.replace(cfg, **overrides)
    _, abstract = abstract_model(cfg)
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), abstract.to_pure_dict())
    params = ocp.StandardCheckpointer().restore(os.path.join(ckpt_dir, "params"), target)
    return cfg, params
