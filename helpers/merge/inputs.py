"""The inputs of a merge: the base checkpoint, the LoRA adapters in order, an optional patch; and their checksums."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Mapping

from ..checkpoint import Adapter, Checkpoint, StreamedCheckpoint, open_adapter, open_checkpoint
from ..checkpoint.streamed import AdapterDownload
from ..hub import Meter, ModelRef, resolve_model
from .provisional import ArrivingInput
from ..util import UserError, read_utf8, sha256_file


def label(ref: str | Path) -> str:
    """How a model reference is named in messages: the folder or repo name."""
    return Path(str(ref)).name or str(ref)


@dataclass
class MergeInputs:
    """The opened inputs: ``base``, ``adapters`` as ``(label, Adapter)`` in order, and the patch."""

    base: Checkpoint
    base_dir: Path
    adapters: list[tuple[str, Adapter]] = field(default_factory=list)
    patch: Checkpoint | None = None
    patch_label: str = ""
    downloads: list[AdapterDownload] = field(default_factory=list)  # LoRAs still arriving

    def files(self) -> list[Path]:
        """Every input file (weights, configs, tokenizers), for checksums and change detection."""
        files = list(self.base.files) + [f for _, a in self.adapters for f in a.files]
        return files + (list(self.patch.files) if self.patch is not None else [])

    def arriving(self) -> list[ArrivingInput]:
        """The inputs read while they download: the LoRAs still arriving, then a streamed base."""
        return [*self.downloads, *([self.base] if self.base.arrives else [])]

    def settle(self) -> None:
        """Wait for the checks of every input file read early (a failed one raises a UserError)."""
        for a in self.arriving():
            a.settle()

    def close(self) -> None:
        """Close every open file and stop the downloads still going."""
        for obj in [self.base, self.patch, *(a for _, a in self.adapters), *self.downloads]:
            if obj is not None:
                obj.close()


def open_inputs(base: str | Path, loras: list[str | Path], patch: str | Path | None, *,
                stream_base: bool = False, keep_shards: bool = False, ahead: int = 0) -> MergeInputs:
    """Resolve (download when needed) and open the LoRAs and the patch first (every tensor needs them), then the
    base; a streamed base's hub LoRAs are read while their weights download, ahead of its shards.

    Args:
        base, loras, patch: folders or hub ids.
        stream_base: read a hub base shard by shard as its shards arrive (:class:`StreamedCheckpoint`) instead of
            downloading it whole first.
        keep_shards: keep the streamed shards in the hub cache (a normal merge); else each is deleted once merged
            (low-disk mode), with ``ahead`` shards downloading beyond the one merging.

    Raises:
        UserError: a reference cannot be resolved, or a file is missing, truncated or unsafe.
    """
    meter = Meter()
    downloads: list[AdapterDownload] = []
    try:
        opened = [_open_lora(x, meter, downloads, stream=stream_base) for x in loras]
    except BaseException:
        for d in downloads:
            d.close()
        raise
    patch_dir = _folder(patch, "patch") if patch else None
    if stream_base:
        checkpoint: Checkpoint = StreamedCheckpoint(str(base), what="base model", keep=keep_shards, ahead=ahead,
                                                    meter=meter, after=lambda: [d.join() for d in downloads])
        base_dir = checkpoint.path
    else:
        base_dir = _folder(base, "base model")
        checkpoint = open_checkpoint(base_dir)
    inputs = MergeInputs(base=checkpoint, base_dir=base_dir, downloads=downloads)
    try:
        for ref, adapter in zip(loras, opened):
            inputs.adapters.append((label(ref), adapter))
        if patch_dir is not None:
            inputs.patch, inputs.patch_label = open_checkpoint(patch_dir), label(patch)
    except BaseException:
        inputs.close()
        raise
    return inputs


def _open_lora(ref: str | Path | ModelRef, meter: Meter, downloads: list[AdapterDownload], *, stream: bool
               ) -> Adapter:
    """A LoRA opened: read while its weights download (:class:`~helpers.checkpoint.streamed.AdapterDownload`, added
    to ``downloads``) when ``stream`` and it is a hub repo whose weights are not here yet, else from its files."""
    ref = ModelRef.of(ref)
    if stream and ref.kind == "hub" and AdapterDownload.streams(ref.require_hub_id("LoRA")):
        downloads.append(AdapterDownload(ref.require_hub_id("LoRA"), meter=meter))
        return downloads[-1].adapter
    return open_adapter(_folder(ref, "LoRA"))


def _folder(ref: str | Path | ModelRef, what: str) -> Path:
    """The files of ``ref``: where a classified reference already points on this machine, else resolved (and
    downloaded) by :func:`~helpers.hub.resolve_model`."""
    if isinstance(ref, ModelRef) and ref.is_local:
        return ref.path
    return resolve_model(ref, what=what)


def parse_sha256_file(path: str | Path) -> dict[str, set[str]]:
    """Read a ``sha256sum``-format listing into ``{file name: {hex digests}}``."""
    if not Path(path).is_file():
        raise UserError(f"SHA256 listing {path} not found")
    listing: dict[str, set[str]] = {}
    for n, line in enumerate(read_utf8(path, what="a sha256sum listing").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise UserError(f"{path}:{n} is not a sha256sum line ('<64 hex digits>  <file name>')")
        listing.setdefault(parts[1].lstrip("*").removeprefix("./"), set()).add(parts[0].lower())
    return listing


def verify_inputs(inputs: MergeInputs, expected: Mapping[str, str | Collection[str]]) -> int:
    """Check input files against ``expected`` digests (keys ``dir/name`` or ``name``); returns how many matched.

    Raises:
        UserError: a file's digest differs, or no input file is listed at all.
    """
    matched = 0
    for f in inputs.files():
        for key in (f"{f.parent.name}/{f.name}", f.name):
            if key in expected:
                want = expected[key]
                want = {want} if isinstance(want, str) else set(want)
                got = sha256_file(f)
                if got not in {w.lower() for w in want}:
                    raise UserError(f"{f} has SHA256 {got}, expected {' or '.join(sorted(want))}; "
                                    "the file is damaged or a different version: download it again")
                matched += 1
                break
    if not matched:
        raise UserError("none of the input files appear in the SHA256 listing; check the listing's file names")
    return matched
