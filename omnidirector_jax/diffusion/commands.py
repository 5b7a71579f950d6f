"""CLI: `omnidirector generate`, `omnidirector clone` and `omnidirector export`."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []

_common = [
    click.option("--image", "image_path", default=None, type=click.Path(dir_okay=False),
                 help="Reference image (the content; resized to the model's frames)."),
    click.option("--prompt", default="", help="What the video shows (fused with the camera prompt)."),
    click.option("--checkpoint", default=None, type=click.Path(),
                 help="Model export folder or training work directory (default: the shipped model)."),
    click.option("--out", default=None, type=click.Path(dir_okay=False), help="Result video (.mp4)."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--steps", type=int, default=None, help="Sampling steps (default: the model's sampler config)."),
    click.option("--guidance", type=click.Choice(["none", "plain", "adaptive"]), default=None,
                 help="Guidance mode (default: the model's sampler config)."),
]


def _options(fn):
    for option in reversed(_common):
        fn = option(fn)
    return fn


def _run(traj, image_path, prompt, checkpoint, out, seed, steps, guidance, reference=None, record=None,
         model=None, image=None):
    import dataclasses

    from omnidirector_jax.diffusion.generate import generate_video, load_model, write_outputs
    from omnidirector_jax.prompting.fusion import fuse, read_image
    from omnidirector_jax.prompting.rules import describe

    image = read_image(image_path) if image is None else image
    model = load_model(checkpoint) if model is None else model
    sampler = model.cfg.sampler
    if steps is not None:
        sampler = dataclasses.replace(sampler, steps=steps)
    if guidance is not None:
        sampler = dataclasses.replace(sampler, guidance=guidance)
    camera = describe(traj)
    text = fuse(camera.text, prompt, image)
    result = generate_video(model, traj, image, text, seed=seed, sampler=sampler, progress=True)
    record = {**(record or {}), "checkpoint": model.source, "camera_prompt": camera.text, "user_prompt": prompt,
              "seed": seed, "image": str(image_path), "config": model.cfg.to_dict()}
    small_ref = None
    if reference is not None:
        import cv2
        import numpy as np

        h, w = result["frames"].shape[1:3]
        small_ref = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in reference])
    written = write_outputs(out, result, traj, reference=small_ref, record=record)
    click.echo(f"wrote {written['video']} ({len(result['frames'])} frames, cuts {list(traj.cuts)}), preview "
               f"{written['preview']}, {written['json']}; prompt: {result['prompt']}")


@click.command("generate")
@click.option("--trajectory", "traj_path", default=None, type=click.Path(dir_okay=False),
              help="Camera trajectory (.json or .npz) to follow.")
@click.option("--jobs", "jobs_path", default=None, type=click.Path(dir_okay=False),
              help="JSONL of jobs ({trajectory, image, prompt, out, seed}; paths relative to the file): all "
                   "generated together, window by window, by one compiled program.")
@_options
def generate_command(traj_path, jobs_path, image_path, prompt, checkpoint, out, seed, steps, guidance):
    """Generate a video from IMAGE and PROMPT whose camera follows TRAJECTORY (cuts included), or a batch of them."""
    from omnidirector_jax.camera.trajectory import load_trajectory
    from omnidirector_jax.errors import OmniDirectorError

    if jobs_path is not None:
        if traj_path or image_path or out:
            raise OmniDirectorError("--jobs takes trajectory, image and out from each line; drop --trajectory, "
                                    "--image and --out")
        _run_jobs(jobs_path, checkpoint, steps, guidance)
        return
    missing = [name for name, v in (("--trajectory", traj_path), ("--image", image_path), ("--out", out)) if not v]
    if missing:
        raise OmniDirectorError(f"generate needs {', '.join(missing)} (or --jobs JOBS.jsonl)")
    traj = load_trajectory(traj_path)
    _run(traj, image_path, prompt, checkpoint, out, seed, steps, guidance, record={"trajectory_in": traj_path})


def _run_jobs(jobs_path, checkpoint, steps, guidance):
    import dataclasses
    import json
    from pathlib import Path

    from omnidirector_jax.camera.trajectory import load_trajectory
    from omnidirector_jax.diffusion.generate import Job, generate_batch, load_model, write_outputs
    from omnidirector_jax.errors import OmniDirectorError
    from omnidirector_jax.prompting.fusion import fuse, read_image
    from omnidirector_jax.prompting.rules import describe

    base = Path(jobs_path).parent
    try:
        lines = [(i + 1, line) for i, line in enumerate(Path(jobs_path).read_text(encoding="utf-8").splitlines())
                 if line.strip()]
    except OSError as err:
        raise OmniDirectorError(f"cannot read --jobs {jobs_path}: {err.strerror}") from None
    if not lines:
        raise OmniDirectorError(f"{jobs_path} holds no job")
    specs = []
    for number, line in lines:
        try:
            spec = json.loads(line)
        except json.JSONDecodeError as err:
            raise OmniDirectorError(f"{jobs_path}:{number}: not JSON ({err.msg})") from None
        missing = [k for k in ("trajectory", "image", "out") if k not in spec]
        if missing:
            raise OmniDirectorError(f"{jobs_path}:{number}: missing {', '.join(missing)}")
        specs.append(spec)
    model = load_model(checkpoint)
    sampler = model.cfg.sampler
    if steps is not None:
        sampler = dataclasses.replace(sampler, steps=steps)
    if guidance is not None:
        sampler = dataclasses.replace(sampler, guidance=guidance)
    jobs, trajs, records = [], [], []
    for spec in specs:
        traj = load_trajectory(base / spec["trajectory"])
        image = read_image(str(base / spec["image"]))
        camera = describe(traj)
        jobs.append(Job(traj, image, fuse(camera.text, spec.get("prompt", ""), image), int(spec.get("seed", 0))))
        trajs.append(traj)
        records.append({"checkpoint": model.source, "camera_prompt": camera.text, "user_prompt": spec.get("prompt", ""),
                        "seed": int(spec.get("seed", 0)), "image": spec["image"], "trajectory_in": spec["trajectory"],
                        "config": model.cfg.to_dict()})
    results = generate_batch(model, jobs, sampler=sampler, progress=True)
    for spec, traj, result, record in zip(specs, trajs, results, records, strict=True):
        written = write_outputs(base / spec["out"], result, traj, reference=None, record=record)
        click.echo(f"wrote {written['video']} ({len(result['frames'])} frames, cuts {list(traj.cuts)})")
    click.echo(f"{len(jobs)} jobs, {results[0]['compilations']} compiled sampler program(s)")


@click.command("clone")
@click.option("--reference", "reference_path", required=True, type=click.Path(dir_okay=False),
              help="Reference video whose camera motion (and cuts) to clone.")
@click.option("--weights", default=None, type=click.Path(file_okay=False),
              help="TransNetV2 checkpoint folder (default: the classical shot detector).")
@click.option("--max-frames", type=int, default=None, help="Use only the first N frames of the reference.")
@_options
def clone_command(reference_path, weights, max_frames, image_path, prompt, checkpoint, out, seed, steps, guidance):
    """Clone REFERENCE's camera: shots -> poses -> grid -> prompt -> sample -> OUT.mp4, OUT.preview.mp4, OUT.json."""
    from omnidirector_jax.diffusion.generate import load_model
    from omnidirector_jax.errors import OmniDirectorError
    from omnidirector_jax.prompting.fusion import read_image

    if not image_path or not out:
        raise OmniDirectorError("clone needs --image and --out")
    image, model = read_image(image_path), load_model(checkpoint)  # fail fast, before the reference is analysed
    import tempfile
    from pathlib import Path

    from omnidirector_jax.media import write_video
    from omnidirector_jax.perception.extract_commands import extract_trajectory
    from omnidirector_jax.perception.video import read_video

    video = read_video(reference_path, min_frames=2)
    frames = video.frames[:max_frames] if max_frames else video.frames
    source = reference_path
    if max_frames and max_frames < len(video.frames):
        tmp = Path(tempfile.mkdtemp()) / "reference.mp4"
        source = str(write_video(tmp, frames, fps=video.fps))
    traj, report = extract_trajectory(source, weights=weights, progress=False)
    _run(traj, image_path, prompt, checkpoint, out, seed, steps, guidance, reference=frames, model=model, image=image,
         record={"reference": reference_path, "max_frames": max_frames,
                 "shots": {k: report.get(k) for k in ("model_counts",) if k in report}})


@click.command("export")
@click.option("--workdir", required=True, type=click.Path(file_okay=False, exists=True), help="Training run.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Export folder to write.")
@click.option("--step", type=int, default=None, help="Checkpoint step (default: the latest).")
def export_command(workdir, out, step):
    """Write a training run's parameters (EMA when kept) as params.npz + config.json for generate/clone."""
    from omnidirector_jax.train.export import export_run

    path = export_run(workdir, out, step=step)
    click.echo(f"wrote {path}")


COMMANDS.extend([generate_command, clone_command, export_command])


BENCH_COMMANDS: list[click.Command] = []


@click.command("sample")
@click.option("--config", "config_path", default="configs/tiny_cpu.yaml", show_default=True,
              type=click.Path(dir_okay=False, exists=True))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Config override, repeatable.")
@click.option("--checkpoint", default=None, type=click.Path(), help="Trained model (default: random weights).")
@click.option("--batch", type=int, default=1, show_default=True, help="Jobs sampled together.")
@click.option("--steps", type=int, default=None, help="Sampling steps (default: the config's).")
@click.option("--guidance", type=click.Choice(["none", "plain", "adaptive"]), default=None)
@click.option("--repeats", type=int, default=2, show_default=True, help="Timed calls per stage after the first.")
@click.option("--json", "as_json", is_flag=True)
def bench_sample_command(config_path, overrides, checkpoint, batch, steps, guidance, repeats, as_json):
    """Sampling by stage (prompt, grid, encode, denoise, decode), compile time, steps/s, and one sampling step
    against one batched forward of the model (same device, same batch)."""
    import json

    from omnidirector_jax.diffusion.bench import format_sample_bench, run_sample_bench
    from omnidirector_jax.errors import OmniDirectorError

    if batch < 1 or repeats < 1:
        raise OmniDirectorError(f"--batch and --repeats must be at least 1, got {batch} and {repeats}")
    result = run_sample_bench(config_path, list(overrides), batch=batch, steps=steps, guidance=guidance,
                              checkpoint=checkpoint, repeats=repeats)
    click.echo(json.dumps(result, indent=1) if as_json else format_sample_bench(result))


BENCH_COMMANDS.append(bench_sample_command)
