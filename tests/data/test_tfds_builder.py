"""The TFDS builder in data/omnidirector_clips exposes exactly the records of a dataset folder."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
from pipeline_fixtures import write_dataset

tfds = pytest.importorskip("tensorflow_datasets")

DATA = Path(__file__).resolve().parents[2] / "data"


def _builder_class():
    """The builder as `tfds build` loads it: a module of the package `omnidirector_clips` (TFDS finds the
    dataset card through that package)."""
    if str(DATA) not in sys.path:
        sys.path.insert(0, str(DATA))
    return importlib.import_module("omnidirector_clips.omnidirector_clips_dataset_builder").Builder


@pytest.mark.parametrize("image_format", ["png", "raw"])
def test_tfds_data_source_reads_back_the_records(tmp_path, image_format):
    recs = write_dataset(tmp_path / "clips", 5, shards=2, image_format=image_format)
    builder = _builder_class()(data_dir=str(tmp_path / "tfds"), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "clips")))
    assert builder.info.splits["train"].num_examples == 5
    assert "Multi-shot camera-cloning clips" in builder.info.description  # the dataset card
    source = builder.as_data_source()["train"]
    got = sorted((source[i] for i in range(len(source))), key=lambda ex: int(ex["index"]))
    assert [ex["id"].decode() for ex in got] == [r.id for r in recs]
    for ex, rec in zip(got, recs, strict=True):
        np.testing.assert_array_equal(np.stack(ex["frames"]), rec.frames)  # PNG and raw: lossless
        np.testing.assert_array_equal(ex["ref_image"], rec.ref_image)
        np.testing.assert_array_equal(ex["w2c"], rec.w2c)
        np.testing.assert_array_equal(ex["K"], rec.K)
        np.testing.assert_array_equal(ex["cuts"], np.asarray(rec.cuts, np.int32))
        np.testing.assert_array_equal(ex["valid"], rec.valid)
        assert ex["caption"].decode() == rec.caption
        assert ex["camera_prompt"].decode() == rec.camera_prompt


def test_tfds_without_manual_dir_says_how_to_build(tmp_path):
    builder = _builder_class()(data_dir=str(tmp_path / "tfds"), file_format="array_record")
    with pytest.raises(Exception, match="build-dataset"):
        builder.download_and_prepare()
