"""The C heap kept during a CPU render (devvis.render.heap)."""

from __future__ import annotations

import importlib
import json
import resource
import subprocess
import sys

import pytest
import torch

heap = importlib.import_module("devvis.render.heap")


class FakeLibc:
    def __init__(self, mmap_cap: int | None = None):
        self.calls: list[tuple] = []
        self.mmap_cap = mmap_cap

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return int(self.mmap_cap is None or param != -3 or value <= self.mmap_cap)

    def malloc_trim(self, pad):
        self.calls.append(("trim", pad))
        return 1


def test_nested_blocks_set_once_and_undo_once_also_on_errors(monkeypatch):
    lib = FakeLibc()
    monkeypatch.setattr(heap, "glibc", lambda: lib)
    with pytest.raises(RuntimeError, match="boom"):
        with heap.kept_heap(torch.device("cpu")) as outer:
            with heap.kept_heap(torch.device("cpu")) as inner:
                assert lib.calls == [("mallopt", -3, 1 << 30), ("mallopt", -1, (1 << 31) - 1)]
            assert len(lib.calls) == 2  # the inner block's end undoes nothing while the outer one runs
            raise RuntimeError("boom")
    assert outer and inner
    assert lib.calls[2:] == [("mallopt", -3, 32 << 20), ("mallopt", -1, 64 << 20), ("trim", 0)]
    assert heap._depth == 0


def test_a_glibc_that_caps_the_mmap_threshold_gets_the_cap(monkeypatch):
    lib = FakeLibc(mmap_cap=32 << 20)
    monkeypatch.setattr(heap, "glibc", lambda: lib)
    with heap.kept_heap(torch.device("cpu")):
        # refused at 1 GiB, then set to the cap: never left frozen at whatever glibc had reached
        assert lib.calls == [("mallopt", -3, 1 << 30), ("mallopt", -3, 32 << 20), ("mallopt", -1, (1 << 31) - 1)]


def test_nothing_changes_off_the_cpu_without_glibc_or_when_disabled(monkeypatch):
    lib = FakeLibc()
    monkeypatch.setattr(heap, "glibc", lambda: lib)
    with heap.kept_heap(torch.device("cuda")) as kept:
        pass
    assert kept is False and lib.calls == []
    monkeypatch.setattr(heap, "ENABLED", False)
    with heap.kept_heap(torch.device("cpu")) as kept:
        pass
    assert kept is False and lib.calls == []
    monkeypatch.setattr(heap, "ENABLED", True)
    monkeypatch.setattr(heap, "glibc", lambda: None)
    with heap.kept_heap(torch.device("cpu")) as kept:
        pass
    assert kept is False


STEPS = """
import importlib, json, resource, sys
import torch
heap = importlib.import_module("devvis.render.heap")
heap.ENABLED = sys.argv[1] == "on"

def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

def step():  # a render step's shape of allocations: a few large activations, made and freed together
    xs = [torch.ones(n) for n in (10 << 20, 2 << 20, 10 << 20, 6 << 20)]
    return sum(float(x[0]) for x in xs)

start = rss_mib()
with heap.kept_heap(torch.device("cpu")) as kept:
    step(), step(), step()  # the first steps fault their blocks in
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    held = rss_mib() - start
print(json.dumps({"kept": kept, "faults": faults, "held": held, "after": rss_mib() - start}))
"""


def run_steps(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(heap.glibc() is None, reason="kept_heap acts on glibc only (this C library keeps its own terms)")
def test_on_glibc_a_steps_blocks_are_reused_inside_and_handed_back_after():
    """In a fresh process (a test worker's heap is fragmented by everything before): eight steps of 112 MiB of
    tensors each, after three."""
    on, off = run_steps("on"), run_steps("off")
    pages = (28 << 20) * 4 // resource.getpagesize()  # one step's blocks
    assert on["kept"] and not off["kept"]
    assert off["faults"] >= 2 * pages, off  # the 40 MiB blocks, above glibc's mmap threshold, fault in at every step
    # reused: at most one step's worth over the eight (after one warm-up step the heap still grew while its free
    # blocks settled, 0 to 35 k pages; after three, 0 in 12 runs), against 86 k to 164 k without
    assert on["faults"] <= pages, on
    assert on["held"] >= 60 and on["after"] <= 20, on  # kept during the block, handed back after it
