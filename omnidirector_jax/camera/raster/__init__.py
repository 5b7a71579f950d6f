"""Pure-JAX camera-grid rasterizer: fixed shapes, no host callbacks; ``jit``, ``vmap`` and ``grad`` work.

Pipeline per frame: world segments → camera space → cull (shot, behind, view distance, fog) → clip to the
near plane → project (pinhole, or Kannala–Brandt fisheye on subdivided segments) → clip to the image →
anti-aliased lines → per-family accumulation → composite (X, then Z, then vertical, like the reference).

Two line profiles:

* ``opencv``: reproduces ``cv2.line(..., LINE_AA, shift=4)`` of OpenCV 5.0 — a 1-px line writes three
  pixels per major-axis step with weights that depend on the minor-axis offset and the slope (measured
  tables below, from ``tools/calibrate_opencv_aa.py``), thicker lines are a solid band with those weights
  on its two edges and round caps. End points are snapped to 1/16 px as OpenCV does. For parity tests.
* ``smooth``: coverage ``sigmoid((w/2 − d) / softness)`` of the distance ``d`` from a pixel to the
  segment, with continuous width — useful gradients with respect to cameras and colours. For training.

Two methods produce the same image:

* ``scatter`` (CPU/GPU): visible segments become units — major-axis columns of thin lines and of thick
  lines' bands, and boxes around round caps — laid out by a cumulative sum and found by ``searchsorted``;
  each unit weighs its static block of pixels once and scatter-adds it (see the "scatter" section).
* ``tiled`` (TPU, where scatter is slow): 16×16 tiles each pick the ``tile_segments`` segments whose
  footprint overlaps them and evaluate every pixel against those — dense math, no scatter.

Overlaps composite as OpenCV's in-place blending does for lines of one colour: per family we accumulate
``L = Σ −log(1 − a)`` and ``G = Σ fog·(−log(1 − a))`` (as one complex number, so XLA computes a pixel's
weight once); the family covers ``1 − e^(−L)`` of the pixel with colour ``c · G / L``, and families are laid
over each other in drawing order.

Modules (this one is the public entry point; the rest are implementation):

* ``config``: :class:`RasterConfig`; ``geometry``: projection, culling, clipping; ``primitives``: segments →
  packed primitives; ``weights``: per-pixel formulas; ``scatter`` / ``tiled``: the two methods;
  ``composite``: accumulators → RGB; ``frames``: the per-frame pipeline and the jitted entry points.
"""

from omnidirector_jax.camera.raster.composite import to_uint8
from omnidirector_jax.camera.raster.config import METHODS, PROFILES, RasterConfig, base_line_width, tuned
from omnidirector_jax.camera.raster.frames import (
                                                   frame_scratch,
                                                   render_frames,
                                                   render_frames_into,
                                                   render_group,
                                                   required_budget,
                                                   required_tile_segments,
                                                   scratch_size,
                                                   visible_segments,
)
from omnidirector_jax.camera.raster.geometry import frame_segments, project_points
from omnidirector_jax.camera.raster.primitives import make_primitives
from omnidirector_jax.camera.raster.scatter import candidate_counts
from omnidirector_jax.camera.raster.weights import primitive_weight

__all__ = ["METHODS", "PROFILES", "RasterConfig", "base_line_width", "candidate_counts", "frame_scratch",
           "frame_segments", "make_primitives", "primitive_weight", "project_points", "render_frames",
           "render_frames_into", "render_group", "required_budget", "required_tile_segments", "scratch_size",
           "to_uint8", "tuned", "visible_segments"]
