"""The training loop: resume, step, log, checkpoint, stop cleanly.

    summary = train(cfg, workdir)        # what `omnidirector train` runs

What it writes in `workdir` (process 0): `metrics.jsonl` (one JSON object per logged step), TensorBoard event
files under `tb/`, `loss.png`, `previews/step_XXXXXX.png` every `train.preview_every` steps, `config.json`; and
(all processes) Orbax checkpoints under `checkpoints/`.

The host never waits on the step it just launched: metrics are read one step late (the previous step's values
are ready by then), so dispatch runs ahead while the host reads data and logs. A SIGTERM (preemption) is turned
into a flag: the loop finishes the running step, saves a checkpoint, waits for it to be on disk and returns.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from omnidirector_jax.config import Config
from omnidirector_jax.data.pipeline import global_batch
from omnidirector_jax.errors import OmniDirectorError
from omnidirector_jax.models import flops as flops_lib
from omnidirector_jax.parallel.mesh import make_mesh
from omnidirector_jax.train import checkpoint as ckpt_lib
from omnidirector_jax.train.conditions import build_conditioner
from omnidirector_jax.train.state import init_state, make_layout
from omnidirector_jax.train.step import make_train_step, step_batch

log = logging.getLogger(__name__)


class TrainingError(OmniDirectorError):
    """A run that cannot start or had to stop (bad data shape, repeated non-finite steps...)."""


@dataclasses.dataclass
class Summary:
    """How a run ended."""

    start_step: int
    final_step: int
    reason: str  # finished | sigterm | non_finite | max_steps
    losses: dict[int, float]
    compile_s: float
    last_checkpoint: int | None
    params_digest: str = ""  # of this process's copy of the parameters (processes of one run must agree)


def check_batch(cfg: Config, batch: dict[str, np.ndarray]) -> None:
    """The pipeline's batch must have the shapes the model was configured for."""
    s = cfg.shape
    per_process = s.batch_size // jax.process_count()
    want = {"frames": (per_process, s.frames, s.height, s.width, 3), "ref_image": (per_process, s.height, s.width, 3),
            "w2c": (per_process, s.frames, 3, 4), "text_ids": (per_process, cfg.model.text_len)}
    for key, shape in want.items():
        got = tuple(np.shape(batch[key]))
        if got != shape:
            raise TrainingError(f"data batch '{key}' has shape {got} but the config needs {shape} "
                                f"(shape.batch_size / processes, shape.frames, shape.height, shape.width)")


def load_init_params(cfg: Config, abstract_params: Any) -> Any | None:
    """Starting parameters from `init.from`, or None: a converted checkpoint's `params` item (Orbax, every
    parameter), or a model export (`params.npz`, e.g. the shipped model) to fine-tune: its parameters where
    the model has them, the fresh initialisation for parameters it lacks (a part the config adds)."""
    if not cfg.init.from_:
        return None
    import orbax.checkpoint as ocp

    folder = Path(cfg.init.from_).resolve()
    if (folder / "params.npz").is_file():
        return _params_from_export(cfg, folder)
    path = folder / "params"
    if not path.exists():
        raise TrainingError(f"init.from: no converted parameters (params/) or model export (params.npz) at {folder}")
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), abstract_params)
    try:
        return ocp.StandardCheckpointer().restore(path, target)
    except (ValueError, KeyError) as err:
        raise TrainingError(f"init.from: parameters in {path} do not fit model {cfg.name}: "
                            f"{str(err).splitlines()[0]}") from None


def _params_from_export(cfg: Config, folder: Path) -> dict:
    from flax import nnx

    from omnidirector_jax.train.export import flatten_params, load_export, unflatten_params
    from omnidirector_jax.train.state import create_model

    _, exported = load_export(folder)
    given = flatten_params(exported)
    fresh = flatten_params(nnx.state(create_model(cfg.model, cfg.train.seed)).to_pure_dict())
    unknown = sorted(set(given) - set(fresh))
    if unknown:
        raise TrainingError(f"init.from: {folder} holds parameters model {cfg.name} does not have: "
                            f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    wrong = [f"{k} {given[k].shape} vs {fresh[k].shape}" for k in fresh
             if k in given and given[k].shape != fresh[k].shape]
    if wrong:
        raise TrainingError(f"init.from: {folder} parameters of another shape than model {cfg.name}'s: "
                            f"{'; '.join(wrong[:3])}")
    new = sorted(set(fresh) - set(given))
    log.info("init.from %s: %d parameters loaded, %d initialised fresh%s", folder, len(given), len(new),
             f" ({', '.join(new)})" if new else "")
    return unflatten_params({k: given[k].astype(v.dtype) if k in given else v for k, v in fresh.items()})


class _Preemption:
    """SIGTERM sets a flag the loop polls (the handler itself does no work)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> _Preemption:
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, no preemption saves
            self._previous = None
        return self

    def _handle(self, signum, frame) -> None:
        log.warning("SIGTERM: finishing this step, then saving a checkpoint")
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class _Writers:
    """metrics.jsonl and TensorBoard on process 0; nothing elsewhere."""

    def __init__(self, workdir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.history: list[dict] = []
        if not enabled:
            return
        from tensorboardX import SummaryWriter

        self.jsonl = (workdir / "metrics.jsonl").open("a", encoding="utf-8")
        self.tb = SummaryWriter(str(workdir / "tb"))

    def write(self, record: dict) -> None:
        self.history.append(record)
        if not self.enabled:
            return
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self.tb.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tb.close()


def _read_history(workdir: Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_loss_curve(workdir: Path) -> Path | None:
    """`loss.png` from metrics.jsonl (all runs of this work directory, resumed ones included)."""
    from omnidirector_jax.media import plot_curves

    rows = _read_history(workdir)
    if not rows:
        return None
    by_step = {r["step"]: r for r in rows}  # a resumed run rewrites steps after its checkpoint
    steps = sorted(by_step)
    curves = {"loss": (steps, [by_step[s]["loss"] for s in steps])}
    for key in ("loss_video", "loss_recon"):
        pts = [(s, by_step[s][key]) for s in steps if by_step[s].get(key) is not None and by_step[s][key] > 0]
        if pts:
            curves[key] = ([p[0] for p in pts], [p[1] for p in pts])
    return plot_curves(workdir / "loss.png", curves, title="training loss")


def train(cfg: Config, workdir: str | Path, *, data: Iterator | None = None,
          make_data: Callable[[Config], Iterator] | None = None, progress: bool = True,
          max_steps: int | None = None) -> Summary:
    """Trains `cfg` in `workdir` until `train.steps` (or `max_steps` more steps), resuming from its latest
    checkpoint. `data`: a Grain iterator (default: the pipeline over `data.dir`)."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    owns_data = data is None  # an iterator we make we also close (it may own worker processes)
    primary = jax.process_index() == 0
    t_cfg = cfg.train
    mesh = make_mesh(cfg.mesh)
    layout = make_layout(cfg, mesh)
    if data is None:
        if make_data is None:
            from omnidirector_jax.data.pipeline import make_pipeline as make_data
        data = make_data(cfg)
    checkpointer = ckpt_lib.Checkpointer(workdir / "checkpoints", cfg.checkpoint)
    start = checkpointer.latest_step()
    config_dict = cfg.to_dict()
    if start is not None:
        ckpt_lib.check_compatible(checkpointer.read_config(start), config_dict)
        log.info("resuming from step %d (%s)", start, checkpointer.directory)
        state = checkpointer.restore(start, layout.abstract, data)
    else:
        start = 0
        state = init_state(layout, load_init_params(cfg, layout.abstract["params"]))
    if primary:
        (workdir / "config.json").write_text(json.dumps(config_dict, indent=2), encoding="utf-8")

    conditioner, frozen_host = build_conditioner(cfg, cfg.train.seed)
    frozen = jax.device_put(frozen_host, layout.replicated)
    host = next(data)
    check_batch(cfg, host)
    batch = global_batch(step_batch(host), mesh, cfg.mesh.rules)
    t0 = time.perf_counter()
    step_fn = make_train_step(cfg, layout, conditioner, batch, frozen).lower(state, batch, frozen).compile()
    compile_s = time.perf_counter() - t0
    log.info("train step compiled in %.1f s", compile_s)

    count = flops_lib.count_flops(cfg)
    flops_per_step = count.train_model
    peak, peak_source = flops_lib.peak_tflops(cfg.model.dtype)
    n_dev = jax.device_count()
    writers = _Writers(workdir, primary)
    end = t_cfg.steps if max_steps is None else min(t_cfg.steps, start + max_steps)
    losses: dict[int, float] = {}
    reason, last_saved = "finished", start or None
    bar = None
    if progress and primary:
        from tqdm import tqdm

        bar = tqdm(total=t_cfg.steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
    pending: tuple[int, Any, float] | None = None  # (step, metrics future, data wait) of the last launched step
    last_done = time.perf_counter()

    def finish(step_no: int, metrics: Any, data_wait: float) -> bool:
        """Reads a finished step's metrics; returns False when the run must stop (non-finite)."""
        nonlocal last_done
        values = jax.device_get(metrics)
        now = time.perf_counter()
        step_s, last_done = now - last_done, now
        loss = float(values["loss"])
        losses[step_no] = loss
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
        if step_no % t_cfg.log_every == 0 or step_no == end or not values["finite"]:
            tflops = flops_per_step / step_s / 1e12 / n_dev
            record = {"step": step_no, **{k: float(v) for k, v in values.items()}, "step_s": step_s,
                      "data_wait_s": data_wait, "tflops_per_device": tflops,
                      "mfu": flops_lib.mfu(flops_per_step, step_s, peak, n_dev), "peak_source": peak_source}
            writers.write(record)
        if int(values["bad_steps"]) >= t_cfg.max_bad_steps:
            log.error("step %d: %d non-finite steps in a row; stopping (no checkpoint of them is written)",
                      step_no, int(values["bad_steps"]))
            return False
        return True

    try:
        with _Preemption() as preempt:
            step_no = start
            while step_no < end:
                t_data = time.perf_counter()
                if step_no > start:
                    host = next(data)
                    batch = global_batch(step_batch(host), mesh, cfg.mesh.rules)
                data_wait = time.perf_counter() - t_data
                state, metrics = step_fn(state, batch, frozen)
                step_no += 1
                if pending is not None and not finish(*pending):
                    pending, reason = None, "non_finite"
                    break
                pending = (step_no, metrics, data_wait)
                if step_no % cfg.checkpoint.every == 0 or preempt.requested or step_no == end:
                    if not finish(*pending):  # never checkpoint a state whose last step was bad
                        pending, reason = None, "non_finite"
                        break
                    pending = None
                    checkpointer.save(step_no, state, config_dict, data, force=True)
                    last_saved = step_no
                if t_cfg.preview_every and step_no % t_cfg.preview_every == 0 and primary:
                    _write_preview(cfg, layout, conditioner, state, batch, frozen, workdir, step_no)
                if preempt.requested:
                    reason = "sigterm"
                    break
            if pending is not None and finish(*pending) is False:
                reason = "non_finite"
            if reason == "finished" and end < t_cfg.steps:
                reason = "max_steps"
    finally:
        checkpointer.close()
        writers.close()
        if owns_data and hasattr(data, "close"):
            data.close()
        if bar is not None:
            bar.close()
    if primary:
        write_loss_curve(workdir)
    return Summary(start, max(losses, default=start), reason, losses, compile_s, last_saved,
                   params_digest(state["params"]))


def params_digest(params: Any) -> str:
    """SHA-256 of this process's first addressable shard of every parameter (bytes, in tree order)."""
    import hashlib

    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        digest.update(np.asarray(leaf.addressable_shards[0].data).tobytes())
    return digest.hexdigest()[:16]


def _write_preview(cfg: Config, layout: Any, conditioner: Any, state: Any, batch: dict, frozen: Any,
                   workdir: Path, step_no: int) -> None:
    """A PNG per preview step: for the batch's first clip, target frames | rendered grid | generated frames."""
    from omnidirector_jax.train.preview import preview_sheet

    sheet = preview_sheet(cfg, layout, conditioner, state, batch, frozen)
    from omnidirector_jax.media import write_png

    write_png(workdir / "previews" / f"step_{step_no:06d}.png", sheet)
