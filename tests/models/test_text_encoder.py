"""T5/UMT5 encoder against transformers (random tiny configs), its loader, and the byte tokenizer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omnidirector_jax.models.text_encoder import (
    T5Encoder,
    TextEncoder,
    TextEncoderConfig,
    encode_text,
    load_t5_encoder,
    load_t5_params,
    relative_position_bucket,
    t5_key,
)
from omnidirector_jax.models.tokenizer import ByteTokenizer
from omnidirector_jax.models.vae_weights import CheckpointError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXTS = ["a slow dolly in, then a cut", "", "über café 東京 🎥", "x" * 50]


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def tiny_reference(kind: str, ffn: str):
    """A random transformers encoder; max_distance 20 < sequence length so buckets saturate."""
    torch.manual_seed(0)
    config_cls, model_cls = {
        "umt5": (transformers.UMT5Config, transformers.UMT5EncoderModel),
        "t5": (transformers.T5Config, transformers.T5EncoderModel),
        "mt5": (transformers.MT5Config, transformers.MT5EncoderModel),
    }[kind]
    hf = config_cls(
        vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=3, num_heads=4,
        relative_attention_num_buckets=16, relative_attention_max_distance=20,
        feed_forward_proj=ffn, dropout_rate=0.0,
    )  # fmt: skip
    return model_cls(hf).eval()


def ids_and_mask():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 384, (3, 40), generator=g)
    mask = torch.ones(3, 40, dtype=torch.long)
    for row, n in ((1, 25), (2, 7)):  # padded rows
        mask[row, n:] = 0
        ids[row, n:] = 0
    return ids, mask


# --- byte tokenizer -------------------------------------------------------------------------


def test_byte_tokenizer_round_trips_and_pads():
    tok = ByteTokenizer()
    assert tok.encode("hi") == [ord("h") + 3, ord("i") + 3, 1]
    for text in TEXTS:
        assert tok.decode(tok.encode(text)) == text
    ids, mask = tok(TEXTS, max_length=16)
    assert ids.shape == mask.shape == (4, 16) and ids.dtype == np.int32 and mask.dtype == bool
    np.testing.assert_array_equal(mask.sum(1), [16, 1, 16, 16])  # "" is just eos; the rest are cut
    assert (ids[:, -1][[0, 2, 3]] == tok.eos_id).all()  # truncation keeps the eos
    np.testing.assert_array_equal(ids[1], [1] + [0] * 15)
    assert tok.decode(ids[0]) == TEXTS[0][:15]
    # A cut inside a multi-byte character drops the partial character, as ByT5's decode does.
    assert tok.decode(tok(["é東"], max_length=4)[0][0]) == "é"


def test_byte_tokenizer_matches_byt5():
    byt5 = pytest.importorskip("transformers").ByT5Tokenizer()  # needs no vocabulary file
    ours = ByteTokenizer()
    ref = byt5(TEXTS, padding="max_length", max_length=24, truncation=True, return_tensors="np")
    ids, mask = ours(TEXTS, max_length=24)
    np.testing.assert_array_equal(ids, ref["input_ids"])
    np.testing.assert_array_equal(mask, ref["attention_mask"].astype(bool))
    assert ours.vocab_size == len(byt5)
    assert ours.decode(ids[2]) == byt5.decode(ref["input_ids"][2], skip_special_tokens=True)


# --- the encoder against transformers -------------------------------------------------------


@pytest.mark.parametrize(
    "kind,ffn",
    [("umt5", "gated-gelu"), ("t5", "relu"), ("t5", "gated-gelu"), ("mt5", "gated-gelu")],
    ids=["umt5", "t5-original", "t5-v1.1", "mt5"],
)
def test_encoder_matches_transformers(kind, ffn):
    ref = tiny_reference(kind, ffn)
    hf_config = dict(ref.config.to_dict(), model_type=kind)
    cfg = TextEncoderConfig.from_hf_config(hf_config)
    assert cfg.per_layer_bias == (kind == "umt5") and cfg.gated == (ffn != "relu")
    model = nnx.eval_shape(lambda: T5Encoder(cfg, rngs=nnx.Rngs(0)))
    load_t5_params(model, ref.state_dict())
    ids, mask = ids_and_mask()
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    got = nnx.jit(lambda m, i, k: m(i, k))(model, jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy()))
    assert got.shape == (3, 40, 32)
    assert rel_err(got, expected) < 1e-4
    # The padding mask matters: without it the padded rows would differ.
    unmasked = nnx.jit(lambda m, i: m(i, jnp.ones(i.shape, bool)))(model, jnp.asarray(ids.numpy()))
    assert rel_err(unmasked[2, :7], expected[2, :7]) > 1e-3


@pytest.mark.parametrize("buckets,distance", [(32, 128), (16, 20), (64, 256)])
def test_relative_position_buckets_match_transformers(buckets, distance):
    from transformers.models.umt5.modeling_umt5 import UMT5Attention

    hf = transformers.UMT5Config(relative_attention_num_buckets=buckets, relative_attention_max_distance=distance)
    rel = torch.arange(-1100, 1100)[None]
    expected = UMT5Attention(hf, has_relative_attention_bias=True)._relative_position_bucket(rel).numpy()
    np.testing.assert_array_equal(relative_position_bucket(rel.numpy(), buckets, distance), expected)


def test_umt5_xxl_layout_matches_transformers():
    # Wan's text encoder (umt5-xxl) built on the meta device: every key and shape must line up.
    hf = transformers.UMT5Config(
        vocab_size=256384,
        d_model=4096,
        d_kv=64,
        d_ff=10240,
        num_layers=24,
        num_heads=64,
        feed_forward_proj="gated-gelu",
    )
    with torch.device("meta"):
        ref = transformers.UMT5EncoderModel(hf)
    shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    cfg = TextEncoderConfig.from_hf_config(dict(hf.to_dict(), model_type="umt5"))
    model = nnx.eval_shape(lambda: T5Encoder(cfg, rngs=nnx.Rngs(0)))
    seen = set()
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        key, convert = t5_key(path)
        assert convert(np.broadcast_to(np.float32(0), shapes[key])).shape == var.shape, key
        seen.add(key)
    assert set(shapes) - seen == {"encoder.embed_tokens.weight"}  # tied to shared.weight
    assert sum(int(np.prod(var.shape)) for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param))) > 5.6e9


# --- loading from a folder ------------------------------------------------------------------


def test_text_encoder_loads_a_transformers_folder(tmp_path):
    # Wan's diffusers layout: text_encoder/ (config.json + model.safetensors) and tokenizer/.
    ref = tiny_reference("umt5", "gated-gelu")
    ref.save_pretrained(tmp_path / "text_encoder")
    byt5 = transformers.ByT5Tokenizer()
    byt5.save_pretrained(tmp_path / "tokenizer")  # found again through AutoTokenizer
    assert (tmp_path / "text_encoder" / "model.safetensors").exists()

    enc = TextEncoder.from_pretrained(tmp_path / "text_encoder", tmp_path / "tokenizer", max_length=32)
    emb, mask = encode_text(TEXTS, enc)
    assert emb.shape == (4, 32, 32) and mask.shape == (4, 32)
    tok = byt5(TEXTS, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
    with torch.no_grad():
        expected = ref(**tok).last_hidden_state.numpy()
    np.testing.assert_array_equal(mask, tok["attention_mask"].numpy().astype(bool))
    expected = expected * mask[..., None]  # encode_text zeroes the padding
    assert rel_err(emb, expected) < 1e-4
    assert float(jnp.abs(emb[1, 1:]).max()) == 0.0

    # bfloat16 compute from the same folder stays close to float32.
    bf16 = load_t5_encoder(tmp_path / "text_encoder", dtype=jnp.bfloat16)
    ids = jnp.asarray(tok["input_ids"].numpy())
    out = nnx.jit(lambda m, i, k: m(i, k))(bf16, ids, mask)
    assert out.dtype == jnp.bfloat16
    assert rel_err(out.astype(jnp.float32) * mask[..., None], expected) < 5e-2


def test_text_encoder_loader_names_bad_keys(tmp_path):
    ref = tiny_reference("umt5", "gated-gelu")
    cfg = TextEncoderConfig.from_hf_config(dict(ref.config.to_dict(), model_type="umt5"))
    state = dict(ref.state_dict())

    def load(sd):
        load_t5_params(nnx.eval_shape(lambda: T5Encoder(cfg, rngs=nnx.Rngs(0))), sd)

    key = "encoder.block.2.layer.1.DenseReluDense.wi_1.weight"
    with pytest.raises(CheckpointError, match=rf"missing keys: {key}"):
        load({k: v for k, v in state.items() if k != key})
    with pytest.raises(CheckpointError, match=rf"shape mismatches: {key}: checkpoint \(64, 31\)"):
        load(dict(state, **{key: torch.zeros(64, 31)}))
    # A T5 (shared-bias) config cannot take UMT5's per-layer bias tables.
    t5cfg = cfg.replace(per_layer_bias=False)
    with pytest.raises(CheckpointError, match=r"unexpected keys: encoder\.block\.1\.layer\.0\.SelfAttention\.rel"):
        load_t5_params(nnx.eval_shape(lambda: T5Encoder(t5cfg, rngs=nnx.Rngs(0))), state)
    # Only the embedding under its tied name is fine; a decoder in the checkpoint is ignored.
    tied = {("encoder.embed_tokens.weight" if k == "shared.weight" else k): v for k, v in state.items()}
    load(dict(tied, **{"decoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match="no config.json"):
        load_t5_encoder(tmp_path)


# --- the file-free default ------------------------------------------------------------------


def test_default_encode_text_runs_without_files():
    emb, mask = encode_text(["a slow pan left", "", "arc shot around the subject"])
    assert emb.shape == (3, 256, 128) and emb.dtype == jnp.float32
    np.testing.assert_array_equal(mask.sum(1), [16, 1, 28])
    assert bool(jnp.isfinite(emb).all())
    assert float(jnp.abs(emb * ~mask[..., None]).max()) == 0.0
    assert float(jnp.abs(emb[0, :16]).min(axis=-1).max()) > 0  # real tokens carry signal
    again, _ = encode_text(["a slow pan left"])
    np.testing.assert_allclose(again[0], emb[0], rtol=1e-6, atol=1e-6)  # deterministic, row-independent
    assert not np.allclose(emb[0, :16], emb[2, :16])
    # Parameters carry logical axis names for the mesh rules.
    specs = nnx.get_partition_spec(nnx.state(TextEncoder.default().model, nnx.Param))
    assert tuple(specs["blocks"][0]["ffn"]["wi_0"]["kernel"].get_value()) == ("embed", "mlp")
    assert tuple(specs["embed_tokens"]["embedding"].get_value()) == ("vocab", "embed")
    # Sized to a model's text input (width 64, 16 tokens: the tiny_cpu MMDiT's text_dim/text_len).
    small, small_mask = encode_text(["dolly zoom"], TextEncoder.default(max_length=16, d_model=64, d_kv=16))
    assert small.shape == (1, 16, 64) and int(small_mask.sum()) == 11
    jax.block_until_ready(small)
