"""Orbax checkpoints of a run: the state pytree, the Grain iterator and the config, in one step directory.

    ckpt = Checkpointer(workdir / "checkpoints", cfg.checkpoint)
    ckpt.save(step, state, cfg.to_dict(), data_iter)            # async; returns at once
    state, saved_cfg = ckpt.restore(step, layout.abstract, data_iter)

Saves are asynchronous (the arrays are copied off the devices, then written in the background) and atomic:
Orbax writes into a temporary directory and renames it when complete, so a run killed mid-save leaves the
previous checkpoint as the latest one. `restore` reads the arrays straight into the shardings carried by the
abstract state, so a checkpoint written on one mesh restores onto another. The Grain iterator state is one
file per process (a multi-host run restores with the same number of processes).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from omnidirector_jax.config import CheckpointConfig
from omnidirector_jax.errors import OmniDirectorError

log = logging.getLogger(__name__)


class CheckpointError(OmniDirectorError):
    """A checkpoint that cannot be used for this run."""


def _grain_args():
    import grain

    return grain.checkpoint.CheckpointSave, grain.checkpoint.CheckpointRestore


class Checkpointer:
    """Keep-last-N Orbax checkpoints under one directory, items `state`, `config` and `data_iter`."""

    def __init__(self, directory: str | Path, cfg: CheckpointConfig, *, read_only: bool = False) -> None:
        self.directory = Path(directory).resolve()
        options = ocp.CheckpointManagerOptions(max_to_keep=cfg.keep, enable_async_checkpointing=cfg.async_save,
                                               create=not read_only, read_only=read_only)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "config", "data_iter"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, config: dict, data_iter: Any | None = None, *, force: bool = False) -> bool:
        """Starts an (async) save of step `step`; `force` saves even off the configured interval."""
        items = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(config)}
        if data_iter is not None:
            items["data_iter"] = _grain_args()[0](data_iter)
        saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
        if saved:
            log.info("checkpoint: saving step %d to %s", step, self.directory)
        return saved

    def read_config(self, step: int) -> dict:
        """The config saved with `step` (a dict as `Config.to_dict()` made it)."""
        return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

    def restore(self, step: int, abstract_state: Any, data_iter: Any | None = None) -> Any:
        """The state of `step`, placed in the shardings of `abstract_state` (ShapeDtypeStructs with shardings);
        `data_iter`, when given, is set to the saved iterator position in place."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iter is not None:
            items["data_iter"] = _grain_args()[1](data_iter)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except (ValueError, KeyError, FileNotFoundError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"cannot restore step {step} from {self.directory}: {first}") from None
        return restored["state"]

    def wait(self) -> None:
        """Blocks until the pending async save is on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def check_compatible(saved: dict, current: dict) -> None:
    """Raises CheckpointError naming the first model/shape keys where the saved config differs from this run's
    (the parameters or the data would not fit). Mesh, optimizer and schedule may change between runs."""
    diffs = []
    for section in ("model", "shape"):
        a, b = saved.get(section, {}), current.get(section, {})
        for key in sorted(set(a) | set(b)):
            va, vb = a.get(key), b.get(key)
            if isinstance(va, list):
                va = tuple(va)
            if isinstance(vb, list):
                vb = tuple(vb)
            if va != vb and not (section == "model" and key in ("attention", "remat", "scan_layers")):
                diffs.append(f"{section}.{key}: checkpoint {va!r}, config {vb!r}")
    if diffs:
        raise CheckpointError("the work directory's checkpoint was made with another model or shape ("
                              + "; ".join(diffs[:4]) + "); use a new --workdir or the same config")
