"""Importing PyTorch checkpoints into NNX modules (the Wan VAE here; the text encoder reuses the helpers).

Checkpoints are read from a local folder: `*.safetensors` (sharded ones too, through their
`*.safetensors.index.json`) are parsed here with NumPy, so loading needs neither torch nor the
`safetensors` package; `*.bin` pickles need torch. Tests may pass an in-memory state dict instead
(torch tensors or arrays).

Every parameter of the NNX module is looked up under the PyTorch key a `key_for` function gives
for its path; the import fails, naming the keys, when the checkpoint misses one, has one the module
does not use, or has one of the wrong shape.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from omnidirector_jax.errors import OmniDirectorError

StateDict = Mapping[str, Any]
# A parameter's NNX path -> (PyTorch key, function turning the PyTorch array into the NNX layout).
KeyFn = Callable[[tuple], tuple[str, Callable[[np.ndarray], np.ndarray]]]


class CheckpointError(OmniDirectorError):
    """A checkpoint that does not fit the model: missing, unexpected or mis-shaped keys, or no files."""


_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads one `.safetensors` file into NumPy arrays (memory-mapped, bfloat16 via ml_dtypes).

    Format: 8-byte little-endian header size, a JSON header {name: {dtype, shape, data_offsets}},
    then the raw little-endian tensor bytes.
    """
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
        out[name] = data[start:end].view(dtype).reshape(info["shape"])
    return out


def read_checkpoint_folder(folder: str | os.PathLike, names: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Reads all weights of a Hugging Face-style model folder.

    Looks for, in order: the given file `names`, a `*.safetensors.index.json` (sharded), any
    `*.safetensors`, then `*.bin` (needs torch). Keys of several shards are merged.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise CheckpointError(f"checkpoint folder {folder!r} does not exist")
    files = sorted(os.listdir(folder))
    chosen = [n for n in names if n in files]
    if not chosen:
        index = [n for n in files if n.endswith(".safetensors.index.json")]
        if index:
            with open(os.path.join(folder, index[0])) as f:
                chosen = sorted(set(json.load(f)["weight_map"].values()))
        else:
            chosen = [n for n in files if n.endswith(".safetensors")] or [n for n in files if n.endswith(".bin")]
    if not chosen:
        raise CheckpointError(f"no *.safetensors or *.bin weights in {folder!r}")
    state: dict[str, np.ndarray] = {}
    for name in chosen:
        path = os.path.join(folder, name)
        if name.endswith(".safetensors"):
            state.update(read_safetensors(path))
        else:
            state.update(_read_torch_pickle(path))
    return state


def _read_torch_pickle(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise CheckpointError(f"{path} is a PyTorch pickle: install torch or convert it to safetensors") from e
    return to_numpy_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def to_numpy_state_dict(state: StateDict) -> dict[str, np.ndarray]:
    """Turns a state dict of torch tensors or arrays into NumPy arrays (bfloat16 kept via ml_dtypes)."""
    out = {}
    for key, value in state.items():
        if hasattr(value, "detach"):  # a torch tensor; NumPy has no bfloat16, so go through float32
            value = value.detach().cpu()
            is_bf16 = str(value.dtype) == "torch.bfloat16"
            value = value.float().numpy().astype(ml_dtypes.bfloat16) if is_bf16 else value.numpy()
        out[key] = np.asarray(value)
    return out


def assign_params(
    model: nnx.Module,
    state: StateDict,
    key_for: KeyFn,
    *,
    ignore: Callable[[str], bool] = lambda key: False,
    aliases: Mapping[str, str] | None = None,
    what: str = "checkpoint",
) -> None:
    """Copies a PyTorch state dict into `model`'s `nnx.Param`s, in place, checking every key.

    Args:
      model: the NNX module, already built with the checkpoint's configuration.
      state: PyTorch key -> array (NumPy or torch).
      key_for: maps a parameter path to its PyTorch key and a layout conversion.
      ignore: keys the model does not use on purpose (e.g. a decoder in a full T5 checkpoint).
      aliases: fallback keys, {key: other key holding the same tensor} (tied embeddings).
      what: a name for the checkpoint in error messages.

    Raises:
      CheckpointError: naming missing keys, unused keys and shape mismatches.
    """
    state = to_numpy_state_dict(state)
    aliases = dict(aliases or {})
    params = nnx.state(model, nnx.Param)
    used: set[str] = set()
    missing: list[str] = []
    bad_shape: list[str] = []
    updates = {}
    for path, var in nnx.to_flat_state(params):
        key, convert = key_for(path)
        source = key if key in state else aliases.get(key)
        if source not in state:
            missing.append(key)
            continue
        used.add(source)
        value = convert(state[source])
        if tuple(value.shape) != tuple(var.shape):
            bad_shape.append(
                f"{source}: checkpoint {tuple(state[source].shape)} -> {tuple(value.shape)}, "
                f"model expects {tuple(var.shape)} at {'/'.join(map(str, path))}"
            )
            continue
        updates[path] = jnp.asarray(value, dtype=var.dtype)
    unexpected = sorted(k for k in state if k not in used and not ignore(k) and k not in aliases.values())
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(sorted(missing))}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if bad_shape:
        problems.append(f"shape mismatches: {'; '.join(bad_shape)}")
    if problems:
        raise CheckpointError(f"{what} does not match the model: " + " | ".join(problems))
    for path, var in nnx.to_flat_state(params):
        var.set_value(updates[path])
    nnx.update(model, params)


# --------------------------------------------------------------------------------------------
# Wan 2.1 VAE (diffusers `AutoencoderKLWan` layout)
# --------------------------------------------------------------------------------------------


def _conv_from_torch(w: np.ndarray) -> np.ndarray:
    """PyTorch conv weight (out, in, *kernel) -> channels-last kernel (*kernel, in, out)."""
    if w.ndim < 3:
        raise CheckpointError(f"expected a convolution weight, got shape {w.shape}")
    return np.transpose(w, (*range(2, w.ndim), 1, 0))


def _identity(w: np.ndarray) -> np.ndarray:
    return w


def _flatten(w: np.ndarray) -> np.ndarray:
    # WanRMS_norm keeps gamma as (C, 1, 1[, 1]) to broadcast over NCTHW; ours is (C,).
    return w.reshape(-1) if w.ndim > 1 and all(d == 1 for d in w.shape[1:]) else w


def wan_vae_key(path: tuple) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """The diffusers key of a `WanVAE` parameter path (module names mirror diffusers')."""
    names = [str(p) for p in path]
    leaf = names[-1]
    if names[-2] == "resample":  # diffusers keeps the spatial conv at index 1 of an nn.Sequential
        names[-2] = "resample.1"
    if leaf == "kernel":
        return ".".join(names[:-1] + ["weight"]), _conv_from_torch
    if leaf == "gamma":
        return ".".join(names), _flatten
    return ".".join(names), _identity


def load_wan_vae(
    source: str | os.PathLike | StateDict,
    config: Any | None = None,
    *,
    dtype: Any = None,
    param_dtype: Any = None,
) -> Any:
    """Builds a `WanVAE` and fills it from diffusers `AutoencoderKLWan` weights.

    Args:
      source: a local folder (the `vae/` folder of a Wan diffusers checkpoint: `config.json` and
        `diffusion_pytorch_model.safetensors`), or an in-memory state dict.
      config: a `VAEConfig`; read from the folder's `config.json` when omitted.
      dtype, param_dtype: override the compute and parameter dtypes of the config.

    Raises:
      CheckpointError: missing files, or weights that do not fit the configuration (names the keys).
    """
    from omnidirector_jax.models.vae import VAEConfig, WanVAE  # late: vae imports nothing from here

    if isinstance(source, (str, os.PathLike)):
        folder = os.fspath(source)
        if config is None:
            cfg_path = os.path.join(folder, "config.json")
            if not os.path.exists(cfg_path):
                raise CheckpointError(f"{folder!r} has no config.json; pass a VAEConfig")
            with open(cfg_path) as f:
                config = VAEConfig.from_diffusers_config(json.load(f))
        state = read_checkpoint_folder(folder, names=["diffusion_pytorch_model.safetensors"])
        what = f"VAE checkpoint {folder!r}"
    else:
        if config is None:
            raise CheckpointError("an in-memory VAE state dict needs an explicit VAEConfig")
        state, what = source, "VAE state dict"
    overrides = {k: v for k, v in (("dtype", dtype), ("param_dtype", param_dtype)) if v is not None}
    if overrides:
        config = config.replace(**{k: jnp.dtype(v).name for k, v in overrides.items()})
    # Built abstractly (shapes only): every parameter is then replaced by the checkpoint's.
    model = nnx.eval_shape(lambda: WanVAE(config, rngs=nnx.Rngs(0)))
    assign_params(model, state, wan_vae_key, what=what)
    return model
