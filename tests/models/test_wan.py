"""Wan 2.1 backbone: parity with diffusers' WanTransformer3DModel through our loader, full 1.3B/14B key layouts,
loader errors, the freeze filter, conversion round trip, FLOP counter (golden + XLA) and `bench model`.

Regenerate the golden FLOP counts (after an intended change) with:

    OMNIDIRECTOR_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/models/test_wan.py -k golden
"""

import dataclasses
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omnidirector_jax.cli import main
from omnidirector_jax.config import Config, load_config
from omnidirector_jax.models import backbones, flops, mmdit, wan
from omnidirector_jax.models.vae_weights import CheckpointError

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "flops_wan.json"
TINY = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
            text_dim=32, freq_dim=16, ffn_dim=40, num_layers=2, cross_attn_norm=True, eps=1e-6)
# Published Wan 2.1 T2V transformer configurations (diffusers config.json of Wan-AI/Wan2.1-T2V-*-Diffusers).
WAN_1_3B = dict(TINY, num_attention_heads=12, attention_head_dim=128, text_dim=4096, freq_dim=256, ffn_dim=8960,
                num_layers=30)
WAN_14B = dict(WAN_1_3B, num_attention_heads=40, ffn_dim=13824, num_layers=40)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A tiny random diffusers Wan transformer (non-trivial tables and norms), saved in shards."""
    torch.manual_seed(0)
    ref = diffusers.WanTransformer3DModel(**TINY).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("wan") / "transformer"
    ref.save_pretrained(folder, max_shard_size="40KB")
    assert any(n.endswith(".safetensors.index.json") for n in os.listdir(folder))  # the sharded path
    return ref, folder


def _inputs(seed=0, b=2, f=3, h=4, w=6, c=16, lt=7, dt=32):
    rng = np.random.default_rng(seed)
    lat = rng.standard_normal((b, f, h, w, c)).astype(np.float32)
    text = rng.standard_normal((b, lt, dt)).astype(np.float32)
    return lat, text, np.ones((b, lt), bool)


def _torch_ref(ref, lat, timestep, text):
    """diffusers forward; `timestep` [B] (one per sample) or [B, N] (one per token, the Wan 2.2 TI2V path)."""
    with torch.no_grad():
        out = ref(torch.from_numpy(lat).permute(0, 4, 1, 2, 3), torch.from_numpy(timestep), torch.from_numpy(text))
    return out.sample.permute(0, 2, 3, 4, 1).numpy()


_fwd = nnx.jit(lambda model, *args: model(*args))  # one compile per model structure (eager is slower)


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_parity_single_timestep(reference):
    ref, folder = reference
    model = wan.load_wan_transformer(folder)
    lat, text, mask = _inputs()
    t = np.array([0.3, 0.8], np.float32)
    ours = _fwd(model, jnp.asarray(lat), jnp.asarray(np.repeat(t[:, None], 3, 1)), jnp.asarray(text), jnp.asarray(mask))
    expected = _torch_ref(ref, lat, t * 1000, text)
    assert _rel(np.asarray(ours), expected) < 1e-4


def test_parity_per_frame_timesteps_with_condition_frames(reference):
    """[ref | grid | video] with clean conditions: diffusers' per-token timesteps ([B, N], each frame's t repeated
    over its tokens) are the reference for our per-frame ones. The zero segment embedding changes nothing."""
    ref, folder = reference
    lat, text, mask = _inputs(seed=1)
    frame_t = np.array([[0, 0, 0.5], [0, 0.2, 0.9]], np.float32)
    per_token = np.repeat(frame_t * 1000, (4 // 2) * (6 // 2), axis=1)
    expected = _torch_ref(ref, lat, per_token, text)
    for seg in (False, True):
        model = wan.load_wan_transformer(folder, segment_embed=seg)
        ours = _fwd(model, jnp.asarray(lat), jnp.asarray(frame_t), jnp.asarray(text), jnp.asarray(mask))
        assert _rel(np.asarray(ours), expected) < 1e-4, seg


def test_zero_segment_embedding_is_the_pretrained_function(reference):
    """No condition frames, segment table on (zero-initialised): still the reference; a non-zero table is used."""
    ref, folder = reference
    model = wan.load_wan_transformer(folder, segment_embed=True, scan_layers=False)
    assert float(jnp.abs(model.segment_embed[...]).max()) == 0.0
    lat, text, mask = _inputs(seed=2)
    t = np.array([0.6, 0.1], np.float32)
    ft = jnp.asarray(np.repeat(t[:, None], 3, 1))
    ours = _fwd(model, jnp.asarray(lat), ft, jnp.asarray(text), jnp.asarray(mask))
    assert _rel(np.asarray(ours), _torch_ref(ref, lat, t * 1000, text)) < 1e-4
    # (a constant row would vanish in the LayerNorms: use random rows)
    model.segment_embed[...] = jax.random.normal(jax.random.key(0), model.segment_embed[...].shape)
    moved = _fwd(model, jnp.asarray(lat), ft, jnp.asarray(text), jnp.asarray(mask))
    assert _rel(np.asarray(moved), np.asarray(ours)) > 1e-3


def test_default_segments_follow_the_frame_layout():
    frame_t = jnp.array([[0, 0, 0, 0.5, 0.5], [0, 0, 0.3, 0.3, 0.3]])
    np.testing.assert_array_equal(wan.default_segments(frame_t, 1), [[1, 2, 2, 0, 0], [1, 2, 0, 0, 0]])
    np.testing.assert_array_equal(wan.default_segments(frame_t, 2), [[1, 1, 2, 0, 0], [1, 1, 0, 0, 0]])


def test_text_mask_zeroes_padding_as_the_wan_pipeline_does(reference):
    ref, folder = reference
    model = wan.load_wan_transformer(folder)
    lat, text, mask = _inputs(seed=3)
    mask[:, 4:] = False
    padded = text.copy()
    padded[:, 4:] = 0.0
    t = np.array([0.5, 0.5], np.float32)
    ours = _fwd(model, jnp.asarray(lat), jnp.full((2, 3), 0.5), jnp.asarray(text), jnp.asarray(mask))
    assert _rel(np.asarray(ours), _torch_ref(ref, lat, t * 1000, padded)) < 1e-4


def _meta_state(config):
    with torch.device("meta"):
        ref = diffusers.WanTransformer3DModel(**config)
    return {k: jax.ShapeDtypeStruct(tuple(v.shape), jnp.float32) for k, v in ref.state_dict().items()}


@pytest.mark.parametrize("config,billions", [(WAN_1_3B, (1.2, 1.5)), (WAN_14B, (13.5, 15.0))])
def test_full_layouts_map_with_no_leftover_key(config, billions):
    """Every key of the published 1.3B and 14B layouts (diffusers on the meta device: nothing allocated or
    downloaded) maps onto a parameter of our model with the right shape, and every parameter is covered."""
    shapes = _meta_state(config)
    cfg = wan.config_from_diffusers(config)
    out = jax.eval_shape(lambda s: wan.convert_state(s, cfg, jnp), shapes)  # raises on a bad key or shape
    _, abstract = backbones.abstract_model(cfg)
    flat = {tuple(map(str, p)): v.shape for p, v in nnx.to_flat_state(abstract)}
    assert {k: tuple(v.shape) for k, v in out.items()} == flat
    n = sum(int(np.prod(s.shape)) for s in shapes.values())
    assert n == flops.count_params(Config(model=cfg)) and billions[0] < n / 1e9 < billions[1]


def test_loader_errors_name_the_keys(reference):
    _, folder = reference
    state = wan.read_checkpoint_folder(folder)
    cfg = wan.config_from_diffusers(TINY)
    broken = dict(state)
    del broken["blocks.1.attn1.to_k.weight"]
    broken["blocks.0.extra.weight"] = np.zeros(3, np.float32)
    broken["proj_out.bias"] = np.zeros(5, np.float32)
    with pytest.raises(CheckpointError) as err:
        wan.load_wan_transformer(broken, cfg)
    msg = str(err.value)
    assert "missing keys: blocks.1.attn1.to_k.weight" in msg
    assert "unexpected keys: blocks.0.extra.weight" in msg
    assert "proj_out.bias (5,) -> model expects (1, 2, 2, 16) at head/bias" in msg
    i2v = dict(state, **{"blocks.0.attn2.add_k_proj.weight": np.zeros((24, 8), np.float32)})
    with pytest.raises(CheckpointError, match="I2V.*supported: Wan 2.1 text-to-video"):
        wan.load_wan_transformer(i2v, cfg)
    for bad in ({"image_dim": 1280}, {"in_channels": 48, "out_channels": 48}, {"pos_embed_seq_len": 514}):
        with pytest.raises(CheckpointError, match="unsupported Wan transformer"):
            wan.config_from_diffusers(dict(TINY, **bad))


def test_wan_2_2_pipeline_is_refused(reference, tmp_path):
    _, folder = reference
    (tmp_path / "transformer").symlink_to(folder)
    (tmp_path / "model_index.json").write_text(json.dumps({"transformer_2": ["diffusers", "WanTransformer3DModel"],
                                                           "boundary_ratio": 0.875}))
    with pytest.raises(CheckpointError, match="Wan 2.2"):
        wan.load_wan_transformer(tmp_path / "transformer")


def test_trainable_filter_keeps_self_attention_and_segment_table():
    cfg = load_config(ROOT / "configs/wan_tiny_cpu.yaml", ["model.trainable=self_attention"], num_devices=None)
    model = nnx.eval_shape(lambda: backbones.create_model(cfg.model))
    train = nnx.state(model, backbones.trainable_filter(cfg.model))
    paths = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(train)}
    assert paths == {"segment_embed"} | {f"blocks/self_attn/{n}" for n in
                                         ("qkv/kernel", "qkv/bias", "q_norm/scale", "k_norm/scale", "out/kernel",
                                          "out/bias")}
    everything = nnx.state(model, backbones.trainable_filter(dataclasses.replace(cfg.model, trainable="all")))
    assert len(jax.tree.leaves(everything)) > len(jax.tree.leaves(train))
    with pytest.raises(Exception, match="only the wan backbone"):
        load_config(ROOT / "configs/tiny_cpu.yaml", ["model.trainable=self_attention"], num_devices=None)
    with pytest.raises(Exception, match="must equal shape.ref_frames"):
        load_config(ROOT / "configs/wan_tiny_cpu.yaml", ["shape.ref_frames=2"], num_devices=None)


def test_convert_wan_round_trip(reference, tmp_path):
    _, folder = reference
    out = tmp_path / "ckpt"
    assert main(["convert-wan", str(folder), "--out", str(out), "--set", "segment_embed=true"]) == 0
    cfg, params = backbones.load_converted(out)
    assert cfg.backbone == "wan" and cfg.segment_embed and cfg.depth == 2 and cfg.patch_size == (1, 2, 2)
    model = wan.load_wan_transformer(folder, segment_embed=True)
    expected = nnx.state(model, nnx.Param).to_pure_dict()
    assert jax.tree.structure(params) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    graphdef, state = backbones.abstract_model(cfg)  # the train command's way in: the pure dict fits the state
    nnx.replace_by_pure_dict(state, params)
    assert isinstance(nnx.merge(graphdef, state), wan.WanModel)


# ----------------------------------------------------------------------------------------------- FLOPs


def _cfg(name, *overrides):
    return load_config(ROOT / "configs" / f"{name}.yaml", list(overrides), num_devices=None)


def test_wan_flop_counts_match_golden():
    table = {}
    for name in ("wan_tiny_cpu", "wan_1_3b_480p", "wan_14b_480p"):
        cfg = _cfg(name)
        table[name] = {"params": flops.count_params(cfg), **flops.count_flops(cfg).to_dict()}
    if os.environ.get("OMNIDIRECTOR_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    assert table == json.loads(GOLDEN.read_text())
    assert table["wan_1_3b_480p"]["visual_tokens"] == 42120


def test_hand_count_of_one_wan_block():
    # One block, batch 1, one frame of 2x2 tokens (patch 1x1x1), 2 text tokens, width 6, FFN 12.
    cfg = _cfg("wan_tiny_cpu", "model.segment_embed=false", "model.depth=1", "model.hidden_size=6",
               "model.num_heads=1", "model.ffn_dim=12",
               "model.patch_size=[1,1,1]", "model.text_len=2", "shape.batch_size=1", "shape.frames=1",
               "shape.height=16", "shape.width=16", "shape.grid=false", "shape.ref_frames=0")
    f = flops.count_flops(cfg).forward
    n, lt, d, m = 4, 2, 6, 12
    assert f["projections"] == 2 * n * d * 3 * d + 2 * n * d * d
    assert f["attention"] == 2 * (2 * n * n * d)
    assert f["cross_attention"] == 2 * (2 * n * d * d) + 2 * lt * d * 2 * d + 2 * (2 * n * lt * d)
    assert f["mlp"] == 2 * (2 * n * d * m)
    assert f["modulation"] == 2 * 1 * d * 6 * d  # the shared time_proj, one frame


def test_wan_params_match_the_model():
    cfg = _cfg("wan_tiny_cpu")
    _, abstract = backbones.abstract_model(cfg.model)
    assert sum(x.size for x in jax.tree.leaves(abstract)) == flops.count_params(cfg)


def test_wan_forward_agrees_with_xla_cost_analysis():
    cfg = _cfg("wan_tiny_cpu", "model.scan_layers=false")
    graphdef, abstract = backbones.abstract_model(cfg.model)
    batch = mmdit.dummy_batch(cfg.model, cfg.shape, 0)

    def fwd(state, b):
        latents, frame_t, _ = mmdit.assemble_inputs(b["ref"], b["grid"], b["video"], b["t"])
        return nnx.merge(graphdef, state)(latents, frame_t, b["text"], b["text_mask"])

    spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
    xla = jax.jit(fwd).lower(abstract, spec).compile().cost_analysis()["flops"]
    ours = flops.count_flops(cfg).forward_total
    print(f"wan_tiny_cpu forward: analytic {ours:.4e} FLOPs, XLA {xla:.4e}, gap {(xla - ours) / xla:.2%}")
    assert 0.0 < (xla - ours) / xla < 0.05, (ours, xla)


@pytest.mark.slow
def test_bench_model_runs_the_wan_backbone(capsys):
    args = ["bench", "model", "--config", str(ROOT / "configs/wan_tiny_cpu.yaml"), "--json", "--steps", "1",
            "--set", "bench.warmup=0", "--set", "model.depth=1"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["params"] == flops.count_params(_cfg("wan_tiny_cpu", "model.depth=1"))
    assert "cross_attention" in report["flops"]["forward"]
    for part in ("forward", "train_step"):
        assert report[part]["step_s"] > 0 and 0 < report[part]["mfu"] < 1.5


# ------------------------------------------------------------------------------- training from converted weights

# wan_tiny_cpu resized to the TINY reference's layout, 32x32 frames, two steps.
FROM_TINY = ["model.latent_channels=16", "model.hidden_size=24", "model.num_heads=2", "model.ffn_dim=40",
             "model.text_dim=32", "model.freq_dim=16", "shape.height=32", "shape.width=32", "train.steps=2",
             "train.warmup_steps=1", "train.log_every=1", "train.preview_every=0", "checkpoint.every=2"]


def _train(workdir, *overrides) -> int:
    sets = [arg for o in (*FROM_TINY, *overrides) for arg in ("--set", o)]
    return main(["train", "--config", str(ROOT / "configs/wan_tiny_cpu.yaml"), "--workdir", str(workdir),
                 "--no-progress", *sets])


def test_train_starts_from_converted_weights_and_freezes_them(reference, tmp_path, capsys):
    from omnidirector_jax.config import config_from_dict
    from omnidirector_jax.parallel.mesh import make_mesh
    from omnidirector_jax.train.checkpoint import Checkpointer
    from omnidirector_jax.train.state import make_layout

    _, folder = reference
    ckpt, data = tmp_path / "ckpt", tmp_path / "D"
    assert main(["convert-wan", str(folder), "--out", str(ckpt), "--set", "segment_embed=true"]) == 0
    assert main(["build-dataset", "--synthetic", "8", "--out", str(data), "--size", "32x32", "--frames", "5"]) == 0
    _, converted = backbones.load_converted(ckpt)

    workdir = tmp_path / "run"
    assert _train(workdir, f"data.dir={data}", f"init.from={ckpt}", "model.trainable=self_attention") == 0
    saved = Checkpointer(workdir / "checkpoints", Config().checkpoint, read_only=True)
    assert saved.latest_step() == 2
    cfg = config_from_dict(saved.read_config(2))
    state = saved.restore(2, make_layout(cfg, make_mesh(cfg.mesh, jax.devices())).abstract)
    trained = dict(nnx.to_flat_state(nnx.State(jax.device_get(state["params"]))))
    start = dict(nnx.to_flat_state(nnx.State(converted)))
    assert trained.keys() == start.keys()
    moved = {"/".join(map(str, p)) for p in start if not np.array_equal(np.asarray(trained[p]), np.asarray(start[p]))}
    # Everything but self-attention and the new segment table stays the converted weights bit for bit; the
    # trainable part moved (the segment table starts at zero and gets gradients from the condition frames).
    assert moved and all(p.startswith("blocks/self_attn/") or p == "segment_embed" for p in moved), moved
    assert any(p.startswith("blocks/self_attn/qkv") for p in moved), moved
    capsys.readouterr()

    # Weights of another shape: one line at start, nothing trained.
    assert _train(tmp_path / "bad", f"data.dir={data}", f"init.from={ckpt}", "model.hidden_size=48",
                  "model.num_heads=4") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: init.from: parameters in"), err
    assert not (tmp_path / "bad" / "checkpoints").exists() or not any((tmp_path / "bad" / "checkpoints").iterdir())
