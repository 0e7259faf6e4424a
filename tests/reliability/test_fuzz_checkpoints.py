"""Untrusted checkpoints: nothing executes without opt-in, and no byte string makes loading misbehave.

tests/test_checkpoints.py already checks the planted pickle through ``load_checkpoint``,
``read_checkpoint_step`` and ``find_checkpoints`` (zip format) and cuts/pokes valid files. Here:
the same payload in every container (legacy, raw pickles, a misleading suffix, a Lightning file)
through every door (``load_model``, ``read_model_config``, ``CheckpointSeries``, the CLI), the
safetensors preference, and a fuzz of random and structurally mutated bytes, including valid zip
archives whose pickle inside is mutated (so the fuzz gets past the zip checksum into the unpickler).
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import struct
import time
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devvis.cli import main
from devvis.errors import CheckpointError, DevvisError, UnsafeCheckpointError
from devvis.models import (
    CHECKPOINT_SUFFIXES,
    find_checkpoints,
    load_checkpoint,
    load_model,
    read_checkpoint_step,
    read_model_config,
    save_checkpoint,
)
from devvis.zoo import compact_resnet

ZOO = {"name": "compact_resnet", "kwargs": {"num_classes": 3, "width": 4, "blocks": [1, 1]}}
#: Longest a single load of a small file may take: a hang is a failure too.
MAX_LOAD_S = 5.0


class Evil:
    """Unpickling this opens ``marker`` for writing (creating the file): a stand-in for hostile code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return compact_resnet(num_classes=3, width=4, blocks=(1, 1)).state_dict()


def _plant(kind: str, folder: Path, marker: Path) -> Path:
    """Write a checkpoint of ``kind`` whose loading (if unpickled) would create ``marker``."""
    sd, evil = _state(), Evil(str(marker))
    if kind == "zip":
        p = folder / "step_10.pt"
        torch.save({"state_dict": sd, "step": 10, "payload": evil}, p)
    elif kind == "legacy":
        p = folder / "step_10.pth"
        torch.save({"model_state_dict": sd, "payload": evil}, p, _use_new_zipfile_serialization=False)
    elif kind == "whole_object":
        p = folder / "step_10.bin"
        torch.save(evil, p)
    elif kind == "lightning":
        p = folder / "epoch=0-step=10.ckpt"
        torch.save({"state_dict": {f"model.{k}": v for k, v in sd.items()}, "global_step": 10,
                    "hyper_parameters": {"net": evil}}, p)
    elif kind.startswith("raw_pickle"):
        p = folder / "step_10.pt"
        with open(p, "wb") as f:
            pickle.dump({"state_dict": sd, "payload": evil}, f, protocol=int(kind[-1]))
    elif kind == "misnamed_safetensors":
        p = folder / "step_10.safetensors"
        torch.save({"state_dict": sd, "payload": evil}, p)
    else:
        raise AssertionError(kind)
    return p


KINDS = ["zip", "legacy", "whole_object", "lightning", "raw_pickle2", "raw_pickle5", "misnamed_safetensors"]


def _cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(list(argv))
        except SystemExit as e:
            rc = int(e.code or 0)
    return rc, err.getvalue()


@pytest.mark.parametrize("kind", KINDS)
def test_planted_pickle_never_runs_through_any_door(tmp_path, kind):
    marker = tmp_path / "pwned"
    folder = tmp_path / "ckpts"
    folder.mkdir()
    p = _plant(kind, folder, marker)
    (folder / "model_config.json").write_text(json.dumps(ZOO))
    from devvis.longitudinal import CheckpointSeries

    doors = {
        "load_checkpoint": lambda: load_checkpoint(p),
        "read_checkpoint_step": lambda: read_checkpoint_step(p),
        "read_model_config": lambda: read_model_config(p),
        "load_model": lambda: load_model("compact_resnet", checkpoint=p),
        "load_model(None)": lambda: load_model(None, checkpoint=p),
        "CheckpointSeries": lambda: [m for _, m in CheckpointSeries(folder)],
    }
    messages = []
    for name, door in doors.items():
        try:
            door()
        except CheckpointError as e:
            assert str(p) in str(e), (name, str(e))
            messages.append(str(e))
        else:
            # only reading metadata may succeed (the name alone gives the step / the JSON gives the config)
            assert name in ("read_checkpoint_step", "read_model_config", "CheckpointSeries") and kind.startswith("raw"), name
        assert not marker.exists(), f"{name} executed the payload of a {kind} checkpoint"
    assert messages
    # Where the file is a pickle devvis could load with trust, the error says why it refused and how to opt in.
    if kind in ("zip", "legacy", "whole_object", "lightning", "raw_pickle2"):
        with pytest.raises(UnsafeCheckpointError) as info:
            load_checkpoint(p)
        text = str(info.value)
        assert "arbitrary code" in text and "trust=True" in text and "--trust-checkpoint" in text
    # The CLI refuses it the same way, in one line, exit code 2, without running it.
    for argv in (["layers", "--checkpoint", str(p), "--image-size", "32"],
                 ["visualize", "--checkpoint-path", str(p), "--layer-names", "layer1", "--channels", "0",
                  "--image-size", "32", "--max-iterations", "2", "--no-progress", "--output-path", str(tmp_path / "o")]):
        rc, err = _cli(*argv)
        assert rc == 2 and err.startswith("devvis: error:") and err.count("\n") == 1, err
        assert "Traceback" not in err and not marker.exists()
        if kind in ("zip", "legacy", "whole_object", "lightning"):
            assert "--trust-checkpoint" in err


def test_safetensors_preferred_over_a_pickle_twin(tmp_path):
    """A Hugging Face style folder with model.safetensors and a hostile pytorch_model.bin: the safetensors file is read."""
    marker = tmp_path / "pwned"
    sd = _state()
    ck = tmp_path / "run" / "checkpoint-500"
    ck.mkdir(parents=True)
    save_checkpoint(sd, ck / "model.safetensors", model_config=ZOO)
    torch.save({"state_dict": sd, "payload": Evil(str(marker))}, ck / "pytorch_model.bin")
    refs = find_checkpoints(tmp_path / "run")
    assert [(r.path.name, r.step) for r in refs] == [("model.safetensors", 500)]
    rc, err = _cli("visualize", "--checkpoint-path", str(tmp_path / "run"), "--layer-names", "layer1", "--channels", "0",
                   "--image-size", "32", "--max-iterations", "2", "--min-iterations", "0", "--no-progress",
                   "--output-path", str(tmp_path / "out"))
    assert rc == 0, err
    assert (tmp_path / "out" / "step_000500" / "layer_layer1_channel_0_average-0.jpg").exists()
    assert not marker.exists()
    # Files named with their own steps are separate checkpoints the user named: all are kept.
    flat = tmp_path / "flat"
    flat.mkdir()
    save_checkpoint(sd, flat / "step_5.safetensors")
    torch.save(sd, flat / "step_7.pt")
    assert [r.path.name for r in find_checkpoints(flat)] == ["step_5.safetensors", "step_7.pt"]


# ------------------------------------------------------------------------------------- fuzzing


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory) -> dict[str, bytes]:
    """Small valid checkpoints in each container, as bytes."""
    d = tmp_path_factory.mktemp("valid")
    sd = {"conv.weight": torch.randn(2, 3, 3, 3), "fc.weight": torch.randn(3, 2), "fc.bias": torch.zeros(3)}
    torch.save({"state_dict": sd, "step": 3, "epoch": 1}, d / "zip.pt")
    torch.save(sd, d / "legacy.pt", _use_new_zipfile_serialization=False)
    save_checkpoint(sd, d / "st.safetensors", step=3, model_config={"name": "x", "kwargs": {}})
    return {name: (d / name).read_bytes() for name in ("zip.pt", "legacy.pt", "st.safetensors")}


def _expect_checkpoint_error_or_tensors(path: Path) -> None:
    """Every door either works (returning tensors / a step) or raises CheckpointError naming the file; fast."""
    for call in (load_checkpoint, read_checkpoint_step, read_model_config):
        t0 = time.perf_counter()
        try:
            out = call(path)
        except CheckpointError as e:
            assert str(path) in str(e)
        except DevvisError as e:  # e.g. a model config that is not valid: still one of ours, naming the file
            assert str(path) in str(e) or "model_config" in str(e), repr(e)
        else:
            if call is load_checkpoint:
                assert isinstance(out, dict) and all(isinstance(v, torch.Tensor) for k, v in out.items()
                                                     if not str(k).endswith("_extra_state"))
        assert time.perf_counter() - t0 < MAX_LOAD_S, f"{call.__name__} took too long on {path}"


MAGICS = [b"", b"PK\x03\x04", b"\x80\x02", b"\x80\x04\x95", b"\x80\x05\x95", b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.",
          struct.pack("<Q", 2) + b"{}", struct.pack("<Q", 40) + b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}']

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(magic=st.sampled_from(MAGICS), body=st.binary(max_size=2048), suffix=st.sampled_from(CHECKPOINT_SUFFIXES))
def test_random_bytes_raise_only_checkpoint_error(tmp_path, magic, body, suffix):
    p = tmp_path / f"fuzz{suffix}"
    p.write_bytes(magic + body)
    _expect_checkpoint_error_or_tensors(p)


def _mutate(raw: bytes, data: st.DataObject) -> bytes:
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "delete", "insert", "duplicate", "set_int", "truncate"]))
        if not buf:
            break
        i = data.draw(st.integers(0, len(buf) - 1))
        if op == "flip":
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "delete":
            del buf[i:i + data.draw(st.integers(1, 64))]
        elif op == "insert":
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=32))
        elif op == "duplicate":
            j = min(len(buf), i + data.draw(st.integers(1, 128)))
            buf[j:j] = buf[i:j]
        elif op == "set_int":  # a length, size or offset field gone wild
            buf[i:i + 8] = struct.pack("<q", data.draw(st.sampled_from([-1, 0, 2**31 - 1, 2**40, 2**62])))
        else:
            del buf[i:]
    return bytes(buf)


@FUZZ
@given(data=st.data())
def test_mutated_files_raise_only_checkpoint_error(tmp_path, valid_files, data):
    name = data.draw(st.sampled_from(sorted(valid_files)))
    p = tmp_path / name
    p.write_bytes(_mutate(valid_files[name], data))
    _expect_checkpoint_error_or_tensors(p)


def _pickle_of(raw: bytes) -> bytes:
    """The data.pkl of a torch.save archive (its folder is named after the file: ``archive/``, ``zip/``...)."""
    z = zipfile.ZipFile(io.BytesIO(raw))
    return z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))


def _rezip(raw: bytes, pickle_bytes: bytes) -> bytes:
    """The torch.save archive ``raw`` with its data.pkl replaced (checksums valid, so torch reads the pickle)."""
    src = zipfile.ZipFile(io.BytesIO(raw))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for n in src.namelist():
            dst.writestr(n, pickle_bytes if n.endswith("data.pkl") else src.read(n))
    return out.getvalue()


@FUZZ
@given(data=st.data())
def test_mutated_pickle_inside_a_valid_zip_raises_only_checkpoint_error(tmp_path, valid_files, data):
    raw = valid_files["zip.pt"]
    p = tmp_path / "inner.pt"
    pk = _pickle_of(raw)
    p.write_bytes(_rezip(raw, _mutate(pk, data)))
    _expect_checkpoint_error_or_tensors(p)


@pytest.mark.parametrize("edit", [
    (b"K\x0c", b"J" + struct.pack("<i", 2**31 - 1)),            # storage claims 2^31 elements
    (b"K\x0c", b"\x8a\x06" + (2**45).to_bytes(6, "little")),   # ... or 2^45 (a 128 TiB allocation)
    (b"K\x03K\x01\x86", b"J" + struct.pack("<i", -5) + b"K\x01\x86"),  # negative stride
    (b"QK\x00", b"QJ" + struct.pack("<i", 2**30)),                 # storage offset far past the end
    (b"X\x01\x00\x00\x000", b"X\x01\x00\x00\x009"),                  # a storage record that does not exist
    (b"_rebuild_tensor_v2", b"_rebuild_tensor_v9"),               # an unknown rebuild function
], ids=["numel-2^31", "numel-2^45", "negative-stride", "huge-offset", "missing-record", "unknown-global"])
def test_hostile_tensor_metadata_raises_checkpoint_error_without_allocating(tmp_path, edit):
    sd = {"w": torch.randn(4, 3)}
    buf = io.BytesIO()
    torch.save(sd, buf)
    raw = buf.getvalue()
    pk = _pickle_of(raw)
    old, new = edit
    assert old in pk
    p = tmp_path / "hostile.pt"
    p.write_bytes(_rezip(raw, pk.replace(old, new, 1)))
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(p)
    assert time.perf_counter() - t0 < MAX_LOAD_S
    assert str(p) in str(info.value) and "\n" not in str(info.value)
