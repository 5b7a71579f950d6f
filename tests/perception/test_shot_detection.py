"""Shot detection without TransNetV2 weights: the classical fallback, the scene-list rule, video errors, CLI."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from omnidirector_jax.cli import main
from omnidirector_jax.errors import OmniDirectorError
from omnidirector_jax.media import write_video
from omnidirector_jax.perception.shots import (
    WEIGHTS_ENV,
    AdaptiveContentDetector,
    detect_shots,
    predictions_to_shots,
    synthetic_shots,
)
from omnidirector_jax.perception.video import read_video


@pytest.fixture(autouse=True)
def _no_configured_weights(monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)


@pytest.fixture(scope="module")
def three_shot_video(tmp_path_factory):
    """Three 40-frame shots of different moving textures, encoded as H.264 (cuts at frames 40 and 80)."""
    path = tmp_path_factory.mktemp("video") / "three_shots.mp4"
    write_video(path, synthetic_shots(120, 40, height=90, width=160, seed=1), fps=25)
    return path


def test_fallback_finds_synthetic_cuts_exactly(three_shot_video, caplog):
    with caplog.at_level(logging.WARNING, logger="omnidirector_jax.perception.shots"):
        result = detect_shots(three_shot_video)
    assert "no TransNetV2 weights configured" in caplog.text
    assert result.method == "adaptive-content"
    assert result.num_frames == 120 and result.fps == pytest.approx(25.0)
    assert result.cuts.tolist() == [40, 80]
    assert result.transitions.tolist() == [39, 79]  # the last frame of each old shot, as TransNetV2 marks it
    assert result.shots.tolist() == [[0, 39], [40, 79], [80, 119]]


def test_fallback_on_frames_of_other_seeds_and_lengths():
    for seed, length in [(2, 30), (5, 50), (7, 25)]:
        frames = synthetic_shots(4 * length, length, height=72, width=128, seed=seed)
        assert detect_shots(frames).cuts.tolist() == [length, 2 * length, 3 * length], (seed, length)


def test_fallback_ignores_motion_and_brightness_drift():
    """A single panning shot whose brightness drifts has no cut, even though every frame changes."""
    frames = synthetic_shots(150, 150, seed=3).astype(np.float32)
    frames *= np.linspace(0.7, 1.0, len(frames))[:, None, None, None]
    result = detect_shots(frames.astype(np.uint8))
    assert result.cuts.size == 0 and result.shots.tolist() == [[0, 149]]
    assert result.probabilities.max() < 0.45


def test_fallback_minimum_shot_length_keeps_the_stronger_cut():
    frames = synthetic_shots(100, 50, seed=4)
    flash = frames.copy()
    flash[55] = 255 - flash[55]  # a one-frame flash 5 frames after the cut at 50
    detector = AdaptiveContentDetector(min_shot_length=15)
    probs, _ = detector.probabilities(flash)
    assert np.flatnonzero(probs > 0.5).tolist() == [49]
    probs_short, _ = AdaptiveContentDetector(min_shot_length=1).probabilities(flash)
    hot = np.flatnonzero(probs_short > 0.5).tolist()
    assert hot[0] == 49 and len(hot) > 1 and set(hot[1:]) <= {54, 55}  # the flash reads as a cut too


def test_gap_finds_a_white_cut_frame_between_busy_shots():
    """A cut marked by one white frame between shots that change a lot every frame: its two edges sit in each
    other's neighbourhood and hide each other (gap 0); gap 1 leaves them out and finds the cut."""
    rng = np.random.default_rng(5)
    base = rng.integers(40, 120, (2, 1, 32, 32, 3))
    frames = np.concatenate([base[0].repeat(8, 0), base[1].repeat(9, 0)])  # shots of 8 and 9 frames
    frames = np.clip(frames + rng.integers(-12, 12, frames.shape), 0, 255).astype(np.uint8)  # busy: noise each frame
    frames[8] = 255
    plain, info = AdaptiveContentDetector(min_shot_length=3).probabilities(frames)
    assert not (plain > 0.5).any() and info["ratio"][7] < 3.0
    probs, _ = AdaptiveContentDetector(min_shot_length=3, gap=1).probabilities(frames)
    assert np.flatnonzero(probs > 0.5).tolist() in ([7], [8])
    # gap 0 is the detector as it was: the neighbourhood of pair t is pairs t-2..t+2 without t
    content = AdaptiveContentDetector.content_scores(frames)
    want = content[7] / np.mean(content[[5, 6, 8, 9]])
    np.testing.assert_allclose(info["ratio"][7], want, rtol=1e-5)


def test_flash_frames_put_the_cut_on_a_white_or_black_frame_in_flickering_video():
    """Shots that flicker as much from frame to frame as a white frame changes them: no pair stands out, even
    with gap 1; `flash_frames` finds each uniform white or black frame entered from content, and puts the cut
    on it (the next shot starts there). A uniform mid-grey frame, or a second white frame, is not a flash."""
    rng = np.random.default_rng(7)
    base = rng.integers(60, 200, (3, 1, 32, 32, 3))
    frames = np.concatenate([base[0].repeat(8, 0), base[1].repeat(8, 0), base[2].repeat(8, 0)])
    frames = np.clip(frames + rng.integers(-90, 90, frames.shape), 0, 255).astype(np.uint8)  # heavy flicker
    frames[8], frames[16] = 255, 0  # a white and a black cut frame
    frames[17] = 0  # a fade: only its first frame is entered from content
    frames[4] = 128  # uniform grey: no flash
    gap_only, _ = AdaptiveContentDetector(min_shot_length=3, gap=1).probabilities(frames)
    assert not (gap_only > 0.5).any()
    detector = AdaptiveContentDetector(min_shot_length=3, gap=1, flash_frames=True)
    assert detector.flash_indices(frames) == [8, 16]
    probs, _ = detector.probabilities(frames)
    assert np.flatnonzero(probs > 0.5).tolist() == [7, 15]
    assert detect_shots(frames, detector=detector).cuts.tolist() == [8, 16]
    assert AdaptiveContentDetector(flash_frames=True).flash_indices(frames[:8]) == []


@pytest.mark.parametrize(("hot", "shots"), [
    ([0, 0, 1, 0, 0], [[0, 2], [3, 4]]),
    ([0, 1, 1, 1, 0, 0], [[0, 1], [4, 5]]),  # frames 2-3 of a gradual transition belong to no shot
    ([1, 1, 0, 0], [[2, 3]]),
    ([0, 0, 1], [[0, 2]]),
    ([0, 1, 0, 1, 0], [[0, 1], [2, 3], [4, 4]]),
    ([1, 1, 1], [[0, 2]]),
    ([0], [[0, 0]]),
])
def test_predictions_to_shots_rule(hot, shots):
    probs = np.where(np.array(hot) == 1, 0.9, 0.1)
    assert predictions_to_shots(probs, 0.5).tolist() == shots


def test_read_video_resizes_and_keeps_rgb(tmp_path):
    frames = np.zeros((3, 90, 160, 3), np.uint8)
    frames[..., 0] = 220  # red: a BGR/RGB mix-up would show up in channel 2
    write_video(tmp_path / "red.mp4", frames)
    video = read_video(tmp_path / "red.mp4", (48, 27))
    assert video.frames.shape == (3, 27, 48, 3) and video.source_size == (90, 160)
    assert video.frames[..., 0].mean() > 180 and video.frames[..., 2].mean() < 40


def _bad_videos(tmp_path):
    """Paths of videos that cannot give shots, with the phrase their error must contain."""
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video")
    # A valid mp4 header (moov first) with the frame data cut off: opens, but no frame decodes.
    whole = tmp_path / "whole.mp4"
    import imageio_ffmpeg

    writer = imageio_ffmpeg.write_frames(str(whole), (64, 48), fps=25.0, codec="libx264", macro_block_size=1,
                                         output_params=["-loglevel", "error", "-movflags", "+faststart"])
    writer.send(None)
    for value in range(0, 250, 25):
        writer.send(np.full((48, 64, 3), value, np.uint8))
    writer.close()
    blob = whole.read_bytes()
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(blob[: blob.index(b"mdat") + 4])
    one = tmp_path / "one.mp4"
    write_video(one, np.full((1, 48, 64, 3), 128, np.uint8))
    return [(tmp_path / "missing.mp4", "does not exist"), (text, "cannot read"), (empty, "no decodable video frames"),
            (one, "only 1 frame")]


def test_bad_videos_raise_clear_errors(tmp_path):
    for path, phrase in _bad_videos(tmp_path):
        with pytest.raises(OmniDirectorError, match=phrase):
            detect_shots(path)


def test_cli_bad_videos_exit_2_with_one_line(tmp_path, capsys):
    for path, phrase in _bad_videos(tmp_path):
        code = main(["shots", str(path), "--out", str(tmp_path / "shots.json")])
        err = capsys.readouterr().err.strip().splitlines()
        errors = [line for line in err if line.startswith("error:")]
        assert code == 2, (path, err)
        assert len(errors) == 1 and phrase in errors[0], err
    assert not (tmp_path / "shots.json").exists()


def test_cli_shots_writes_json(three_shot_video, tmp_path, capsys):
    out = tmp_path / "out" / "shots.json"
    assert main(["shots", str(three_shot_video), "--out", str(out)]) == 0
    assert "3 shots in 120 frames" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["cuts"] == [40, 80] and data["shots"] == [[0, 39], [40, 79], [80, 119]]
    assert data["transitions"] == [39, 79] and len(data["probabilities"]) == 120
    assert data["method"] == "adaptive-content" and "many_hot" not in data


def test_cli_rejects_bad_threshold_and_weights(three_shot_video, tmp_path, capsys):
    assert main(["shots", str(three_shot_video), "--out", str(tmp_path / "a.json"), "--threshold", "1.5"]) == 2
    assert "threshold must be between 0 and 1" in capsys.readouterr().err
    assert main(["shots", str(three_shot_video), "--out", str(tmp_path / "a.json"),
                 "--weights", str(tmp_path / "nowhere")]) == 2
    assert "checkpoint folder" in capsys.readouterr().err
