"""Camera-pose back ends, one module each, behind :class:`~.base.PoseEstimator` (design §4).

``base`` holds the interface and per-shot bookkeeping, ``vo`` the OpenCV visual odometry (with its
``tracks``, ``rotation`` and ``bundle_adjust`` helpers), ``colmap`` the pycolmap back end and ``npz``
the import of poses estimated elsewhere. ``cvsafe`` guards every OpenCV call so that degenerate input
fails a frame pair or a shot, never the run. A new back end subclasses ``PoseEstimator``, implements
``estimate_shot`` and is registered in :func:`omnidirector_jax.perception.pose_estimators.make_estimator`.
"""
