"""Closed-loop evaluation: the estimator on true renders (oracle), scoring of unposed videos, content leakage,
trajectory folders, and the `eval` / `demo` / `bench sample` commands on a small random model."""

import json
from pathlib import Path

import numpy as np
import pytest

from omnidirector_jax.cli import main
from omnidirector_jax.eval import closed_loop as cl

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["model.hidden_size=64", "model.depth=1", "model.single_depth=0", "model.num_heads=2", "shape.height=32",
         "shape.width=32", "sampler.steps=2", "sampler.guidance=plain"]


@pytest.fixture(scope="module")
def export(tiny_export):
    return tiny_export[0]


@pytest.mark.parametrize("cls", ["dolly", "truck", "orbit", "pan"])
def test_estimator_on_the_true_world_recovers_the_request(cls):
    """The oracle: the world rendered along the request at 64x64, estimated with 2x upsampling."""
    job = cl.heldout_trajectories(1, height=64, width=64, num=17, classes=(cls,))[0]
    truth = cl.render_job(job, reference=False)["truth"]
    est, report = cl.estimate_cameras(truth, job.traj.K, upsample=2)
    row = cl.score(job.traj, est, report)
    assert row["RRE"] < 3.0 and row["RTE"] < 10.0, row
    assert row["Tem-Pre"] == 1.0


def test_cuts_of_short_multi_shot_clips_are_found():
    """17-frame held-out clips have shots of 4-8 frames: the closed loop's detector (3-frame minimum shot) finds
    both cuts of a 3-shot clip; the footage default (15 frames) would merge them."""
    job = cl.heldout_trajectories(2, height=64, width=64, num=17, classes=("multi_shot",))[1]
    assert len(job.traj.cuts) == 2
    truth = cl.render_job(job, reference=False)["truth"]
    truth[list(job.traj.cuts)] = 255  # transition frames, as the sampler writes them
    est, report = cl.estimate_cameras(truth, job.traj.K, upsample=2)
    assert cl.score(job.traj, est, report)["Tem-Pre"] == 1.0
    merged, report = cl.estimate_cameras(truth, job.traj.K, upsample=2, min_shot_frames=15)
    assert cl.score(job.traj, merged, report)["Tem-Pre"] < 1.0


def test_unposed_video_scores_worst_and_cuts_still_count():
    job = cl.heldout_trajectories(1, height=32, width=32, num=9, classes=("dolly",))[0]
    flat = np.full((9, 32, 32, 3), 128, np.uint8)  # nothing to track
    est, report = cl.estimate_cameras(flat, job.traj.K, upsample=1)
    assert "unposed" in report
    row = cl.score(job.traj, est, report)
    assert (row["RRE"], row["RTE"], row["R-Pre"], row["T-Pre"]) == (180.0, 90.0, 0.0, 0.0)
    assert row["Tem-Pre"] == 1.0  # no cut requested, none found
    posed = dict(row, RRE=1.0, RTE=2.0)
    del posed["unposed"]
    rows = [{"class": "dolly", "grid": row}, {"class": "dolly", "grid": posed}, {"class": "multi_shot", "grid": posed}]
    summary = cl.summarize(rows, "grid")
    assert summary["all"]["unposed"] == 1 and summary["multi_shot"]["unposed"] == 0
    assert summary["all"]["RRE"] == round((180.0 + 1.0 + 1.0) / 3, 4)  # the mean keeps the worst score
    assert "unposed" in cl.format_summary({"summary": {"grid": summary}}).splitlines()[0]


def test_leakage_tells_the_worlds_apart():
    job = cl.heldout_trajectories(1, height=48, width=48, num=5, classes=("truck",))[0]
    content = cl.render_job(job)
    assert not cl.leakage(content["truth"], content["image"], content["reference"])["leaked"]
    assert cl.leakage(content["reference"], content["image"], content["reference"])["leaked"]
    with pytest.raises(Exception, match="no frame outside its cuts"):
        cl.leakage(content["truth"][:1], content["image"], content["reference"], cuts=[0])


def test_heldout_set_covers_classes_and_round_trips(tmp_path):
    jobs = cl.heldout_trajectories(10, height=32, width=32, num=11)
    assert {j.cls for j in jobs} == set(cl.EVAL_CLASSES)
    assert any(j.traj.cuts for j in jobs if j.cls == "multi_shot")
    again = cl.load_trajectory_dir(cl.write_trajectory_dir(jobs, tmp_path / "t"), height=32, width=32)
    assert [(j.name, j.cls, j.image_seed) for j in again] == [(j.name, j.cls, j.image_seed) for j in jobs]
    np.testing.assert_allclose(again[3].traj.w2c, jobs[3].traj.w2c, atol=1e-6)
    with pytest.raises(Exception, match="no trajectory"):
        cl.load_trajectory_dir(tmp_path, height=32, width=32)


def test_eval_and_demo_commands(export, tmp_path, capsys):
    jobs = cl.heldout_trajectories(2, height=32, width=32, num=7, classes=("dolly", "multi_shot"))
    folder = cl.write_trajectory_dir(jobs, tmp_path / "trajs")
    assert main(["eval", "--checkpoint", str(export), "--trajectories", str(folder), "--ablate-grid", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in result["rows"]] == [j.name for j in jobs]
    for arm in ("grid", "no_grid", "oracle"):
        assert result["summary"][arm]["all"]["count"] == 2
        assert all(0.0 <= r[arm]["RRE"] <= 180.0 and 0.0 <= r[arm]["RTE"] <= 90.0 for r in result["rows"])
    assert result["rows"][1]["cuts"] and result["leakage"]["jobs"] == 2
    assert main(["eval", "--checkpoint", str(export), "--trajectories", str(tmp_path / "none")]) == 2
    assert "is not a folder" in capsys.readouterr().err

    out = tmp_path / "demo"
    assert main(["demo", "--checkpoint", str(export), "--out", str(out), "--count", "2", "--frames", "7"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["trajectories"] == 2 and set(report["summary"]) == {"grid", "no_grid", "oracle"}
    page = (out / "report.html").read_text()
    for ex in report["examples"]:
        assert (out / ex["sheet"]).is_file() and (out / ex["video"]).is_file() and ex["sheet"] in page
    printed = capsys.readouterr().out
    assert "grid vs blanked" in printed
    for m in ("RRE", "RTE"):  # the paired count: per trajectory, which arm did better
        c = report["verdict"]["paired"][m]
        rows = report["rows"]
        assert c["grid_better"] == sum(r["grid"][m] < r["no_grid"][m] for r in rows)
        assert c["grid_better"] + c["blanked_better"] <= 2
        assert f"{m} lower with the grid in {c['grid_better']} of 2 trajectories" in printed


def test_bench_sample(capsys):
    args = ["bench", "sample", "--config", str(ROOT / "configs" / "tiny_cpu.yaml"), "--json", "--steps", "2",
            "--batch", "2"] + [x for kv in SMALL[:6] for x in ("--set", kv)]
    assert main(args) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["batch"] == 2 and r["forward_batch"] == 4 and r["compilations"] == 1
    assert all(v >= 0 for v in r["seconds"].values()) and r["step_over_forward"] > 0


def test_demo_verdict_pairs_each_trajectory():
    """The paired count on hand-made rows: one unposed video swings the mean, not the count."""
    from omnidirector_jax.eval.demo import _verdict, paired_line

    def row(g_rre, b_rre, g_rte=10.0, b_rte=10.0):
        return {"class": "pan", "grid": {"RRE": g_rre, "RTE": g_rte}, "no_grid": {"RRE": b_rre, "RTE": b_rte}}

    rows = [row(1.0, 12.0), row(2.0, 15.0), row(180.0, 10.0, 90.0, 20.0), row(5.0, 5.0)]
    summary = {"grid": {"all": {"RRE": 47.0, "RTE": 30.0}}, "no_grid": {"all": {"RRE": 10.5, "RTE": 12.5}}}
    v = _verdict(summary, rows)
    assert v["paired"] == {"RRE": {"grid_better": 2, "blanked_better": 1},
                           "RTE": {"grid_better": 0, "blanked_better": 1}}
    assert not v["rre_lower_with_grid"] and v["trajectories"] == 4
    assert paired_line(v).startswith("RRE lower with the grid in 2 of 4 trajectories (1 higher)")
