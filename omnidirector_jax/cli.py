"""The `omnidirector` command line.

Sub-commands live next to the code they drive (``<package>/commands.py``) and are collected here, so this
file stays a thin index. Those modules import only ``click`` at the top: heavy imports (jax, cv2) happen
inside the commands, which keeps ``omnidirector --help`` instant.
"""

from __future__ import annotations

import importlib
import sys

import click

from omnidirector_jax.errors import OmniDirectorError

# Each module exposes COMMANDS (top-level) and/or BENCH_COMMANDS (under `omnidirector bench`).
COMMAND_MODULES = [
    "omnidirector_jax.camera.commands",
    "omnidirector_jax.perception.commands",
    "omnidirector_jax.models.commands",
    "omnidirector_jax.data.commands",
    "omnidirector_jax.data.pipeline_commands",
    "omnidirector_jax.eval.commands",
    "omnidirector_jax.perception.extract_commands",
    "omnidirector_jax.train.commands",
    "omnidirector_jax.diffusion.commands",
    "omnidirector_jax.prompting.commands",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="omnidirector-jax")
def cli() -> None:
    """OmniDirector-JAX: clone the camera motion of a reference video into generated video."""


@cli.group()
def bench() -> None:
    """Benchmarks that compare our JAX code with its reference in the same run."""


for _name in COMMAND_MODULES:
    _module = importlib.import_module(_name)
    for _command in getattr(_module, "COMMANDS", ()):
        cli.add_command(_command)
    for _command in getattr(_module, "BENCH_COMMANDS", ()):
        bench.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI, turning input errors into one line on stderr and exit status 2."""
    try:
        result = cli.main(args=argv, prog_name="omnidirector", standalone_mode=False)
    except OmniDirectorError as err:
        click.echo(f"error: {err}", err=True)
        return 2
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
