"""`omnidirector bench model --json` end to end on the tiny config (one timed step)."""

import json
from pathlib import Path

from omnidirector_jax.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_bench_model_json(capsys):
    args = ["bench", "model", "--config", str(ROOT / "configs/tiny_cpu.yaml"), "--json", "--steps", "1",
            "--set", "model.hidden_size=64", "--set", "model.single_depth=0", "--set", "bench.warmup=0",
            "--set", "shape.height=32", "--set", "shape.width=32"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["devices"] == 8 and report["mesh"]["data"] == 8
    assert report["params"] > 0 and report["tokens_per_sample"] == {"visual": 176, "text": 16}
    for part in ("forward", "train_step"):
        r = report[part]
        assert r["compile_s"] > 0 and r["step_s"] > 0 and 0 < r["mfu"] < 1.5
        assert abs(r["tflops_per_s"] - r["tflops_per_s_per_device"] * 8) < 1e-9
    assert report["flops"]["train_model"] == 3 * report["flops"]["forward_total"]
    assert report["peak_source"].startswith("measured:cpu")
