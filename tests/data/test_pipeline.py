"""The Grain pipeline: batch contract, resumable state, process sharding, determinism, workers, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import jax
import numpy as np
import pytest
from pipeline_fixtures import tiny_record, write_dataset

from omnidirector_jax.config import load_config
from omnidirector_jax.data import pipeline as pl
from omnidirector_jax.errors import OmniDirectorError
from omnidirector_jax.models.tokenizer import ByteTokenizer

ROOT = Path(__file__).resolve().parents[2]
N = 16  # records: 8 per process with 2 processes = two batches of 4


def _cfg(*overrides: str):
    base = ["shape.frames=5", "shape.height=16", "shape.width=16", "shape.batch_size=8"]
    return load_config(ROOT / "configs/tiny_cpu.yaml", base + list(overrides), num_devices=8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("clips")
    return root, write_dataset(root, N, shards=3)


def _take(it, n: int) -> list[dict]:
    return [next(it) for _ in range(n)]


def _same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batch_contract(dataset):
    root, clips = dataset
    cfg = _cfg()
    batch = next(pl.make_pipeline(cfg, root, process_index=0, process_count=2, workers=0))
    b, t, L = 4, 5, cfg.model.text_len
    expect = {"frames": ((b, t, 16, 16, 3), np.uint8), "ref_image": ((b, 16, 16, 3), np.uint8),
              "w2c": ((b, t, 3, 4), np.float32), "K": ((b, t, 3, 3), np.float32), "dist": ((b, t, 4), np.float32),
              "frame_shot": ((b, t), np.int32), "valid": ((b, t), bool), "text_ids": ((b, L), np.int32),
              "text_mask": ((b, L), bool), "index": ((b,), np.int64)}
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expect
    tok = ByteTokenizer()
    for row in range(b):
        clip = clips[int(batch["index"][row])]
        start = int(round(batch["w2c"][row, 0, 0, 3])) - 100 * int(batch["index"][row])  # x = t + 100 i
        assert 0 <= start <= 9 - t
        want = [cv2.resize(f, (16, 16), interpolation=cv2.INTER_AREA) for f in clip.frames[start:start + t]]
        np.testing.assert_array_equal(batch["frames"][row], np.stack(want))
        np.testing.assert_array_equal(batch["ref_image"][row],
                                      cv2.resize(clip.ref_image, (16, 16), interpolation=cv2.INTER_AREA))
        np.testing.assert_array_equal(batch["valid"][row], clip.valid[start:start + t])
        np.testing.assert_allclose(batch["K"][row, 0, 0, 0], clip.K[0, 0, 0] / 2)
        cut = [c - start for c in clip.cuts if start <= c < start + t]
        shots = pl.frame_shots(clip.cuts, start, t)
        np.testing.assert_array_equal(batch["frame_shot"][row], shots)
        assert [i for i in range(t) if shots[i] == -1] == cut
        text = clip.caption + (f" {clip.camera_prompt}" if clip.camera_prompt else "")
        assert tok.decode(batch["text_ids"][row][batch["text_mask"][row]]) == text[: L - 1]


@pytest.mark.parametrize("reference", ["window", "overlap"])
def test_window_and_overlap_references(dataset, reference):
    """window: the frame before the crop (frame 0 for a crop at 0); overlap: the crop's own first frame."""
    root, clips = dataset
    batch = next(pl.make_pipeline(_cfg(f"data.reference={reference}"), root, process_index=0, process_count=1,
                                  workers=0))
    starts = []
    for row in range(batch["frames"].shape[0]):
        clip = clips[int(batch["index"][row])]
        start = int(round(batch["w2c"][row, 0, 0, 3])) - 100 * int(batch["index"][row])
        starts.append(start)
        at = start if reference == "overlap" else max(start - 1, 0)
        want = cv2.resize(clip.frames[at], (16, 16), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(batch["ref_image"][row], want)
    assert any(s > 0 for s in starts)  # the batch has crops that do not start at frame 0


def test_frame_shots_and_intrinsics():
    np.testing.assert_array_equal(pl.frame_shots([3, 4, 8], 2, 8), [0, -1, -1, 1, 1, 1, -1, 2])
    np.testing.assert_array_equal(pl.frame_shots([0], 0, 3), [-1, 0, 0])
    np.testing.assert_array_equal(pl.frame_shots([], 5, 2), [0, 0])
    # Resizing maps pixel centres by u' = (u + 0.5) s - 0.5: the scaled K must project there.
    K = np.array([[50.0, 0.3, 31.5], [0, 45.0, 20.0], [0, 0, 1]], np.float32)
    x = np.array([0.3, -0.2, 2.0])
    u = K @ x / x[2]
    K2 = pl.scale_intrinsics(K, (48, 64), (12, 32))
    u2 = K2 @ x / x[2]
    np.testing.assert_allclose(u2[:2], [(u[0] + 0.5) * 0.5 - 0.5, (u[1] + 0.5) * 0.25 - 0.5], rtol=1e-5)


def test_reduced_jpeg_decode_matches_full_decode():
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (128, 96, 3), np.uint8), (0, 0), 4)
    buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    flag = pl.decode_flag((128, 96), (32, 24), jpeg=True)
    assert flag == cv2.IMREAD_REDUCED_GRAYSCALE_4 | cv2.IMREAD_COLOR_RGB
    assert pl.decode_flag((128, 96), (33, 24), jpeg=True) == cv2.IMREAD_REDUCED_GRAYSCALE_2 | cv2.IMREAD_COLOR_RGB
    assert pl.decode_flag((128, 96), (32, 24), jpeg=False) == cv2.IMREAD_COLOR_RGB
    fast = pl.decode_image(buf, (32, 24), flag)
    full = cv2.resize(cv2.cvtColor(cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB),
                      (24, 32), interpolation=cv2.INTER_AREA)
    assert fast.shape == (32, 24, 3)
    assert np.abs(fast.astype(int) - full).mean() < 2.0


def test_decode_into_a_given_array_equals_a_fresh_decode():
    """The batch decodes in place (JPEG straight into the batch buffer): same pixels as a fresh decode, for
    a full-size JPEG, a JPEG of another stored size than the header says, a resized PNG and raw bytes."""
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.integers(0, 255, (32, 48, 3), np.uint8), (0, 0), 2)
    jpg = cv2.imencode(".jpg", img)[1].tobytes()
    png = cv2.imencode(".png", img)[1].tobytes()
    cases = [(jpg, (32, 48), True, None, (32, 48)),  # decoded straight into `out`
             (jpg, (16, 24), True, None, (16, 24)),  # the frame is larger than its record says: resized
             (cv2.resize(img, (24, 16)), (32, 48), True, None, (32, 48)),  # smaller than it says: resized
             (png, (16, 24), False, None, (32, 48)),
             (img.tobytes(), (16, 24), False, (32, 48), (32, 48))]
    for buf, dst, jpeg, raw_hw, stored in cases:
        buf = cv2.imencode(".jpg", buf)[1].tobytes() if isinstance(buf, np.ndarray) else buf
        flag = pl.decode_flag(stored, dst, jpeg)
        fresh = pl.decode_image(buf, dst, flag, raw_hw, jpeg)
        out = np.full((*dst, 3), 7, np.uint8)
        got = pl.decode_image(buf, dst, flag, raw_hw, jpeg, out=out, stored_hw=stored)
        assert got is out
        np.testing.assert_array_equal(out, fresh)


def test_restored_state_yields_exactly_the_next_batches(dataset):
    root, _ = dataset
    cfg = _cfg()
    it = pl.make_pipeline(cfg, root, process_index=0, process_count=1, workers=0)
    _take(it, 3)  # crosses the first epoch (16 records, batches of 8)
    state = json.dumps(pl.iterator_state(it))
    expected = _take(it, 3)
    epoch = np.concatenate([b["index"] for b in expected[1:]])  # the third epoch: every record once
    assert sorted(epoch.tolist()) == list(range(N))
    fresh = pl.restore_iterator(pl.make_pipeline(cfg, root, process_index=0, process_count=1, workers=0), state)
    _same(_take(fresh, 3), expected)


def test_two_processes_get_disjoint_examples_covering_an_epoch(dataset):
    root, _ = dataset
    cfg = _cfg()
    seen = []
    for p in range(2):
        it = pl.make_pipeline(cfg, root, process_index=p, process_count=2, workers=0)
        seen.append([int(i) for b in _take(it, N // 2 // 4) for i in b["index"]])
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(N))


def test_deterministic_for_a_seed(dataset):
    root, _ = dataset
    cfg = _cfg()
    a = _take(pl.make_pipeline(cfg, root, seed=3, process_index=0, process_count=1, workers=0), 2)
    b = _take(pl.make_pipeline(cfg, root, seed=3, process_index=0, process_count=1, workers=0), 2)
    c = _take(pl.make_pipeline(cfg, root, seed=4, process_index=0, process_count=1, workers=0), 2)
    _same(a, b)
    assert any(not np.array_equal(x["index"], y["index"]) for x, y in zip(a, c, strict=True))


def test_two_workers_same_stream_and_state(dataset):
    root, _ = dataset
    cfg = _cfg()
    reference = _take(pl.make_pipeline(cfg, root, process_index=0, process_count=1, workers=0), 5)
    it = pl.make_pipeline(cfg, root, process_index=0, process_count=1, workers=2)
    try:
        _same(_take(it, 2), reference[:2])
        state = pl.iterator_state(it)
        slot_files = list(it._receiver._files)  # the batches came through the workers' shared-memory slots
        assert len(slot_files) >= 1
    finally:
        it.close()
    assert not any(Path(f).exists() for f in slot_files)  # and their files are gone with the iterator
    fresh = pl.restore_iterator(pl.make_pipeline(cfg, root, process_index=0, process_count=1, workers=2), state)
    try:
        _same(_take(fresh, 3), reference[2:5])
    finally:
        fresh.close()


def test_state_of_another_stream_is_refused(dataset):
    root, _ = dataset
    cfg = _cfg()
    state = pl.iterator_state(pl.make_pipeline(cfg, root, process_index=0, process_count=2, workers=0))
    other = pl.make_pipeline(cfg, root, process_index=0, process_count=1, workers=0)
    with pytest.raises(OmniDirectorError, match="process_count 2 -> 1"):
        pl.restore_iterator(other, state)


def test_global_batch_shards_the_batch_axis(dataset):
    root, _ = dataset
    cfg = _cfg("mesh=fsdp")
    from omnidirector_jax.parallel.mesh import make_mesh

    mesh = make_mesh(cfg.mesh)
    host = next(pl.make_pipeline(cfg, root, workers=0))
    arrays = pl.global_batch(host, mesh, cfg.mesh.rules)
    assert arrays["frames"].shape == host["frames"].shape
    assert arrays["frames"].sharding.spec[0] == ("data", "fsdp") or arrays["frames"].sharding.spec[0] == "fsdp"
    assert len(arrays["frames"].addressable_shards) == jax.device_count()
    assert arrays["frames"].addressable_shards[0].data.shape[0] == 8 // mesh.shape["fsdp"] // mesh.shape["data"]
    np.testing.assert_array_equal(np.asarray(arrays["w2c"]), host["w2c"])
    assert arrays["index"].dtype == np.int32


def test_corrupt_shard_gives_one_clear_error(tmp_path):
    cfg = _cfg()
    root = tmp_path / "d"
    write_dataset(root, 4, shards=2)
    shard = root / "shards/clips-00001.array_record"
    data = bytearray(shard.read_bytes())
    for k in range(200, 600, 3):  # inside the first record's chunk
        data[k] ^= 0xFF
    shard.write_bytes(bytes(data))
    it = pl.make_pipeline(cfg, root, workers=0, process_index=0, process_count=1)
    with pytest.raises(OmniDirectorError, match="corrupt shard clips-00001"):
        _take(it, 2)
    shard.write_bytes(bytes(data[:5000]))  # truncated: fails when the pipeline is made
    with pytest.raises(OmniDirectorError, match="corrupt shard clips-00001"):
        pl.make_pipeline(cfg, root, workers=0, process_index=0, process_count=1)


def test_bad_input(tmp_path, dataset):
    root, _ = dataset
    with pytest.raises(OmniDirectorError, match="does not exist"):
        pl.make_pipeline(_cfg(), tmp_path / "missing", workers=0)
    with pytest.raises(OmniDirectorError, match="9 frames"):
        next(pl.make_pipeline(_cfg("shape.frames=13"), root, workers=0, process_index=0, process_count=1))
    with pytest.raises(OmniDirectorError, match="not divisible"):
        pl.make_pipeline(_cfg(), root, workers=0, process_index=0, process_count=3)


def test_bench_data_bad_folder_is_one_error_line(tmp_path, capsys):
    from omnidirector_jax.cli import main

    assert main(["bench", "data", "--config", str(ROOT / "configs/tiny_cpu.yaml"), "--data",
                 str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: dataset folder")


@pytest.mark.parametrize("image_format", ["jpeg", "raw"])
def test_frames_match_records_decode(tmp_path, image_format):
    """At the stored size the pipeline's frames are exactly what `records.decode_record` gives."""
    from omnidirector_jax.data import records

    root = tmp_path / image_format
    recs = write_dataset(root, 4, shards=1, image_format=image_format, smooth=True)
    cfg = _cfg("shape.height=32", "shape.width=32")  # 8 examples: two epochs of the 4 records
    batch = next(pl.make_pipeline(cfg, root, process_index=0, process_count=1, workers=0))
    source = records.open_dataset(root)
    for row, index in enumerate(batch["index"]):
        start = int(round(batch["w2c"][row, 0, 0, 3])) - 100 * int(index)
        want = source.record(int(index), frames=list(range(start, start + 5)))
        np.testing.assert_array_equal(batch["frames"][row], want.frames)
        np.testing.assert_array_equal(batch["ref_image"][row], want.ref_image)
        np.testing.assert_array_equal(pl.frame_shots(recs[int(index)].cuts, 0, 9),
                                      records.shot_index(9, recs[int(index)].cuts))


def test_latents_pass_through_with_the_crop_at_frame_0(tmp_path):
    import dataclasses

    import ml_dtypes

    from omnidirector_jax.data import records

    root = tmp_path / "lat"
    recs = []
    for i in range(8):
        rec = tiny_record(i)
        rng = np.random.default_rng(i)
        recs.append(dataclasses.replace(
            rec, latents=rng.standard_normal((3, 4, 4, 4)).astype(ml_dtypes.bfloat16),
            ref_latent=rng.standard_normal((1, 4, 4, 4)).astype(ml_dtypes.bfloat16)))
    summary = records.write_shard(root / "shards/a.array_record", [records.encode_record(r, "png") for r in recs])
    records.write_manifest(root, records.make_manifest(
        [{"path": "shards/a.array_record", "ids": [r.id for r in recs], **summary}], frame_size=(32, 32),
        num_frames=9, fps=None, image_format="png", config={}))
    # A VAE config (4x temporal): 5 frames are 2 latent frames.
    vae = ("conditions.encoder=vae", "shape.vae_spatial=8", "shape.vae_temporal=4", "model.latent_channels=16")
    batch = next(pl.make_pipeline(_cfg(*vae), root, workers=0, process_index=0, process_count=1))
    assert batch["latents"].shape == (8, 2, 4, 4, 4) and batch["latents"].dtype == ml_dtypes.bfloat16
    for row, index in enumerate(batch["index"]):
        np.testing.assert_array_equal(batch["latents"][row], recs[index].latents[:2])
        np.testing.assert_array_equal(batch["ref_latent"][row], recs[index].ref_latent)
        assert batch["w2c"][row, 0, 0, 3] == 100 * index  # crop start 0


def test_bench_data_reports_rates_against_the_train_step(dataset, monkeypatch, capsys):
    """The command's wiring and arithmetic (the train step's timing is stubbed: compiling it is `bench model`'s
    test, and speed is never asserted)."""
    from omnidirector_jax.cli import main
    from omnidirector_jax.data import pipeline_commands

    root, _ = dataset
    monkeypatch.setattr(pipeline_commands, "train_step_seconds", lambda cfg: 0.25)
    assert main(["bench", "data", "--config", str(ROOT / "configs/tiny_cpu.yaml"), "--data", str(root),
                 "--workers", "0", "--batches", "3", "--warmup", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["train_step"] == {"step_s": 0.25, "examples_per_s": 32.0, "frames_per_s": 32.0 * 5}
    (row,) = report["loader"]
    assert row["workers"] == 0 and row["examples"] == 24
    assert row["ratio"] == pytest.approx(row["examples_per_s"] / 32.0)
    assert row["frames_per_s"] == pytest.approx(5 * row["examples_per_s"])


def test_corrupt_frame_bytes_give_one_clear_error():
    flag = pl.decode_flag((32, 32), (32, 32), jpeg=True)
    for jpeg in (True, False):
        with pytest.raises(OmniDirectorError, match="could not be decoded"):
            pl.decode_image(b"\xff\xd8 not a jpeg", (32, 32), flag, jpeg=jpeg)


@pytest.mark.parametrize("reference", ["first", "window", "overlap"])
def test_reference_depth_follows_the_reference_frame(reference):
    """With depth (model.reader_depth) each example carries its reference frame's depth map from the record's
    `depth` meta array, resized to the batch size by nearest pixel; NaN for a record without depth."""
    from omnidirector_jax.data import records

    deep = tiny_record(1, frames=9, hw=(32, 32))
    depth = (1.0 + np.arange(9, dtype=np.float32)[:, None, None] + np.zeros((9, 32, 32), np.float32))
    depth[:, :, 16:] *= 2.0  # the right half twice as far
    deep.meta["depth"] = depth.astype(np.float16)
    decode = pl.DecodeClip(5, 16, 16, 8, 5, None, seed=3, reference=reference, depth=True)
    starts = set()
    for position in range(12):
        ex = decode.map_with_index(position, (1, records.encode_record(deep, "png")))
        start = int(round(ex["w2c"][0, 0, 3])) - 100
        starts.add(start)
        at = {"first": 0, "window": max(start - 1, 0), "overlap": start}[reference]
        want = cv2.resize(depth[at], (16, 16), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(ex["ref_depth"], want)
        assert ex["ref_depth"].dtype == np.float32
    assert len(starts) > 1
    plain = decode.map_with_index(0, (0, records.encode_record(tiny_record(0), "png")))
    assert plain["ref_depth"].shape == (16, 16) and np.isnan(plain["ref_depth"]).all()
    without = pl.DecodeClip(5, 16, 16, 8, 5, None, seed=3, reference=reference)
    assert "ref_depth" not in without.map_with_index(0, (1, records.encode_record(deep, "png")))
