"""TPU compile check of the train step's grid path (tiled method), ahead of time on this CPU host.

Opt-in: it needs the ``tpu`` extra (libtpu, ~100 MB, not in CI's install) and compiles six TPU programs (two
topologies × opencv forward, smooth forward, smooth gradient), about 3-5 minutes on 2 cores — over CI's
budget. Run it with ``pip install -e ".[tpu,test]"`` and ``pytest tests/camera/test_raster_tpu.py``; the full
480×832 figures come from ``python -m omnidirector_jax.camera.raster_aot`` (README)."""

import pytest

pytest.importorskip("libtpu", reason="needs the tpu extra: pip install -e '.[tpu]' (opt-in, see docstring)")


@pytest.mark.parametrize("topology", ["v5:2x2x1", "v6e:2x2"])
def test_tiled_grid_path_compiles_for_tpu_without_scatter(topology, monkeypatch):
    from omnidirector_jax.camera.raster_aot import compile_grid_path

    monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # another process on this host may hold libtpu's lock
    rows = compile_grid_path(topology, frames=4, height=48, width=80, tile_segments=16, max_segments=256)
    assert [r["mode"] for r in rows] == ["forward", "forward", "gradient"]
    for row in rows:
        assert "error" not in row, row
        if row["mode"] == "forward":  # scatter is slow on TPU: the tiled forward has none (a gradient
            assert row["scatter_ops"] == 0, row  # transposes its gathers into scatter-adds)
        assert 0 < row["temp_mb"] < 256 and row["output_mb"] > 0, row
