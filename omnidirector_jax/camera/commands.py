"""CLI commands of the camera package: render-grid, demo, bench raster."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from omnidirector_jax.errors import OmniDirectorError

COMMANDS: list[click.Command] = []
BENCH_COMMANDS: list[click.Command] = []

log = logging.getLogger("omnidirector")
REPO_TRAJECTORIES = Path(__file__).resolve().parents[2] / "data" / "trajectories"


def _wide_vectors_pay() -> bool:
    """Whether XLA:CPU should emit 512-bit vectors: on AMD CPUs with AVX-512 (Zen 4/5 run them at full clock;
    measured on a Zen 5 host: a 480×832 rasterizer frame on one core ~20% faster). LLVM's default there is 256 bits,
    which suits Intel's AVX-512 parts, whose clocks drop under 512-bit code, so those keep it."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    return "AuthenticAMD" in info and " avx512f" in flags


def host_flags(flags: str, cores: int, wide_vectors: bool) -> str:
    """``XLA_FLAGS`` for rendering on this host: ``cores`` host devices and, where ``wide_vectors``, 512-bit
    vectors; a flag already in ``flags`` (the user's) is kept as it is."""
    if "xla_force_host_platform_device_count" not in flags:
        flags = f"{flags} --xla_force_host_platform_device_count={cores}"
    if wide_vectors and "xla_cpu_prefer_vector_width" not in flags:
        flags = f"{flags} --xla_cpu_prefer_vector_width=512"
    return flags.strip()


def use_host_cores() -> None:
    """Set XLA's host flags (:func:`host_flags`) before JAX starts its backends: each CPU core a JAX host
    device, so rendering splits frames over all cores, and 512-bit vectors where they pay
    (:func:`_wide_vectors_pay`)."""
    if "jax" in sys.modules:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ["XLA_FLAGS"] = host_flags(os.environ.get("XLA_FLAGS", ""), cores, _wide_vectors_pay())


def parse_size(value: str | None) -> tuple[int, int] | None:
    """'480x832' → (480, 832)."""
    if value is None:
        return None
    try:
        h, w = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise OmniDirectorError(f"size must look like HxW (e.g. 480x832), got {value!r}") from None
    if h <= 0 or w <= 0:
        raise OmniDirectorError(f"size must be positive, got {value!r}")
    return h, w


def parse_fisheye(value: str | None):
    if value is None:
        return None
    try:
        coeffs = [float(v) for v in value.split(",")]
    except ValueError:
        raise OmniDirectorError(f"--fisheye must be four numbers k1,k2,k3,k4, got {value!r}") from None
    if len(coeffs) != 4:
        raise OmniDirectorError(f"--fisheye must be four numbers k1,k2,k3,k4, got {len(coeffs)}")
    return coeffs


@click.command("render-grid")
@click.argument("trajectory", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Output file: .mp4 (video), .npz (array 'frames', uint8 T×H×W×3) or .png (contact sheet).")
@click.option("--size", default=None, help="Render size HxW, e.g. 480x832 (default: the trajectory's).")
@click.option("--backend", type=click.Choice(["jax", "opencv"]), default="jax", show_default=True,
              help="jax: the pure-JAX rasterizer; opencv: the NumPy/OpenCV reference renderer.")
@click.option("--fisheye", default=None, help="Kannala–Brandt coefficients k1,k2,k3,k4 (overrides the file's).")
@click.option("--profile", type=click.Choice(["opencv", "smooth"]), default="opencv", show_default=True,
              help="Line profile of the JAX rasterizer (opencv-matching or smooth/differentiable).")
@click.option("--method", type=click.Choice(["scatter", "tiled"]), default="scatter", show_default=True,
              help="JAX raster method: scatter (CPU/GPU) or tiled (no scatter; for TPU).")
@click.option("--line-width", type=float, default=None, help="Line width at full brightness (default max(4, W/320)).")
@click.option("--segments", "segments_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the room's 3D segments as JSON (start, end, family, shot).")
def render_grid_command(trajectory, out, size, backend, fisheye, profile, method, line_width, segments_out):
    """Render TRAJECTORY (.json or .npz) as a camera-grid video."""
    use_host_cores()
    from omnidirector_jax.camera import raster
    from omnidirector_jax.camera.render import render_trajectory
    from omnidirector_jax.camera.scene import build_scene
    from omnidirector_jax.camera.trajectory import load_trajectory
    from omnidirector_jax.media import write_frames

    suffix = Path(out).suffix.lower()
    if suffix not in (".mp4", ".npz", ".png"):
        raise OmniDirectorError(f"--out must end in .mp4, .npz or .png, got {out!r}")
    size = parse_size(size)
    traj = load_trajectory(trajectory, size=size)
    if size is not None and size != (traj.height, traj.width):
        traj = traj.resized(*size)
    coeffs = parse_fisheye(fisheye)
    if coeffs is not None:
        traj = traj.with_fisheye(coeffs)
    cfg = raster.RasterConfig(profile=profile, method=method, line_width=line_width)
    scene = build_scene(traj)
    click.echo(f"{Path(trajectory).name}: {traj.num_frames} frames {traj.height}x{traj.width}, "
               f"{len(traj.shots())} shot(s), {scene.num_valid} segments, backend {backend}", err=True)
    frames = render_trajectory(traj, backend=backend, cfg=cfg, scene=scene)
    write_frames(out, frames, fps=traj.fps, cuts=traj.cuts)
    if segments_out:
        Path(segments_out).parent.mkdir(parents=True, exist_ok=True)
        Path(segments_out).write_text(json.dumps(scene.to_json()))
    click.echo(f"wrote {out}", err=True)


@click.command("render-samples")
@click.option("--out", "out_dir", default="outputs/grids", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the videos (.mp4) and contact sheets (.png).")
@click.option("--trajectories", "traj_dir", default=None, type=click.Path(file_okay=False),
              help="Folder of trajectory files (default: the repository's data/trajectories).")
@click.option("--backend", type=click.Choice(["jax", "opencv"]), default="jax", show_default=True,
              help="Renderer to use.")
def render_samples_command(out_dir, traj_dir, backend):
    """Render every sample trajectory (data/trajectories) into a camera-grid video + contact sheet."""
    use_host_cores()
    from tqdm import tqdm

    from omnidirector_jax.camera.render import render_trajectory
    from omnidirector_jax.camera.trajectory import load_trajectory
    from omnidirector_jax.media import contact_sheet, write_png, write_video

    folder = Path(traj_dir) if traj_dir else (Path("data/trajectories") if Path("data/trajectories").is_dir()
                                              else REPO_TRAJECTORIES)
    files = sorted(folder.glob("*.json")) + sorted(folder.glob("*.npz"))
    if not files:
        raise OmniDirectorError(f"no trajectory files (.json/.npz) in {folder}")
    out = Path(out_dir)
    for path in tqdm(files, desc="rendering camera grids", unit="traj"):
        traj = load_trajectory(path)
        frames = render_trajectory(traj, backend=backend)
        write_video(out / f"{path.stem}.mp4", frames, fps=traj.fps)
        write_png(out / f"{path.stem}.png", contact_sheet(frames, cuts=traj.cuts))
    click.echo(f"rendered {len(files)} trajectories into {out}/ (mp4 videos and png contact sheets)", err=True)


@click.command("raster")
@click.option("--frames", default=49, show_default=True, help="Frames per scene.")
@click.option("--repeats", default=5, show_default=True,
              help="Timed runs per measurement, JAX and OpenCV interleaved (the best of each is kept).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of a table.")
@click.option("--device-path", is_flag=True,
              help="Instead: the train step's grid path on the default backend (batch, room on device, jitter, "
                   "random colours; both methods and profiles, forward and gradient).")
@click.option("--batch", default=8, show_default=True, help="--device-path: trajectories per batch.")
@click.option("--size", default="480x832", show_default=True, help="--device-path: frame size HxW.")
@click.option("--method", "methods", multiple=True, type=click.Choice(["scatter", "tiled"]),
              help="--device-path: only these methods (repeatable; default both).")
@click.option("--parity", is_flag=True, help="Instead: opencv-profile parity against OpenCV on every sample "
                                             "trajectory, both methods, on the default backend.")
def bench_raster_command(frames, repeats, as_json, device_path, batch, size, methods, parity):
    """Frames/s of the JAX rasterizer vs the OpenCV reference on the same scenes, with their ratio."""
    if device_path or parity:
        from omnidirector_jax.camera import bench_device

        if parity:
            rows = bench_device.run_parity()
        else:
            height, width = (int(v) for v in size.lower().split("x"))
            rows = bench_device.run_device_path_bench(batch=batch, frames=frames, height=height, width=width,
                                                      methods=methods or ("scatter", "tiled"), repeats=repeats)
        for row in rows:
            click.echo(json.dumps(row) if as_json else "  ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        return
    use_host_cores()
    from omnidirector_jax.camera.bench import run_raster_bench

    rows = run_raster_bench(num_frames=frames, repeats=repeats)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    n_dev = rows[0]["devices"] if rows else 1
    header = (f"{'scene':<20}{'size':>8}{'segs':>6}{'jax fps':>9}{'ratio':>7}{'fresh fps':>10}{'ratio':>7}"
              f"{f'x{n_dev} fps':>9}{'ratio':>7}{'opencv fps':>11}{'compile s':>10}{'jax MB':>8}{'cv MB':>7}")
    click.echo(header)
    click.echo("-" * len(header))
    for r in rows:
        click.echo(f"{r['scene']:<20}{r['size']:>8}{r['segments']:>6}{r['jax_fps']:>9.1f}{r['ratio']:>7.2f}"
                   f"{r['jax_fresh_fps']:>10.1f}{r['ratio_fresh']:>7.2f}{r['jax_all_fps']:>9.1f}{r['ratio_all']:>7.2f}"
                   f"{r['opencv_fps']:>11.1f}{r['jax_compile_s']:>10.2f}{r['jax_peak_mb']:>8.1f}{r['opencv_peak_mb']:>7.1f}")
    click.echo(f"ratio = JAX fps / OpenCV fps. jax: one {rows[0]['device'] if rows else '?'} device, rendering into "
               f"reused (donated) memory; fresh: new output memory each call; x{n_dev}: frames split over {n_dev} "
               "host devices (render_grid's path: kept device memory, frames copied to NumPy). OpenCV: the "
               "single-threaded reference renderer.")


COMMANDS += [render_grid_command, render_samples_command]
BENCH_COMMANDS += [bench_raster_command]
