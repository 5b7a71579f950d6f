"""Rule-based camera prompts on hand-built trajectories of every class, fast and slow, single and multi-shot."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from omnidirector_jax.camera.trajectory import Trajectory, load_trajectory, save_trajectory
from omnidirector_jax.cli import main
from omnidirector_jax.data import sample_trajectories as st
from omnidirector_jax.errors import OmniDirectorError
from omnidirector_jax.prompting.rules import VOCABULARY, RuleConfig, describe


def _traj(w2c, fps=25.0):
    return Trajectory.create(w2c, height=144, width=256, fps=fps)


def _one(w2c, **kw):
    """The single merged segment of a single-shot trajectory."""
    prompt = describe(_traj(w2c), RuleConfig(**kw))
    assert len(prompt.shots) == 1 and len(prompt.shots[0]) == 1, prompt.text
    return prompt.shots[0][0], prompt.text


# 49 frames at 25 fps: 1.92 s.
CASES = [
    (st.dolly(49, 1.5), "dolly in", "The camera dollies in."),
    (st.dolly(49, -1.5, tilt_deg=8.0), "dolly out", "The camera dollies out."),
    (st.truck(49, 1.2), "truck right", "The camera trucks right."),
    (st.truck(49, -1.2), "truck left", "The camera trucks left."),
    (st.pedestal(49, 1.0), "pedestal up", "The camera pedestals up."),
    (st.pedestal(49, -1.0), "pedestal down", "The camera pedestals down."),
    (st.pan(49, -30.0), "pan right", "The camera pans right."),
    (st.pan(49, 30.0), "pan left", "The camera pans left."),
    (st.tilt(49, -25.0), "tilt up", "The camera tilts up."),
    (st.tilt(49, 25.0), "tilt down", "The camera tilts down."),
    (st.roll(49, -25.0), "roll clockwise", "The camera rolls clockwise."),
    (st.roll(49, 25.0), "roll counter-clockwise", "The camera rolls counter-clockwise."),
    (st.orbit(49, 40.0, radius=2.0), "arc left", "The camera arcs left around the subject."),
    (st.orbit(49, -40.0, radius=2.0), "arc right", "The camera arcs right around the subject."),
    (st.static(49), "static", "The camera holds still."),
]


@pytest.mark.parametrize(("w2c", "motion", "text"), CASES, ids=[c[1] for c in CASES])
def test_every_class_at_normal_speed(w2c, motion, text):
    seg, got = _one(w2c)
    assert (seg.motion, got) == (motion, text)
    assert seg.speed in ("normal", "")


@pytest.mark.parametrize(("slow", "fast", "verb"), [
    (st.dolly(49, 0.3), st.dolly(49, 3.0), "dollies in"),
    (st.truck(49, -0.4), st.truck(49, -2.8), "trucks left"),
    (st.pedestal(49, 0.4), st.pedestal(49, 2.5), "pedestals up"),
    (st.pan(49, 12.0), st.pan(49, 80.0), "pans left"),
    (st.tilt(49, -12.0), st.tilt(49, -70.0), "tilts up"),
    (st.roll(49, 12.0), st.roll(49, 70.0), "rolls counter-clockwise"),
])
def test_slow_and_fast(slow, fast, verb):
    assert _one(slow)[1] == f"The camera slowly {verb}."
    assert _one(fast)[1] == f"The camera quickly {verb}."


def test_speed_is_per_second_and_scene_scale_rescales_it():
    # The same 1.5 m dolly over the same frames: quick at 50 fps, slow at 6 fps; and slow once a scene unit is 5 m.
    w2c = st.dolly(49, 1.5)
    assert describe(_traj(w2c, fps=50.0)).shots[0][0].speed == "fast"
    assert describe(_traj(w2c, fps=6.0)).shots[0][0].speed == "slow"
    assert describe(_traj(w2c), RuleConfig(scene_scale=5.0)).shots[0][0].speed == "slow"


def test_truck_with_same_side_pan_is_not_an_arc_but_a_compound():
    rot = np.stack([st.poses.rotation_from_euler_deg(0.0, a, 0.0) for a in np.linspace(0.0, 20.0, 49)])
    centers = np.linspace(0.0, 1.2, 49)[:, None] * np.array([1.0, 0.0, 0.0])
    # w2c pan +20° turns the optical axis left while the camera moves right: that is an arc around a subject...
    arc = st._w2c(rot, centers)
    assert _one(arc)[0].motion == "arc right"
    # ...while turning the way it moves is not.
    same = st._w2c(np.swapaxes(rot, 1, 2), centers)
    seg, text = _one(same)
    assert seg.motion == "truck right + pan right" and text == "The camera trucks right while panning right."


def test_sub_clips_keep_a_change_of_move_and_merge_equal_ones():
    # 33 frames forward 1 m, then 32 frames sideways 1 m (one shot, no cut).
    centers = np.concatenate([np.linspace(0.0, 1.0, 33)[:, None] * [0.0, 0.0, 1.0],
                              [0.0, 0.0, 1.0] + np.linspace(1 / 32, 1.0, 32)[:, None] * [1.0, 0.0, 0.0]])
    w2c = st._w2c(np.repeat(np.eye(3)[None], 65, 0), centers)
    prompt = describe(_traj(w2c))
    assert [s.motion for s in prompt.shots[0]] == ["dolly in", "truck right"]
    assert prompt.text == "The camera dollies in, then trucks right."
    assert prompt.shots[0][0].start == 0 and prompt.shots[0][-1].end == len(w2c) - 1
    # A long uniform pan is cut into several sub-clips and merged back into one segment.
    long = describe(_traj(st.pan(97, 60.0)))
    assert len(long.shots[0]) == 1 and long.shots[0][0].end == 96


def test_multi_shot_prompt_names_each_shot_and_each_cut():
    traj = st.multi_shot([st.dolly(24, 1.0), st.pan(24, -25.0), st.static(24)], 144, 256)
    prompt = describe(traj)
    assert [len(s) for s in prompt.shots] == [1, 1, 1]
    assert [t["frame"] for t in prompt.transitions] == list(traj.cuts)
    # Shot 2 starts back at the origin: 1 m behind where shot 1 ended (a wider view); shot 3 starts turned back
    # left by 25° from where the pan ended.
    assert prompt.text == ("Shot 1: the camera dollies in. Cut to a wider view. Shot 2: the camera pans right. "
                           "Cut to a view turned left. Shot 3: the camera holds still.")
    assert prompt.to_json()["shots"][1]["start"] == traj.shots()[1][0]


def test_transitions_reverse_angle_and_same_framing():
    back = st._w2c(np.repeat(st.poses.rotation_from_euler_deg(0, 180.0, 0)[None], 10, 0), np.zeros((10, 3)))
    traj = st.multi_shot([st.static(10), back, st.static(10)], 144, 256)
    labels = [t["label"] for t in describe(traj).transitions]
    assert labels == ["a reverse angle", "a reverse angle"]
    same = st.multi_shot([st.static(10), st.static(10)], 144, 256)
    assert describe(same).transitions[0]["label"] == "the same framing"


def test_camera_prompt_uses_only_the_rule_vocabulary():
    rng = np.random.default_rng(3)
    for _ in range(40):
        traj, *_ = st.random_trajectory(rng, 49, 144, 256)
        words = set(re.sub(r"[^a-z\- ]", " ", describe(traj).text.lower()).split())
        assert words <= VOCABULARY, words - VOCABULARY


def test_dolly_zoom_effect_is_named():
    path = Path(__file__).resolve().parents[2] / "data" / "trajectories" / "dolly_zoom.json"
    text = describe(load_trajectory(path)).text
    assert text.endswith("dollies out. The zoom keeps the subject the same size: a dolly zoom.")
    words = set(re.sub(r"[^a-z\- ]", " ", text.lower()).split())
    assert words <= VOCABULARY


def test_bad_thresholds_are_one_clear_error():
    with pytest.raises(OmniDirectorError, match="subclip_frames"):
        RuleConfig(subclip_frames=1)
    with pytest.raises(OmniDirectorError, match="static <= slow <= fast"):
        RuleConfig(slow_speed=2.0, fast_speed=1.0)


def test_describe_command(tmp_path, capsys):
    path = tmp_path / "three.json"
    save_trajectory(st.named("three_shot"), path)
    assert main(["describe", str(path)]) == 0
    assert capsys.readouterr().out.startswith("Shot 1: the camera quickly dollies in. Cut to a wider view.")
    assert main(["describe", str(path), "--json", "--prompt", "A lighthouse at dusk"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["shots"]) == 3 and out["prompt"].startswith("A lighthouse at dusk. Shot 1:")
    for bad in (["describe", str(tmp_path / "missing.json")],
                ["describe", str(path), "--prompt", "x", "--backend", "http", "--endpoint", "localhost"],
                ["describe", str(path), "--prompt", "x", "--image", str(tmp_path / "none.png")]):
        assert main(bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
