"""Log set-up for the perception commands: our INFO lines, without JAX's backend probing."""

from __future__ import annotations

import logging

# JAX logs every backend it tries and cannot open (e.g. "Unable to initialize backend 'tpu'") at INFO:
# noise on a CPU machine, and once per worker in a dataset build.
_PROBE_LOGGERS = ("jax._src.xla_bridge", "jax._src.compiler", "jax._src.dispatch")


def setup_logging(verbose: bool = False, fmt: str = "%(levelname)s %(message)s") -> None:
    """INFO (DEBUG with ``verbose``) for our loggers; JAX's backend probing only at WARNING unless verbose."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=fmt)
    for name in _PROBE_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)
