"""Host batches from Grain workers to the training process through reused shared-memory slots.

Grain's multiprocessing prefetch sends a worker's output through a `multiprocessing.Queue`: the batch is
pickled and pushed through a 64 KiB pipe in many small writes. At 64x64 that transport cost a worker about as
much CPU as decoding the JPEGs (py-spy of a worker: 38% decoding, 20% `Connection._send`, 9% pickling, ~10% queue
locks). Grain's own shared-memory path creates and unlinks one block per array per batch (measured 7.5 ms per
tiny-config batch, 20x the pickle). Here each worker owns one file in /dev/shm cut into a few fixed slots,
mapped once: it copies the batch into a free slot and sends only a `SlotRef` (slot index and array layout, a few
hundred bytes) through Grain's queue; the training process copies the arrays out and frees the slot.

    transport = SlotTransport(slots=2 * prefetch + 4)   # pickled into the workers
    ds = ds.map(transport.to_slots)                 # last step, runs in the worker
    batch = transport.receiver().take(ref)          # in the training process: arrays copied out, slot freed

Each slot has a status byte (0 free, 1 written): only the worker sets it to 1 (on a slot it saw at 0) and only
the training process sets it back to 0, after its copy, with `os.pwrite` (a system call, so the copy has
completed before the worker can see the slot free, on any CPU). A worker that finds no free slot in
`wait_s` (a slot held by an element Grain discarded on `set_state`, or a consumer far behind) returns the
plain batch, which takes Grain's pickled path: slower, never wrong and never stuck.

Files are named `omnidirector-batches-<training pid>-<worker pid>-<random>`; the receiver unlinks the files it
has seen when it is closed or garbage-collected, and at start-up removes files whose training process is gone
(a run killed with SIGKILL).
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import secrets
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

_ALIGN = 64
_HEADER = 4096  # status bytes, then the slots from the next page
_PREFIX = "omnidirector-batches-"


def _shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


@dataclasses.dataclass(frozen=True)
class SlotRef:
    """What crosses the process boundary: a slot of a worker's file and the layout of the arrays in it."""

    path: str
    slot: int
    base: int  # byte offset of the slot in the file
    fields: tuple[tuple[str, str, tuple[int, ...], int], ...]  # (key, dtype str, shape, byte offset in the slot)


class _WorkerSlots:
    """The worker's side: its file, mapped, and a rotating search for free slots."""

    def __init__(self, parent_pid: int, slots: int, slot_bytes: int) -> None:
        self.slots, self.slot_bytes = slots, slot_bytes
        name = f"{_PREFIX}{parent_pid}-{os.getpid()}-{secrets.token_hex(4)}"
        self.path = os.path.join(_shm_dir(), name)
        size = _HEADER + slots * slot_bytes
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # Reserve the pages now: a full tmpfs then fails here (OSError) instead of a SIGBUS on first write.
            os.posix_fallocate(fd, 0, size)
            self.map = mmap.mmap(fd, size)
        except OSError:
            os.close(fd)
            Path(self.path).unlink(missing_ok=True)
            raise
        os.close(fd)
        self.status = np.frombuffer(self.map, np.uint8, slots)
        self.next = 0

    def acquire(self, wait_s: float) -> int | None:
        deadline = None
        while True:
            for k in range(self.slots):
                slot = (self.next + k) % self.slots
                if self.status[slot] == 0:
                    self.status[slot] = 1
                    self.next = (slot + 1) % self.slots
                    return slot
            now = time.monotonic()
            deadline = now + wait_s if deadline is None else deadline
            if now >= deadline:
                return None
            time.sleep(2e-4)

    def write(self, slot: int, batch: Mapping[str, Any]) -> SlotRef:
        base = _HEADER + slot * self.slot_bytes
        fields, offset = [], 0
        for key, value in batch.items():
            arr = np.asarray(value)
            np.copyto(np.ndarray(arr.shape, arr.dtype, self.map, base + offset), arr)
            fields.append((key, arr.dtype.str, arr.shape, offset))
            offset = _aligned(offset + arr.nbytes)
        return SlotRef(self.path, slot, base, tuple(fields))


_WORKER: _WorkerSlots | None = None  # one per worker process
_WORKER_FAILED = False  # no room in the shared-memory folder: this worker sends pickled batches


class SlotTransport:
    """Picklable description of the transport; `to_slots` runs in the worker, `receiver()` in the trainer.

    A worker sizes its slots from its first batch (the pipeline's batches all have one shape) and takes at most
    `max_share` of the free space of the shared-memory folder (Docker's default /dev/shm is 64 MiB)."""

    def __init__(self, slots: int, wait_s: float = 0.02, max_share: float = 0.25) -> None:
        if slots < 1:
            raise ValueError(f"need at least one slot, got {slots}")
        self.slots, self.wait_s, self.max_share = slots, wait_s, max_share
        self.parent_pid = os.getpid()

    @staticmethod
    def batch_bytes(batch: Mapping[str, Any]) -> int:
        """Bytes a batch takes in a slot (each array aligned)."""
        return sum(_aligned(np.asarray(v).nbytes) for v in batch.values())

    def _worker_slots(self, batch_bytes: int) -> _WorkerSlots | None:
        global _WORKER, _WORKER_FAILED
        if _WORKER is not None and _WORKER.slots == self.slots and _WORKER.slot_bytes >= batch_bytes:
            return _WORKER
        if _WORKER_FAILED:
            return None
        slot_bytes = _aligned(batch_bytes + batch_bytes // 8)  # a little room for a larger batch
        stat = os.statvfs(_shm_dir())
        if self.slots * slot_bytes > self.max_share * stat.f_bavail * stat.f_frsize:
            _WORKER_FAILED = True
            return None
        try:
            _WORKER = _WorkerSlots(self.parent_pid, self.slots, slot_bytes)
        except OSError:
            _WORKER_FAILED = True
            return None
        return _WORKER

    def to_slots(self, batch: dict[str, np.ndarray]) -> SlotRef | dict[str, np.ndarray]:
        """In a worker: the batch copied into a free slot (its `SlotRef`), or the batch itself when no slot is
        free in time or there is no room for slots. In the training process the batch is returned unchanged."""
        if os.getpid() == self.parent_pid:
            return batch
        size = self.batch_bytes(batch)
        worker = self._worker_slots(size)
        if worker is None or size > worker.slot_bytes:
            return batch
        slot = worker.acquire(self.wait_s)
        if slot is None:
            return batch
        return worker.write(slot, batch)

    def receiver(self) -> SlotReceiver:
        return SlotReceiver()


class SlotReceiver:
    """The training process's side: maps each worker file once, copies batches out and frees their slots."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[int, mmap.mmap]] = {}
        remove_stale_files()
        self._finalizer = weakref.finalize(self, _close_files, self._files)

    def take(self, element: SlotRef | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not isinstance(element, SlotRef):
            return element
        opened = self._files.get(element.path)
        if opened is None:
            fd = os.open(element.path, os.O_RDWR)
            opened = self._files[element.path] = (fd, mmap.mmap(fd, 0))
        fd, mapped = opened
        out = {key: np.ndarray(shape, np.dtype(dtype), mapped, element.base + offset).copy()
               for key, dtype, shape, offset in element.fields}
        os.pwrite(fd, b"\x00", element.slot)  # after the copy: the worker may now reuse the slot
        return out

    def close(self) -> None:
        self._finalizer()


def _close_files(files: dict[str, tuple[int, mmap.mmap]]) -> None:
    for path, (fd, mapped) in list(files.items()):
        try:
            mapped.close()
        except BufferError:  # a view is still alive: the mapping goes with the process
            pass
        os.close(fd)
        Path(path).unlink(missing_ok=True)
    files.clear()


def remove_stale_files() -> int:
    """Removes batch files left by training processes that no longer exist; returns how many."""
    removed = 0
    for path in Path(_shm_dir()).glob(f"{_PREFIX}*"):
        try:
            pid = int(path.name[len(_PREFIX):].split("-")[0])
        except ValueError:
            continue
        if not _alive(pid):
            try:
                path.unlink(missing_ok=True)
            except OSError:  # another user's file (sticky /dev/shm): theirs to remove
                continue
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
