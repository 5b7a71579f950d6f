"""TFDS builder exposing the clip records of an `omnidirector build-dataset` folder (the manual dir).

    builder = Builder(data_dir="~/tensorflow_datasets", file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir="datasets/synth"))
    clips = builder.as_data_source()["train"]          # random access, no TensorFlow needed
    clips[0]["frames"]                                  # list of T (H, W, 3) uint8 RGB frames

The frames are copied as stored (the record's JPEG or PNG bytes, never re-encoded), so a TFDS reader sees the
same pixels as the Grain pipeline. `tfds.load` / `as_dataset` additionally need TensorFlow. Precomputed latents
and text embeddings are not exposed (their dtype, bfloat16, has no TFDS feature); read them with the Grain
pipeline. See README.md in this folder (the dataset card).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import tensorflow_datasets as tfds

# The builder is loaded by path (tfds build, importlib): make the project importable from a checkout.
_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parents[1]
if (_ROOT / "omnidirector_jax").is_dir() and str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from omnidirector_jax.data.pipeline import ClipSource, open_dataset  # noqa: E402
from omnidirector_jax.data.record_view import read_clip  # noqa: E402


class Builder(tfds.core.GeneratorBasedBuilder):
    """Multi-shot camera-cloning clips: frames, per-frame cameras, cuts, reference image, caption."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: record schema of omnidirector_jax.data.records."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Build a dataset folder with `omnidirector build-dataset --synthetic N --out DIR` (or from videos: "
        "`omnidirector build-dataset VIDEOS --out DIR`) and pass DIR as the manual dir "
        "(`--manual_dir DIR` for `tfds build`, or `DownloadConfig(manual_dir=DIR)`)."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        # Frames keep their stored bytes (JPEG or PNG, as the dataset was built); OpenCV decodes either.
        frame = tfds.features.Image(shape=(None, None, 3), encoding_format=None)
        # The card and citation are read here rather than by `dataset_info_from_configs`, which needs the
        # optional `importlib_resources` package to find this folder.
        return tfds.core.DatasetInfo(
            builder=self,
            description=(_HERE / "README.md").read_text(encoding="utf-8"),
            citation=(_HERE / "CITATIONS.bib").read_text(encoding="utf-8"),
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Text(doc="stable clip id: hash of the source and the frame range"),
                "index": tfds.features.Scalar(np.int64, doc="the record's index in the dataset folder"),
                "frames": tfds.features.Sequence(frame, doc="T frames, RGB, stored JPEG/PNG bytes"),
                "ref_image": frame,
                "w2c": tfds.features.Tensor(shape=(None, 3, 4), dtype=np.float32, doc="world-to-camera, OpenCV"),
                "K": tfds.features.Tensor(shape=(None, 3, 3), dtype=np.float32, doc="intrinsics, pixels"),
                "dist": tfds.features.Tensor(shape=(None, 4), dtype=np.float32, doc="Kannala-Brandt k1..k4"),
                "cuts": tfds.features.Tensor(shape=(None,), dtype=np.int32, doc="transition frame indices"),
                "valid": tfds.features.Tensor(shape=(None,), dtype=np.bool_, doc="per-frame pose validity"),
                "caption": tfds.features.Text(),
                "camera_prompt": tfds.features.Text(),
            }),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        if dl_manager.manual_dir is None:
            raise ValueError(self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        return {"train": self._generate_examples(Path(dl_manager.manual_dir))}

    def _generate_examples(self, root: Path):
        source = ClipSource(open_dataset(root))
        for index in range(len(source)):
            clip = read_clip(source[index])
            yield clip.id, {
                "id": clip.id,
                "index": index,
                "frames": [_image_bytes(clip, clip.frame(i)) for i in range(clip.num_frames)],
                "ref_image": _image_bytes(clip, clip.ref_image),
                "w2c": np.asarray(clip.w2c, np.float32),
                "K": np.asarray(clip.K, np.float32),
                "dist": np.asarray(clip.dist, np.float32),
                "cuts": np.asarray(clip.cuts, np.int32).reshape(-1),
                "valid": np.asarray(clip.valid, bool),
                "caption": clip.caption,
                "camera_prompt": clip.camera_prompt,
            }


def _image_bytes(clip, stored: memoryview) -> bytes:
    """Stored JPEG/PNG bytes as they are; raw RGB frames (a dataset built with `raw`) become PNG (lossless)."""
    if clip.image_format != "raw":
        return bytes(stored)
    rgb = np.frombuffer(stored, np.uint8).reshape(*clip.frame_hw, 3)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode a frame of {clip.id!r} as PNG")
    return png.tobytes()
