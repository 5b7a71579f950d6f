"""Analytic FLOP counter for the MMDiT and the Wan backbone (`model.backbone`), and an MFU helper.

Counts matrix-product FLOPs (`2·m·n·k`), per component, for one forward pass over a batch:
`patch_embed` (3D-conv patchify and the unpatchify head), `embed` (text, pooled-text and timestep MLPs),
`projections` (QKV and attention-output linears), `attention` (QKᵀ and AV over the joint sequence, padded text
included, as every kernel computes it), `mlp`, `modulation` (AdaLN linears, per frame). A train step is
forward + backward (2× forward for every matmul) plus the recomputed forward of the blocks under
`remat=full/save_dots/offload` (counted as hardware FLOPs only, not model FLOPs), plus AdamW (~12 FLOPs/param).

Compared with XLA's `compiled.cost_analysis()["flops"]` (an unrolled model: a scan body is counted once), this
counter is LOWER by the element-wise work (norms, softmax, RoPE, GELU, modulation arithmetic), which XLA
counts at one FLOP per element and we leave out because it is memory-bound and never what limits MFU; on the
tiny config that gap is a few percent (tests/models/test_flops.py checks < 5%).
"""

from __future__ import annotations

import dataclasses
import time

from omnidirector_jax.config import Config, ModelConfig
from omnidirector_jax.models.grid_reader import DepthNet, GridReader

# Dense bf16 peak TFLOP/s per chip (vendor figures, no sparsity).
PEAK_TFLOPS_BF16: dict[str, float] = {
    "v4": 275.0,
    "v5e": 197.0,
    "v5p": 459.0,
    "v6e": 918.0,
    "h100": 989.0,
    "h200": 989.0,
}


@dataclasses.dataclass(frozen=True)
class FlopCount:
    """Forward FLOPs per component (whole batch), the train-step multiple, and the token counts."""

    forward: dict[str, float]
    recompute: float  # extra forward FLOPs of remat (hardware, not model, FLOPs)
    optimizer: float
    visual_tokens: int
    text_tokens: int

    @property
    def forward_total(self) -> float:
        return sum(self.forward.values())

    @property
    def train_model(self) -> float:
        """Model FLOPs of a train step: forward + backward (2× forward)."""
        return 3.0 * self.forward_total

    @property
    def train_hardware(self) -> float:
        """FLOPs a train step really executes, remat recompute and optimizer included."""
        return self.train_model + self.recompute + self.optimizer

    def to_dict(self) -> dict[str, float | int | dict[str, float]]:
        return {"forward": dict(self.forward), "forward_total": self.forward_total, "train_model": self.train_model,
                "train_hardware": self.train_hardware, "recompute": self.recompute, "optimizer": self.optimizer,
                "visual_tokens": self.visual_tokens, "text_tokens": self.text_tokens}


def _reader_channels(m: ModelConfig) -> tuple[int, ...]:
    """Channels through the grid reader's convs: a frame pair of unshuffled latents, then `reader_channels`."""
    return (2 * m.latent_channels // m.reader_unshuffle ** 2,) + tuple(m.reader_channels)


def count_params(cfg: Config) -> int:
    """Parameter count from the config (matches the NNX model, either backbone; checked in the tests)."""
    m = cfg.model
    if m.backbone == "wan":
        return _wan_params(cfg)
    d, mlp, dt = m.hidden_size, m.mlp_dim, m.text_dim
    p = m.latent_channels * m.patch_size[0] * m.patch_size[1] * m.patch_size[2]
    lin = lambda i, o, bias=True: i * o + (o if bias else 0)  # noqa: E731
    mlp_p = lin(d, mlp) + lin(mlp, d)
    dual = 2 * (lin(d, 6 * d) + lin(d, 3 * d) + lin(d, d) + mlp_p + 2 * m.head_dim)
    single = lin(d, 3 * d) + lin(d, 3 * d) + lin(d, mlp) + lin(d, d) + lin(mlp, d, False) + 2 * m.head_dim
    embed = lin(p, d) + lin(dt, d) + lin(dt, d) + lin(d, d) + lin(m.freq_dim, d) + lin(d, d)
    embed += lin(p, d) if m.grid_inject else 0
    if m.grid_reader:  # convs, fc, bias-free head, and the warped reference's patch projection
        chans = _reader_channels(m)
        embed += sum(9 * a * b + b for a, b in zip(chans[:-1], chans[1:], strict=True))
        embed += lin(GridReader.POOL ** 2 * chans[-1], m.reader_hidden) + m.reader_hidden * 8 + lin(p, d)
        embed += lin(m.reader_hidden, 1) if m.reader_shot_gate else 0  # the cut head
    if m.grid_reader and m.reader_depth:  # the far head and the depth net (dilated convs, bias-free output)
        chans = (m.latent_channels // m.reader_unshuffle ** 2,) + (m.depth_channels,) * len(DepthNet.DILATIONS)
        embed += m.reader_hidden * 8 + sum(9 * a * b + b for a, b in zip(chans[:-1], chans[1:], strict=True))
        embed += m.depth_channels
    final = lin(d, 2 * d) + lin(d, p)
    return embed + m.depth * dual + m.single_depth * single + final


def count_flops(cfg: Config, batch: int | None = None) -> FlopCount:
    """Matmul FLOPs of the forward for `cfg.shape` (global batch unless `batch` is given), either backbone."""
    if cfg.model.backbone == "wan":
        return _wan_flops(cfg, batch)
    m, s = cfg.model, cfg.shape
    b = s.batch_size if batch is None else batch
    pt, ph, pw = m.patch_size
    lh, lw = s.latent_hw
    frames = s.total_frames // pt
    n = frames * (lh // ph) * (lw // pw)
    l_txt = m.text_len
    seq = n + l_txt
    d, mlp, dt = m.hidden_size, m.mlp_dim, m.text_dim
    p = m.latent_channels * pt * ph * pw
    mm = lambda rows, k, o: 2.0 * rows * k * o  # noqa: E731

    f = {"patch_embed": 0.0, "embed": 0.0, "projections": 0.0, "attention": 0.0, "mlp": 0.0, "modulation": 0.0}
    f["patch_embed"] = mm(b * n, p, d) + mm(b * n, d, p)  # patchify conv + unpatchify head
    if m.grid_inject:  # the grid frames' patches projected once more onto the video tokens
        f["patch_embed"] += mm(b * (s.latent_frames // pt) * (lh // ph) * (lw // pw), p, d)
    if m.grid_reader:  # counted with the embeddings: the reader's convs on every (frame 0, frame i) pair + base
        pairs, hh, ww = b * s.latent_frames, lh * m.reader_unshuffle, lw * m.reader_unshuffle
        chans = _reader_channels(m)
        for a, c in zip(chans[:-1], chans[1:], strict=True):
            hh, ww = -(-hh // 2), -(-ww // 2)
            f["patch_embed"] += mm(pairs * hh * ww, 9 * a, c)
        f["patch_embed"] += mm(pairs, GridReader.POOL ** 2 * chans[-1], m.reader_hidden) + mm(pairs, m.reader_hidden, 8)
        f["patch_embed"] += mm(pairs, m.reader_hidden, 1) if m.reader_shot_gate else 0
        if m.reader_depth:  # far head per pair; the depth net on the reference at full resolution
            f["patch_embed"] += mm(pairs, m.reader_hidden, 8)
            full = b * lh * m.reader_unshuffle * lw * m.reader_unshuffle
            dchans = (m.latent_channels // m.reader_unshuffle ** 2,) + (m.depth_channels,) * len(DepthNet.DILATIONS)
            for a, c in zip(dchans[:-1], dchans[1:], strict=True):
                f["patch_embed"] += mm(full, 9 * a, c)
            f["patch_embed"] += mm(full, m.depth_channels, 1)
        f["patch_embed"] += mm(b * (s.latent_frames // pt) * (lh // ph) * (lw // pw), p, d)
    t_rows = b * frames + b  # per-frame timesteps for visual tokens, one for text
    f["embed"] = mm(b * l_txt, dt, d) + mm(b, dt, d) + mm(b, d, d) + mm(t_rows, m.freq_dim, d) + mm(t_rows, d, d)
    attn = 2 * mm(b * seq, seq, d)  # QK^T and AV, all heads
    dual_proj = mm(b * seq, d, 3 * d) + mm(b * seq, d, d)
    f["projections"] = m.depth * dual_proj + m.single_depth * dual_proj
    f["attention"] = (m.depth + m.single_depth) * attn
    f["mlp"] = (m.depth + m.single_depth) * 2 * mm(b * seq, d, mlp)
    f["modulation"] = (m.depth * mm(b * (frames + 1), d, 6 * d) + m.single_depth * mm(b * (frames + 1), d, 3 * d)
                       + mm(b * frames, d, 2 * d))
    blocks = f["projections"] + f["attention"] + f["mlp"] + f["modulation"] - mm(b * frames, d, 2 * d)
    recompute = blocks if m.remat != "none" else 0.0
    return FlopCount(f, recompute, 12.0 * count_params(cfg), n, l_txt)


# ------------------------------------------------------------------------------------------ Wan backbone


def _wan_params(cfg: Config) -> int:
    """Parameters of `models/wan.py`'s WanModel (the diffusers Wan 2.1 count, plus the segment table if on)."""
    m = cfg.model
    d, dt, f = m.hidden_size, m.text_dim, m.ffn_dim or m.mlp_dim
    p = m.latent_channels * m.patch_size[0] * m.patch_size[1] * m.patch_size[2]
    lin = lambda i, o: i * o + o  # noqa: E731
    block = (6 * d + lin(d, 3 * d) + 2 * d + lin(d, d)  # table, self-attention (qkv, QK norms, out)
             + (2 * d if m.cross_attn_norm else 0) + lin(d, d) + lin(d, 2 * d) + 2 * d + lin(d, d)  # cross-attention
             + lin(d, f) + lin(f, d))
    embed = lin(p, d) + lin(dt, d) + lin(d, d) + lin(m.freq_dim, d) + lin(d, d) + lin(d, 6 * d)
    head = 2 * d + lin(d, p) + (3 * d if m.segment_embed else 0)
    return embed + m.depth * block + head


def _wan_flops(cfg: Config, batch: int | None) -> FlopCount:
    """Wan forward: `projections` (self-attention q/k/v and output), `attention` (self QKᵀ and AV over the visual
    tokens), `cross_attention` (q, text k/v, output and the QKᵀ/AV against the text), `mlp`, `modulation` (the
    shared `time_proj`, per frame; the per-block tables are additions), `embed`, `patch_embed`."""
    m, s = cfg.model, cfg.shape
    b = s.batch_size if batch is None else batch
    pt, ph, pw = m.patch_size
    lh, lw = s.latent_hw
    frames = s.total_frames // pt
    n = frames * (lh // ph) * (lw // pw)
    lt, d, dt, ff = m.text_len, m.hidden_size, m.text_dim, m.ffn_dim or m.mlp_dim
    p = m.latent_channels * pt * ph * pw
    mm = lambda rows, k, o: 2.0 * rows * k * o  # noqa: E731
    layers = m.depth
    f = {
        "patch_embed": mm(b * n, p, d) + mm(b * n, d, p),
        "embed": mm(b * lt, dt, d) + mm(b * lt, d, d) + mm(b * frames, m.freq_dim, d) + mm(b * frames, d, d),
        "projections": layers * (mm(b * n, d, 3 * d) + mm(b * n, d, d)),
        "attention": layers * 2 * mm(b * n, n, d),
        "cross_attention": layers * (2 * mm(b * n, d, d) + mm(b * lt, d, 2 * d) + 2 * mm(b * n, lt, d)),
        "mlp": layers * 2 * mm(b * n, d, ff),
        "modulation": mm(b * frames, d, 6 * d),
    }
    blocks = f["projections"] + f["attention"] + f["cross_attention"] + f["mlp"]
    recompute = blocks if m.remat != "none" else 0.0
    return FlopCount(f, recompute, 12.0 * count_params(cfg), n, lt)


# ------------------------------------------------------------------------------------------------- MFU


def device_peak_tflops(device_kind: str | None = None) -> float | None:
    """Per-chip bf16 peak for a known accelerator (from `jax.devices()[0].device_kind`), else None."""
    import jax

    kind = (device_kind or jax.devices()[0].device_kind).lower().replace(" ", "")
    aliases = [("v5lite", "v5e"), ("v5e", "v5e"), ("v6lite", "v6e"), ("v6e", "v6e"), ("v5p", "v5p"),
               ("tpuv5", "v5p"), ("tpuv4", "v4"), ("h200", "h200"), ("h100", "h100")]
    for needle, key in aliases:
        if needle in kind:
            return PEAK_TFLOPS_BF16[key]
    return None


def measure_matmul_tflops(dtype: str = "float32", size: int = 2048, repeats: int = 5) -> float:
    """Measured matmul throughput of the default device (TFLOP/s): the CPU 'peak' for MFU. Best of
    `repeats` timings of a `size³` product, after one compile-and-warm-up call."""
    import jax

    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    bm = jax.random.normal(jax.random.key(1), (size, size), dtype)
    f = jax.jit(lambda x, y: x @ y)
    f(a, bm).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, bm).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best / 1e12


def peak_tflops(dtype: str = "bfloat16") -> tuple[float, str]:
    """Per-device peak and where it came from: the table for accelerators, a matmul probe on CPU."""
    import jax

    dev = jax.devices()[0]
    table = device_peak_tflops(dev.device_kind) if dev.platform != "cpu" else None
    if table is not None:
        return table, f"table:{dev.device_kind}"
    return measure_matmul_tflops(dtype), f"measured:{dev.platform}:{dtype}"


def mfu(flops: float, seconds: float, peak_tflops_per_device: float, num_devices: int = 1) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the peak of all devices."""
    return flops / seconds / (peak_tflops_per_device * 1e12 * num_devices)
