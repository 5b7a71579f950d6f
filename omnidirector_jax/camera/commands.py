"""CLI commands of the camera package: render-grid, demo, bench raster."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
BENCH_COMMANDS: list[click.Command] = []
