"""Shared-memory slots between Grain workers and the training process: exact arrays, slot reuse, fallbacks."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest

from omnidirector_jax.data import shm_batches
from omnidirector_jax.data.shm_batches import SlotRef, SlotTransport


def _batch(i: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(i)
    return {"frames": rng.integers(0, 256, (2, 3, 8, 8, 3), np.uint8),
            "w2c": rng.standard_normal((2, 3, 3, 4)).astype(np.float32),
            "valid": rng.random((2, 3)) > 0.5,
            "text_ids": rng.integers(0, 1000, (2, 5), np.int32),
            "index": np.arange(2, dtype=np.int64) + i}


def _same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k])


def _produce(transport: SlotTransport, count: int, out: mp.Queue) -> None:
    """A stand-in for a Grain worker: the transport's worker side, each element through a real queue."""
    for i in range(count):
        out.put(transport.to_slots(_batch(i)))


def _run_worker(transport: SlotTransport, count: int, take_as_they_come: bool) -> list:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_produce, args=(transport, count, queue))
    proc.start()
    received, taken = [], []
    receiver = transport.receiver()
    try:
        for _ in range(count):
            element = queue.get(timeout=60)
            received.append(element)
            if take_as_they_come:
                taken.append(receiver.take(element))
        proc.join(60)
        if not take_as_they_come:
            taken = [receiver.take(e) for e in received]
        paths = {e.path for e in received if isinstance(e, SlotRef)}
        for path in paths:  # every slot is free again once its batch was taken
            assert np.all(np.fromfile(path, np.uint8, transport.slots) == 0)
    finally:
        receiver.close()
    for path in paths:  # the receiver removes the worker's file when it is closed
        assert not Path(path).exists()
    for i, batch in enumerate(taken):
        _same(batch, _batch(i))
    return received


def test_batches_cross_through_reused_slots_exactly():
    received = _run_worker(SlotTransport(slots=2, wait_s=30.0), 7, take_as_they_come=True)
    assert all(isinstance(e, SlotRef) for e in received)
    assert [e.slot for e in received] == [0, 1, 0, 1, 0, 1, 0]  # two slots served seven batches


def test_a_worker_with_no_free_slot_sends_the_batch_itself():
    # Nothing is taken until the worker is done: two batches fill the slots, the rest go pickled.
    received = _run_worker(SlotTransport(slots=2, wait_s=0.01), 5, take_as_they_come=False)
    assert [isinstance(e, SlotRef) for e in received] == [True, True, False, False, False]


def test_no_room_for_slots_sends_every_batch_itself():
    received = _run_worker(SlotTransport(slots=2, max_share=0.0), 3, take_as_they_come=True)
    assert not any(isinstance(e, SlotRef) for e in received)


def test_in_the_training_process_batches_pass_unchanged():
    transport = SlotTransport(slots=2)
    batch = _batch(0)
    assert transport.to_slots(batch) is batch
    assert transport.receiver().take(batch) is batch


def test_files_of_dead_training_processes_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(shm_batches, "_shm_dir", lambda: str(tmp_path))
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=os.getpid)
    proc.start()
    proc.join()
    dead = tmp_path / f"omnidirector-batches-{proc.pid}-1-ab"
    alive = tmp_path / f"omnidirector-batches-{os.getpid()}-1-cd"
    other = tmp_path / "something-else"
    for path in (dead, alive, other):
        path.write_bytes(b"x")
    assert shm_batches.remove_stale_files() == 1
    assert not dead.exists() and alive.exists() and other.exists()


def test_slot_count_must_be_positive():
    with pytest.raises(ValueError, match="at least one slot"):
        SlotTransport(slots=0)
