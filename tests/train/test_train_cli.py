"""`omnidirector train` as users run it, on a small synthetic dataset: SIGKILL and resume, two processes over a
loopback coordinator, bad runs that fail at start with one line."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omnidirector_jax.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "tiny_cpu.yaml")
SMALL = ["model.hidden_size=64", "model.depth=1", "model.single_depth=0", "model.num_heads=2", "shape.height=32",
         "shape.width=32", "train.log_every=1", "train.warmup_steps=2", "train.preview_every=0"]


def _sets(*overrides):
    return [arg for o in (*SMALL, *overrides) for arg in ("--set", o)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("clips") / "D"
    assert main(["build-dataset", "--synthetic", "16", "--out", str(out), "--size", "32x32", "--frames", "9"]) == 0
    return out


def _env(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _train_cmd(workdir, data, *overrides):
    return [sys.executable, "-m", "omnidirector_jax.cli", "train", "--config", CONFIG, "--workdir", str(workdir),
            "--no-progress", *_sets(f"data.dir={data}", *overrides)]


def _losses(workdir) -> dict[int, float]:
    rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines() if line]
    return {r["step"]: r["loss"] for r in rows}  # a resumed run rewrites the steps after its checkpoint


def test_sigkill_and_resume_equals_uninterrupted_run(dataset, tmp_path):
    args = ("train.steps=8", "checkpoint.every=2", "mesh=fsdp")
    subprocess.run(_train_cmd(tmp_path / "full", dataset, *args), check=True, env=_env(8), capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed, dataset, *args), env=_env(8), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:  # kill once step 5 is logged (checkpoint 4 exists)
        if (killed / "metrics.jsonl").exists() and max(_losses(killed), default=0) >= 5:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = subprocess.run(_train_cmd(killed, dataset, *args), env=_env(8), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    # Saves are asynchronous and atomic: a save the kill interrupted is ignored, the run resumes from the last
    # complete one (2, 4 or 6 here), never from scratch.
    assert any(f"steps {k} -> 8" in done.stdout for k in (2, 4, 6)), done.stdout
    assert _losses(killed) == _losses(tmp_path / "full")  # bit for bit (JSON floats round-trip exactly)

    # The export records the training clips' length (9 frames): the demo's default trajectory length.
    from omnidirector_jax.eval.demo import _clip_frames

    assert main(["export", "--workdir", str(killed), "--out", str(tmp_path / "model")]) == 0
    training = json.loads((tmp_path / "model" / "training.json").read_text())
    assert training["step"] == 8 and training["clip_frames"] == 9
    assert _clip_frames(training, "") == 9 and _clip_frames({}, str(dataset)) == 9 and _clip_frames({}, "") == 17


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_in_lock_step(dataset, tmp_path):
    port = _free_port()
    procs = [subprocess.Popen(_train_cmd(tmp_path / "run", dataset, "train.steps=3", "checkpoint.every=3",
                                         "mesh=data") + ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                                         "--process-id", str(i)],
                              env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    digests = [out.split("params digest ")[1].split(",")[0] for out, _ in outs]
    assert "process 0/2" in outs[0][0] and "process 1/2" in outs[1][0]
    assert digests[0] == digests[1]
    assert (tmp_path / "run" / "checkpoints" / "3").is_dir()
    assert sorted(_losses(tmp_path / "run")) == [1, 2, 3]


def test_bad_runs_fail_at_start_with_one_line(dataset, tmp_path, capsys):
    assert main(["train", "--config", CONFIG, "--workdir", str(tmp_path / "a"),
                 *_sets(f"data.dir={tmp_path / 'missing'}")]) == 2
    assert "data.dir: no dataset at" in capsys.readouterr().err
    assert main(["train", "--config", CONFIG, "--workdir", str(tmp_path / "b"), *_sets()]) == 2
    assert "data.dir is not set" in capsys.readouterr().err
    # A dataset of 32x32 clips read into a 64x64 model: the pipeline resizes, so the shape check is on the crop
    # length: 9-frame clips cannot give 17-frame crops.
    assert main(["train", "--config", CONFIG, "--workdir", str(tmp_path / "c"),
                 *_sets(f"data.dir={dataset}", "shape.frames=17")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
