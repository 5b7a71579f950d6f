"""Records: encode/decode are exact inverses per field; shards and manifests are atomic and validated."""

from __future__ import annotations

import json

import cv2
import ml_dtypes
import numpy as np
import pytest

from omnidirector_jax.data import records as R


def _record(seed: int = 0, num: int = 6, size: tuple[int, int] = (32, 48), ref_is_frame0: bool = True,
            optional: bool = True) -> R.ClipRecord:
    rng = np.random.default_rng(seed)
    h, w = size
    frames = rng.integers(0, 256, (num, h, w, 3), dtype=np.uint8)
    frames[:, : h // 2] = frames[:, : h // 2] // 16 * 16  # some flat area as well as noise
    w2c = rng.normal(size=(num, 3, 4)).astype(np.float32)
    K = np.tile(np.array([[40.0, 0, 23.5], [0, 40.0, 15.5], [0, 0, 1]], np.float32), (num, 1, 1))
    dist = rng.normal(scale=0.01, size=(num, 4)).astype(np.float32)
    valid = rng.random(num) > 0.3
    rec = R.ClipRecord(
        id=R.clip_id("video.mp4", 10, 10 + num), w2c=w2c, K=K, dist=dist, cuts=(2, 4),
        frames=frames, ref_image=frames[0].copy() if ref_is_frame0 else rng.integers(0, 256, (h, w, 3), np.uint8),
        caption="a textured room, camera dollies in", camera_prompt="",
        meta={"valid": valid, "source": "video.mp4", "fps": 12.5, "shot": [0, 1], "frame_range": [10, 16],
              "nested": {"a": None, "b": 1e-300}})
    if optional:
        rec.latents = rng.normal(size=(2, 4, 6, 16)).astype(ml_dtypes.bfloat16)
        rec.ref_latent = rng.normal(size=(1, 4, 6, 16)).astype(ml_dtypes.bfloat16)
        rec.text_embedding = rng.normal(size=(7, 8)).astype(np.float32)
    return rec


def _codec(frames: np.ndarray, fmt: str, quality: int = 95) -> np.ndarray:
    """What OpenCV gives back for these frames (the reference the record must reproduce)."""
    if fmt == "png":
        return frames
    out = []
    for f in frames:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(f[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        out.append(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return np.stack(out)


def _assert_same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("fmt", ["jpeg", "png", "raw"])
@pytest.mark.parametrize("ref_is_frame0", [True, False])
def test_round_trip_every_field(fmt, ref_is_frame0):
    rec = _record(ref_is_frame0=ref_is_frame0)
    data = R.encode_record(rec, image_format=fmt, quality=90)
    assert data == R.encode_record(rec, image_format=fmt, quality=90)  # deterministic bytes
    out = R.decode_record(data)
    assert out.id == rec.id and out.caption == rec.caption and out.camera_prompt == rec.camera_prompt
    assert out.cuts == (2, 4) and all(isinstance(c, int) for c in out.cuts)
    for name in ("w2c", "K", "dist", "latents", "ref_latent", "text_embedding"):
        _assert_same(getattr(out, name), getattr(rec, name))
    assert out.latents.dtype == ml_dtypes.bfloat16
    expect = _codec(rec.frames, "png" if fmt == "raw" else fmt, 90)
    _assert_same(out.frames, expect)
    _assert_same(out.ref_image, _codec(rec.ref_image[None], "png" if fmt == "raw" else fmt, 90)[0])
    np.testing.assert_array_equal(out.shot_index(), [0, 0, -1, 1, -1, 2])
    if fmt == "png":  # lossless: a second round trip gives the same bytes
        assert R.encode_record(out, image_format="png") == R.encode_record(rec, image_format="png")
    _assert_same(out.meta.pop("valid"), rec.meta["valid"])
    assert out.meta == {k: v for k, v in rec.meta.items() if k != "valid"}


def test_optional_fields_absent_and_partial_decode():
    rec = _record(optional=False)
    data = R.encode_record(rec, image_format="png")
    out = R.decode_record(data, frames=False)
    assert out.frames is None and out.latents is None and out.text_embedding is None
    _assert_same(out.ref_image, rec.frames[0])
    _assert_same(out.w2c, rec.w2c)
    sub = R.decode_record(data, frames=[5, 0, 3])
    _assert_same(sub.frames, rec.frames[[5, 0, 3]])
    with pytest.raises(R.RecordError, match="out of range"):
        R.decode_record(data, frames=[6])


def test_shot_index_from_cuts():
    np.testing.assert_array_equal(R.shot_index(7, (0, 3, 4)), [-1, 0, 0, -1, -1, 1, 1])
    np.testing.assert_array_equal(R.shot_index(3, ()), [0, 0, 0])


def test_bad_records_are_refused():
    rec = _record()
    rec.w2c = rec.w2c.astype(np.float64)
    with pytest.raises(R.RecordError, match="float32"):
        R.encode_record(rec)
    rec = _record()
    rec.cuts = (4, 2)
    with pytest.raises(R.RecordError, match="cuts"):
        R.encode_record(rec)
    rec = _record()
    rec.meta["bad"] = {1, 2}
    with pytest.raises(R.RecordError, match="JSON"):
        R.encode_record(rec)
    data = R.encode_record(_record())
    with pytest.raises(R.RecordError, match="magic"):
        R.decode_record(b"nope" + data[4:])
    with pytest.raises(R.RecordError, match="truncated|corrupt"):
        R.decode_record(data[: len(data) // 2])
    newer = bytearray(data)
    newer[data.index(b'"schema":1') + 9] = ord("9")
    with pytest.raises(R.RecordError, match="newer"):
        R.decode_record(bytes(newer))


def test_shards_manifest_and_dataset(tmp_path):
    recs = [_record(seed=s) for s in range(5)]
    blobs = [R.encode_record(r) for r in recs]
    entries = []
    for name, part in (("a", blobs[:3]), ("b", blobs[3:])):
        rel = f"{R.SHARD_DIR}/{name}{R.SHARD_SUFFIX}"
        info = R.write_shard(tmp_path / rel, part)
        assert info["num_records"] == len(part) and info["sha256"] == R.file_sha256(tmp_path / rel)
        entries.append({"path": rel, "ids": [f"id{name}{i}" for i in range(len(part))], **info})
    assert R.read_shard(tmp_path / entries[1]["path"]) == blobs[3:]
    assert not list(tmp_path.glob(f"{R.SHARD_DIR}/.*"))  # no temporary files left
    manifest = R.make_manifest(entries, frame_size=(32, 48), num_frames=6, fps=12.5, image_format="jpeg",
                               config={"seed": 0})
    assert R.write_manifest(tmp_path, manifest)
    assert not R.write_manifest(tmp_path, manifest)  # unchanged: nothing written
    got = R.read_manifest(tmp_path, verify=True)
    assert got["num_records"] == 5
    ds = R.open_dataset(tmp_path)
    assert len(ds) == 5 and [ds[i] for i in range(5)] == blobs
    _assert_same(ds.record(4, frames=False).w2c, recs[4].w2c)
    import grain

    src = grain.sources.ArrayRecordDataSource(R.shard_paths(tmp_path))
    assert [src[i] for i in range(len(src))] == blobs


def test_manifest_errors(tmp_path):
    with pytest.raises(R.RecordError, match="does not exist"):
        R.read_manifest(tmp_path / "missing")
    with pytest.raises(R.RecordError, match="manifest.json is missing"):
        R.read_manifest(tmp_path)
    (tmp_path / R.MANIFEST_NAME).write_text("{not json")
    with pytest.raises(R.RecordError, match="corrupt manifest"):
        R.read_manifest(tmp_path)
    rel = f"{R.SHARD_DIR}/x{R.SHARD_SUFFIX}"
    info = R.write_shard(tmp_path / rel, [R.encode_record(_record())])
    manifest = R.make_manifest([{"path": rel, "ids": ["x"], **info}], frame_size=(32, 48), num_frames=6,
                               fps=25.0, image_format="jpeg", config={})
    R.write_manifest(tmp_path, {**manifest, "schema_version": R.SCHEMA_VERSION + 1})
    with pytest.raises(R.RecordError, match="newer than this code"):
        R.read_manifest(tmp_path)
    R.write_manifest(tmp_path, manifest)
    shard = tmp_path / rel
    shard.write_bytes(shard.read_bytes()[:100])  # a corrupted shard
    with pytest.raises(R.RecordError, match="checksum"):
        R.read_manifest(tmp_path, verify=True)
    with pytest.raises(R.RecordError):
        R.open_dataset(tmp_path)[0]
    assert json.loads((tmp_path / R.MANIFEST_NAME).read_text()) == manifest  # nothing lost
