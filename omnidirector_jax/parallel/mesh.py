"""The device mesh `('data', 'fsdp', 'context', 'tensor')` built from a :class:`MeshConfig`.

`data` splits the batch with replicated weights, `fsdp` splits the batch and the weights (gathered per
layer), `context` splits the sequence of activations, `tensor` splits heads and MLP width.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from omnidirector_jax.config import MESH_AXES, MeshConfig, resolve_mesh


def make_mesh(mesh_cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 4-axis mesh over `devices` (default: all), with the config's -1 filled from the device count."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_mesh(mesh_cfg, len(devices))
    shape = tuple(sizes[a] for a in MESH_AXES)
    axis_types = (AxisType.Auto,) * len(MESH_AXES)  # GSPMD propagation + explicit constraints
    try:
        # Topology-aware ordering (TPU ICI rings, GPU NVLink islands) when jax knows the devices.
        return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
    except (ValueError, NotImplementedError):
        return Mesh(np.asarray(devices, dtype=object).reshape(shape), MESH_AXES, axis_types=axis_types)
