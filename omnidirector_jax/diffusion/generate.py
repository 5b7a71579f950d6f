"""Generation from a camera trajectory: grid -> prompt -> guided sampling -> frames, window by window.

    model = load_model("path/to/export")                    # or a training work directory
    result = generate_video(model, traj, image, "a cosy reading room")

The model makes `shape.frames` frames at a time. A longer trajectory is generated in consecutive windows of that
many frames: the first window starts from the reference image, every later one from the last frame the previous
window generated, except when a cut separates them (a new shot starts again from the reference image, as the
paper's shots are independent). Each window sees its own slice of the trajectory's camera grid, which is
rendered once for the whole trajectory (per-shot rooms), so the rooms do not jump between windows. Transition
frames (cuts) are white in the grid and are written white in the result.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from omnidirector_jax.camera.trajectory import Trajectory
from omnidirector_jax.config import Config, SamplerConfig
from omnidirector_jax.errors import OmniDirectorError

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "assets" / "tiny_camera_model"


@dataclasses.dataclass
class Model:
    """A model ready to sample: config, graphdef, parameters and the frozen encoders."""

    cfg: Config
    graphdef: Any
    params: Any
    conditioner: Any
    frozen: Any
    source: str


def load_model(checkpoint: str | Path | None = None) -> Model:
    """A model from an export folder (`params.npz` + `config.json`), a training work directory (its latest
    checkpoint), or the model shipped with the package when `checkpoint` is None."""
    from flax import nnx

    from omnidirector_jax.train.conditions import build_conditioner
    from omnidirector_jax.train.export import load_export
    from omnidirector_jax.train.state import create_model

    path = Path(checkpoint) if checkpoint is not None else SHIPPED_MODEL
    if checkpoint is None and not (path / "params.npz").is_file():
        raise OmniDirectorError("no --checkpoint given and no model is shipped with this installation")
    if not path.exists():
        raise OmniDirectorError(f"checkpoint {path} does not exist")
    if (path / "checkpoints").is_dir():  # a training work directory: export its latest step in memory
        from omnidirector_jax.train.export import restore_params

        cfg, params, _ = restore_params(path)
    else:
        cfg, params = load_export(path)
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: create_model(cfg.model, cfg.train.seed)))
    conditioner, frozen = build_conditioner(cfg, cfg.train.seed)
    return Model(cfg, graphdef, jax.tree.map(jnp.asarray, params), conditioner, frozen, str(path))


def _to_unit(frames: np.ndarray) -> jax.Array:
    return jnp.asarray(frames, jnp.float32) / 127.5 - 1.0


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def generate_video(model: Model, traj: Trajectory, image: np.ndarray, prompt: str, *, seed: int = 0,
                   sampler: SamplerConfig | None = None, grid_frames: np.ndarray | None = None,
                   text: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Frames following `traj` at the model's size.

    image: reference (H0, W0, 3) uint8 (resized to the model's frames); prompt: the text the model sees
    (`text` overrides it verbatim). Returns frames / grid (N, H, W, 3) uint8, the prompt used and the windows."""
    from omnidirector_jax.camera.render import render_grid
    from omnidirector_jax.diffusion.sampler import Sampler, model_apply, shared_inputs
    from omnidirector_jax.models.tokenizer import load_tokenizer

    cfg = model.cfg
    s = cfg.shape
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise OmniDirectorError(f"the reference image must be H x W x 3 uint8, got {image.shape} {image.dtype}")
    sampler_cfg = sampler or cfg.sampler
    small = traj.resized(s.height, s.width)
    grid = render_grid(small) if grid_frames is None else np.asarray(grid_frames)
    n, t = small.num_frames, s.frames
    windows = [(start, min(start + t, n)) for start in range(0, n, t)]
    frame_shot = np.full(n, -1, np.int64)
    for shot, (a, b) in enumerate(small.shots()):
        frame_shot[a:b] = shot
    text_used = prompt if text is None else text
    ids, mask = load_tokenizer(cfg.data.tokenizer or None)([text_used], cfg.model.text_len)
    states = jax.jit(model.conditioner.text)(model.frozen, jnp.asarray(ids), jnp.asarray(mask, bool))
    shared = shared_inputs(model.conditioner, model.frozen, sampler_cfg.negative_prompt, text_len=cfg.model.text_len,
                           tokenizer=cfg.data.tokenizer or None)
    run = Sampler(model_apply(model.graphdef), sampler_cfg)
    encode = jax.jit(model.conditioner.encode)
    decode = jax.jit(model.conditioner.decode)
    first = _resize(image, s.height, s.width)
    out = np.zeros((n, s.height, s.width, 3), np.uint8)
    key = jax.random.key(seed)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(windows), desc="generate", unit="window")
    for w, (a, b) in enumerate(windows):
        pick = np.minimum(np.arange(a, a + t), n - 1)  # the last window repeats its final frame to fill up
        new_shot = w == 0 or frame_shot[a] != frame_shot[a - 1] or frame_shot[a - 1] < 0
        ref = first if new_shot else out[a - 1]
        cond = {"ref": encode(model.frozen, _to_unit(ref)[None, None]),
                "grid": encode(model.frozen, _to_unit(grid[pick])[None]) if s.grid else None,
                "text": states, "text_mask": jnp.asarray(mask, bool)}
        noise = jax.random.normal(jax.random.fold_in(key, w), cond["ref"].shape[:1] + (
            s.latent_frames,) + cond["ref"].shape[2:], jnp.float32)
        video = np.asarray(decode(model.frozen, run(model.params, cond, shared, noise)))[0]
        out[a:b] = np.clip((video[: b - a] + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    out[frame_shot < 0] = 255  # transition frames, as in the grid
    return {"frames": out, "grid": grid, "prompt": text_used, "windows": windows,
            "sampler": dataclasses.asdict(sampler_cfg), "compilations": run.compilations}


def side_by_side(*videos: np.ndarray, height: int = 180) -> np.ndarray:
    """Videos of equal length resized to one height and put next to each other (a 4-px black gap)."""
    import cv2

    rows = []
    for frames in zip(*videos, strict=True):
        tiles = [cv2.resize(f, (max(2, round(f.shape[1] * height / f.shape[0])), height),
                            interpolation=cv2.INTER_AREA) for f in frames]
        gap = np.zeros((height, 4, 3), np.uint8)
        rows.append(np.concatenate([x for tile in tiles for x in (tile, gap)][:-1], axis=1))
    return np.stack(rows)


def write_outputs(out: str | Path, result: dict, traj: Trajectory, *, reference: np.ndarray | None,
                  record: dict) -> dict[str, str]:
    """OUT.mp4 (the result), OUT.preview.mp4 (reference | grid | result), OUT.json (everything used)."""
    from omnidirector_jax.camera.trajectory import save_trajectory
    from omnidirector_jax.media import write_video

    out = Path(out)
    written = {"video": str(write_video(out, result["frames"], fps=traj.fps))}
    panels = [result["grid"], result["frames"]]
    if reference is not None:
        panels.insert(0, reference)
    preview = out.with_suffix(".preview.mp4")
    written["preview"] = str(write_video(preview, side_by_side(*panels), fps=traj.fps))
    traj_path = out.with_suffix(".trajectory.json")
    save_trajectory(traj, traj_path)
    meta = {**record, "trajectory": str(traj_path), "cuts": list(traj.cuts), "prompt": result["prompt"],
            "sampler": result["sampler"], "windows": result["windows"], **written}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    written["json"] = str(out.with_suffix(".json"))
    return written
