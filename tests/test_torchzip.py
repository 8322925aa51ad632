"""The lazy reader of torch's zip-format checkpoints: the same tensors as ``torch.load(weights_only=True)``,
read by positioned reads; pickled code refused before anything runs; damaged files as one error line."""
from __future__ import annotations

import os
import shutil
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from helpers.checkpoint import files as sources
from helpers.checkpoint import open_adapter, open_checkpoint, torchzip
from helpers.checkpoint.torchzip import LoadedPickle, TorchZipFile, open_pickle
from helpers.util import UserError


def _same_as_torch(path: Path, *, lazy: bool = True) -> None:
    ref = torch.load(path, map_location="cpu", weights_only=True)
    if set(ref) in ({"state_dict"}, {"model"}):
        ref = next(iter(ref.values()))
    ref = {k: v for k, v in ref.items() if isinstance(v, torch.Tensor)}
    f = open_pickle(path)
    try:
        assert isinstance(f, TorchZipFile if lazy else LoadedPickle)
        assert f.keys() == list(ref)
        for name, t in ref.items():
            t = t.detach()
            assert f.shape(name) == tuple(t.shape) and f.dtype(name) == t.dtype, name
            got = f.get(name)
            assert got.dtype == t.dtype and got.shape == t.shape and torch.equal(got, t), name
            f32 = f.get(name, dtype=torch.float32)
            assert f32.dtype == torch.float32 and torch.equal(f32, t.float()), name
    finally:
        f.close()


def test_every_demo_bin_reads_as_torch_loads_it(demo, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_BYTES", 4096)  # exercise the chunked conversion
    bins = sorted(demo.rglob("*.bin"))
    assert len(bins) >= 8 and {b.name for b in bins} >= {"adapter_model.bin", "pytorch_model-00001-of-00002.bin"}
    for path in bins:
        _same_as_torch(path)


def _views() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 8, generator=g).half()
    big = torch.randn(3, 5, 7, generator=g)
    return OrderedDict(
        fp16=w, fp32=torch.randn(5, 3, generator=g), bf16=torch.randn(4, 4, generator=g).bfloat16(),
        tied=w,  # the same tensor twice (tied embeddings)
        rows=w[2:5],  # same storage, non-zero storage offset
        last=w[-1], transposed=w.t(), every_other=big[:, 1::2, 2:], expanded=torch.arange(3.0).expand(4, 3),
        scalar=torch.tensor(2.5, dtype=torch.float64), empty=torch.zeros(0, 4), ints=torch.arange(10),
        flags=torch.tensor([True, False]), param=torch.nn.Parameter(torch.ones(3)), int8=torch.arange(-3, 3).to(torch.int8))


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_hand_made_files(tmp_path, monkeypatch, wrap):
    monkeypatch.setattr(sources, "CHUNK_BYTES", 16)
    sd = _views()
    path = tmp_path / "x.bin"
    torch.save({wrap: sd} if wrap else sd, path)
    _same_as_torch(path)
    with pytest.raises(UserError, match="holds no tensors"):
        torch.save({"epoch": 3, "lr": [0.1]}, tmp_path / "none.bin")
        open_pickle(tmp_path / "none.bin")


def test_what_only_torch_load_can_rebuild_is_loaded_whole(tmp_path):
    sd = {"w": torch.randn(3, 4), "v": torch.ones(2).half()}
    torch.save(sd, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)  # pre-1.6 format
    _same_as_torch(tmp_path / "legacy.bin", lazy=False)
    torch.save({**sd, "size": torch.Size([3, 4])}, tmp_path / "size.bin")  # allowed by weights_only, not rebuilt
    _same_as_torch(tmp_path / "size.bin", lazy=False)


def test_merge_inputs_are_read_without_torch_load(demo, monkeypatch):
    """Base .bin shards and adapter_model.bin go through the lazy reader: torch.load is never called."""
    def boom(*a, **k):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", boom)
    with open_checkpoint(demo / "llama-7b") as ckpt:
        assert ckpt.format == "bin"
        for name in ckpt.names():
            ckpt.get(name, dtype=torch.float32)
    ad = open_adapter(demo / "chinese-alpaca-lora-7b")
    assert ad.get_saved("lm_head.weight").shape == (1279, 256)
    for name in ad.lora:
        w = torch.zeros(ad.delta_shape(name))
        ad.add_delta(w, name)
        assert w.abs().sum() > 0
    ad.close()


class Shell:
    """Pickles to ``os.system(command)``: a live payload."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class Opener:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class Plain:
    """An unknown global (this test module's class), pickled by reference."""


def _payloads(marker: Path) -> dict[str, object]:
    return {"os-system": Shell(f"touch {marker}"), "builtins-open": Opener(marker), "unknown-class": Plain(),
            "torch-load": torch.serialization.load}


@pytest.mark.parametrize("case", ["os-system", "builtins-open", "unknown-class", "torch-load"])
def test_pickled_code_is_refused_and_never_run(tmp_path, monkeypatch, case):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.bin"
    torch.save({"w": torch.ones(2), "x": _payloads(marker)[case]}, path)
    assert zipfile.is_zipfile(path)
    if case != "torch-load":  # refused by our unpickler itself: torch.load is never reached
        monkeypatch.setattr(torchzip, "torch_load", lambda p: pytest.fail("fell back to torch_load"))
    with pytest.raises(UserError) as err:
        open_pickle(path)
    msg = str(err.value)
    assert "\n" not in msg and "evil.bin" in msg and "pickled Python objects besides tensors" in msg
    assert "refused (nothing was executed)" in msg
    assert not marker.exists()
    if case in ("os-system", "builtins-open"):  # the payload is live: an unsafe load runs it
        torch.load(path, weights_only=False)
        assert marker.exists()


def _rewrite(src: Path, dst: Path, *, drop: str = "", deflate: str = "", shorten: str = "") -> Path:
    """A copy of a torch zip written by Python's zipfile (no alignment padding), optionally damaged."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
        for info in zi.infolist():
            data = zi.read(info)
            if drop and info.filename.endswith(drop):
                continue
            if shorten and info.filename.endswith(shorten):
                data = data[:-2]
            if deflate and info.filename.endswith(deflate):
                zo.writestr(info.filename, data, compress_type=zipfile.ZIP_DEFLATED)
                continue
            with zo.open(zipfile.ZipInfo(info.filename), "w", force_zip64=True) as out:  # local zip64 extra field
                out.write(data)
    return dst


def test_damaged_files_are_one_error_line(demo, tmp_path):
    src = demo / "chinese-alpaca-lora-7b" / "adapter_model.bin"
    _same_as_torch(_rewrite(src, tmp_path / "plain.bin"))  # other member offsets, zip64 local headers
    half = tmp_path / "half.bin"
    half.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    cases = {half: "", _rewrite(src, tmp_path / "missing.bin", drop="/data/3"): "storage 3 is missing",
             _rewrite(src, tmp_path / "deflated.bin", deflate="/data/0"): "compressed",
             _rewrite(src, tmp_path / "short.bin", shorten="/data/1"): "fewer than its tensors need"}
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    cases[empty] = ""
    for path, why in cases.items():
        with pytest.raises(UserError) as err:
            open_pickle(path)
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(f"{path} is truncated or corrupt (") and why in msg, msg
        assert msg.endswith("delete it and download it again")


def test_truncated_adapter_bin_through_open_adapter(demo, tmp_path):
    lora = Path(shutil.copytree(demo / "chinese-llama-lora-7b", tmp_path / "lora"))
    f = lora / "adapter_model.bin"
    f.write_bytes(f.read_bytes()[:-100])  # the central directory is gone
    with pytest.raises(UserError, match=r"adapter_model.bin is truncated or corrupt \(.*download it again"):
        open_adapter(lora)
