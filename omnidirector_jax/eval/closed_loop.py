"""Closed-loop evaluation (design §7): generate from a requested trajectory, estimate the generated video's
cameras and cuts, compare with the request.

    trajs = heldout_trajectories(16, height=64, width=64, num=17)      # or load_trajectory_dir(DIR)
    rows = evaluate(model, trajs, ablate_grid=False)

Every job is one synthetic example with known content: the reference image is the first frame of a procedural
world (`data.synth_world`) seen from the trajectory's first camera, with a seed the training set never used.
Three things are measured per trajectory:

* **camera following**: the generated frames go through the perception back ends (shot detector on the frames,
  then `vo` per detected shot with the requested intrinsics, on frames upscaled `upsample`× so the feature
  detector finds corners in 64-px frames) and `camera_metrics` compares them with the request (RRE, RTE, R-Pre,
  T-Pre, Tem-Pre). The same estimator on the world rendered along the request (the **oracle** row) says how
  much of the error is the estimator's own at this size.
* **ablation**: the same jobs with the grid blanked (the all-black grid the model saw under grid dropout, the
  prompt unchanged): what the grid contributes.
* **content leakage**: a synthetic pair per job, the reference *video* rendered in world B, the image from world
  A. The generated frames must look like A: each frame's colour histogram is compared (Bhattacharyya
  distance, HSV) with A's image and B's frames; a job fails when its frames are, on average, closer to B.

A trajectory the estimator cannot pose at all (no shot with ≥ 2 posed frames) counts with the worst scores
(RRE 180°, RTE 90°), never silently dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omnidirector_jax.camera.trajectory import Trajectory, load_trajectory, save_trajectory
from omnidirector_jax.errors import OmniDirectorError

log = logging.getLogger(__name__)

# Held-out classes: every single-shot move the training set draws and multi-shot clips (2 of each by default).
EVAL_CLASSES = ("dolly", "truck", "pedestal", "pan", "tilt", "roll", "orbit", "static", "multi_shot")
HELDOUT_SEED = 977_001  # never a training seed (builder seeds come from SeedSequence([seed, index]))
WORST = {"RRE": 180.0, "RTE": 90.0, "R-Pre": 0.0, "T-Pre": 0.0}
METRICS = ("RRE", "RTE", "R-Pre", "T-Pre", "Tem-Pre")


@dataclasses.dataclass
class EvalJob:
    """One held-out trajectory with its content: the image's world seed and the reference video's."""

    name: str
    cls: str
    traj: Trajectory
    image_seed: int
    reference_seed: int
    camera: str = ""


def heldout_trajectories(count: int, *, height: int, width: int, num: int, seed: int = HELDOUT_SEED,
                         classes: Sequence[str] = EVAL_CLASSES) -> list[EvalJob]:
    """`count` held-out jobs cycling through `classes` (multi-shot included), random amplitude and direction."""
    from omnidirector_jax.data.sample_trajectories import random_trajectory

    if count <= 0:
        raise OmniDirectorError(f"the evaluation needs at least one trajectory, got {count}")
    jobs = []
    for i in range(count):
        cls = classes[i % len(classes)]
        rng = np.random.default_rng([seed, i])
        traj, name, _, camera = random_trajectory(rng, num, height, width, name=cls)
        jobs.append(EvalJob(f"{i:03d}_{name}", name, traj, int(rng.integers(2**31)), int(rng.integers(2**31)), camera))
    return jobs


def write_trajectory_dir(jobs: Sequence[EvalJob], out: str | Path) -> Path:
    """One `NAME.json` trajectory per job plus `jobs.json` (class and world seeds): `eval --trajectories DIR`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for job in jobs:
        save_trajectory(job.traj, out / f"{job.name}.json")
        index.append({"name": job.name, "class": job.cls, "image_seed": job.image_seed,
                      "reference_seed": job.reference_seed, "camera": job.camera})
    (out / "jobs.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    return out


def load_trajectory_dir(path: str | Path, *, height: int, width: int) -> list[EvalJob]:
    """Jobs from a folder of trajectory files (.json / .npz). `jobs.json` (optional) gives classes and world
    seeds; otherwise the class is 'multi_shot' for trajectories with cuts, else 'unknown', and seeds are drawn
    from the file name."""
    import zlib

    path = Path(path)
    if not path.is_dir():
        raise OmniDirectorError(f"--trajectories {path} is not a folder")
    files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".npz") and p.name != "jobs.json")
    if not files:
        raise OmniDirectorError(f"{path} holds no trajectory (.json or .npz)")
    index = {}
    if (path / "jobs.json").is_file():
        index = {j["name"]: j for j in json.loads((path / "jobs.json").read_text(encoding="utf-8"))}
    jobs = []
    for f in files:
        traj = load_trajectory(f).resized(height, width)
        info = index.get(f.stem, {})
        salt = zlib.crc32(f.stem.encode())
        jobs.append(EvalJob(f.stem, info.get("class", "multi_shot" if traj.cuts else "unknown"), traj,
                        int(info.get("image_seed", salt)), int(info.get("reference_seed", salt + 1)),
                        info.get("camera", "")))
    return jobs


# ------------------------------------------------------------------------------------------- estimation
# The classical shot detector's 15-frame minimum shot (made for footage) merges the shots of the short clips the
# closed loop generates (17 frames, 2–3 shots of 4–8 frames); shots under 3 frames cannot be posed anyway.
MIN_SHOT_FRAMES = 3


def estimate_cameras(frames: np.ndarray, K: np.ndarray, *, fps: float = 25.0, upsample: int = 2,
                     weights: str | None = None, estimator: str = "vo",
                     min_shot_frames: int = MIN_SHOT_FRAMES) -> tuple[Trajectory, dict]:
    """Cuts and cameras of a video with known intrinsics: frames (N, H, W, 3) uint8, K (3, 3) or (N, 3, 3)
    pixels of H×W -> trajectory at H×W (cut frames marked) and the estimator's report. Without TransNetV2
    `weights`, cuts come from the classical detector with a `min_shot_frames` minimum shot, its neighbourhood
    one pair away from each pair (generated videos mark a cut with one white frame, whose two edges would
    otherwise hide each other when the shots around it are busy), and a uniform white frame entered from content
    taken as a cut on that frame (`flash_frames`: in flickering video neither edge need stand out)."""
    frames = np.asarray(frames)
    with _quiet("omnidirector_jax.perception"):
        return _estimate(frames, K, fps, upsample, weights, estimator, min_shot_frames)


@contextlib.contextmanager
def _quiet(name: str):
    """Per-video perception chatter (detector fallback, failed shots) stays out of a run over many videos:
    the report holds it."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _estimate(frames: np.ndarray, K: np.ndarray, fps: float, upsample: int, weights: str | None,
              estimator: str, min_shot_frames: int) -> tuple[Trajectory, dict]:
    import cv2

    from omnidirector_jax.perception.pose.base import PoseEstimationError
    from omnidirector_jax.perception.pose_estimators import make_estimator
    from omnidirector_jax.perception.shots import AdaptiveContentDetector, detect_shots

    n, h, w = frames.shape[:3]
    shots = detect_shots(frames, weights_dir=weights, progress=False,
                         detector=AdaptiveContentDetector(min_shot_length=min_shot_frames, gap=1, flash_frames=True))
    cuts = [int(c) for c in shots.cuts]
    K = np.broadcast_to(np.asarray(K, np.float64), (n, 3, 3))  # (3, 3) or one per frame; the first is used
    big = frames
    K_big = K[0].copy()
    if upsample > 1:
        big = np.stack([cv2.resize(f, (w * upsample, h * upsample), interpolation=cv2.INTER_CUBIC) for f in frames])
        K_big[:2] *= upsample
        K_big[:2, 2] += (upsample - 1) / 2.0  # pixel centres: x_big = s·x + (s − 1)/2
    still = Trajectory.create(np.tile(np.eye(3, 4), (n, 1, 1)), np.broadcast_to(K[0], (n, 3, 3)), height=h,
                              width=w, fps=fps, cuts=cuts)
    try:
        with warnings.catch_warnings(record=True) as caught:  # failed shots: kept in the report, not printed
            warnings.simplefilter("always")
            result = make_estimator(estimator).estimate(big, K_big, shots=still.shots(), progress=False)
    except PoseEstimationError as err:  # nothing posed at all: the cuts still count, the cameras get the worst
        return still, {"cuts": cuts, "shot_method": shots.method, "unposed": str(err)}
    for warning in caught:
        log.info("estimator: %s", warning.message)
    traj = Trajectory.create(result.w2c, np.broadcast_to(K[0], (n, 3, 3)), height=h, width=w, fps=fps, cuts=cuts)
    return traj, {"cuts": cuts, "shot_method": shots.method} | result.report()


def score(requested: Trajectory, estimated: Trajectory, report: dict | None = None) -> dict:
    """Camera metrics of one job; a video with no posed frame at all gets the worst scores."""
    from omnidirector_jax.eval.camera_metrics import camera_metrics

    m = camera_metrics(requested, estimated)
    row = {k: v for k, v in m.to_json().items() if k in METRICS}
    if report is not None and "unposed" in report:
        row.update(WORST)
        row["unposed"] = report["unposed"]
    for k in WORST:
        if row[k] is None or not np.isfinite(row[k]):
            row[k] = WORST[k]
    row["gen_transitions"], row["ref_transitions"] = m.gen_transitions, m.ref_transitions
    if report is not None:
        row["failed_shots"] = len(report.get("failed_shots", []))
    return row


# ---------------------------------------------------------------------------------------------- leakage
def _histogram(frame: np.ndarray) -> np.ndarray:
    import cv2

    hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [18, 8], [0, 180, 0, 256])
    return cv2.normalize(hist, None).flatten()


def leakage(generated: np.ndarray, image: np.ndarray, reference: np.ndarray, cuts: Sequence[int] = ()) -> dict:
    """Are the generated frames closer (HSV histogram, Bhattacharyya) to the image's world or the reference's?

    generated (N, H, W, 3), image (H, W, 3), reference (M, H, W, 3) uint8 -> distances and `leaked`."""
    import cv2

    keep = [i for i in range(len(generated)) if i not in set(cuts)]
    if not keep:
        raise OmniDirectorError("leakage: the generated video has no frame outside its cuts")
    ref_h = [_histogram(f) for f in reference]
    img_h = _histogram(image)
    to_image, to_reference = [], []
    for i in keep:
        h = _histogram(generated[i])
        to_image.append(cv2.compareHist(h, img_h, cv2.HISTCMP_BHATTACHARYYA))
        to_reference.append(min(cv2.compareHist(h, r, cv2.HISTCMP_BHATTACHARYYA) for r in ref_h))
    d_img, d_ref = float(np.mean(to_image)), float(np.mean(to_reference))
    return {"to_image": round(d_img, 4), "to_reference": round(d_ref, 4), "leaked": bool(d_ref < d_img)}


# ---------------------------------------------------------------------------------------------- the loop
def render_job(job: EvalJob, *, reference: bool = True) -> dict[str, np.ndarray]:
    """The job's content: `image` (first frame of world A along the trajectory), `truth` (world A along the
    whole trajectory: the oracle video) and `reference` (world B along it: the video a user would clone)."""
    from omnidirector_jax.data.synth_world import WorldConfig, render_trajectory

    world = WorldConfig(supersample=1)
    truth = render_trajectory(job.traj, seed=job.image_seed, config=world)
    out = {"image": truth[0], "truth": truth}
    if reference:
        out["reference"] = render_trajectory(job.traj, seed=job.reference_seed, config=world)
    return out


def summarize(rows: Sequence[dict], key: str) -> dict:
    """Means over rows of `row[key]` (one arm: 'oracle', 'grid' or 'no_grid'), overall and by class group, and
    `unposed`: how many of the group's videos the estimator could not pose at all (each scored the worst,
    180° / 90°, so a few of them move a mean more than every posed video together)."""

    def mean(rs: Sequence[dict], metric: str) -> float | None:
        vals = [r[key][metric] for r in rs if r.get(key) and r[key].get(metric) is not None]
        return round(float(np.mean(vals)), 4) if vals else None

    groups = {"all": list(rows), "single_shot": [r for r in rows if r["class"] != "multi_shot"],
              "multi_shot": [r for r in rows if r["class"] == "multi_shot"]}
    return {g: {m: mean(rs, m) for m in METRICS} | {"count": len(rs),
                                                     "unposed": sum(bool(r.get(key, {}).get("unposed")) for r in rs)}
            for g, rs in groups.items() if rs}


def evaluate(model: Any, jobs: Sequence[EvalJob], *, arms: Sequence[str] = ("grid", "no_grid"),
             oracle: bool = True, with_leakage: bool = True, seed: int = 0, upsample: int = 2,
             weights: str | None = None, batch_size: int | None = None, progress: bool = True,
             keep_videos: bool = False) -> dict:
    """Generate every job in every arm ('grid': the requested grid; 'no_grid': the grid blanked), estimate,
    score. Each arm is one batched generation (`generate_batch`: window w of every job in one sampler call).
    Returns {"rows": [...], "summary": {arm: ...}, "leakage": {...}} ("videos" too when `keep_videos`)."""
    from omnidirector_jax.diffusion.generate import Job, generate_batch
    from omnidirector_jax.prompting.rules import describe

    for arm in arms:
        if arm not in ("grid", "no_grid"):
            raise OmniDirectorError(f"unknown evaluation arm {arm!r} (grid, no_grid)")
    s = model.cfg.shape
    trajs = [job.traj.resized(s.height, s.width) for job in jobs]
    iterator = zip(jobs, trajs, strict=True)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=len(jobs), desc="rendering worlds", unit="job")
    contents = [render_job(dataclasses.replace(job, traj=traj), reference=with_leakage) for job, traj in iterator]
    rows: list[dict[str, Any]] = [{"name": job.name, "class": job.cls, "frames": traj.num_frames,
                                   "cuts": list(traj.cuts), "camera": job.camera, "prompt": describe(traj).text}
                                  for job, traj in zip(jobs, trajs, strict=True)]
    videos: dict[str, list] = {}
    for arm in arms:
        gen_jobs = [Job(traj, content["image"], row["prompt"], seed + i,
                        np.zeros((traj.num_frames, s.height, s.width, 3), np.uint8) if arm == "no_grid" else None)
                    for i, (traj, content, row) in enumerate(zip(trajs, contents, rows, strict=True))]
        log.info("generating %d videos (%s)", len(gen_jobs), arm)
        results = generate_batch(model, gen_jobs, batch_size=batch_size, progress=progress)
        for traj, content, row, result in zip(trajs, contents, rows, results, strict=True):
            est, rep = estimate_cameras(result["frames"], traj.K, fps=traj.fps, upsample=upsample, weights=weights)
            row[arm] = score(traj, est, rep)
            if arm == "grid" and with_leakage:
                row["leakage"] = leakage(result["frames"], content["image"], content["reference"], traj.cuts)
        if keep_videos:
            videos[arm] = results
    if oracle:
        for traj, content, row in zip(trajs, contents, rows, strict=True):
            est, rep = estimate_cameras(content["truth"], traj.K, fps=traj.fps, upsample=upsample, weights=weights)
            row["oracle"] = score(traj, est, rep)
    summary = {arm: summarize(rows, arm) for arm in ([*arms, "oracle"] if oracle else arms)}
    out: dict[str, Any] = {"rows": rows, "summary": summary}
    if with_leakage and "grid" in arms:
        leaked = [r["leakage"]["leaked"] for r in rows]
        out["leakage"] = {"failures": int(sum(leaked)), "jobs": len(leaked),
                          "failure_share": round(float(np.mean(leaked)), 4)}
    if keep_videos:
        videos["content"] = contents
        out["videos"] = videos
    return out


def format_summary(result: dict) -> str:
    """A plain-text table: one row per arm and group."""
    lines = [f"{'arm':<8} {'group':<12} {'n':>3} {'RRE °':>8} {'RTE °':>8} {'R-Pre':>6} {'T-Pre':>6} {'Tem-Pre':>7} "
             f"{'unposed':>7}"]
    for arm, groups in result["summary"].items():
        for group, m in groups.items():
            cells = [f"{m[k]:>8.2f}" if m[k] is not None else f"{'n/a':>8}" for k in ("RRE", "RTE")]
            cells += [f"{m[k]:>6.2f}" if m[k] is not None else f"{'n/a':>6}" for k in ("R-Pre", "T-Pre")]
            cells.append(f"{m['Tem-Pre']:>7.2f}" if m["Tem-Pre"] is not None else f"{'n/a':>7}")
            cells.append(f"{m.get('unposed', 0):>7d}")
            lines.append(f"{arm:<8} {group:<12} {m['count']:>3} " + " ".join(cells))
    if "leakage" in result:
        lk = result["leakage"]
        lines.append(f"content leakage: {lk['failures']}/{lk['jobs']} generated videos closer to the reference "
                     f"video's world than to the image's ({100 * lk['failure_share']:.0f}%)")
    return "\n".join(lines)
