"""pycolmap structure-from-motion per shot (``colmap``), falling back to visual odometry."""

from __future__ import annotations

import logging
import warnings

import numpy as np

from omnidirector_jax.perception.pose.base import PoseEstimator, ShotFailure, ShotPoses
from omnidirector_jax.perception.pose.vo import VisualOdometry

log = logging.getLogger("omnidirector_jax.perception.pose_estimators")


class ColmapEstimator(PoseEstimator):
    """pycolmap structure-from-motion per shot: SIFT, sequential matching, incremental mapping.

    The camera is one ``SIMPLE_PINHOLE`` shared by the shot's frames, fixed to the ``K`` guess; with
    ``refine_focal=True`` bundle adjustment refines the focal length (off by default: on short shots with
    little rotation it is poorly constrained; it fell from 205 px to under 90 px on a 25-frame dolly). When
    pycolmap is not installed, or fewer than ``min_registered`` of the shot's frames register (pure
    rotations, for one, cannot be initialised by SfM), the shot falls back to :class:`VisualOdometry` with
    a warning.

    COLMAP runs single-threaded by default (``num_threads=1``): with threads its RANSAC draws differ from
    run to run, and on a 20-frame dolly one run in four converged to a reconstruction bent by 15°;
    single-threaded with a fixed ``seed`` the result is reproducible.
    """

    name = "colmap"

    def __init__(self, min_registered: float = 0.8, overlap: int = 10, refine_focal: bool = False,
                 num_threads: int = 1, seed: int = 0, init_min_tri_angle: float = 4.0,
                 fallback: PoseEstimator | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seed = seed
        self.init_min_tri_angle = init_min_tri_angle
        self.min_registered = min_registered
        self.overlap = overlap
        self.refine_focal = refine_focal
        self.num_threads = num_threads
        self.fallback = fallback or VisualOdometry()

    def _fall_back(self, frames: np.ndarray, K: np.ndarray, frame_range: tuple[int, int], why: str) -> ShotPoses:
        msg = f"colmap: frames {frame_range[0]}–{frame_range[1] - 1}: {why}; falling back to visual odometry"
        warnings.warn(msg, stacklevel=3)
        log.warning(msg)
        est = self.fallback.estimate_shot(frames, K, frame_range)
        est.method = f"colmap→{est.method}"
        est.reason = f"colmap: {why}" + (f"; {est.reason}" if est.reason else "")
        return est

    def estimate_shot(self, frames: np.ndarray, K: np.ndarray, frame_range: tuple[int, int]) -> ShotPoses:
        try:
            import pycolmap
        except ImportError:
            return self._fall_back(frames, K, frame_range, "pycolmap is not installed (pip install pycolmap)")
        # COLMAP logs every step through glog: keep it to errors unless we are debugging.
        quiet = not log.isEnabledFor(logging.DEBUG)
        old_level = pycolmap.logging.minloglevel
        if quiet:
            pycolmap.logging.minloglevel = 3  # our own warning reports a failed mapping
        try:
            return self._run(pycolmap, frames, K, frame_range)
        except ShotFailure:  # from the VO fallback inside _run: already reported
            raise
        except Exception as err:  # noqa: BLE001 - COLMAP raises on degenerate input; VO may still pose it
            log.debug("pycolmap failed", exc_info=True)
            return self._fall_back(frames, K, frame_range, f"pycolmap failed ({type(err).__name__}: "
                                   f"{str(err).strip()[:200]})")
        finally:
            pycolmap.logging.minloglevel = old_level

    def _run(self, pycolmap, frames: np.ndarray, K: np.ndarray, frame_range: tuple[int, int]) -> ShotPoses:
        import tempfile
        from pathlib import Path

        import cv2

        num = frames.shape[0]
        with tempfile.TemporaryDirectory(prefix="omnidirector-colmap-") as tmp:
            tmp = Path(tmp)
            image_dir = tmp / "images"
            image_dir.mkdir()
            names = [f"{i:06d}.png" for i in range(num)]
            for name, frame in zip(names, frames, strict=True):
                cv2.imwrite(str(image_dir / name), np.ascontiguousarray(frame[..., ::-1]))
            database = tmp / "database.db"
            reader = pycolmap.ImageReaderOptions()
            reader.camera_model = "SIMPLE_PINHOLE"
            # COLMAP puts the centre of the top-left pixel at (0.5, 0.5); ours is at (0, 0).
            reader.camera_params = f"{K[0, 0]},{K[0, 2] + 0.5},{K[1, 2] + 0.5}"
            extraction = pycolmap.FeatureExtractionOptions()
            extraction.num_threads = self.num_threads
            pycolmap.extract_features(database, image_dir, camera_mode=pycolmap.CameraMode.SINGLE,
                                      reader_options=reader, extraction_options=extraction,
                                      device=pycolmap.Device.cpu)
            pairing = pycolmap.SequentialPairingOptions()
            pairing.overlap = self.overlap
            pycolmap.match_sequential(database, pairing_options=pairing, device=pycolmap.Device.cpu)
            options = pycolmap.IncrementalPipelineOptions()
            options.ba_refine_focal_length = self.refine_focal
            options.ba_refine_principal_point = False
            options.ba_refine_extra_params = False
            options.num_threads = self.num_threads
            options.min_model_size = 3
            # A known camera: no focal refinement in registration either (COLMAP refines it per image by
            # default, which bends forward-moving shots), and a fixed seed for reproducible runs.
            options.mapper.abs_pose_refine_focal_length = self.refine_focal
            options.mapper.abs_pose_refine_extra_params = False
            # COLMAP's 16° initial triangulation angle suits photo collections; video frames are close
            # together and a 16° pair pushed a 49-frame dolly into a 46°-curved reconstruction.
            options.mapper.init_min_tri_angle = self.init_min_tri_angle
            options.random_seed = self.seed
            options.mapper.random_seed = self.seed
            options.triangulation.random_seed = self.seed
            models = pycolmap.incremental_mapping(database, image_dir, tmp / "sparse", options=options)
            if not models:
                return self._fall_back(frames, K, frame_range, "incremental mapping built no model")
            model = max(models.values(), key=lambda rec: rec.num_reg_images())
            w2c = np.tile(np.eye(3, 4), (num, 1, 1))
            K_all = np.broadcast_to(K, (num, 3, 3)).copy()
            valid = np.zeros(num, dtype=bool)
            for image in model.images.values():
                if not image.has_pose:
                    continue
                f = names.index(image.name)
                w2c[f] = image.cam_from_world().matrix()
                cam_k = np.array(image.camera.calibration_matrix(), dtype=np.float64)
                cam_k[0, 2] -= 0.5
                cam_k[1, 2] -= 0.5
                K_all[f] = cam_k
                valid[f] = True
        share = float(valid.mean())
        if share < self.min_registered:
            return self._fall_back(frames, K, frame_range, f"only {valid.sum()} of {num} frames registered")
        log.info("colmap: %d of %d frames registered", valid.sum(), num)
        K_all[~valid] = np.median(K_all[valid], axis=0)
        return ShotPoses(w2c, K_all, valid, "colmap")
