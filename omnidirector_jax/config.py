"""Typed configuration: dataclasses loaded from YAML, `key=value` overrides, validation in one clear line.

A config file is a YAML mapping of sections (`model`, `shape`, `mesh`, `train`, `data`, `bench`); it may start with
`include: [mesh/fsdp.yaml, ...]` (paths relative to the including file, or to the `configs/` folder), merged
in order before the file's own keys. Every key is checked against the schema below: an unknown key, a value of
the wrong type, a mesh that does not divide the device count or heads that do not divide the tensor axis
raise :class:`omnidirector_jax.errors.ConfigError` with one line naming the key.

    cfg = load_config("configs/tiny_cpu.yaml", ["model.depth=4", "mesh=fsdp"], num_devices=8)

The special override `mesh=NAME` merges the preset `configs/mesh/NAME.yaml`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from omnidirector_jax.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
MESH_AXES = ("data", "fsdp", "context", "tensor")
ATTENTION_IMPLS = ("xla", "cudnn", "splash")
REMAT_POLICIES = ("none", "full", "save_dots", "offload")
DTYPES = ("float32", "bfloat16", "float16")
BACKBONES = ("mmdit", "wan")

# Logical axis -> mesh axes. Parameters: embed (model width), mlp, heads, kv (head dim), modulation (AdaLN
# output), layers (stacked blocks), patch/text_embed (input features). Activations: activation_*.
DEFAULT_RULES: dict[str, str | list[str] | None] = {
    "embed": "fsdp",
    "mlp": "tensor",
    "heads": "tensor",
    "kv": None,
    "modulation": "tensor",
    "layers": None,
    "patch": None,
    "text_embed": None,
    "freq": None,
    "activation_batch": ["data", "fsdp"],
    "activation_length": "context",
    "activation_embed": None,
    "activation_heads": "tensor",
    "activation_kv": None,
    "activation_mlp": "tensor",
}


@dataclass(frozen=True)
class GridConfig:
    """Room constants of the camera grid (defaults from the design, §3; config section `room`). Each ``*_steps``
    multiplies the grid spacing g. Training renders the grid with these and every grid the model is later
    conditioned on (generate, clone, eval, demo) must use the same ones: they travel in the model's config."""

    spacing_steps: float = 10.0  # g = max(spacing_steps · step_med, min_spacing)
    min_spacing: float = 0.5
    view_steps: float = 15.0  # v = max(view_steps · g, min_view)
    min_view: float = 15.0
    extent_min: float = 10.0  # lattice bound: camera bbox ± max(v, extent_min)
    floor_steps: float = 3.0  # floor/ceiling at median(cam_y) ± max(floor_steps · g, floor_min)
    floor_min: float = 2.0
    support_steps: float = 8.0  # planar support radius max(support_steps · g, support_min)
    support_min: float = 8.0
    tunnel_inner_steps: float = 3.5  # r_in = max(3.5 g, 4)
    tunnel_inner_min: float = 4.0
    tunnel_width_steps: float = 1.2  # wall band width max(1.2 g, 1)
    tunnel_width_min: float = 1.0
    camera_subsample: int = 5  # distances to every n-th camera (and the last one)
    dolly_view_factor: float = 1.4  # dolly zoom: v ≥ 1.4 × max camera–subject distance
    cube_edge: float = 0.15  # dolly zoom: cube edge = 0.15 · d_0


@dataclass(frozen=True)
class ModelConfig:
    """MMDiT hyper-parameters (frozen: hashable, it is static model structure).
    `hidden_size = num_heads * head_dim`."""

    latent_channels: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    hidden_size: int = 1536
    num_heads: int = 12
    depth: int = 24  # dual-stream blocks
    single_depth: int = 0  # single-stream blocks after them (Flux/HunyuanVideo style)
    mlp_ratio: float = 4.0
    text_dim: int = 4096  # width of the text-encoder states fed to the model
    text_len: int = 512  # padded text length
    freq_dim: int = 256  # sinusoidal timestep features
    rope_theta: float = 10000.0
    qk_norm: bool = True
    norm_eps: float = 1e-6
    attention: str = "xla"
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    remat: str = "none"
    scan_layers: bool = True  # False unrolls the block loop (same parameter layout)
    backbone: str = "mmdit"  # mmdit | wan (Wan 2.1 DiT, models/wan.py)
    # What the network outputs: the rectified-flow velocity, or the clean latents x0 (turned into the velocity
    # (x_t - x0) / max(t, 0.05) for the loss and the sampler), or x0_residual: x0 as a correction of the linear
    # least-squares estimate of x0 from x_t and the reference frame r (input frame 0), modelling x0 = r + d with
    # d of variance residual_var: r + k(t)·(x_t − (1 − t)·r), k = (1 − t)·v / ((1 − t)²·v + t²) — the
    # reference at pure noise, x_t at t = 0. x0 suits narrow models whose width is below the patch dimension (a
    # velocity carries the input noise, which such a bottleneck cannot pass through); x0_residual also hands a
    # small model the copy of the reference image that camera motion then moves. Its output is scaled by the
    # posterior std of x0 under that linear model (EDM's c_out, diffusion/flow.py), 0 at t = 0.
    prediction: str = "velocity"  # velocity | x0 | x0_residual
    residual_var: float = 0.5  # x0_residual: mean squared latent difference between a frame and its reference
    ffn_dim: int = 0  # wan: MLP width (0: mlp_ratio * hidden_size)
    cross_attn_norm: bool = True  # wan: affine LayerNorm before the cross-attention
    segment_embed: bool = False  # wan: zero-initialised [3, D] embedding of target / reference / grid frames
    segment_ref_frames: int = 1  # leading clean frames taken as the reference (the other clean ones: grid)
    # mmdit: also add each camera-grid frame's patches (zero-initialised projection) to the tokens of the video
    # frame it describes, on top of the frame-concatenated layout (see models/mmdit.py).
    grid_inject: bool = False
    # mmdit, with grid_inject: grid frame 0's patches are also added to the reference tokens. With
    # `data.reference: overlap` the reference image is seen from grid frame 0's camera, so a video token (its
    # own grid frame injected) can find where its grid lines sat in the reference by matching grid patterns
    # in attention, and read the reference content there: camera motion as one attention lookup.
    grid_inject_ref: bool = False
    # mmdit, x0_residual: a small CNN (models/grid_reader.py) reads grid frames 0 and i as a homography (where
    # frame i's corners lie in the reference), and frame i's x0 is predicted as a correction of the reference
    # warped by it (its patches are also added to frame i's tokens). Supervised in the train step by the
    # homography the true cameras induce on a plane `reader_plane_depth` room spacings in front of camera 0
    # (train.reader_weight). `reader_unshuffle`: the pixel encoder's space-to-depth factor (warps happen on
    # pixels), 1 for VAE latents.
    grid_reader: bool = False
    reader_channels: tuple[int, ...] = (32, 64, 96, 128)
    reader_hidden: int = 256
    reader_unshuffle: int = 1
    reader_plane_depth: float = 3.0
    # grid_reader: also say per frame whether it is a cut (a white grid frame, supervised by the clip's cuts);
    # after a cut the reference shows another shot, so the x0 skip of later frames fades to zero latents.
    reader_shot_gate: bool = False
    # grid_reader: also the homography of the plane at infinity (the rotation) and the reference's relative inverse
    # depth from a small CNN (models/grid_reader.DepthNet, `depth_channels` wide), so a translation moves near
    # things more than far ones (parallax) instead of warping one plane; the depth is learnt from the true
    # cameras' warp of the reference onto each frame (train.depth_weight, photometric L1).
    reader_depth: bool = False
    depth_channels: int = 32
    trainable: str = "all"  # all | self_attention (wan: freeze all but self-attention and the new parameters)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_dim(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)


@dataclass
class ShapeConfig:
    """Video geometry in pixels and the VAE compression that maps it to latents."""

    batch_size: int = 1  # global batch
    frames: int = 49
    height: int = 480
    width: int = 832
    vae_temporal: int = 4
    vae_spatial: int = 8
    ref_frames: int = 1  # latent frames of the reference image condition
    grid: bool = True  # camera-grid condition (as many latent frames as the video)

    @property
    def latent_frames(self) -> int:
        return 1 + (self.frames - 1) // self.vae_temporal

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.height // self.vae_spatial, self.width // self.vae_spatial

    @property
    def total_frames(self) -> int:
        """Latent frames of `[reference image | camera grid | noisy video]`."""
        return self.ref_frames + (self.latent_frames if self.grid else 0) + self.latent_frames


@dataclass
class MeshConfig:
    """Device mesh sizes (-1: fill with the remaining devices) and the logical-axis rules table."""

    data: int = -1
    fsdp: int = 1
    context: int = 1
    tensor: int = 1
    rules: dict[str, str | list[str] | None] = field(default_factory=lambda: dict(DEFAULT_RULES))

    def sizes(self) -> dict[str, int]:
        return {a: getattr(self, a) for a in MESH_AXES}


@dataclass
class TrainConfig:
    """The training run: steps, optimizer (AdamW, warm-up + cosine), objective and its conditioning dropout."""

    steps: int = 1000
    log_every: int = 10  # a metrics line every N steps (host reads device values only then)
    learning_rate: float = 1e-4
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine (to min_lr_ratio · lr) | constant (after warm-up)
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    grad_clip: float = 1.0  # global-norm clipping (0: off)
    ema_decay: float = 0.0  # EMA of the parameters (0: no EMA kept)
    seed: int = 0
    max_bad_steps: int = 5  # consecutive non-finite steps (skipped) before the run stops
    # Objective (design §6): logit-normal timesteps with an SD3-style shift.
    logit_mean: float = 0.0
    logit_std: float = 1.0
    timestep_shift: float = 1.0
    # Loss space: velocity (MSE of the velocity) or x0 (MSE of the implied clean latents x0 = x_t - t·v, i.e. the
    # velocity loss weighted by t²: the high-noise steps, where layout and camera motion are decided, count as
    # much as the nearly clean ones).
    loss: str = "velocity"
    self_recon_prob: float = 0.1  # target video replaced by the camera grid (same grid as condition)
    drop_grid_prob: float = 0.1  # grid condition blanked to black (CFG's unconditional branch)
    drop_text_prob: float = 0.1  # text replaced by the empty prompt
    reader_weight: float = 1.0  # model.grid_reader: weight of its corner loss (normalised image coordinates)
    depth_weight: float = 1.0  # model.reader_depth: weight of the photometric loss that teaches the depth
    depth_label_weight: float = 1.0  # ... and of the L1 on log depth where the records hold depth (synthetic)
    preview_every: int = 0  # PNG of grids and a generated preview every N steps (0: off)
    preview_steps: int = 8  # sampling steps of the preview


@dataclass
class ConditionConfig:
    """How the step turns a batch into model inputs: the camera grid rendered on device, and the encoders."""

    encoder: str = "vae"  # vae (Wan 2.1 VAE) | pixel (space-to-depth of pixels; tiny configs)
    vae_dir: str = ""  # folder of diffusers AutoencoderKLWan weights; "" = randomly initialised (benchmarks)
    vae_base_dim: int = 96  # VAE width when randomly initialised
    vae_dtype: str = "float32"  # VAE compute dtype (bfloat16 on accelerators)
    vae_chunked: bool = True  # encode 4 frames at a time (less memory) or all at once (more parallel work)
    # Pixel encoder only: latents = (pixels in [-1, 1] - pixel_shift) * pixel_scale, so the data a tiny model
    # denoises has about zero mean and unit variance (the role of a VAE's scaling factor).
    pixel_shift: float = 0.0
    pixel_scale: float = 1.0
    text_encoder_dir: str = ""  # folder of a T5/UMT5 encoder; "" = the small random byte-level default
    raster_method: str = "scatter"  # scatter (CPU/GPU) | tiled (TPU)
    raster_profile: str = "opencv"  # opencv | smooth
    raster_backend: str = ""  # chunking tuned for cpu | gpu | tpu ("" = where the step runs)
    max_segments: int = 1024  # visible segments drawn per frame
    pixel_budget: int = 0  # scatter: static candidate pixels per frame (0: draw all, a while loop)
    lattice: int = 48  # jittable room: lattice nodes per axis
    room_segments: int = 12288  # jittable room: static segment capacity (a shot's room has up to ~4,000)
    max_shots: int = 3  # shots per clip the room builder handles
    render_batch: int = 1  # samples rasterized together (vmap) inside the map over the batch; CPU wants 1
    jitter_rotation_deg: float = 1.0  # pose jitter (std), 0 turns it off
    jitter_translation: float = 0.05  # camera-centre jitter std in units of the grid spacing
    # Frames between the jitter's noise knots (linear in between): a slow wobble, also in the few frames of a
    # training window (4 knots spread over a 5-frame window shook its grid ~1.5 px per frame at 64x64, about
    # as much as the camera moved).
    jitter_knot_frames: int = 16
    random_colors: bool = True  # random colour per line family (else cyan / magenta / yellow)


@dataclass
class CheckpointConfig:
    """Orbax checkpoints in the work directory."""

    every: int = 500  # save every N steps (and at the end, and on SIGTERM)
    keep: int = 3  # keep the last N
    async_save: bool = True


@dataclass
class InitConfig:
    """Where the parameters start."""

    from_: str = ""  # converted weights (Orbax, e.g. `omnidirector convert-wan`) or a model export to fine-tune


@dataclass
class DataConfig:
    """Training data: a dataset folder written by `omnidirector build-dataset`, read by the Grain pipeline."""

    dir: str = ""  # dataset folder (holds manifest.json and the ArrayRecord shards)
    workers: int = 0  # Grain worker processes decoding records (0: decode in the training process)
    prefetch: int = 2  # batches buffered per worker
    seed: int = 0  # global shuffle seed
    tokenizer: str = ""  # folder of a `transformers` tokenizer; "" = the built-in byte tokenizer
    # The example's reference image: the record's (`first`: its first frame unless the record gives one), or
    # `window`: the frame just before the cropped window (its first frame for a crop at 0), which is what
    # `generate` conditions each window on (the image, then the previous window's last frame).
    # `overlap`: the window's own first frame (generate then chains windows that share one frame), so the
    # reference camera's grid frame is in the input and the rest of the window is that image moved by the grid.
    reference: str = "first"  # first | window | overlap


@dataclass
class BenchConfig:
    """`omnidirector bench model`: timed steps after one warm-up."""

    steps: int = 3
    warmup: int = 1


@dataclass
class SamplerConfig:
    """Inference (design §6): rectified-flow solver on a shifted time grid and the guidance of the denoiser."""

    steps: int = 50
    solver: str = "euler"  # euler | heun (2nd order, two model calls per step) | renoise (diffusion/sampler.py)
    shift: float = 3.0  # SD3 time shift of the grid (1: uniform)
    guidance: str = "adaptive"  # none | plain | adaptive
    grid_scale: float = 5.0  # plain: the one scale; adaptive: scale of the grid on high-noise steps
    content_scale: float = 5.0  # adaptive: scale of reference image + prompt on low-noise steps
    switch_t: float = 0.6  # adaptive: steps evaluated at t > switch_t are guided by the grid
    negative_prompt: str = "a completely static camera"


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    shape: ShapeConfig = field(default_factory=ShapeConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    conditions: ConditionConfig = field(default_factory=ConditionConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    init: InitConfig = field(default_factory=InitConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    name: str = ""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    room: GridConfig = field(default_factory=GridConfig)  # the camera grid's room (design §3)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Checks `value` against the annotation `tp`; returns it converted (lists -> tuples, int -> float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(key, value, option)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis and isinstance(value, (list, tuple)):
            return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(_coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True)))
        raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
    elif origin is list:
        (arg,) = typing.get_args(tp)
        if isinstance(value, (list, tuple)):
            return [_coerce(f"{key}[{i}]", v, arg) for i, v in enumerate(value)]
    elif origin is dict:
        kt, vt = typing.get_args(tp)
        if isinstance(value, dict):
            return {_coerce(key, k, kt): _coerce(f"{key}.{k}", v, vt) for k, v in value.items()}
    else:  # pragma: no cover - schema error, not user error
        raise TypeError(f"unsupported annotation {tp} for {key}")
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in names and f"{key}_" in names:  # Python keywords (init.from) are stored with a trailing _
            key = f"{key}_"
        if key not in names:
            raise ConfigError(f"unknown key '{path}' (known: {', '.join(names)})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{path}.")
        elif key == "rules" and isinstance(value, dict):
            # A rules table given in a file extends the defaults rather than replacing them.
            kwargs[key] = {**DEFAULT_RULES, **_coerce(path, value, tp)}
        else:
            kwargs[key] = _coerce(path, value, tp)
    return cls(**kwargs)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "rules":
            out[key] = _merge(out[key], value)
        elif key == "rules" and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path in seen:
        raise ConfigError(f"include cycle through {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    includes = data.pop("include", [])
    if isinstance(includes, str):
        includes = [includes]
    merged: dict = {}
    for inc in includes:
        candidates = [path.parent / inc, CONFIG_DIR / inc]
        target = next((c for c in candidates if c.is_file()), candidates[0])
        merged = _merge(merged, _read_yaml(target.resolve(), (*seen, path)))
    return _merge(merged, data)


def _mesh_preset(name: str) -> dict:
    path = CONFIG_DIR / "mesh" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIG_DIR / "mesh").glob("*.yaml"))
        raise ConfigError(f"mesh: unknown preset '{name}' (known: {', '.join(known)})")
    return _read_yaml(path)


def apply_override(data: dict, override: str) -> dict:
    """Applies one `dotted.key=value` override (value parsed as YAML) to a raw config mapping."""
    if "=" not in override:
        raise ConfigError(f"override '{override}' is not of the form key=value")
    key, raw = override.split("=", 1)
    key = key.strip()
    if key == "mesh":
        return _merge(data, _mesh_preset(raw.strip()))
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node: dict = {}
    parts = key.split(".")
    cursor = node
    for part in parts[:-1]:
        cursor[part] = {}
        cursor = cursor[part]
    cursor[parts[-1]] = value
    return _merge(data, node)


# ---------------------------------------------------------------------------------------------- checking


def resolve_mesh(mesh: MeshConfig, num_devices: int) -> dict[str, int]:
    """Mesh axis sizes with the (single) -1 filled so that their product is `num_devices`."""
    sizes = mesh.sizes()
    fill = [a for a, s in sizes.items() if s == -1]
    for axis, size in sizes.items():
        if size == 0 or size < -1:
            raise ConfigError(f"mesh.{axis}: size must be positive or -1, got {size}")
    if len(fill) > 1:
        raise ConfigError(f"mesh: only one axis may be -1, got {', '.join('mesh.' + a for a in fill)}")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if fill:
        if num_devices % fixed:
            raise ConfigError(f"mesh: fixed axes multiply to {fixed}, which does not divide {num_devices} devices")
        sizes[fill[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ConfigError(f"mesh: axes multiply to {fixed} but there are {num_devices} devices")
    return sizes


def validate(cfg: Config, num_devices: int | None = None) -> None:
    """Checks values and their consistency; `num_devices` also checks the mesh against the devices."""
    m, s = cfg.model, cfg.shape
    for name, value in (("model.attention", m.attention), ("model.remat", m.remat), ("model.dtype", m.dtype),
                        ("model.param_dtype", m.param_dtype)):
        choices = {"model.attention": ATTENTION_IMPLS, "model.remat": REMAT_POLICIES}.get(name, DTYPES)
        if value not in choices:
            raise ConfigError(f"{name}: '{value}' is not one of {', '.join(choices)}")
    positive = {
        "model.hidden_size": m.hidden_size, "model.num_heads": m.num_heads, "model.depth": m.depth,
        "model.text_dim": m.text_dim, "model.text_len": m.text_len, "model.latent_channels": m.latent_channels,
        "shape.batch_size": s.batch_size, "shape.frames": s.frames, "shape.height": s.height,
        "shape.width": s.width, "bench.steps": cfg.bench.steps,
    }
    for name, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{name}: must be positive, got {value}")
    t, c = cfg.train, cfg.conditions
    choices = {"train.schedule": (t.schedule, ("cosine", "constant")),
               "conditions.encoder": (c.encoder, ("vae", "pixel")),
               "conditions.vae_dtype": (c.vae_dtype, DTYPES),
               "conditions.raster_method": (c.raster_method, ("scatter", "tiled")),
               "conditions.raster_profile": (c.raster_profile, ("opencv", "smooth"))}
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{name}: '{value}' is not one of {', '.join(allowed)}")
    for name, value in (("train.self_recon_prob", t.self_recon_prob), ("train.drop_grid_prob", t.drop_grid_prob),
                        ("train.drop_text_prob", t.drop_text_prob), ("train.ema_decay", t.ema_decay),
                        ("train.min_lr_ratio", t.min_lr_ratio)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name}: must be in [0, 1], got {value}")
    for name, value in (("train.steps", t.steps), ("train.log_every", t.log_every),
                        ("train.max_bad_steps", t.max_bad_steps), ("checkpoint.every", cfg.checkpoint.every),
                        ("checkpoint.keep", cfg.checkpoint.keep), ("conditions.max_segments", c.max_segments),
                        ("conditions.max_shots", c.max_shots), ("train.learning_rate", t.learning_rate),
                        ("train.timestep_shift", t.timestep_shift)):
        if value <= 0:
            raise ConfigError(f"{name}: must be positive, got {value}")
    if t.warmup_steps < 0 or t.preview_every < 0 or t.grad_clip < 0:
        raise ConfigError("train.warmup_steps, train.preview_every and train.grad_clip must be >= 0")
    if c.encoder == "vae" and (s.vae_spatial, s.vae_temporal) != (8, 4):
        raise ConfigError(f"shape.vae_spatial/vae_temporal: the Wan VAE compresses 8x and 4x, got "
                          f"{s.vae_spatial} and {s.vae_temporal}")
    if c.encoder == "pixel" and s.vae_temporal != 1:
        raise ConfigError(f"shape.vae_temporal: the pixel encoder keeps every frame (1), got {s.vae_temporal}")
    if c.encoder == "pixel" and m.latent_channels != 3 * s.vae_spatial ** 2:
        raise ConfigError(f"model.latent_channels: the pixel encoder makes 3 x shape.vae_spatial^2 = "
                          f"{3 * s.vae_spatial ** 2} channels, got {m.latent_channels}")
    if cfg.data.workers < 0 or cfg.data.prefetch < 1:
        raise ConfigError(f"data.workers must be >= 0 and data.prefetch >= 1, got {cfg.data.workers}, "
                          f"{cfg.data.prefetch}")
    if cfg.data.reference not in ("first", "window", "overlap"):
        raise ConfigError(f"data.reference: '{cfg.data.reference}' is not first, window or overlap")
    if cfg.train.loss not in ("velocity", "x0"):
        raise ConfigError(f"train.loss: '{cfg.train.loss}' is not velocity or x0")
    if m.residual_var <= 0:
        raise ConfigError(f"model.residual_var must be positive, got {m.residual_var}")
    if m.prediction not in ("velocity", "x0", "x0_residual"):
        raise ConfigError(f"model.prediction: '{m.prediction}' is not velocity, x0 or x0_residual")
    if m.backbone not in BACKBONES or m.trainable not in ("all", "self_attention"):
        raise ConfigError(f"model.backbone/model.trainable: '{m.backbone}'/'{m.trainable}' not in "
                          f"{'|'.join(BACKBONES)} / all|self_attention")
    if m.backbone == "wan" and (m.single_depth or m.ffn_dim < 0 or m.segment_ref_frames < 0):
        raise ConfigError(f"model: the wan backbone needs single_depth 0 (got {m.single_depth}), ffn_dim >= 0 "
                          f"(got {m.ffn_dim}) and segment_ref_frames >= 0 (got {m.segment_ref_frames})")
    if m.segment_embed and m.segment_ref_frames != s.ref_frames:
        raise ConfigError(f"model.segment_ref_frames: {m.segment_ref_frames} must equal shape.ref_frames "
                          f"{s.ref_frames}")
    if m.backbone == "mmdit" and (m.trainable != "all" or m.segment_embed):
        raise ConfigError("model.trainable/model.segment_embed: only the wan backbone has them")
    if m.grid_inject and (m.backbone != "mmdit" or not s.grid or m.segment_ref_frames != s.ref_frames):
        raise ConfigError("model.grid_inject needs the mmdit backbone, shape.grid true and model.segment_ref_frames "
                          f"= shape.ref_frames (got {m.backbone}, {s.grid}, {m.segment_ref_frames} vs "
                          f"{s.ref_frames})")
    if m.grid_inject_ref and (not m.grid_inject or m.segment_ref_frames != m.patch_size[0]):
        raise ConfigError("model.grid_inject_ref needs model.grid_inject and a reference of one temporal patch "
                          f"(model.segment_ref_frames {m.segment_ref_frames}, patch {m.patch_size[0]})")
    if m.grid_reader and (not m.grid_inject or m.prediction != "x0_residual" or not m.reader_channels
                          or m.reader_plane_depth <= 0 or m.reader_unshuffle < 1 or m.reader_hidden < 1
                          or m.latent_channels % m.reader_unshuffle ** 2):
        raise ConfigError("model.grid_reader needs model.grid_inject, model.prediction x0_residual, non-empty "
                          "reader_channels, reader_hidden >= 1, reader_plane_depth > 0 and reader_unshuffle >= 1 "
                          f"dividing the latent channels (got {m.grid_inject}, {m.prediction}, "
                          f"{m.reader_channels}, {m.reader_hidden}, {m.reader_plane_depth}, {m.reader_unshuffle})")
    if m.reader_shot_gate and not m.grid_reader:
        raise ConfigError("model.reader_shot_gate needs model.grid_reader")
    if m.reader_depth and (not m.grid_reader or m.depth_channels < 1):
        raise ConfigError(f"model.reader_depth needs model.grid_reader and depth_channels >= 1 "
                          f"(got grid_reader {m.grid_reader}, depth_channels {m.depth_channels})")
    if m.grid_reader and s.vae_temporal != 1:
        raise ConfigError(f"model.grid_reader reads one grid frame per video frame: shape.vae_temporal must be 1, "
                          f"got {s.vae_temporal}")
    if c.encoder == "pixel" and m.grid_reader and m.reader_unshuffle != s.vae_spatial:
        raise ConfigError(f"model.reader_unshuffle: the pixel encoder's latents are {s.vae_spatial}x{s.vae_spatial} "
                          f"pixel blocks, got {m.reader_unshuffle}")
    if c.jitter_knot_frames < 1:
        raise ConfigError(f"conditions.jitter_knot_frames: must be >= 1, got {c.jitter_knot_frames}")
    room = cfg.room
    if min(room.spacing_steps, room.min_spacing, room.view_steps, room.min_view, room.floor_min, room.support_min,
           room.tunnel_inner_min, room.tunnel_width_min) <= 0 or room.camera_subsample < 1:
        raise ConfigError(f"room: spacing, view, floor, support and tunnel sizes must be positive and "
                          f"camera_subsample >= 1, got {room}")
    if m.single_depth < 0:
        raise ConfigError(f"model.single_depth: must be >= 0, got {m.single_depth}")
    if m.hidden_size % m.num_heads:
        raise ConfigError(f"model.num_heads: {m.num_heads} does not divide model.hidden_size {m.hidden_size}")
    if m.head_dim % 2 or m.head_dim < 6:
        raise ConfigError(f"model.hidden_size: head dim {m.head_dim} must be even and >= 6 for 3D RoPE")
    if any(p <= 0 for p in m.patch_size):
        raise ConfigError(f"model.patch_size: entries must be positive, got {list(m.patch_size)}")
    if (s.frames - 1) % s.vae_temporal:
        raise ConfigError(f"shape.frames: {s.frames} must be 1 + a multiple of shape.vae_temporal {s.vae_temporal}")
    pt, ph, pw = m.patch_size
    for name, value, unit in (("shape.height", s.height, s.vae_spatial * ph), ("shape.width", s.width,
                                                                                s.vae_spatial * pw)):
        if value % unit:
            raise ConfigError(f"{name}: {value} must be a multiple of {unit} (VAE stride x patch)")
    if s.latent_frames % pt or s.ref_frames % pt:
        raise ConfigError(f"model.patch_size: temporal patch {pt} must divide the latent and reference frames")
    for logical, axes in cfg.mesh.rules.items():
        for axis in [axes] if isinstance(axes, str) else axes or []:
            if axis not in MESH_AXES:
                raise ConfigError(f"mesh.rules.{logical}: '{axis}' is not a mesh axis ({', '.join(MESH_AXES)})")
    sp = cfg.sampler
    if sp.steps <= 0 or sp.shift <= 0 or sp.solver not in ("euler", "heun", "renoise") or \
            sp.guidance not in ("none", "plain", "adaptive") or not 0.0 <= sp.switch_t <= 1.0:
        raise ConfigError(f"sampler: needs steps > 0, shift > 0, solver euler|heun|renoise, guidance "
                          f"none|plain|adaptive and 0 <= switch_t <= 1; got {sp.steps}, {sp.shift}, {sp.solver}, "
                          f"{sp.guidance}, {sp.switch_t}")
    if num_devices is None:
        return
    sizes = resolve_mesh(cfg.mesh, num_devices)
    if m.num_heads % sizes["tensor"]:
        raise ConfigError(f"model.num_heads: {m.num_heads} heads do not divide the tensor axis ({sizes['tensor']})")
    batch_shards = sizes["data"] * sizes["fsdp"]
    if s.batch_size % batch_shards:
        raise ConfigError(f"shape.batch_size: {s.batch_size} is not divisible by data x fsdp = {batch_shards}")


def load_config(
    path: str | Path | None = None,
    overrides: typing.Sequence[str] = (),
    num_devices: int | None = -1,
) -> Config:
    """Reads a YAML config, applies overrides, validates. `num_devices=-1` means `jax.device_count()`;
    `None` skips the device checks (e.g. when compiling ahead of time for another topology)."""
    data = _read_yaml(Path(path).resolve()) if path is not None else {}
    for override in overrides:
        data = apply_override(data, override)
    cfg = _build(Config, data, "")
    if not cfg.name and path is not None:
        cfg.name = Path(path).stem
    if num_devices == -1:
        import jax  # deferred: keeps config parsing (and `--help`) free of jax

        num_devices = jax.device_count()
    validate(cfg, num_devices)
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    """A Config from `Config.to_dict()` output (e.g. saved with a checkpoint), validated without device checks."""
    cfg = _build(Config, data, "")
    validate(cfg, None)
    return cfg
