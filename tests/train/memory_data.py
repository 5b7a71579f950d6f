"""A small in-memory Grain dataset in the training batch contract (tests of the step and the loop that must not
depend on dataset files): clips of the sample camera moves with frames drawn from a seeded generator."""

from __future__ import annotations

import grain
import numpy as np

from omnidirector_jax.config import Config
from omnidirector_jax.data import sample_trajectories as samples
from omnidirector_jax.models.tokenizer import ByteTokenizer


def examples(cfg: Config, count: int = 16, seed: int = 0) -> list[dict[str, np.ndarray]]:
    s = cfg.shape
    rng = np.random.default_rng(seed)
    out = []
    names = ("dolly", "pan", "truck", "orbit")
    for i in range(count):
        traj = samples.named(names[i % len(names)], s.height, s.width, s.frames)
        ids, mask = ByteTokenizer()([f"clip {i}: a {names[i % len(names)]} shot"], cfg.model.text_len)
        frames = rng.integers(0, 256, (s.frames, s.height, s.width, 3), dtype=np.uint8)
        out.append({"frames": frames, "ref_image": frames[0], "w2c": traj.w2c[: s.frames].astype(np.float32),
                    "K": traj.K[: s.frames].astype(np.float32), "dist": np.zeros((s.frames, 4), np.float32),
                    "frame_shot": np.zeros(s.frames, np.int32), "valid": np.ones(s.frames, bool),
                    "text_ids": ids[0], "text_mask": mask[0], "index": np.int64(i)})
    return out


def iterator(cfg: Config, count: int = 16, seed: int = 0, process_index: int = 0, process_count: int = 1):
    """Shuffled, repeated, sharded by process and batched like the real pipeline; checkpointable."""
    ds = grain.MapDataset.source(examples(cfg, count, seed)).shuffle(seed=seed).repeat(None)
    ds = ds[process_index::process_count].batch(cfg.shape.batch_size // process_count, drop_remainder=True)
    return iter(ds.to_iter_dataset())
