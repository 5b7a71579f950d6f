"""`omnidirector clone`: the real multi-shot test video with the shipped model (white frames at the reference's
cuts, the preview), and bad input (missing checkpoint, unreadable reference or image, no estimable camera)."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from omnidirector_jax.cli import main
from omnidirector_jax.config import load_config
from omnidirector_jax.diffusion.generate import SHIPPED_MODEL
from omnidirector_jax.media import write_png, write_video
from omnidirector_jax.perception.video import read_video
from omnidirector_jax.train.export import write_export
from omnidirector_jax.train.state import create_model

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_model_is_in_the_package():
    assert (SHIPPED_MODEL / "params.npz").is_file() and (SHIPPED_MODEL / "config.json").is_file()
    assert (SHIPPED_MODEL / "params.npz").stat().st_size < 8_000_000  # a few MB


def test_clone_real_multi_shot_video_with_the_shipped_model(tmp_path, wheel_test_video, capsys):
    """First 300 frames of the wheel's music video: the result is white exactly at the reference's cuts."""
    from omnidirector_jax.perception.shots import detect_shots

    image = tmp_path / "image.png"
    write_png(image, np.full((90, 160, 3), (40, 90, 160), np.uint8))
    out = tmp_path / "clone.mp4"
    assert main(["clone", "--reference", str(wheel_test_video), "--max-frames", "300", "--image", str(image),
                 "--prompt", "a quiet library", "--out", str(out), "--steps", "2"]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    reference = read_video(wheel_test_video).frames[:300]
    cuts = [int(c) for c in detect_shots(reference).cuts]
    assert meta["cuts"] == cuts and len(cuts) >= 5
    frames = read_video(out).frames
    assert len(frames) == 300
    white = np.flatnonzero(frames.reshape(300, -1).min(axis=1) > 235)  # decoded H.264: near white
    assert white.tolist() == cuts
    preview = read_video(out.with_suffix(".preview.mp4")).frames
    assert len(preview) == 300 and preview.shape[2] > 2.5 * preview.shape[1]  # reference | grid | result
    assert "the camera" in meta["camera_prompt"] and "quiet library" in meta["prompt"]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    cfg = load_config(ROOT / "configs" / "tiny_cpu.yaml", ["model.hidden_size=64", "model.depth=1",
                      "model.single_depth=0", "model.num_heads=2", "shape.height=32", "shape.width=32",
                      "sampler.steps=1", "sampler.guidance=plain"], num_devices=None)
    params = nnx.state(create_model(cfg.model, 0)).to_pure_dict()
    params = jax.tree.map(lambda p: p + 0.02 * np.random.default_rng(0).standard_normal(p.shape), params)
    return write_export(cfg, params, tmp_path_factory.mktemp("export") / "model", dtype="float32")


def test_clone_bad_input(export, tmp_path, capsys):
    image = tmp_path / "image.png"
    write_png(image, np.full((32, 32, 3), 90, np.uint8))
    flat = tmp_path / "flat.mp4"
    write_video(flat, np.full((12, 64, 64, 3), 128, np.uint8), fps=12)
    out = str(tmp_path / "o.mp4")

    def run(*args):
        code = main(["clone", *args, "--out", out])
        return code, capsys.readouterr().err

    code, err = run("--reference", str(flat), "--image", str(image), "--checkpoint", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in err
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    code, err = run("--reference", str(broken), "--image", str(image), "--checkpoint", str(export))
    assert code == 2 and err.startswith("error:") and "broken.mp4" in err
    code, err = run("--reference", str(flat), "--image", str(broken), "--checkpoint", str(export))
    assert code == 2 and "cannot read the image" in err
    code, err = run("--reference", str(flat), "--image", str(image), "--checkpoint", str(export))
    assert code == 2 and "no camera pose could be estimated" in err and err.count("\n") == 1
