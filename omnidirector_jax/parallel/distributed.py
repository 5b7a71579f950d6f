"""Multi-host start-up: `jax.distributed.initialize` from flags or the environment, before any computation.

Where the processes come from, in order:

1. explicit: `--coordinator HOST:PORT --num-processes N --process-id I` (or the environment variables
   `OMNIDIRECTOR_COORDINATOR`, `OMNIDIRECTOR_NUM_PROCESSES`, `OMNIDIRECTOR_PROCESS_ID`), e.g. several
   processes on one machine over loopback;
2. SLURM (`SLURM_JOB_ID` with more than one task): JAX reads the node list and task ids itself;
3. Cloud TPU VMs with several hosts (`TPU_WORKER_HOSTNAMES` lists more than one): JAX asks the metadata server;
4. otherwise a single process, and nothing is initialised.

`initialize` fails once any computation has run, so the CLI calls :func:`maybe_initialize` first thing.
"""

from __future__ import annotations

import logging
import os

from omnidirector_jax.errors import ConfigError

log = logging.getLogger(__name__)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def cluster_kind(coordinator: str | None = None, env: dict[str, str] | None = None) -> str:
    """'explicit', 'slurm', 'tpu' or 'single' for the given flags and environment."""
    env = os.environ if env is None else env
    if coordinator or env.get("OMNIDIRECTOR_COORDINATOR"):
        return "explicit"
    if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return "slurm"
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if len(hosts) > 1:
        return "tpu"
    return "single"


def maybe_initialize(coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> str:
    """Initialises JAX's distributed runtime when this is one process of several; returns the cluster kind."""
    import jax

    kind = cluster_kind(coordinator)
    if kind == "single":
        return kind
    # CPU processes reduce over gloo (the default CPU client has no cross-process collectives); GPU/TPU ignore it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if kind == "explicit":
        coordinator = coordinator or os.environ["OMNIDIRECTOR_COORDINATOR"]
        num_processes = num_processes if num_processes is not None else _env_int("OMNIDIRECTOR_NUM_PROCESSES")
        process_id = process_id if process_id is not None else _env_int("OMNIDIRECTOR_PROCESS_ID")
        if num_processes is None or process_id is None:
            raise ConfigError("a coordinator address needs --num-processes and --process-id "
                              "(or OMNIDIRECTOR_NUM_PROCESSES / OMNIDIRECTOR_PROCESS_ID)")
        if not 0 <= process_id < num_processes:
            raise ConfigError(f"--process-id {process_id} is not in [0, {num_processes})")
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    else:
        jax.distributed.initialize()
    log.info("distributed (%s): process %d of %d, %d local / %d global devices", kind, jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())
    return kind
