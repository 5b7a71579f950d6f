"""Generation from a camera trajectory: grid -> prompt -> guided sampling -> frames, window by window.

    model = load_model("path/to/export")                    # or a training work directory
    result = generate_video(model, traj, image, "a cosy reading room")

The model makes `shape.frames` frames at a time. A longer trajectory is generated shot by shot, each shot in
consecutive windows of that many frames: a shot's first window starts from the reference image (the grid's
shots are independent: each has its own room, scale and origin, so nothing in it says how one shot's cameras
relate to another's), every later one from the last frame the previous window generated. Windows never hold a
cut: a window that did would read its grid frames against grid frame 0 across rooms that do not share a frame,
and chain the next shot from the last one. Each window sees its own slice of the trajectory's camera grid,
rendered once for the whole trajectory (per-shot rooms), so the room does not jump between windows of a shot.
Transition frames (cuts) are white in the grid and are written white in the result.
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


@dataclasses.dataclass
class Job:
    """One video to generate: the trajectory to follow, the reference image (H0, W0, 3) uint8, the text the
    model sees, the seed of its noise and (optional) grid frames (N, H, W, 3) uint8 replacing the rendered grid
    (e.g. all black: the grid blanked)."""

    traj: Trajectory
    image: np.ndarray
    text: str
    seed: int = 0
    grid_frames: np.ndarray | None = None


def generate_video(model: Model, traj: Trajectory, image: np.ndarray, prompt: str, *, seed: int = 0,
                   sampler: SamplerConfig | None = None, grid_frames: np.ndarray | None = None,
                   text: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Frames following `traj` at the model's size (one job of :func:`generate_batch`).

    image: reference (H0, W0, 3) uint8 (resized to the model's frames); prompt: the text the model sees
    (`text` overrides it verbatim). Returns frames / grid (N, H, W, 3) uint8, the prompt used and the windows."""
    job = Job(traj, image, prompt if text is None else text, seed, grid_frames)
    return generate_batch(model, [job], sampler=sampler, progress=progress)[0]


def _windows(n: int, t: int, overlap: bool = False) -> list[tuple[int, int]]:
    """Frame ranges of the windows: consecutive, or (`overlap`) each starting at the previous one's last frame."""
    step = t - 1 if overlap and t > 1 else t
    return [(start, min(start + t, n)) for start in range(0, max(n - (t - step), 1), step)]


def _shot_windows(shots: list[tuple[int, int]], t: int, overlap: bool = False) -> list[tuple[int, int, int]]:
    """Windows (start, stop, shot stop) laid out shot by shot: `_windows` over each shot's frames [a, b);
    transition frames belong to no window."""
    return [(a + u, a + v, b) for a, b in shots for u, v in _windows(b - a, t, overlap)]


def generate_batch(model: Model, jobs: list[Job], *, sampler: SamplerConfig | None = None,
                   batch_size: int | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """Many jobs at once: window `w` of every job that has one goes through one sampler call (batch padded to
    `batch_size`, default: the number of jobs, so every call has one shape and the program compiles once).

    A job's frames depend only on its own inputs and seed (its noise is drawn from its seed and window index),
    not on which other jobs share the batch. Returns one dict per job, as :func:`generate_video`."""
    from omnidirector_jax.camera.render import render_grid
    from omnidirector_jax.diffusion.sampler import Sampler, model_apply, shared_inputs
    from omnidirector_jax.models.tokenizer import load_tokenizer

    if not jobs:
        raise OmniDirectorError("nothing to generate: no job")
    cfg = model.cfg
    s = cfg.shape
    t = s.frames
    # data.reference = overlap: the model was trained with the reference as its window's first frame.
    overlap = cfg.data.reference == "overlap"
    size = batch_size or len(jobs)
    if size < 1:
        raise OmniDirectorError(f"batch size must be positive, got {size}")
    sampler_cfg = sampler or cfg.sampler
    prepared = []
    for i, job in enumerate(jobs):
        image = np.asarray(job.image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise OmniDirectorError(f"job {i}: the reference image must be H x W x 3 uint8, got {image.shape} "
                                    f"{image.dtype}")
        small = job.traj.resized(s.height, s.width)
        n = small.num_frames
        grid = render_grid(small, grid=cfg.room) if job.grid_frames is None else np.asarray(job.grid_frames)
        if grid.shape != (n, s.height, s.width, 3):
            raise OmniDirectorError(f"job {i}: grid frames {grid.shape}, expected {(n, s.height, s.width, 3)}")
        shots = small.shots()
        frame_shot = np.full(n, -1, np.int64)
        for shot, (a, b) in enumerate(shots):
            frame_shot[a:b] = shot
        prepared.append({"n": n, "grid": grid, "frame_shot": frame_shot, "windows": _shot_windows(shots, t, overlap),
                         "first": _resize(image, s.height, s.width),
                         "out": np.zeros((n, s.height, s.width, 3), np.uint8)})
    tokenizer = load_tokenizer(cfg.data.tokenizer or None)
    ids, mask = tokenizer([job.text for job in jobs], cfg.model.text_len)
    states = np.asarray(jax.jit(model.conditioner.text)(model.frozen, jnp.asarray(ids), jnp.asarray(mask, bool)))
    mask = np.asarray(mask, bool)
    shared = shared_inputs(model.conditioner, model.frozen, sampler_cfg.negative_prompt, text_len=cfg.model.text_len,
                           tokenizer=cfg.data.tokenizer or None)
    # overlap: a window's first frame is its reference, known exactly; it is held, not sampled.
    run = Sampler(model_apply(model.graphdef), sampler_cfg, anchor_reference=overlap)
    encode = jax.jit(model.conditioner.encode)
    decode = jax.jit(model.conditioner.decode)
    steps = [(w, chunk) for w in range(max(len(p["windows"]) for p in prepared))
             for members in [[j for j, p in enumerate(prepared) if w < len(p["windows"])]]
             for chunk in [members[k:k + size] for k in range(0, len(members), size)]]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(c) for _, c in steps), desc="generate", unit="window")
    for w, chunk in steps:
        refs, grids, noises = [], [], []
        for j in chunk:
            p = prepared[j]
            a, _, shot_stop = p["windows"][w]
            pick = np.minimum(np.arange(a, a + t), shot_stop - 1)  # a shot's last window repeats its final frame
            new_shot = a == 0 or p["frame_shot"][a - 1] != p["frame_shot"][a]
            refs.append(p["first"] if new_shot else p["out"][a if overlap else a - 1])
            p["keep"] = int(overlap and not new_shot)  # overlap: frame a is already made, it is the reference
            grids.append(p["grid"][pick])
        pad = size - len(chunk)  # fill the batch with copies of its first job (results dropped)
        rows = list(chunk) + [chunk[0]] * pad
        refs += [refs[0]] * pad
        grids += [grids[0]] * pad
        ref_lat = encode(model.frozen, _to_unit(np.stack(refs))[:, None])
        for j in rows:
            key = jax.random.fold_in(jax.random.key(jobs[j].seed), w)
            noises.append(jax.random.normal(key, (s.latent_frames,) + ref_lat.shape[2:], jnp.float32))
        cond = {"ref": ref_lat, "grid": encode(model.frozen, _to_unit(np.stack(grids))) if s.grid else None,
                "text": jnp.asarray(states[rows]), "text_mask": jnp.asarray(mask[rows])}
        video = np.asarray(decode(model.frozen, run(model.params, cond, shared, jnp.stack(noises))))
        for row, j in enumerate(chunk):
            p = prepared[j]
            a, b, _ = p["windows"][w]
            k = p["keep"]
            p["out"][a + k:b] = np.clip((video[row, k: b - a] + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    results = []
    for job, p in zip(jobs, prepared, strict=True):
        p["out"][p["frame_shot"] < 0] = 255  # transition frames, as in the grid
        results.append({"frames": p["out"], "grid": p["grid"], "prompt": job.text,
                        "windows": [(a, b) for a, b, _ in p["windows"]],
                        "sampler": dataclasses.asdict(sampler_cfg), "compilations": run.compilations})
    return results


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
