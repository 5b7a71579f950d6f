"""Config schema: committed configs load; every kind of invalid config fails at load with one clear line."""

from pathlib import Path

import pytest

from omnidirector_jax.cli import main
from omnidirector_jax.config import CONFIG_DIR, load_config, resolve_mesh
from omnidirector_jax.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny_cpu.yaml"


@pytest.mark.parametrize("name", ["tiny_cpu", "bench_cpu", "base_480p"])
def test_committed_configs_load(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml", num_devices=1 if name == "bench_cpu" else 8)
    assert cfg.name == name


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONFIG_DIR / "mesh").glob("*.yaml")))
def test_mesh_presets_load(preset):
    devices = 16 if "tpu" in preset or "multinode" in preset else 8
    cfg = load_config(TINY, [f"mesh={preset}", "shape.batch_size=16", "model.num_heads=8"], num_devices=devices)
    sizes = resolve_mesh(cfg.mesh, devices)
    assert sizes["data"] * sizes["fsdp"] * sizes["context"] * sizes["tensor"] == devices


def test_overrides_and_types():
    cfg = load_config(TINY, ["model.depth=3", "model.mlp_ratio=2", "model.patch_size=[1,4,4]",
                             "mesh.rules.embed=null", "model.attention=splash"], num_devices=8)
    assert cfg.model.depth == 3 and cfg.model.mlp_ratio == 2.0 and isinstance(cfg.model.mlp_ratio, float)
    assert cfg.model.patch_size == (1, 4, 4)
    assert cfg.mesh.rules["embed"] is None and cfg.mesh.rules["mlp"] == "tensor"  # the rest of the table stays


def test_include_merges_before_own_keys(tmp_path):
    (tmp_path / "child.yaml").write_text(f"include: [{TINY}]\nmodel: {{depth: 5}}\n")
    cfg = load_config(tmp_path / "child.yaml", num_devices=8)
    assert cfg.model.depth == 5 and cfg.model.hidden_size == 128


BAD = {
    "unknown_key": (["model.hiden_size=3"], "unknown key 'model.hiden_size'"),
    "unknown_section": (["modle.depth=3"], "unknown key 'modle'"),
    "wrong_type_int": (["model.depth=two"], "model.depth: expected int, got str 'two'"),
    "wrong_type_bool": (["model.qk_norm=3"], "model.qk_norm: expected bool"),
    "float_for_int": (["model.depth=2.5"], "model.depth: expected int"),
    "tuple_length": (["model.patch_size=[1,2]"], "model.patch_size: expected a list of 3 values"),
    "bad_choice": (["model.attention=flash"], "model.attention: 'flash' is not one of xla, cudnn, splash"),
    "bad_remat": (["model.remat=some"], "model.remat: 'some' is not one of"),
    "mesh_not_dividing": (["mesh.tensor=3"], "mesh: fixed axes multiply to 3, which does not divide 8 devices"),
    "mesh_product": (["mesh.data=2", "mesh.fsdp=2"], "mesh: axes multiply to 4 but there are 8 devices"),
    "two_fills": (["mesh.fsdp=-1"], "mesh: only one axis may be -1"),
    "heads_vs_tensor": (["mesh=fsdp_tensor", "model.num_heads=1", "model.hidden_size=64"],
                        "model.num_heads: 1 heads do not divide the tensor axis (2)"),
    "heads_vs_width": (["model.num_heads=3"], "model.num_heads: 3 does not divide model.hidden_size 128"),
    "rule_axis": (["mesh.rules.embed=model"], "mesh.rules.embed: 'model' is not a mesh axis"),
    "unknown_preset": (["mesh=ring"], "mesh: unknown preset 'ring'"),
    "not_key_value": (["model.depth"], "override 'model.depth' is not of the form key=value"),
    "frames": (["conditions.encoder=vae", "shape.vae_spatial=8", "shape.vae_temporal=4", "model.latent_channels=16",
                "shape.frames=6"], "shape.frames: 6 must be 1 + a multiple of shape.vae_temporal 4"),
    "pixel_channels": (["model.latent_channels=16"], "model.latent_channels: the pixel encoder makes 3 x "
                                                     "shape.vae_spatial^2 = 48 channels, got 16"),
    "vae_geometry": (["conditions.encoder=vae"], "the Wan VAE compresses 8x and 4x, got 4 and 1"),
    "bad_probability": (["train.self_recon_prob=1.5"], "train.self_recon_prob: must be in [0, 1], got 1.5"),
    "bad_raster": (["conditions.raster_method=splat"], "conditions.raster_method: 'splat' is not one of"),
    "batch_vs_mesh": (["shape.batch_size=4"], "shape.batch_size: 4 is not divisible by data x fsdp = 8"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_invalid_config_fails_with_one_line(case):
    overrides, message = BAD[case]
    with pytest.raises(ConfigError) as err:
        load_config(TINY, overrides, num_devices=8)
    text = str(err.value)
    assert message in text
    assert "\n" not in text


def test_scientific_floats_and_keyword_keys():
    cfg = load_config(TINY, ["train.learning_rate=1e-3", "init.from=/some/ckpt"], num_devices=8)
    assert cfg.train.learning_rate == 1e-3 and cfg.init.from_ == "/some/ckpt"


def test_bad_files(tmp_path):
    (tmp_path / "bad.yaml").write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(tmp_path / "bad.yaml", num_devices=8)
    (tmp_path / "list.yaml").write_text("model: 3\n")
    with pytest.raises(ConfigError, match="model: expected a mapping"):
        load_config(tmp_path / "list.yaml", num_devices=8)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml", num_devices=8)


def test_cli_reports_bad_config_in_one_line(capsys):
    assert main(["bench", "model", "--config", str(TINY), "--set", "model.depht=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown key 'model.depht'") and "\n" not in err
