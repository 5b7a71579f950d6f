"""Inference exports: a trained run's parameters as one small `.npz` beside its config, loadable without Orbax.

    export_run(workdir, out_dir)              # params.npz (EMA when kept), config.json, training.json
    cfg, params = load_export(out_dir)        # Config and the parameters as the model's pure dict

Parameters are stored as float16 by default (a tiny model is a few MB, small enough to ship in the package);
they are cast back to the model's parameter dtype on load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from omnidirector_jax.config import Config, config_from_dict
from omnidirector_jax.errors import OmniDirectorError


def flatten_params(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        out.update(flatten_params(value, name) if isinstance(value, dict) else {name: np.asarray(value)})
    return out


def unflatten_params(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        parts = name.split("/")
        for part in parts[:-1]:
            node = node.setdefault(int(part) if part.isdigit() else part, {})
        node[int(parts[-1]) if parts[-1].isdigit() else parts[-1]] = value
    return tree


def restore_params(workdir: str | Path, step: int | None = None) -> tuple[Config, dict, int]:
    """(Config, parameters (EMA when kept) on the host, step) of a training work directory's checkpoint."""
    from omnidirector_jax.parallel.mesh import make_mesh
    from omnidirector_jax.train.checkpoint import Checkpointer
    from omnidirector_jax.train.state import make_layout

    workdir = Path(workdir).resolve()
    ckpt = Checkpointer(workdir / "checkpoints", Config().checkpoint, read_only=True)
    step = ckpt.latest_step() if step is None else step
    if step is None:
        raise OmniDirectorError(f"no checkpoint in {workdir / 'checkpoints'}")
    cfg = config_from_dict(ckpt.read_config(step))
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.context, cfg.mesh.tensor = 1, 1, 1, 1
    layout = make_layout(cfg, make_mesh(cfg.mesh, jax.devices()[:1]))
    state = ckpt.restore(step, layout.abstract)
    return cfg, jax.device_get(state.get("ema", state["params"])), step


def export_run(workdir: str | Path, out_dir: str | Path, *, step: int | None = None,
               dtype: str = "float16") -> Path:
    """Writes the parameters (EMA when the run kept one) of `workdir`'s checkpoint `step` (default: latest)."""
    workdir, out_dir = Path(workdir).resolve(), Path(out_dir)
    cfg, params, step = restore_params(workdir, step)
    history = []
    metrics = workdir / "metrics.jsonl"
    if metrics.exists():
        rows = {r["step"]: r for r in map(json.loads, metrics.read_text(encoding="utf-8").splitlines()) if r}
        history = [{"step": s, "loss": rows[s]["loss"]} for s in sorted(rows)]
    training = {"step": step, "source": str(workdir), "loss_history": history}
    frames = dataset_clip_frames(cfg.data.dir)
    if frames is not None:  # the training clips' length sets their camera speed
        training["clip_frames"] = frames
    return write_export(cfg, params, out_dir, dtype=dtype, training=training)


def dataset_clip_frames(data_dir: str | Path | None) -> int | None:
    """Frames per clip of a dataset folder (its manifest's `num_frames`), None without a readable manifest."""
    manifest = Path(data_dir) / "manifest.json" if data_dir else None
    if manifest is None or not manifest.is_file():
        return None
    return int(json.loads(manifest.read_text(encoding="utf-8"))["num_frames"])


def write_export(cfg: Config, params: Any, out_dir: str | Path, *, dtype: str = "float16",
                 training: dict | None = None) -> Path:
    """params.npz (cast to `dtype`), config.json and training.json in `out_dir`."""
    out_dir = Path(out_dir)
    flat = {k: np.asarray(v).astype(dtype) for k, v in flatten_params(jax.device_get(params)).items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / "params.npz", **flat)
    (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2), encoding="utf-8")
    (out_dir / "training.json").write_text(json.dumps({"dtype": dtype, **(training or {})}, indent=1),
                                           encoding="utf-8")
    return out_dir


def load_export(path: str | Path) -> tuple[Config, dict[str, Any]]:
    """(Config, params pure dict in the model's parameter dtype) of an export folder."""
    path = Path(path)
    if not (path / "params.npz").is_file() or not (path / "config.json").is_file():
        raise OmniDirectorError(f"{path}: not a model export (needs params.npz and config.json)")
    cfg = config_from_dict(json.loads((path / "config.json").read_text(encoding="utf-8")))
    with np.load(path / "params.npz") as data:
        flat = {k: data[k].astype(cfg.model.param_dtype) for k in data.files}
    return cfg, unflatten_params(flat)
