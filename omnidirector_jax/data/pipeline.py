"""The Grain input pipeline: clip records in ArrayRecord shards -> per-process host batches -> global arrays.

    it = make_pipeline(cfg, "datasets/synth")          # host batches for this process
    batch = global_batch(next(it), mesh, cfg.mesh.rules)  # jax.Arrays sharded on `activation_batch`
    state = iterator_state(it)                          # JSON-serialisable; restore_iterator(it, state)
    it.close()                                          # stops the worker processes (data.workers > 0)

Order (deterministic for a seed and a process count): ArrayRecord source (tagged with the record's index) ->
seeded global shuffle -> repeat (reshuffled each epoch) -> every `process_count`-th element from
`process_index` -> batch of raw records (drop remainder) -> decode + random temporal crop + resize of each
example (seeded by its position in the stream) -> `IterDataset` -> multiprocessing prefetch over `workers`
processes when workers > 0.

Host batch of b = batch_size // process_count examples (the contract the train step is written against):

    frames     uint8   [b, T, H, W, 3]  T consecutive frames of the clip, resized to H x W (INTER_AREA)
    ref_image  uint8   [b, H, W, 3]
    w2c        float32 [b, T, 3, 4];  K float32 [b, T, 3, 3] (pixels of H x W);  dist float32 [b, T, 4]
    frame_shot int32   [b, T]  shot index from 0 within the crop, -1 on cut (transition) frames
    valid      bool    [b, T]  per-frame pose validity
    text_ids   int32   [b, L];  text_mask bool [b, L]  (L = model.text_len; caption, then camera prompt)
    index      int64   [b]     the record's index in the dataset
    latents, ref_latent        only when the records hold them (the first latent_frames latent frames)
    ref_depth  float32 [b, H, W]  only with model.reader_depth: the reference's camera-z depth (NaN: unknown)

Only the T cropped frames are decoded, JPEG frames at least twice the target size are decoded at a reduced
scale by libjpeg (`IMREAD_REDUCED_*`), and colour comes out as RGB from the decoder; the per-example cost is
what the `bench data` goal depends on. Grain's spawned workers import this module to unpickle the transforms;
it imports jax only inside the functions that need it.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import grain
import numpy as np

from omnidirector_jax.config import Config
from omnidirector_jax.data.record_view import read_clip
from omnidirector_jax.data.shm_batches import SlotReceiver, SlotTransport
from omnidirector_jax.errors import OmniDirectorError

PIPELINE_STATE_VERSION = 1
_U32 = 2**32
_TOKEN_CACHE = 4096  # distinct captions kept tokenized per worker


# --------------------------------------------------------------------------------------------- geometry


def frame_shots(cuts: Sequence[int], start: int, length: int) -> np.ndarray:
    """(length,) int32 shot ids of clip frames [start, start+length): maximal runs of non-cut frames
    numbered from 0 in the crop, -1 on cut frames (what `build_scene_jax` takes as `frame_shot`)."""
    inside = [c - start for c in cuts if start <= c < start + length]
    if not inside:  # the common case: one shot
        return np.zeros(length, np.int32)
    is_cut = np.zeros(length, bool)
    is_cut[inside] = True
    # A shot starts at a non-cut frame that is the crop's first or follows a cut frame.
    starts = ~is_cut & np.concatenate([[True], is_cut[:-1]])
    shot = np.cumsum(starts) - 1
    return np.where(is_cut, -1, shot).astype(np.int32)


def scale_intrinsics(K: np.ndarray, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    """K (..., 3, 3) for an image resized from `src_hw` to `dst_hw`, pixel centres at integers:
    u' = (u + 0.5) * sx - 0.5, so focal and skew scale by sx and the principal point moves by 0.5 * (sx - 1)."""
    out = np.array(K, dtype=np.float32, copy=True)
    if tuple(src_hw) == tuple(dst_hw):
        return out
    sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    out[..., 0, :] *= sx
    out[..., 1, :] *= sy
    out[..., 0, 2] += 0.5 * (sx - 1.0)
    out[..., 1, 2] += 0.5 * (sy - 1.0)
    return out


# IMREAD_REDUCED_GRAYSCALE_f | IMREAD_COLOR_RGB: libjpeg scales by 1/f inside the IDCT (cheap) and the
# decoder writes RGB (no separate colour conversion).
_REDUCE_FLAGS = ((8, cv2.IMREAD_REDUCED_GRAYSCALE_8), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
                 (2, cv2.IMREAD_REDUCED_GRAYSCALE_2))


def decode_flag(src_hw: tuple[int, int], dst_hw: tuple[int, int], jpeg: bool) -> int:
    """`cv2.imdecode` flag: the largest exact 1/f JPEG reduction that keeps the image >= the target size."""
    if jpeg:
        for f, flag in _REDUCE_FLAGS:
            if (src_hw[0] % f == 0 and src_hw[1] % f == 0
                    and src_hw[0] // f >= dst_hw[0] and src_hw[1] // f >= dst_hw[1]):
                return flag | cv2.IMREAD_COLOR_RGB
    return cv2.IMREAD_COLOR_RGB


try:  # libjpeg-turbo without OpenCV's codec layer: same pixels, measured 28% faster on 64x64 frames
    import simplejpeg
except ImportError:  # pragma: no cover - optional speed-up
    simplejpeg = None


def decode_image(buf: bytes | memoryview, dst_hw: tuple[int, int], flag: int,
                 raw_hw: tuple[int, int] | None = None, jpeg: bool = False,
                 out: np.ndarray | None = None, stored_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Stored image -> (H, W, 3) uint8 RGB at `dst_hw` (INTER_AREA when the decoded size differs).
    JPEG/PNG bytes are decoded with `flag`; `raw_hw` means uncompressed RGB bytes of that size. `out`: a
    C-contiguous (H, W, 3) uint8 array to write into; a JPEG whose `stored_hw` is `dst_hw` is decoded
    straight into it."""
    if raw_hw is not None:
        img = np.frombuffer(buf, np.uint8)
        if img.size != raw_hw[0] * raw_hw[1] * 3:
            raise OmniDirectorError(f"a stored raw frame has {img.size} bytes, expected {raw_hw} x 3")
        img = resize_image(img.reshape(*raw_hw, 3), dst_hw)
    elif jpeg and simplejpeg is not None and flag == cv2.IMREAD_COLOR_RGB:  # full-scale JPEG
        # Straight into `out` when the stored size is the target (no allocation, no copy): ~8% per frame.
        direct = out is not None and stored_hw is not None and tuple(stored_hw) == tuple(dst_hw)
        try:
            img = simplejpeg.decode_jpeg(buf, colorspace="RGB", buffer=out if direct else None)
        except ValueError:
            try:  # a frame larger than its record says does not fit `out`: decode it alone, resize below
                img = simplejpeg.decode_jpeg(buf, colorspace="RGB")
            except ValueError:
                raise OmniDirectorError("a stored frame could not be decoded (corrupt JPEG bytes)") from None
        else:
            if direct and img.shape == out.shape:  # a smaller frame than the record says lands below
                return out
        img = resize_image(img, dst_hw)
    else:
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), flag)
        if img is None:
            raise OmniDirectorError("a stored frame could not be decoded (corrupt JPEG/PNG bytes)")
        if img.shape[:2] != tuple(dst_hw):
            img = cv2.resize(img, (dst_hw[1], dst_hw[0]), interpolation=cv2.INTER_AREA)
    if out is None:
        return img
    out[...] = img
    return out


def resize_image(img: np.ndarray, dst_hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> `dst_hw` with INTER_AREA (no-op when already that size)."""
    if img.shape[:2] == tuple(dst_hw):
        return np.ascontiguousarray(img)
    return cv2.resize(img, (dst_hw[1], dst_hw[0]), interpolation=cv2.INTER_AREA)


# ------------------------------------------------------------------------------------------------ source


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the pipeline needs from a dataset folder's manifest: its shards (in order) and their sizes."""

    root: Path
    shards: tuple[Path, ...]
    counts: tuple[int, ...]

    @property
    def num_records(self) -> int:
        return sum(self.counts)


def open_dataset(data_dir: str | Path) -> DatasetInfo:
    """The shards of `data_dir` in manifest order (manifest validated by `records.read_manifest`)."""
    from omnidirector_jax.data import records

    root = Path(data_dir)
    manifest = records.read_manifest(root)  # missing folder/manifest/shard, newer schema: one clear error
    entries = [e for e in manifest["shards"] if int(e["num_records"]) > 0]
    if not entries:
        raise OmniDirectorError(f"dataset {str(root)!r} holds no records")
    return DatasetInfo(root, tuple(root / e["path"] for e in entries),
                       tuple(int(e["num_records"]) for e in entries))


class ClipSource(grain.sources.RandomAccessDataSource):
    """Raw record bytes of every shard, indexed globally; a damaged shard raises one clear error.

    Picklable: each Grain worker reopens the shards lazily (ArrayRecord readers hold file handles)."""

    def __init__(self, info: DatasetInfo) -> None:
        self._info = info
        self._starts = [0, *itertools.accumulate(info.counts)]  # a list: bisect is ~1000x np.searchsorted here
        self._readers: list[Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"_info": self._info, "_starts": self._starts, "_readers": None}

    def _open(self) -> list[Any]:
        readers = []
        for path, count in zip(self._info.shards, self._info.counts, strict=True):
            try:
                src = grain.sources.ArrayRecordDataSource([str(path)])
            except RuntimeError as err:  # riegeli: truncated file, bad footer
                raise OmniDirectorError(f"corrupt shard {path.name}: {_first_line(err)}") from None
            if len(src) != count:
                raise OmniDirectorError(f"corrupt shard {path.name}: holds {len(src)} records, the manifest "
                                        f"says {count}")
            readers.append(src)
        return readers

    def check(self) -> None:
        """Opens every shard now (so a truncated one fails before training starts)."""
        self._readers = self._readers or self._open()

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, index: int) -> bytes:
        if self._readers is None:
            self._readers = self._open()
        shard = bisect.bisect_right(self._starts, index) - 1
        try:
            return self._readers[shard][index - self._starts[shard]]
        except RuntimeError as err:  # riegeli: chunk hash mismatch
            raise OmniDirectorError(f"corrupt shard {self._info.shards[shard].name}: record "
                                    f"{index - self._starts[shard]}: {_first_line(err)}") from None

    def __repr__(self) -> str:
        return f"ClipSource({str(self._info.root)!r}, {len(self)} records in {len(self._info.shards)} shards)"


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


class _TagIndex(grain.transforms.MapWithIndex):
    """(index, raw) pairs: the record's global index travels with it through the shuffle."""

    def __init__(self, num_records: int) -> None:
        self.num_records = num_records

    def map_with_index(self, index: int, element: bytes) -> tuple[int, bytes]:
        # After `repeat`, indices run past the end (Grain reads index mod len): report the record's own.
        return index % self.num_records, element


# ------------------------------------------------------------------------------------------------ decode


def _mix(a: int, b: int) -> int:
    """splitmix64 of the pair (a, b): a cheap, well-mixed 64-bit hash (seeds the crop of one example)."""
    z = (a * 0x9E3779B97F4A7C15 + b + 0x632BE59BD9B4E5BB) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


class DecodeClip(grain.transforms.MapWithIndex):
    """(index, raw record) -> one example of the batch contract, with a random temporal crop.

    The crop is drawn from a hash of (seed, position in this process's stream): deterministic for a seed and
    process count like Grain's `random_map`, without building a NumPy Generator per example (~30 us)."""

    def __init__(self, frames: int, height: int, width: int, text_len: int, latent_frames: int,
                 tokenizer: str | None, seed: int, reference: str = "first", depth: bool = False) -> None:
        self.frames, self.hw, self.text_len, self.seed = frames, (height, width), text_len, seed
        self.depth = depth  # add `ref_depth`: the reference's camera-z depth map (NaN where the record has none)
        self.window_reference = reference == "window"
        self.overlap_reference = reference == "overlap"
        self.latent_frames, self.tokenizer_dir = latent_frames, tokenizer
        self._tokenizer: Any = None
        self._token_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_tokenizer"], state["_token_cache"] = None, {}  # loaded again in each worker
        return state

    def _tokenize(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        cached = self._token_cache.get(text)
        if cached is not None:  # captions repeat across epochs (and, in synthetic data, across clips)
            return cached
        if self._tokenizer is None:
            from omnidirector_jax.models.tokenizer import load_tokenizer

            self._tokenizer = load_tokenizer(self.tokenizer_dir)
        ids, mask = self._tokenizer([text], self.text_len)
        if len(self._token_cache) >= _TOKEN_CACHE:
            self._token_cache.clear()
        self._token_cache[text] = (ids[0], mask[0])
        return ids[0], mask[0]

    def map_with_index(self, position: int, element: tuple[int, bytes]) -> dict[str, np.ndarray]:
        t, (h, w) = self.frames, self.hw
        return self.decode_into(position, element, np.empty((t, h, w, 3), np.uint8), np.empty((h, w, 3), np.uint8))

    def decode_into(self, position: int, element: tuple[int, bytes], video: np.ndarray,
                    ref: np.ndarray) -> dict[str, np.ndarray]:
        """`map_with_index` writing the frames (T, H, W, 3) and the reference (H, W, 3) into given arrays."""
        index, raw = element
        clip = read_clip(raw)
        t = self.frames
        n = clip.num_frames
        if n < t:
            raise OmniDirectorError(f"record {clip.id!r} has {n} frames, the config needs shape.frames = {t}")
        if clip.latents is not None:
            # A causal VAE's first k latent frames encode exactly the first 1 + 4(k-1) frames: crop at 0.
            start = 0
        else:
            start = _mix(self.seed, position) % (n - t + 1)
        src_hw = clip.frame_hw
        jpeg = clip.image_format == "jpeg"
        flag = decode_flag(src_hw, self.hw, jpeg)
        raw_hw = src_hw if clip.image_format == "raw" else None
        for i in range(t):
            decode_image(clip.frame(start + i), self.hw, flag, raw_hw, jpeg, video[i], src_hw)
        # The reference image is usually frame 0: decode it once when the crop starts there. `window`: the frame
        # before the crop, `overlap`: the crop's first frame (a record that gives its own reference image keeps it).
        ref_frame = None  # the clip frame the reference image is, if it is one
        if clip.ref_is_frame0 and self.window_reference and start > 0:
            decode_image(clip.frame(start - 1), self.hw, flag, raw_hw, jpeg, ref, src_hw)
            ref_frame = start - 1
        elif clip.ref_is_frame0 and (start == 0 or self.overlap_reference):
            ref[...] = video[0]
            ref_frame = start
        else:
            decode_image(clip.ref_image, self.hw, flag, raw_hw, jpeg, ref, src_hw)
            ref_frame = 0 if clip.ref_is_frame0 else None
        sl = slice(start, start + t)
        text = clip.caption if not clip.camera_prompt else f"{clip.caption} {clip.camera_prompt}"
        ids, mask = self._tokenize(text)
        out = {
            "frames": video,
            "ref_image": ref,
            "w2c": np.asarray(clip.w2c[sl], np.float32),
            "K": scale_intrinsics(clip.K[sl], src_hw, self.hw),
            "dist": np.asarray(clip.dist[sl], np.float32),
            "frame_shot": frame_shots(clip.cuts, start, t),
            "valid": np.asarray(clip.valid[sl], bool),
            "text_ids": ids,
            "text_mask": mask,
            "index": np.int64(index),
        }
        if self.depth:
            out["ref_depth"] = reference_depth(clip, ref_frame, self.hw)
        if clip.latents is not None:
            if clip.latents.shape[0] < self.latent_frames:
                raise OmniDirectorError(f"record {clip.id!r} has {clip.latents.shape[0]} latent frames, the config "
                                        f"needs {self.latent_frames}")
            out["latents"] = np.asarray(clip.latents[: self.latent_frames])
        if clip.ref_latent is not None:
            out["ref_latent"] = np.asarray(clip.ref_latent)
        return out


def reference_depth(clip: Any, frame: int | None, hw: tuple[int, int]) -> np.ndarray:
    """Camera-z depth (H, W) float32 of clip frame `frame` at size `hw` (nearest pixel: depth is not averaged
    across edges), NaN where unknown (no depth in the record, or a reference image that is no frame)."""
    if clip.depth is None or frame is None:
        return np.full(hw, np.nan, np.float32)
    depth = np.asarray(clip.depth[frame], np.float32)
    if depth.shape != hw:
        import cv2

        depth = cv2.resize(depth, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
    return depth


class DecodeBatch(grain.transforms.MapWithIndex):
    """(batch position, [b x (index, raw record)]) -> one host batch: `DecodeClip` on each example (example i of
    batch k has stream position k·b + i, so crops are those of decoding example by example), stacked.

    Decoding a whole batch in one transform call pays Grain's per-element cost (stage timers, buffers, worker
    transfer) once per batch instead of once per example: most of the pipeline's cost at 64x64."""

    def __init__(self, decode: DecodeClip, batch_size: int) -> None:
        self.decode, self.batch_size = decode, batch_size

    def map_with_index(self, position: int, elements: Sequence[tuple[int, bytes]]) -> dict[str, np.ndarray]:
        base, b = position * self.batch_size, len(elements)
        t, (h, w) = self.decode.frames, self.decode.hw
        video, ref = np.empty((b, t, h, w, 3), np.uint8), np.empty((b, h, w, 3), np.uint8)  # decoded in place
        examples = [self.decode.decode_into(base + i, e, video[i], ref[i]) for i, e in enumerate(elements)]
        out = {k: np.stack([ex[k] for ex in examples]) for k in examples[0] if k not in ("frames", "ref_image")}
        return {"frames": video, "ref_image": ref, **out}


# ---------------------------------------------------------------------------------------------- pipeline

# Grain's `shuffle` maps each index with `index_shuffle`, whose cost grows as the dataset shrinks (measured with
# grain 0.2.18: 5 ms per element for 16 records, 0.5 ms for 256, 8 us for 10k, 5 us from 65k on). Below this
# size a cached per-epoch permutation does the same job in well under a microsecond.
_PERMUTATION_MAX = 1 << 16
_SHM_MIN_BYTES = 1 << 20


class _EpochPermutation(grain.MapDataset):
    """Global shuffle by an explicit permutation per epoch (seeded by (seed, epoch)); reading past the end
    (after `repeat`) selects the next epoch's permutation, as Grain's shuffle does."""

    def __init__(self, parent: grain.MapDataset, seed: int) -> None:
        super().__init__(parent)
        self._seed = seed
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._parent)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    def _permutation(self, epoch: int) -> np.ndarray:
        perm = self._cache.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self._seed, epoch]).permutation(len(self._parent))
            self._cache = {epoch: perm, **{e: p for e, p in self._cache.items() if e == epoch - 1}}
        return perm

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        epoch, i = divmod(index, len(self._parent))
        return self._parent[int(self._permutation(epoch)[i]) + epoch * len(self._parent)]

    def __str__(self) -> str:
        return f"EpochPermutation(seed={self._seed})"


def _shuffle(ds: grain.MapDataset, seed: int) -> grain.MapDataset:
    return _EpochPermutation(ds, seed) if len(ds) <= _PERMUTATION_MAX else ds.shuffle(seed=seed)



@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    """Everything that fixes the stream of examples; saved with the iterator state and checked on restore."""

    num_records: int
    batch: int
    seed: int
    process_index: int
    process_count: int
    workers: int
    frames: int
    height: int
    width: int


def _resolve(cfg: Config, seed: int | None, process_index: int | None, process_count: int | None,
             workers: int | None) -> tuple[int, int, int, int]:
    if process_index is None or process_count is None:
        import jax  # late: see the module docstring

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    seed = cfg.data.seed if seed is None else seed
    workers = cfg.data.workers if workers is None else workers
    if not 0 <= process_index < process_count:
        raise OmniDirectorError(f"process index {process_index} is not in [0, {process_count})")
    if cfg.shape.batch_size % process_count:
        raise OmniDirectorError(f"shape.batch_size {cfg.shape.batch_size} is not divisible by the "
                                f"{process_count} processes")
    if workers < 0:
        raise OmniDirectorError(f"workers must be >= 0, got {workers}")
    return seed % _U32, process_index, process_count, workers


def make_dataset(cfg: Config, data_dir: str | Path, *, seed: int | None = None, process_index: int | None = None,
                 process_count: int | None = None, workers: int | None = None
                 ) -> tuple[grain.IterDataset, PipelineSpec]:
    """The pipeline as a Grain `IterDataset` of host batches, and the spec that identifies its stream."""
    seed, process_index, process_count, workers = _resolve(cfg, seed, process_index, process_count, workers)
    info = open_dataset(data_dir)
    source = ClipSource(info)
    source.check()
    b = cfg.shape.batch_size // process_count
    s = cfg.shape
    decode = DecodeClip(s.frames, s.height, s.width, cfg.model.text_len, s.latent_frames,
                        cfg.data.tokenizer or None, seed + 1, cfg.data.reference,
                        depth=getattr(cfg.model, "reader_depth", False))
    ds = (grain.MapDataset.source(source)
          .map_with_index(_TagIndex(len(source)))
          .pipe(_shuffle, seed=seed)
          .repeat(None)  # reseeded each epoch: a new order every epoch, still deterministic
          [process_index::process_count]
          .batch(b, drop_remainder=True, batch_fn=list)  # raw records; decoded a batch at a time
          .map_with_index(DecodeBatch(decode, b)))
    # Workers hand batches over through reused shared-memory slots (see `shm_batches`); batches in flight per
    # worker: its queue and the trainer's buffer (prefetch each), one being put, one being taken, one spare.
    transport = SlotTransport(slots=2 * cfg.data.prefetch + 3) if workers > 0 else None
    if transport is not None:
        ds = ds.map(transport.to_slots)
    # Few threads, small buffers: decoding is CPU-bound and the buffers hold whole batches.
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=2 if workers == 0 else 0,
                                                 prefetch_buffer_size=cfg.data.prefetch))
    if workers > 0:
        _absl_flags_ready()
        # Grain passes every array of a worker's output through its own shared-memory block by default
        # (min_shm_size 0): measured 7.5 ms per tiny-config batch of 10 arrays, against 0.35 ms to pickle it.
        # Only arrays of at least _SHM_MIN_BYTES (frames of large configs) take the shared-memory path.
        it_ds = grain.experimental.WithOptionsIterDataset(
            it_ds, grain.experimental.DatasetOptions(min_shm_size=_SHM_MIN_BYTES))
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                               per_worker_buffer_size=cfg.data.prefetch),
                                  worker_init_fn=_worker_init)
    spec = PipelineSpec(info.num_records, b, seed, process_index, process_count, workers, s.frames, s.height,
                        s.width)
    return _CheckedIterDataset(it_ds, spec, transport), spec


def _absl_flags_ready() -> None:
    """Grain's multiprocessing reads absl flags; outside an absl `app.run` nobody parsed them (defaults)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _worker_init(worker_index: int, worker_count: int) -> None:
    """One OpenCV thread per worker process: the workers are the parallelism."""
    del worker_index, worker_count
    cv2.setNumThreads(1)


def make_pipeline(cfg: Config, data_dir: str | Path | None = None, *, seed: int | None = None,
                  process_index: int | None = None, process_count: int | None = None,
                  workers: int | None = None) -> grain.DatasetIterator:
    """Iterator of this process's host batches (see the module docstring); `data_dir` defaults to
    `cfg.data.dir`. Supports `get_state` / `set_state` (JSON-serialisable; checked against the spec)."""
    data_dir = data_dir or cfg.data.dir
    if not data_dir:
        raise OmniDirectorError("no dataset folder: pass one or set data.dir")
    ds, _ = make_dataset(cfg, data_dir, seed=seed, process_index=process_index, process_count=process_count,
                         workers=workers)
    return iter(ds)


class _CheckedIterDataset(grain.IterDataset):
    """Wraps the pipeline so its iterator state names the stream it belongs to."""

    def __init__(self, parent: grain.IterDataset, spec: PipelineSpec, transport: SlotTransport | None = None
                 ) -> None:
        super().__init__(parent)
        self._spec, self._transport = spec, transport

    def __iter__(self) -> _CheckedIterator:
        receiver = self._transport.receiver() if self._transport is not None else None
        return _CheckedIterator(self._parent.__iter__(), self._spec, receiver)

    def __str__(self) -> str:
        return f"OmniDirectorPipeline({self._spec})"


class _CheckedIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, spec: PipelineSpec, receiver: SlotReceiver | None = None
                 ) -> None:
        super().__init__(parent)
        self.spec, self._receiver = spec, receiver

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self._parent)
        return self._receiver.take(batch) if self._receiver is not None else batch

    def close(self) -> None:
        super().close()
        if self._receiver is not None:
            self._receiver.close()

    def get_state(self) -> dict[str, Any]:
        return {"version": PIPELINE_STATE_VERSION, "spec": dataclasses.asdict(self.spec),
                "grain": self._parent.get_state()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or "grain" not in state or "spec" not in state:
            raise OmniDirectorError("not an OmniDirector pipeline state (expected keys 'spec' and 'grain')")
        if state.get("version") != PIPELINE_STATE_VERSION:
            raise OmniDirectorError(f"pipeline state version {state.get('version')!r} is not "
                                    f"{PIPELINE_STATE_VERSION}")
        mine = dataclasses.asdict(self.spec)
        diff = {k: (v, mine.get(k)) for k, v in state["spec"].items() if mine.get(k) != v}
        if diff:
            detail = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in sorted(diff.items()))
            raise OmniDirectorError(f"the saved pipeline state belongs to a different stream ({detail})")
        self._parent.set_state(state["grain"])


def iterator_state(it: grain.DatasetIterator) -> dict[str, Any]:
    """The iterator's state as plain JSON types (what the checkpoint stores)."""
    return json.loads(json.dumps(it.get_state()))


def restore_iterator(it: grain.DatasetIterator, state: Mapping[str, Any] | str) -> grain.DatasetIterator:
    """Positions `it` (a fresh `make_pipeline` iterator) at `state` (dict or its JSON text); returns it."""
    it.set_state(json.loads(state) if isinstance(state, str) else state)
    return it


# ------------------------------------------------------------------------------------------- to devices


def global_batch(host_batch: Mapping[str, np.ndarray], mesh: Any, rules: Mapping[str, Any],
                 keys: Sequence[str] | None = None) -> dict[str, Any]:
    """Global `jax.Array`s from every process's host batch: leading axis sharded like `activation_batch`.

    Each process passes its own b examples; the global batch is b * process_count (the processes' slices in
    process order). int64 leaves become int32 unless x64 is enabled."""
    import jax
    from jax.sharding import NamedSharding

    from omnidirector_jax.parallel.rules import batch_spec

    out = {}
    for key in keys if keys is not None else host_batch:
        value = np.asarray(host_batch[key])
        if value.dtype == np.int64 and not jax.config.jax_enable_x64:
            value = value.astype(np.int32)
        global_shape = (value.shape[0] * jax.process_count(), *value.shape[1:])
        sharding = NamedSharding(mesh, batch_spec(rules, mesh, global_shape))
        out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return out
