"""The train step: one jitted program from a batch of clips to updated parameters.

Per step, with keys from `fold_in(state.rng, state.step)`:

1. render every sample's camera grid on device (jittable room, pose jitter, random colours);
2. decide per sample: self-reconstruction (the target video is replaced by its own grid, which also stays the
   condition), grid dropout (the condition becomes an all-black grid) and text dropout (the empty prompt);
3. encode reference image, grid and target to latents (VAE or pixel encoder), the text with the frozen encoder;
4. rectified-flow loss on the target frames of `[ref | grid | noisy video]` (design §5, §6);
5. gradients, global-norm clipping, AdamW, EMA. A non-finite loss or gradient leaves parameters, optimizer and
   EMA untouched and counts a bad step (the loop stops after `train.max_bad_steps` in a row).

Batch (host arrays from the data pipeline; B global): frames uint8 [B, T, H, W, 3], ref_image uint8 [B, H, W, 3],
w2c [B, T, 3, 4], K [B, T, 3, 3], frame_shot int32 [B, T], text_ids int32 [B, L], text_mask bool [B, L]
(other keys are ignored).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding

from omnidirector_jax.config import Config
from omnidirector_jax.diffusion import flow
from omnidirector_jax.models import grid_reader
from omnidirector_jax.models.mmdit import assemble_inputs
from omnidirector_jax.parallel import rules as rules_lib
from omnidirector_jax.train.conditions import Conditioner, render_grids
from omnidirector_jax.train.state import State, StateLayout, learning_rate_schedule

Batch = dict[str, jax.Array]
STEP_KEYS = ("frames", "ref_image", "w2c", "K", "frame_shot", "text_ids", "text_mask")
OPTIONAL_STEP_KEYS = ("ref_depth",)  # model.reader_depth: the reference's camera-z depth, teaches the depth net


def _to_unit(frames: jax.Array) -> jax.Array:
    return frames.astype(jnp.float32) / 127.5 - 1.0


def _choose(mask: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """Per-sample select: mask [B] -> a where True, else b (b may broadcast over the batch)."""
    return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)


def model_inputs(cfg: Config, conditioner: Conditioner, frozen: dict, batch: Batch, key: jax.Array,
                 *, jitter: bool = True) -> dict[str, jax.Array]:
    """Everything the loss needs, from a raw batch: latents of ref/grid/target, text states, per-sample flags.

    Returns ref [B, 1, h, w, C], grid [B, F, h, w, C] (after dropout), target [B, F, h, w, C], text [B, L, Dt],
    text_mask [B, L], recon / drop_grid / drop_text [B] bool, grid_frames [B, T, H, W, 3] in [0, 1], overflow [B].
    """
    t, s = cfg.train, cfg.shape
    k_grid, k_recon, k_drop_grid, k_drop_text = jax.random.split(key, 4)
    b = batch["frames"].shape[0]
    grid_px, overflow, spacing = render_grids(k_grid, batch["w2c"], batch["K"], batch["frame_shot"],
                                              height=s.height, width=s.width, c=cfg.conditions, jitter=jitter,
                                              grid=cfg.room, with_spacing=True)
    recon = jax.random.uniform(k_recon, (b,)) < t.self_recon_prob
    drop_grid = (jax.random.uniform(k_drop_grid, (b,)) < t.drop_grid_prob) & ~recon
    drop_text = jax.random.uniform(k_drop_text, (b,)) < t.drop_text_prob

    # Grid and target video share one encoder call (stacked along the batch); the one-frame reference goes alone.
    grid_unit = grid_px * 2.0 - 1.0
    lat = conditioner.encode(frozen, jnp.concatenate([grid_unit, _to_unit(batch["frames"])], 0))
    grid_lat, video_lat = lat[:b], lat[b:]
    ref_lat = conditioner.encode(frozen, _to_unit(batch["ref_image"])[:, None])
    target = _choose(recon, grid_lat, video_lat)
    grid_cond = _choose(drop_grid, jnp.broadcast_to(frozen["black_grid"], grid_lat.shape), grid_lat)
    ids = _choose(drop_text, jnp.broadcast_to(frozen["empty_ids"], batch["text_ids"].shape), batch["text_ids"])
    mask = _choose(drop_text, jnp.broadcast_to(frozen["empty_mask"], batch["text_mask"].shape),
                   batch["text_mask"].astype(bool))
    text = conditioner.text(frozen, ids, mask)
    out = {"ref": ref_lat, "grid": grid_cond if s.grid else None, "target": target, "text": text,
           "text_mask": mask, "recon": recon, "drop_grid": drop_grid, "drop_text": drop_text,
           "grid_frames": grid_px, "overflow": overflow}
    if cfg.model.grid_reader:
        out.update(reader_targets(cfg, batch, spacing, drop_grid))
    return out


def reader_targets(cfg: Config, batch: Batch, spacing: jax.Array, drop_grid: jax.Array) -> dict[str, jax.Array]:
    """What the grid reader should read (design of models/grid_reader.py): for every video frame, where its
    corners lie in frame 0 for the plane `model.reader_plane_depth` room spacings ahead of the clean camera 0;
    an unmoved frame where the grid was blanked (a black grid shows no motion). Frames of another shot than
    frame 0, or cut frames, carry no target (weight 0).

    Returns reader_corners [B, T, 4, 2], reader_weight [B, T], reader_cut [B, T] (1 on a drawn cut frame), all
    float32; with `model.reader_depth` also reader_far [B, T, 4, 2] (the plane at infinity, unmoved where the grid
    was blanked), and the true cameras' corners for the depth's photometric loss: depth_near, depth_far
    [B, T, 4, 2] and depth_valid [B, T] (the frame is in frame 0's shot and posed; the grid plays no part);
    given the batch's `ref_depth` [B, H, W] (camera z), depth_label [B, H, W] = log(near plane z / z), the log of
    the depth net's true scale, and depth_label_mask [B, H, W] (1 where the depth is known)."""
    s = cfg.shape

    def corners_at(depth):
        c = jax.vmap(lambda w2c, K, sp: grid_reader.plane_corners(w2c, K, sp, depth, height=s.height,
                                                                  width=s.width))(
            batch["w2c"].astype(jnp.float32), batch["K"].astype(jnp.float32), spacing)
        return jnp.nan_to_num(c)

    corners = corners_at(cfg.model.reader_plane_depth)
    still = jnp.broadcast_to(jnp.asarray(grid_reader.CORNERS, jnp.float32), corners.shape)
    shot = batch["frame_shot"]
    same = (shot == shot[:, :1]) & (shot[:, :1] >= 0) & jnp.isfinite(batch["w2c"]).all(axis=(2, 3))
    weight = jnp.where(drop_grid[:, None], True, same).astype(jnp.float32)
    # Cut frames are drawn white; a blanked grid shows none.
    cut = ((shot < 0) & ~drop_grid[:, None]).astype(jnp.float32)
    out = {"reader_corners": _choose(drop_grid, still, corners), "reader_weight": weight, "reader_cut": cut}
    if cfg.model.reader_depth:
        far = corners_at(jnp.inf)
        out.update(reader_far=_choose(drop_grid, still, far), depth_near=corners, depth_far=far,
                   depth_valid=same.astype(jnp.float32))
        if "ref_depth" in batch:  # the record's depth: the depth net's scale is the near plane's depth over it
            z = batch["ref_depth"].astype(jnp.float32)
            known = jnp.isfinite(z) & (z > 1e-3)
            near_z = cfg.model.reader_plane_depth * spacing.astype(jnp.float32)[:, None, None]
            out.update(depth_label=jnp.where(known, jnp.log(near_z / jnp.where(known, z, 1.0)), 0.0),
                       depth_label_mask=known.astype(jnp.float32))
    return out


def depth_photometric_loss(reference: jax.Array, frames: jax.Array, near: jax.Array, far: jax.Array,
                           depth_scale: jax.Array, valid: jax.Array, s: int) -> jax.Array:
    """Mean |reference warped onto frame i by the true cameras with the predicted depth − frame i| over the
    pixels whose source lies in the reference, and valid frames (a monocular-depth loss with known motion).

    reference [B, h, w, C], frames [B, T, h, w, C] latents (unshuffled by `s` to pixels), near/far [B, T, 4, 2],
    depth_scale [B, H, W], valid [B, T] -> []."""
    ref_px = grid_reader.unshuffle(reference.astype(jnp.float32), s)
    target = grid_reader.unshuffle(frames.astype(jnp.float32), s)
    hn, hf = grid_reader.corners_to_homography(near), grid_reader.corners_to_homography(far)
    warped, inside = jax.vmap(lambda img, a, b, sc: jax.vmap(
        lambda x, y: grid_reader.warp_depth(img, x, y, sc))(a, b))(ref_px, hn, hf, depth_scale)
    mask = inside.astype(jnp.float32) * valid[:, :, None, None]
    err = jnp.abs(warped - target).mean(-1)
    return jnp.sum(err * mask) / jnp.maximum(mask.sum(), 1.0)


def flow_loss(model: nnx.Module, inputs: dict[str, jax.Array], key: jax.Array, cfg: Config
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Rectified-flow loss on the target frames; per-sample losses split into video / self-reconstruction."""
    t_cfg = cfg.train
    k_t, k_noise = jax.random.split(key)
    x0 = inputs["target"].astype(jnp.float32)
    b = x0.shape[0]
    t = flow.sample_timesteps(k_t, b, mean=t_cfg.logit_mean, std=t_cfg.logit_std, shift=t_cfg.timestep_shift)
    noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
    latents, frame_t, _ = assemble_inputs(inputs["ref"], inputs["grid"], flow.interpolate(x0, noise, t), t)
    pred, aux = flow.model_prediction(model, latents, frame_t, inputs["text"], inputs["text_mask"])
    err = jnp.square(pred[:, -x0.shape[1]:] - flow.velocity_target(x0, noise))
    if t_cfg.loss == "x0":  # |x0_hat - x0|² = t² |v_hat - v|² with x0_hat = x_t - t·v_hat
        err = err * jnp.square(t).reshape(b, 1, 1, 1, 1)
    per_sample = err.mean(axis=(1, 2, 3, 4))
    recon = inputs["recon"].astype(jnp.float32)

    def masked_mean(w):
        return jnp.sum(per_sample * w) / jnp.maximum(w.sum(), 1.0)

    metrics = {"loss_video": masked_mean(1.0 - recon), "loss_recon": masked_mean(recon),
               "recon_share": recon.mean(), "t_mean": t.mean()}
    loss = per_sample.mean()
    if "corners" in aux:  # the grid reader's corners, in normalised image coordinates
        w = inputs["reader_weight"]
        corner_err = jnp.square(aux["corners"] - inputs["reader_corners"]).sum(axis=(2, 3))  # [B, T]
        reader_loss = jnp.sum(corner_err * w) / jnp.maximum(w.sum(), 1.0)
        if "far_corners" in aux:
            far_err = jnp.square(aux["far_corners"] - inputs["reader_far"]).sum(axis=(2, 3))
            reader_loss = reader_loss + jnp.sum(far_err * w) / jnp.maximum(w.sum(), 1.0)
        metrics["loss_reader"] = reader_loss
        loss = loss + t_cfg.reader_weight * reader_loss
    if "depth_scale" in aux:  # model.reader_depth: the depth that makes the true cameras' warp match the frames
        valid = inputs["depth_valid"] * (1.0 - inputs["recon"].astype(jnp.float32))[:, None]
        depth_loss = depth_photometric_loss(inputs["ref"][:, 0], x0, inputs["depth_near"], inputs["depth_far"],
                                            aux["depth_scale"], valid, cfg.model.reader_unshuffle)
        metrics["loss_depth"] = depth_loss
        metrics["depth_scale_mean"] = aux["depth_scale"].mean()
        loss = loss + t_cfg.depth_weight * depth_loss
        if "depth_label" in inputs:  # the record's depth (synthetic data): L1 on the log scale where known
            m = inputs["depth_label_mask"]
            label_err = jnp.abs(jnp.log(aux["depth_scale"]) - inputs["depth_label"])
            label_loss = jnp.sum(label_err * m) / jnp.maximum(m.sum(), 1.0)
            metrics["loss_depth_label"] = label_loss
            loss = loss + t_cfg.depth_label_weight * label_loss
    if "cut_logits" in aux:  # model.reader_shot_gate: which frames are cuts (binary cross-entropy)
        logits, cut = aux["cut_logits"], inputs["reader_cut"]
        cut_loss = jnp.mean(jnp.maximum(logits, 0) - logits * cut + jnp.log1p(jnp.exp(-jnp.abs(logits))))
        metrics["loss_cut"] = cut_loss
        loss = loss + t_cfg.reader_weight * cut_loss
    return loss, metrics


def _ema(decay: float, ema: Any, params: Any) -> Any:
    return jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), ema, params)


def make_train_step(cfg: Config, layout: StateLayout, conditioner: Conditioner, batch_like: Batch,
                    frozen_like: Any) -> Callable[[State, Batch, Any], tuple[State, dict[str, jax.Array]]]:
    """`train_step(state, batch, frozen) -> (state, metrics)`: one jit with explicit in/out shardings; the state
    is donated. `batch_like`/`frozen_like` give shapes (arrays or ShapeDtypeStructs) for the shardings."""
    mesh, rules, graphdef, tx = layout.mesh, cfg.mesh.rules, layout.graphdef, layout.tx
    schedule = learning_rate_schedule(cfg)
    t = cfg.train

    def step(state: State, batch: Batch, frozen: Any) -> tuple[State, dict[str, jax.Array]]:
        with rules_lib.activation_sharding(mesh, rules):
            key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
            k_inputs, k_loss = jax.random.split(key)
            inputs = model_inputs(cfg, conditioner, frozen, batch, k_inputs)

            def loss_fn(params):
                return flow_loss(nnx.merge(graphdef, params), inputs, k_loss, cfg)

            (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = {"params": params, "opt_state": opt_state}
        if "ema" in state:
            new["ema"] = _ema(t.ema_decay, state["ema"], params)
        # A non-finite step changes nothing but the counters.
        new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, {k: state[k] for k in new})
        new.update(step=state["step"] + 1, rng=state["rng"],
                   bad_steps=jnp.where(finite, 0, state["bad_steps"] + 1).astype(jnp.int32))
        metrics = {"loss": loss, "grad_norm": grad_norm, "lr": schedule(state["step"]), "finite": finite,
                   "bad_steps": new["bad_steps"], "grid_overflow": inputs["overflow"].sum(), **aux}
        return new, metrics

    batch_sh = batch_shardings(layout, batch_like)
    frozen_sh = jax.tree.map(lambda _: layout.replicated, frozen_like)
    return jax.jit(step, in_shardings=(layout.shardings, batch_sh, frozen_sh),
                   out_shardings=(layout.shardings, layout.replicated), donate_argnums=(0,))


def batch_shardings(layout: StateLayout, batch_like: Batch) -> dict[str, NamedSharding]:
    """Every batch input split on its first (batch) axis over the mesh axes of `activation_batch`."""
    return {k: NamedSharding(layout.mesh, rules_lib.batch_spec(layout.cfg.mesh.rules, layout.mesh, v.shape))
            for k, v in batch_like.items()}


def step_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """The keys of a pipeline batch that the step reads (the rest, e.g. record indices, stay on the host)."""
    missing = [k for k in STEP_KEYS if k not in batch]
    if missing:
        from omnidirector_jax.errors import OmniDirectorError

        raise OmniDirectorError(f"training batch lacks {', '.join(missing)} (has {', '.join(sorted(batch))})")
    return {k: batch[k] for k in STEP_KEYS + OPTIONAL_STEP_KEYS if k in batch}
