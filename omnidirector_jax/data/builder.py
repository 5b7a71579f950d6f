"""Dataset builder: synthetic worlds or a folder of videos → clip records in ArrayRecord shards.

The unit of work is an **input**: a block of ``per_shard`` synthetic examples, or one video file. One pure
function (:func:`input_records`) turns an input into encoded records; :func:`run_input` writes them as one
shard plus a *done marker* (``DIR/done/<name>.json``: the shard's ids and checksum, what was skipped and
why), both atomically and in that order. So a build killed at any moment and started again with the same
command redoes only the inputs without a marker, and a finished build started again writes nothing. The
manifest and ``report.json`` are rebuilt from the markers in input order (sorted keys), so they do not
depend on which worker, machine (``--shard i/N``) or restart finished which input.

The same :func:`run_input` runs inline, in a pool of worker processes (``--workers``), or as the map step of
an Apache Beam pipeline (``--runner beam``). With Beam on a distributed runner, ``DIR`` must be a POSIX
path every worker can write (e.g. a network or gcsfuse mount): shards are written with rename-based
atomic writes.

Build settings live in ``DIR/build.json``; starting again with different settings is refused (a mixed
dataset would be silently inconsistent). The number of workers, the runner and the ``--shard`` split are
not settings: they never change what is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from omnidirector_jax.data import records as R
from omnidirector_jax.errors import OmniDirectorError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm")
BUILD_NAME = "build.json"
REPORT_NAME = "report.json"
DONE_DIR = "done"


class BuildError(OmniDirectorError):
    """A dataset build that cannot start or go on (bad folder, settings that differ from the first run)."""


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """What determines the records (written to ``DIR/build.json``)."""

    source: str  # "synthetic", or the videos folder (absolute path)
    num_synthetic: int = 0
    height: int = 64
    width: int = 64
    frames: int = 17
    fps: float | None = None  # videos: resample to this rate (None: the video's); synthetic: 25 when None
    stride: int | None = None  # videos: start-to-start distance of clips in sampled frames (None: frames)
    seed: int = 0
    image_format: str = "jpeg"
    quality: int = 95
    per_shard: int = 8  # synthetic examples per shard (the unit of resumption)
    supersample: int = 2  # synthetic: rays per pixel along each axis
    estimator: str = "vo"
    weights: str | None = None
    threshold: float = 0.5
    max_width: int = 640

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"

    def validate(self) -> None:
        if self.height < 8 or self.width < 8:
            raise BuildError(f"--size must be at least 8x8, got {self.height}x{self.width}")
        if self.frames < 2:
            raise BuildError(f"--frames must be at least 2, got {self.frames}")
        if self.fps is not None and not self.fps > 0:
            raise BuildError(f"--fps must be positive, got {self.fps}")
        if self.stride is not None and self.stride < 1:
            raise BuildError(f"--stride must be at least 1, got {self.stride}")
        if self.image_format not in R.IMAGE_FORMATS:
            raise BuildError(f"--image-format must be one of {R.IMAGE_FORMATS}, got {self.image_format!r}")
        if not 1 <= self.quality <= 100:
            raise BuildError(f"--quality must be in 1..100, got {self.quality}")
        if self.synthetic:
            if self.num_synthetic < 1:
                raise BuildError(f"--synthetic needs a positive number of examples, got {self.num_synthetic}")
            if self.frames < 5:
                raise BuildError("synthetic clips need at least 5 frames (2-shot clips: 2 + cut + 2)")
            if not 1 <= self.supersample <= 8:
                raise BuildError(f"--supersample must be in 1..8, got {self.supersample}")
        if self.per_shard < 1:
            raise BuildError(f"--per-shard must be at least 1, got {self.per_shard}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class WorkItem:
    """One input: synthetic example indices, or a video path relative to the source folder."""

    key: str  # unique; the manifest lists inputs in sorted key order
    name: str  # file stem of its shard and done marker
    indices: tuple[int, ...] = ()
    video: str = ""


# ------------------------------------------------------------------------------------------------ inputs
def list_inputs(config: BuildConfig) -> list[WorkItem]:
    """Every input of the build, sorted by key (the same list on every machine)."""
    if config.synthetic:
        step = config.per_shard
        return [WorkItem(f"synthetic/{a:09d}", f"synthetic-{a:09d}", tuple(range(a, min(a + step,
                                                                                       config.num_synthetic))))
                for a in range(0, config.num_synthetic, step)]
    folder = Path(config.source)
    if not folder.is_dir():
        raise BuildError(f"videos folder {folder} does not exist")
    videos = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                    if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not videos:
        raise BuildError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) in {folder}")
    items = []
    for rel in videos:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", rel)[-80:].lstrip(".")
        items.append(WorkItem(rel, f"{stem}-{hashlib.sha256(rel.encode()).hexdigest()[:10]}", video=rel))
    return items


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/N"`` → (i, N) with 0 ≤ i < N."""
    if text is None:
        return 0, 1
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise BuildError(f"--shard must be i/N with 0 <= i < N, got {text!r}")
    return int(match[1]), int(match[2])


# ------------------------------------------------------------------------------------- synthetic inputs
_HUES = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink")


def _example_seed(base_seed: int, index: int) -> int:
    return int(np.random.SeedSequence([base_seed, index]).generate_state(1)[0])


def synthetic_record(config: BuildConfig, index: int) -> R.ClipRecord:
    """Example ``index``: a random trajectory (class, amplitude, direction) seen in procedural rooms."""
    from omnidirector_jax.data.sample_trajectories import random_trajectory
    from omnidirector_jax.data.synth_world import WorldConfig, render_trajectory

    seed = _example_seed(config.seed, index)
    rng = np.random.default_rng(seed)
    fps = float(config.fps or 25.0)
    traj, cls, shot_classes, camera = random_trajectory(rng, config.frames, config.height, config.width, fps)
    world = dataclasses.replace(WorldConfig(), supersample=config.supersample)
    frames, depth = render_trajectory(traj, seed=seed, config=world, with_depth=True)
    hue = _HUES[int(np.random.default_rng([seed]).random() * len(_HUES)) % len(_HUES)]  # shot 0's room hue
    caption = f"a procedurally generated room with textured walls, boxes and spheres, in {hue} tones"
    if len(shot_classes) > 1:
        caption += f", cutting between {len(shot_classes)} differently coloured rooms"
    valid = np.ones(traj.num_frames, bool)
    valid[list(traj.cuts)] = False  # a cut frame's pose is a placeholder
    return R.ClipRecord(
        id=R.clip_id("synthetic", 0, config.frames, f"seed={config.seed}/index={index}/{config.height}x"
                                                    f"{config.width}/ss={config.supersample}"),
        w2c=traj.w2c.astype(np.float32), K=traj.K.astype(np.float32),
        dist=np.zeros((traj.num_frames, 4), np.float32), cuts=tuple(traj.cuts), frames=frames,
        ref_image=frames[0].copy(), caption=caption, camera_prompt="",
        meta={"source": "synthetic", "index": index, "seed": seed, "base_seed": config.seed, "class": cls,
              "shot_classes": shot_classes, "camera": camera, "fps": fps, "estimator": "ground-truth",
              "frame_range": [0, config.frames], "valid": valid,
              # camera-z depth per frame and pixel (world units): teaches model.reader_depth its depth net
              "depth": depth.astype(np.float16)})


# ----------------------------------------------------------------------------------------- video inputs
def _crop_resize(frames: np.ndarray, K: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre-crop to the target aspect ratio, then resize; intrinsics follow (pixel centres at integers)."""
    import cv2

    h, w = frames.shape[1:3]
    if w * height > h * width:  # too wide: crop columns
        cw, ch = round(h * width / height), h
    else:
        cw, ch = w, round(w * height / width)
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    sx, sy = width / cw, height / ch
    K = K.astype(np.float64).copy()
    K[:, 0, 2] -= x0
    K[:, 1, 2] -= y0
    K[:, 0, 0] *= sx
    K[:, 0, 1] *= sx
    K[:, 1, 1] *= sy
    K[:, 0, 2] = (K[:, 0, 2] + 0.5) * sx - 0.5
    K[:, 1, 2] = (K[:, 1, 2] + 0.5) * sy - 0.5
    out = np.stack([cv2.resize(np.ascontiguousarray(f[y0:y0 + ch, x0:x0 + cw]), (width, height),
                               interpolation=cv2.INTER_AREA) for f in frames])
    return out, K.astype(np.float32)


def sampled_timeline(num_frames: int, step: int, cuts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Source frames kept at ``step`` and, for each, whether a cut falls since the previous kept frame
    (that kept frame then becomes the cut: it is the first one showing the new shot)."""
    kept = np.arange(0, num_frames, step)
    cut_at = np.asarray(sorted(cuts), dtype=np.int64)
    prev = np.concatenate([[-1], kept[:-1]])
    is_cut = np.searchsorted(cut_at, kept, side="right") > np.searchsorted(cut_at, prev, side="right")
    return kept, is_cut


def video_records(config: BuildConfig, rel: str) -> tuple[list[R.ClipRecord], list[dict]]:
    """Clips of one video → (records, skipped entries). Problems with the file are reported, not raised."""
    import warnings

    from omnidirector_jax.perception.extract_commands import extract_trajectory
    from omnidirector_jax.perception.video import read_video

    path = Path(config.source) / rel
    try:
        video = read_video(path)
    except OmniDirectorError as err:
        return [], [{"input": rel, "reason": "unreadable", "detail": str(err)}]
    num = len(video.frames)
    step = max(1, round(video.fps / config.fps)) if config.fps else 1
    needed = (config.frames - 1) * step + 1
    if num < max(2, needed):
        return [], [{"input": rel, "reason": "too short",
                     "detail": f"{num} frame(s); a {config.frames}-frame clip at step {step} needs {needed}"}]
    poses_path = path.with_suffix(".npz") if config.estimator == "npz" else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # failed shots come back in the report as well
            traj, rep = extract_trajectory(path, estimator=config.estimator, poses_path=poses_path,
                                           weights=config.weights, threshold=config.threshold,
                                           max_width=config.max_width, progress=False)
    except OmniDirectorError as err:
        return [], [{"input": rel, "reason": "pose estimation failed", "detail": str(err)}]
    valid = np.asarray(rep["valid"], bool)
    shot_of = traj.shot_index()
    failed = set(rep["failed_shots"])
    kept, is_cut = sampled_timeline(num, step, traj.cuts)
    cut_set = set(traj.cuts)
    stride = config.stride or config.frames
    recs, skipped = [], []
    fps = video.fps / step
    for p in range(0, len(kept) - config.frames + 1, stride):
        idx = kept[p:p + config.frames]
        flags = is_cut[p:p + config.frames].copy()
        flags[0] = int(idx[0]) in cut_set  # a cut just before the clip starts does not concern it
        cuts = tuple(int(i) for i in np.flatnonzero(flags))
        live = np.setdiff1d(np.arange(config.frames), cuts)
        bad = sorted({int(s) for s in shot_of[idx[live]] if s in failed})
        if bad:
            skipped.append({"input": rel, "reason": "pose estimation failed for a shot",
                            "detail": f"clip of frames {int(idx[0])}–{int(idx[-1])}: shot(s) {bad} have no poses "
                                      f"({'; '.join(rep['messages'][s] for s in bad)})"})
            continue
        frames, K = _crop_resize(video.frames[idx], traj.K[idx], config.height, config.width)
        clip_valid = valid[idx].copy()
        clip_valid[list(cuts)] = False
        recs.append(R.ClipRecord(
            id=R.clip_id(rel, int(idx[0]), int(idx[-1]) + 1, f"step={step}"),
            w2c=traj.w2c[idx].astype(np.float32), K=K, dist=np.zeros((config.frames, 4), np.float32),
            cuts=cuts, frames=frames, ref_image=frames[0].copy(), caption="", camera_prompt="",
            meta={"source": rel, "fps": fps, "source_fps": video.fps, "frame_range": [int(idx[0]), int(idx[-1]) + 1],
                  "frame_step": step, "shots": sorted({int(s) for s in shot_of[idx] if s >= 0}),
                  "estimator": config.estimator, "shot_method": rep["shot_method"], "class": "video",
                  "valid": clip_valid}))
    if not recs and not skipped:
        skipped.append({"input": rel, "reason": "too short",
                        "detail": f"{len(kept)} sampled frame(s) < {config.frames}"})
    return recs, skipped


# ------------------------------------------------------------------------------------------ one input
def input_records(config: BuildConfig, item: WorkItem) -> tuple[list[R.ClipRecord], list[dict]]:
    """The pure function of the build: an input → its records (in a fixed order) and what was skipped."""
    if config.synthetic:
        return [synthetic_record(config, i) for i in item.indices], []
    return video_records(config, item.video)


def done_path(out: Path, item: WorkItem) -> Path:
    return out / DONE_DIR / f"{item.name}.json"


def read_done(out: Path, item: WorkItem) -> dict | None:
    """The done marker of an input when it exists and its shard is intact (same size), else None."""
    path = done_path(out, item)
    if not path.is_file():
        return None
    try:
        done = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        log.warning("done marker %s is corrupt: redoing %s", path, item.key)
        return None
    shard = done.get("shard")
    if shard and (not (out / shard["path"]).is_file() or (out / shard["path"]).stat().st_size != shard["bytes"]):
        log.warning("shard %s of %s is missing or truncated: redoing it", shard["path"], item.key)
        return None
    return done


def _remove_stale_temps(out: Path, item: WorkItem) -> None:
    """Temporary files of this input left by a killed run (only this input's: other machines may be
    writing theirs)."""
    for folder, stem in ((out / R.SHARD_DIR, item.name + R.SHARD_SUFFIX), (out / DONE_DIR, item.name + ".json")):
        for tmp in folder.glob(f".{stem}.*.tmp"):
            tmp.unlink(missing_ok=True)


def run_input(config: BuildConfig, out: str | Path, item: WorkItem) -> dict:
    """Build one input unless its done marker exists: records → shard → marker (each write atomic)."""
    out = Path(out)
    done = read_done(out, item)
    if done is not None:
        return done
    _remove_stale_temps(out, item)
    start = time.perf_counter()
    recs, skipped = input_records(config, item)
    shard = None
    if recs:
        rel = f"{R.SHARD_DIR}/{item.name}{R.SHARD_SUFFIX}"
        blobs = [R.encode_record(r, config.image_format, config.quality) for r in recs]
        info = R.write_shard(out / rel, blobs)
        shard = {"path": rel, "ids": [r.id for r in recs], **info}
    classes = Counter(str(r.meta.get("class", "unknown")) for r in recs)
    done = {"key": item.key, "shard": shard, "records": len(recs), "skipped": skipped,
            "classes": dict(sorted(classes.items())), "seconds": round(time.perf_counter() - start, 3)}
    R.atomic_write_json(done_path(out, item), done)
    return done


def _worker_init(root_level: int, levels: dict[str, int]) -> None:
    """Worker processes log like the parent (spawned workers start with logging unconfigured)."""
    logging.basicConfig(level=root_level, format="%(levelname)s %(message)s")
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _run_input_star(args: tuple) -> tuple[WorkItem, dict]:
    config, out, item = args
    return item, run_input(config, out, item)


# -------------------------------------------------------------------------------------------- the build
def prepare_output(config: BuildConfig, out: Path) -> None:
    """Create ``out`` or check that it holds a build with the same settings (never mixes two builds)."""
    if out.exists() and not out.is_dir():
        raise BuildError(f"--out {out} exists and is not a folder")
    build = out / BUILD_NAME
    if (out / R.MANIFEST_NAME).is_file():
        R.read_manifest(out)  # a manifest from a newer schema (or corrupt): say so and touch nothing
    if build.is_file():
        try:
            previous = json.loads(build.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BuildError(f"{build} is corrupt ({err}); remove it only if {out} holds no records") from None
        if previous != config.to_json():
            diff = sorted(k for k in set(previous) | set(config.to_json())
                          if previous.get(k) != config.to_json().get(k))
            raise BuildError(f"{out} was built with other settings ({', '.join(diff)} differ); use the same "
                             "options to resume, or another --out")
    elif out.is_dir() and any(not _is_temp(p) for p in out.iterdir()):
        raise BuildError(f"{out} is not empty and holds no {BUILD_NAME}: choose an empty or new folder")
    for tmp in out.glob(f".{BUILD_NAME}.*.tmp"):  # a run killed while writing build.json
        tmp.unlink(missing_ok=True)
    R.atomic_write_json(build, config.to_json())


def _is_temp(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")


def finalize(config: BuildConfig, out: Path, items: Sequence[WorkItem]) -> tuple[dict, dict]:
    """Manifest and report from every done marker (all machines' inputs), in key order; written only when
    they changed. Returns (manifest, report)."""
    shards, skipped, per_input, classes = [], [], [], Counter()
    done_count = 0
    for item in items:
        done = read_done(out, item)
        if done is None:
            continue
        done_count += 1
        if done["shard"]:
            shards.append(done["shard"])
        skipped += done["skipped"]
        classes.update(done["classes"])
        per_input.append({"input": item.key, "records": done["records"], "skipped": len(done["skipped"])})
    fps = float(config.fps or 25.0) if config.synthetic else config.fps
    manifest = R.make_manifest(shards, frame_size=(config.height, config.width), num_frames=config.frames,
                               fps=fps, image_format=config.image_format, config=config.to_json())
    manifest["complete"] = done_count == len(items)
    manifest["classes"] = dict(sorted(classes.items()))
    report = {"complete": done_count == len(items), "inputs": len(items), "inputs_done": done_count,
              "records": manifest["num_records"], "classes": dict(sorted(classes.items())),
              "skipped_by_reason": dict(sorted(Counter(s["reason"] for s in skipped).items())),
              "skipped": skipped, "per_input": per_input}
    R.write_manifest(out, manifest)
    R.atomic_write_json(out / REPORT_NAME, report)
    return manifest, report


def build_dataset(config: BuildConfig, out: str | Path, *, workers: int = 1, shard: tuple[int, int] = (0, 1),
                  runner: str = "local", beam_args: Sequence[str] = (), progress: bool = True) -> tuple[dict, dict]:
    """Build (or resume) the dataset in ``out``; returns (manifest, report) once this machine's inputs are
    done. ``shard=(i, N)`` builds only inputs i, i+N, i+2N, … of the sorted input list."""
    config.validate()
    out = Path(out)
    items = list_inputs(config)
    prepare_output(config, out)
    index, count = shard
    mine = items[index::count]
    todo = [item for item in mine if read_done(out, item) is None]
    log.info("%d input(s) in all, %d for shard %d/%d, %d still to build", len(items), len(mine), index, count,
             len(todo))
    if todo:
        if runner == "beam":
            run_beam(config, out, todo, beam_args)
        elif runner == "local":
            _run_local(config, out, todo, workers, progress)
        else:
            raise BuildError(f"--runner must be local or beam, got {runner!r}")
    return finalize(config, out, items)


def _run_local(config: BuildConfig, out: Path, todo: list[WorkItem], workers: int, progress: bool) -> None:
    from tqdm.auto import tqdm

    if workers < 1:
        raise BuildError(f"--workers must be at least 1, got {workers}")
    unit = "example" if config.synthetic else "video"
    total = sum(len(i.indices) for i in todo) if config.synthetic else len(todo)
    records = skipped = 0
    with tqdm(total=total, desc="building", unit=unit, disable=not progress) as bar:
        def advance(item: WorkItem, done: dict) -> None:
            nonlocal records, skipped
            records += done["records"]
            skipped += len(done["skipped"])
            bar.update(len(item.indices) if config.synthetic else 1)
            bar.set_postfix(records=records, skipped=skipped)
            log.debug("%s: %d record(s), %d skipped", item.key, done["records"], len(done["skipped"]))

        if workers == 1 or len(todo) == 1:
            for item in todo:
                advance(item, run_input(config, out, item))
            return
        import multiprocessing

        # spawn: JAX's threads do not survive fork.
        ctx = multiprocessing.get_context("spawn")
        levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict
                  if name.startswith("omnidirector") and logging.getLogger(name).level}
        with ctx.Pool(min(workers, len(todo)), _worker_init, (logging.root.level, levels)) as pool:
            for item, done in pool.imap_unordered(_run_input_star, [(config, str(out), item) for item in todo]):
                advance(item, done)


# ----------------------------------------------------------------------------------------------- Beam
def _beam_run(item: dict, config: dict, out: str) -> dict:
    return run_input(BuildConfig(**config), out, WorkItem(**{**item, "indices": tuple(item["indices"])}))


def run_beam(config: BuildConfig, out: Path, todo: Sequence[WorkItem], beam_args: Sequence[str] = ()) -> None:
    """The same per-input function as a Beam pipeline: Create(inputs) → Reshuffle → Map(run_input).

    ``beam_args`` are Beam pipeline options (default ``--runner=DirectRunner``); pass e.g.
    ``--runner=DataflowRunner --project=… --region=…`` to run on a cluster.
    """
    try:
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError:
        raise BuildError("--runner beam needs Apache Beam: pip install 'omnidirector-jax[beam]'") from None
    args = list(beam_args) or ["--runner=DirectRunner"]
    log.info("running %d input(s) on Beam (%s)", len(todo), " ".join(args))
    payload = [dataclasses.asdict(item) for item in todo]
    with beam.Pipeline(options=PipelineOptions(args)) as pipeline:
        _ = (pipeline
             | "inputs" >> beam.Create(payload)
             | "spread" >> beam.Reshuffle()
             | "build" >> beam.Map(_beam_run, config=config.to_json(), out=str(out))
             | "count" >> beam.Map(lambda done: done["records"])
             | "total" >> beam.CombineGlobally(sum))


def summary_table(report: dict, max_rows: int = 30) -> str:
    """A short text table of the report: counts, then the skipped inputs and why."""
    lines = [f"inputs: {report['inputs_done']}/{report['inputs']} done   records: {report['records']}"]
    if report["classes"]:
        lines.append("classes: " + ", ".join(f"{k} {v}" for k, v in report["classes"].items()))
    skipped = report["skipped"]
    if skipped:
        width = min(48, max(13, *(len(s["input"]) for s in skipped)))
        lines.append(f"{'skipped input':<{width}}  {'reason':<34}  detail")
        for s in skipped[:max_rows]:
            lines.append(f"{s['input'][-width:]:<{width}}  {s['reason']:<34}  {s['detail'][:100]}")
        if len(skipped) > max_rows:
            lines.append(f"… and {len(skipped) - max_rows} more (see report.json)")
    return "\n".join(lines)
