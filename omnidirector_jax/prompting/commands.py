"""CLI commands of the prompting package: describe."""

from __future__ import annotations

import json
import os

import click

COMMANDS: list[click.Command] = []


@click.command()
@click.argument("trajectory", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print shots, segments, cuts and text as JSON.")
@click.option("--size", default=None, help="HxW for a .npz trajectory that lacks its image size.")
@click.option("--subclip-frames", type=int, default=16, show_default=True, help="Sub-clip length of the rules.")
@click.option("--scene-scale", type=float, default=1.0, show_default=True,
              help="World units that count as one scene unit for speeds.")
@click.option("--prompt", "user_prompt", default=None, help="Also fuse with this user prompt.")
@click.option("--image", type=click.Path(dir_okay=False), default=None, help="The user's image (for --prompt).")
@click.option("--backend", type=click.Choice(["template", "http", "transformers"]), default="template",
              show_default=True, help="Fusion back end.")
@click.option("--endpoint", default="", help="http: OpenAI-compatible base URL, e.g. http://localhost:8000/v1.")
@click.option("--model", default="", help="http: model name.")
@click.option("--model-dir", default="", help="transformers: folder of a saved causal LM.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="http: seconds per try.")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="http: environment variable holding the API key (if any).")
def describe(trajectory: str, as_json: bool, size: str | None, subclip_frames: int, scene_scale: float,
             user_prompt: str | None, image: str | None, backend: str, endpoint: str, model: str, model_dir: str,
             timeout: float, api_key_env: str) -> None:
    """Print the camera prompt of TRAJECTORY (.json or .npz), computed from its poses and cuts only."""
    from omnidirector_jax.camera.commands import parse_size
    from omnidirector_jax.camera.trajectory import load_trajectory
    from omnidirector_jax.prompting import fusion
    from omnidirector_jax.prompting.rules import RuleConfig
    from omnidirector_jax.prompting.rules import describe as describe_poses

    traj = load_trajectory(trajectory, parse_size(size))
    camera = describe_poses(traj, RuleConfig(subclip_frames=subclip_frames, scene_scale=scene_scale))
    out = camera.to_json()
    if user_prompt is not None:
        picture = None
        if image is not None:
            picture = fusion.read_image(image)
        engine = fusion.make_backend(backend, endpoint=endpoint, model=model, model_dir=model_dir,
                                     api_key=os.environ.get(api_key_env, ""), timeout=timeout)
        out["prompt"] = fusion.fuse(camera.text, user_prompt, picture, engine)
    if as_json:
        click.echo(json.dumps(out, indent=1))
    else:
        click.echo(camera.text)
        if "prompt" in out:
            click.echo(out["prompt"])


COMMANDS.append(describe)
