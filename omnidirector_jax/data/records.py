"""Training records: one clip = one record, stored in ArrayRecord shards listed by a JSON manifest.

The record (``ClipRecord``) is what the train step needs to render the camera grid on device and to
compute the loss; the grid itself is never stored.

=================  ==========================  ===============================================================
field              type                        meaning
=================  ==========================  ===============================================================
``id``             str                         stable id: a hash of the source and the clip's frame range
                                               (:func:`clip_id`)
``w2c``            (T,3,4) float32             world-to-camera, OpenCV convention (+X right, +Y down, +Z fwd)
``K``              (T,3,3) float32             intrinsics in pixels **of the stored frame size**
``dist``           (T,4) float32               Kannala–Brandt k1..k4 (zeros for a pinhole camera)
``cuts``           tuple[int, ...]             sorted frame indices (within the clip) that are transitions;
                                               shot of each frame: :meth:`ClipRecord.shot_index` (−1 on cuts)
``frames``         (T,H,W,3) uint8 RGB         each frame compressed on its own (JPEG default, PNG lossless,
                                               or raw)
``ref_image``      (H,W,3) uint8 RGB           the reference image (the clip's first frame unless given)
``caption``        str                         text describing the content
``camera_prompt``  str                         camera description; "" until the prompting step fills it
``latents``        optional array (bf16)       precomputed VAE latents of ``frames``
``ref_latent``     optional array (bf16)       precomputed VAE latent of ``ref_image``
``text_embedding`` optional array              precomputed text-encoder output
``meta``           dict                        JSON values plus NumPy arrays; always ``valid`` (T,) bool
                                               (per-frame pose validity); builders add ``source``, ``fps``,
                                               ``shot``, ``estimator``, ``frame_range``, ``seed``, ``class``;
                                               synthetic clips ``depth`` (T,H,W) float16 (camera z per pixel)
=================  ==========================  ===============================================================

Byte layout of an encoded record (version :data:`SCHEMA_VERSION`)::

    b"ODCR" | u32 little-endian header length | header (UTF-8 JSON, sorted keys) | payload

The header holds the scalar fields and, for every array and every compressed image, its ``[offset,
nbytes]`` in the payload, so :func:`decode_record` can decode the poses alone (``frames=False``) or a
subset of frames (``frames=[0, 4, 8]``) without touching the rest. Encoding is deterministic (same record,
same bytes) and :func:`decode_record` is its exact inverse: every field comes back bit-identical, frames
being exactly what the image codec produced (PNG and raw: the input frames; JPEG: ``cv2.imdecode`` of
``cv2.imencode``'s output, see :func:`compress_image`). A ``ref_image`` equal to frame 0 is stored once.

A dataset directory::

    DIR/manifest.json        schema_version, record count, frame size, fps, the build config, and per shard:
                             path (relative), record count, ids, sha256, bytes — written atomically
    DIR/shards/*.array_record  ArrayRecord files written with ``group_size:1`` (random access), atomically

:func:`open_dataset` gives random access over all shards in manifest order (Grain's
``ArrayRecordDataSource`` over :func:`shard_paths` does the same for pipelines).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omnidirector_jax.errors import OmniDirectorError

SCHEMA_VERSION = 1
MAGIC = b"ODCR"
MANIFEST_NAME = "manifest.json"
SHARD_DIR = "shards"
SHARD_SUFFIX = ".array_record"
# group_size:1 makes every record its own chunk (random access); frames are already compressed.
SHARD_OPTIONS = "group_size:1,uncompressed"
IMAGE_FORMATS = ("jpeg", "png", "raw")
_ARRAY_DTYPES = ("float32", "float16", "bfloat16", "float64", "uint8", "int32", "int64", "bool")
_OPTIONAL_ARRAYS = ("latents", "ref_latent", "text_embedding")


class RecordError(OmniDirectorError):
    """A record, shard or manifest that is malformed, corrupt or from an unknown schema."""


# ------------------------------------------------------------------------------------------------ record
@dataclasses.dataclass(eq=False)
class ClipRecord:
    """One training example (see the module docstring for the contract of each field)."""

    id: str
    w2c: np.ndarray
    K: np.ndarray
    dist: np.ndarray
    cuts: tuple[int, ...]
    frames: np.ndarray | None
    ref_image: np.ndarray
    caption: str = ""
    camera_prompt: str = ""
    latents: np.ndarray | None = None
    ref_latent: np.ndarray | None = None
    text_embedding: np.ndarray | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.w2c.shape[0])

    @property
    def valid(self) -> np.ndarray:
        """(T,) bool per-frame pose validity (all true when the builder did not say)."""
        valid = self.meta.get("valid")
        return np.ones(self.num_frames, bool) if valid is None else np.asarray(valid, bool)

    def shot_index(self) -> np.ndarray:
        """(T,) int32: shot of each frame (runs of frames between cuts, counted from 0), −1 on cut frames."""
        return shot_index(self.num_frames, self.cuts)


def shot_index(num_frames: int, cuts: Sequence[int]) -> np.ndarray:
    """(T,) int32 shot id per frame: frames between cuts share an id, cut frames get −1."""
    out = np.full(num_frames, -1, dtype=np.int32)
    is_cut = np.zeros(num_frames, bool)
    is_cut[list(cuts)] = True
    shot, prev_cut = -1, True
    for i in range(num_frames):
        if not is_cut[i]:
            if prev_cut:
                shot += 1
            out[i] = shot
        prev_cut = bool(is_cut[i])
    return out


def clip_id(source: str, start: int, end: int, extra: str = "") -> str:
    """Stable 16-hex-digit id of the clip [start, end) of ``source`` (plus any build-specific ``extra``)."""
    key = f"{source}\x00{int(start)}\x00{int(end)}\x00{extra}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ images
def compress_image(image: np.ndarray, image_format: str = "jpeg", quality: int = 95) -> bytes:
    """One RGB uint8 image → bytes (JPEG / PNG via OpenCV, or raw)."""
    import cv2

    if image_format == "raw":
        return np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    bgr = np.ascontiguousarray(image[..., ::-1])
    if image_format == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif image_format == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        raise RecordError(f"image format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    if not ok:
        raise RecordError(f"OpenCV could not encode a {image.shape} image as {image_format}")
    return buf.tobytes()


def decompress_image(data: bytes | memoryview, image_format: str, shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`compress_image`: bytes → (H, W, 3) uint8 RGB."""
    import cv2

    if image_format == "raw":
        image = np.frombuffer(data, np.uint8)
        if image.size != int(np.prod(shape)):
            raise RecordError(f"raw image has {image.size} bytes, expected shape {tuple(shape)}")
        return image.reshape(shape).copy()
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape != tuple(shape):
        raise RecordError(f"corrupt {image_format} image in record (expected shape {tuple(shape)})")
    return np.ascontiguousarray(bgr[..., ::-1])


# ---------------------------------------------------------------------------------------- encode/decode
def _dtype_name(arr: np.ndarray) -> str:
    name = str(arr.dtype)
    if name not in _ARRAY_DTYPES:
        raise RecordError(f"unsupported array dtype {name} (allowed: {', '.join(_ARRAY_DTYPES)})")
    return name


def _np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    if name not in _ARRAY_DTYPES:
        raise RecordError(f"record has an array of unknown dtype {name!r}")
    return np.dtype(name)


def _check_array(name: str, arr: Any, shape: tuple, dtype: str | None = None) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        arr = np.asarray(arr)
    if arr.ndim != len(shape) or any(s is not None and a != s for a, s in zip(arr.shape, shape, strict=True)):
        raise RecordError(f"record field {name} must have shape {shape} (None: any), got {arr.shape}")
    if dtype is not None and str(arr.dtype) != dtype:
        raise RecordError(f"record field {name} must be {dtype}, got {arr.dtype}")
    return arr


def validate_record(rec: ClipRecord) -> None:
    """Raise :class:`RecordError` when a field breaks the contract (shapes, dtypes, finiteness, cuts)."""
    if not isinstance(rec.id, str) or not rec.id:
        raise RecordError("record id must be a non-empty string")
    num = int(np.shape(rec.w2c)[0]) if np.ndim(rec.w2c) == 3 else -1
    if num < 1:
        raise RecordError(f"record {rec.id}: w2c must have shape (T, 3, 4), got {np.shape(rec.w2c)}")
    _check_array("w2c", rec.w2c, (num, 3, 4), "float32")
    _check_array("K", rec.K, (num, 3, 3), "float32")
    _check_array("dist", rec.dist, (num, 4), "float32")
    for name in ("w2c", "K", "dist"):
        if not np.all(np.isfinite(getattr(rec, name))):
            raise RecordError(f"record {rec.id}: {name} has non-finite values")
    cuts = tuple(rec.cuts)
    if any(not isinstance(c, int | np.integer) for c in cuts) or list(cuts) != sorted(set(cuts)) or \
            (cuts and (cuts[0] < 0 or cuts[-1] >= num)):
        raise RecordError(f"record {rec.id}: cuts must be sorted unique frame indices in [0, {num}), got {cuts}")
    if rec.frames is None:
        raise RecordError(f"record {rec.id}: frames are required to encode a record")
    frames = _check_array("frames", rec.frames, (num, None, None, 3), "uint8")
    _check_array("ref_image", rec.ref_image, (frames.shape[1], frames.shape[2], 3), "uint8")
    if not isinstance(rec.caption, str) or not isinstance(rec.camera_prompt, str):
        raise RecordError(f"record {rec.id}: caption and camera_prompt must be strings")
    if not isinstance(rec.meta, dict) or any(not isinstance(k, str) for k in rec.meta):
        raise RecordError(f"record {rec.id}: meta must be a dict with string keys")
    if "valid" in rec.meta:
        _check_array("meta['valid']", rec.meta["valid"], (num,), "bool")


def encode_record(rec: ClipRecord, image_format: str = "jpeg", quality: int = 95) -> bytes:
    """Serialise a record (deterministic bytes). Frames and the reference image are compressed one by one."""
    validate_record(rec)
    if image_format not in IMAGE_FORMATS:
        raise RecordError(f"image format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    chunks: list[bytes] = []
    offset = 0

    def put(blob: bytes) -> list[int]:
        nonlocal offset
        chunks.append(blob)
        span = [offset, len(blob)]
        offset += len(blob)
        return span

    def put_array(arr: np.ndarray) -> dict:
        dtype = _dtype_name(arr)
        return {"dtype": dtype, "shape": list(arr.shape), "span": put(np.ascontiguousarray(arr).tobytes())}

    arrays = {name: put_array(np.asarray(getattr(rec, name))) for name in ("w2c", "K", "dist")}
    for name in _OPTIONAL_ARRAYS:
        value = getattr(rec, name)
        if value is not None:
            arrays[name] = put_array(np.asarray(value))
    meta_json, meta_arrays = {}, {}
    for key, value in rec.meta.items():
        if isinstance(value, np.ndarray):
            meta_arrays[key] = put_array(value)
        else:
            meta_json[key] = value
    frames = [put(compress_image(f, image_format, quality)) for f in rec.frames]
    same_ref = np.array_equal(rec.ref_image, rec.frames[0])
    ref_span = "frame0" if same_ref else put(compress_image(rec.ref_image, image_format, quality))
    header = {
        "schema": SCHEMA_VERSION, "id": rec.id, "caption": rec.caption, "camera_prompt": rec.camera_prompt,
        "cuts": [int(c) for c in rec.cuts], "image_format": image_format,
        "frame_shape": list(rec.frames.shape), "frames": frames, "ref_image": ref_span,
        "arrays": arrays, "meta": meta_json, "meta_arrays": meta_arrays,
    }
    try:
        head = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise RecordError(f"record {rec.id}: meta values must be JSON (or NumPy arrays): {err}") from None
    return b"".join([MAGIC, struct.pack("<I", len(head)), head, *chunks])


def read_header(data: bytes | memoryview) -> tuple[dict, memoryview]:
    """The JSON header of an encoded record and a view of its payload (cheap: nothing is decoded)."""
    view = memoryview(data)
    if len(view) < 8 or bytes(view[:4]) != MAGIC:
        raise RecordError("not an OmniDirector clip record (bad magic bytes)")
    (size,) = struct.unpack("<I", view[4:8])
    if 8 + size > len(view):
        raise RecordError("truncated record (header runs past the end)")
    try:
        header = json.loads(bytes(view[8:8 + size]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f"corrupt record header: {err}") from None
    schema = header.get("schema")
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise RecordError(f"record schema {schema!r} is newer than this code understands ({SCHEMA_VERSION}); "
                          "upgrade omnidirector-jax")
    return header, view[8 + size:]


def _span(payload: memoryview, span: Sequence[int]) -> memoryview:
    start, size = int(span[0]), int(span[1])
    if start < 0 or size < 0 or start + size > len(payload):
        raise RecordError("truncated record (a field runs past the end)")
    return payload[start:start + size]


def _get_array(payload: memoryview, spec: dict) -> np.ndarray:
    dtype = _np_dtype(spec["dtype"])
    raw = _span(payload, spec["span"])
    shape = tuple(spec["shape"])
    if len(raw) != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
        raise RecordError(f"record array has {len(raw)} bytes, inconsistent with {shape} {dtype}")
    return np.frombuffer(raw, dtype).reshape(shape).copy()


def decode_record(data: bytes | memoryview, frames: bool | Sequence[int] = True) -> ClipRecord:
    """Inverse of :func:`encode_record`.

    ``frames=False`` skips every image (``frames`` is None, ``ref_image`` is still decoded); a sequence of
    indices decodes only those frames, in that order (``frames`` then has ``len(indices)`` entries).
    """
    header, payload = read_header(data)
    try:
        shape = tuple(header["frame_shape"])
        fmt = header["image_format"]
        spans = header["frames"]
        arrays = {name: _get_array(payload, spec) for name, spec in header["arrays"].items()}
        meta = dict(header["meta"])
        meta.update({k: _get_array(payload, spec) for k, spec in header["meta_arrays"].items()})

        def image(span) -> np.ndarray:
            return decompress_image(_span(payload, span), fmt, shape[1:])

        if frames is True:
            indices: Sequence[int] | None = range(shape[0])
        elif frames is False:
            indices = None
        else:
            indices = [int(i) for i in frames]
            if any(not 0 <= i < shape[0] for i in indices):
                raise RecordError(f"frame indices {indices} out of range for a {shape[0]}-frame record")
        out_frames = None
        if indices is not None:
            out_frames = np.empty((len(indices), *shape[1:]), np.uint8)
            for j, i in enumerate(indices):
                out_frames[j] = image(spans[i])
        ref = header["ref_image"]
        if ref == "frame0":
            ref_image = out_frames[0].copy() if indices is not None and indices and indices[0] == 0 \
                else image(spans[0])
        else:
            ref_image = image(ref)
        return ClipRecord(
            id=header["id"], w2c=arrays["w2c"], K=arrays["K"], dist=arrays["dist"],
            cuts=tuple(int(c) for c in header["cuts"]), frames=out_frames, ref_image=ref_image,
            caption=header["caption"], camera_prompt=header["camera_prompt"],
            latents=arrays.get("latents"), ref_latent=arrays.get("ref_latent"),
            text_embedding=arrays.get("text_embedding"), meta=meta)
    except (KeyError, TypeError, IndexError) as err:
        raise RecordError(f"corrupt record header (missing or malformed field {err})") from None


# ----------------------------------------------------------------------------------------------- files
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: str, path: Path) -> None:
    """Give a finished temporary file normal permissions (mkstemp makes it 0600) and rename it into place."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> bool:
    """Write ``obj`` as indented JSON atomically; skip (return False) when the file already holds it."""
    data = (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode("utf-8")
    path = Path(path)
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write_bytes(path, data)
    return True


def write_shard(path: str | Path, records: Iterable[bytes]) -> dict:
    """Write encoded records to an ArrayRecord file atomically; returns ``{num_records, sha256, bytes}``."""
    from array_record.python.array_record_module import ArrayRecordWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer = ArrayRecordWriter(tmp, SHARD_OPTIONS)
        count = 0
        for data in records:
            if not isinstance(data, bytes | bytearray):
                raise RecordError("write_shard takes encoded records (bytes); call encode_record first")
            writer.write(bytes(data))
            count += 1
        writer.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        digest = file_sha256(tmp)
        size = os.path.getsize(tmp)
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"num_records": count, "sha256": digest, "bytes": size}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_shard(path: str | Path) -> list[bytes]:
    """All encoded records of one shard, in order."""
    from array_record.python.array_record_module import ArrayRecordReader

    try:
        reader = ArrayRecordReader(str(path))
    except Exception as err:  # the C++ reader raises RuntimeError/ValueError with a long status message
        raise RecordError(f"cannot read shard {path}: {str(err).splitlines()[0][:200]}") from None
    try:
        return list(reader.read_all())
    except Exception as err:
        raise RecordError(f"corrupt shard {path}: {str(err).splitlines()[0][:200]}") from None
    finally:
        reader.close()


# -------------------------------------------------------------------------------------------- manifest
_MANIFEST_KEYS = ("schema_version", "num_records", "shards")
_SHARD_KEYS = ("path", "num_records", "ids", "sha256", "bytes")


def make_manifest(shards: Sequence[dict], *, frame_size: Sequence[int] | None, num_frames: int | None,
                  fps: float | None, image_format: str, config: dict) -> dict:
    """Manifest dict for shard entries (``path`` relative to the dataset folder, plus :func:`write_shard`'s
    summary and ``ids``), in the given order."""
    entries = []
    for s in shards:
        if any(k not in s for k in _SHARD_KEYS):
            raise RecordError(f"shard entry lacks one of {_SHARD_KEYS}: {sorted(s)}")
        if len(s["ids"]) != s["num_records"]:
            raise RecordError(f"shard {s['path']} lists {len(s['ids'])} ids for {s['num_records']} records")
        entries.append({k: s[k] for k in sorted(s)})
    return {"schema_version": SCHEMA_VERSION, "format": "omnidirector-clip-records",
            "num_records": sum(s["num_records"] for s in entries),
            "frame_size": None if frame_size is None else [int(v) for v in frame_size],
            "num_frames": num_frames, "fps": fps, "image_format": image_format,
            "config": config, "shards": entries}


def write_manifest(directory: str | Path, manifest: dict) -> bool:
    """Write ``DIR/manifest.json`` atomically (nothing written when unchanged); returns whether it changed."""
    return atomic_write_json(Path(directory) / MANIFEST_NAME, manifest)


def read_manifest(directory: str | Path, verify: bool = False) -> dict:
    """Load and validate ``DIR/manifest.json``; ``verify`` also checks every shard's size and sha256."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RecordError(f"dataset folder {directory} does not exist")
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise RecordError(f"{directory} is not a dataset: {MANIFEST_NAME} is missing "
                          "(build one with `omnidirector build-dataset`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f"corrupt manifest {path}: {err}") from None
    if not isinstance(manifest, dict) or any(k not in manifest for k in _MANIFEST_KEYS):
        raise RecordError(f"corrupt manifest {path}: it must be an object with keys {_MANIFEST_KEYS}")
    version = manifest["schema_version"]
    if not isinstance(version, int) or version < 1:
        raise RecordError(f"corrupt manifest {path}: schema_version {version!r}")
    if version > SCHEMA_VERSION:
        raise RecordError(f"{path} has schema version {version}, newer than this code understands "
                          f"({SCHEMA_VERSION}); upgrade omnidirector-jax")
    shards = manifest["shards"]
    if not isinstance(shards, list) or any(not isinstance(s, dict) or any(k not in s for k in _SHARD_KEYS)
                                           for s in shards):
        raise RecordError(f"corrupt manifest {path}: every shard needs keys {_SHARD_KEYS}")
    if sum(s["num_records"] for s in shards) != manifest["num_records"]:
        raise RecordError(f"corrupt manifest {path}: num_records disagrees with the shard list")
    for s in shards:
        shard = directory / s["path"]
        if not shard.is_file():
            raise RecordError(f"shard {shard} listed in the manifest is missing")
        if verify and (shard.stat().st_size != s["bytes"] or file_sha256(shard) != s["sha256"]):
            raise RecordError(f"shard {shard} does not match its manifest checksum (corrupt or changed)")
    return manifest


def shard_paths(directory: str | Path, manifest: dict | None = None) -> list[str]:
    """Absolute shard paths in manifest order (what ``grain.sources.ArrayRecordDataSource`` takes)."""
    directory = Path(directory)
    manifest = read_manifest(directory) if manifest is None else manifest
    return [str((directory / s["path"]).resolve()) for s in manifest["shards"] if s["num_records"] > 0]


class ClipDataset:
    """Random access to every encoded record of a dataset, in manifest order (``ds[i]`` → bytes)."""

    def __init__(self, directory: str | Path, verify: bool = False):
        import grain

        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory, verify=verify)
        self.ids = [i for s in self.manifest["shards"] for i in s["ids"]]
        paths = shard_paths(self.directory, self.manifest)
        try:
            self.source = grain.sources.ArrayRecordDataSource(paths) if paths else None
        except Exception as err:
            raise RecordError(f"cannot open the shards of {self.directory}: {str(err).splitlines()[0][:200]}") \
                from None
        if self.source is not None and len(self.source) != len(self.ids):
            raise RecordError(f"{self.directory}: shards hold {len(self.source)} records, "
                              f"the manifest lists {len(self.ids)} (corrupt shard?)")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> bytes:
        if not 0 <= index < len(self.ids):
            raise IndexError(index)
        try:
            return self.source[index]
        except Exception as err:
            raise RecordError(f"corrupt shard in {self.directory}: {str(err).splitlines()[0][:200]}") from None

    def record(self, index: int, frames: bool | Sequence[int] = True) -> ClipRecord:
        return decode_record(self[index], frames=frames)

    def __iter__(self) -> Iterator[bytes]:
        for i in range(len(self)):
            yield self[i]


def open_dataset(directory: str | Path, verify: bool = False) -> ClipDataset:
    """Open a dataset folder written by ``omnidirector build-dataset``."""
    return ClipDataset(directory, verify=verify)
