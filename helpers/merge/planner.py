"""Before any download: what a merge will fetch, write and hold, and whether this machine has room for it.

The planner only computes, from the :class:`~.sources.Sources` gathered before it (the hub's file listing and
headers, or the local files, or the catalog's architectures):

- **download**: the files of the base, the LoRAs and the patch that are not on this machine yet (duplicate
  weight copies left out, as the download leaves them out);
- **output**: the finished output, exactly as the writers lay it out (GGUF at any type, HF or ``.pth``);
- **peak disk**: downloads + output normally; in *low-disk mode* (each base shard deleted once merged) the two
  largest base shards (the one merging and the next one downloading meanwhile) + the rest of the downloads +
  output, or only the largest shard (one at a time, the download waiting for the merge) when two do not fit the
  free disk or would save nothing (a base of two shards);
- **peak RAM** (:mod:`.sizes`): about 250 MB of libraries, then at the worst moment a tensor in float32 and
  as written (its float16 copy, or its quantized bytes; two neighbours for a quantized GGUF); flat in depth.

:class:`ResourcePlan` says whether it fits the free disk and RAM it measured (or those it is told to assume, e.g.
free Colab's) in the low-disk mode it decides, and :meth:`ResourcePlan.refusal` names what would fit instead. The
merge executes this plan: its low-disk mode and its disk check read it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint.streamed import INDEX
from ..disk import free_disk_bytes
from ..env import available_ram_bytes
from ..gguf import BITS_PER_WEIGHT
from ..hub import hub_cache_dir
from ..util import UserError, human_bytes, partial_path, tree_bytes
from .options import MergeOptions
from .sizes import output_size, peak_ram
from .awq_plan import with_awq
from .sources import SourceFiles, Sources, gather_sources



SMALLER_TYPES = ("q8_0", "q6_k", "q5_k_m", "q4_k_m", "q3_k_m", "q2_k")  # what a refusal offers, largest first


@dataclass(frozen=True)
class ResourcePlan:
    """What a merge needs, and what this machine (or the one assumed) has.

    Attributes:
        sources: base, LoRAs and patch, with their files.
        options: format and type of the output.
        output_bytes: the finished output.
        ram_bytes: the merge's peak RAM.
        free_disk: free bytes where the downloads and the output go (the smaller, if they differ);
        free_ram: available RAM (None: unknown).
        out_dir: where the output goes.
        low_disk: the mode chosen (:func:`resource_plan`): stream the base one shard at a time.
        tensors: the merged model's outline (names and shapes), against which AWQ results are checked before any
            download.
        awq: the AWQ results file (downloaded first, counted in the download), None without one.
    """

    sources: list[SourceFiles]
    options: MergeOptions
    output_bytes: int
    ram_bytes: int
    free_disk: int
    free_ram: int | None
    out_dir: Path
    low_disk: bool = False
    tensors: tuple = ()
    awq: SourceFiles | None = None

    @property
    def inputs(self) -> list[SourceFiles]:
        """Everything the merge reads: the sources, then the AWQ results when there are some."""
        return [*self.sources, *([self.awq] if self.awq is not None else [])]

    @property
    def download_bytes(self) -> int:
        return sum(s.to_download for s in self.inputs)

    @property
    def peak_disk(self) -> int:
        """New bytes on disk at the peak: every download, then the output beside them."""
        return self.download_bytes + self.output_bytes

    def _low_peak(self, held: int) -> int | None:
        """The peak disk in low-disk mode with ``held`` base shards on disk at once (the largest ones), or None
        when the base cannot be streamed (it is local, or not safetensors)."""
        base = self.sources[0]
        if not base.streamable:
            return None
        shards = sorted((b for n, b in base.missing.items() if n.endswith(".safetensors")), reverse=True)
        return self.peak_disk - sum(shards) + sum(shards[:held])

    @property
    def low_disk_ahead(self) -> int:
        """Base shards low-disk mode downloads ahead of the one merging: 1 when two shards at once fit the free disk
        and still hold less than the whole download (a base of three shards or more), else 0."""
        two = self._low_peak(2)
        return int(two is not None and two <= self.free_disk and two < self.peak_disk)

    @property
    def low_disk_held(self) -> str:
        """How low-disk mode holds the base, in words (the check cell and the summary show it)."""
        return ("two base shards at a time: one merging, the next downloading" if self.low_disk_ahead
                else "one base shard at a time")

    @property
    def peak_disk_low(self) -> int | None:
        """The same in low-disk mode, with :attr:`low_disk_ahead` shards downloading beside the one merging (None
        when the base cannot be streamed: it is local, or not safetensors)."""
        return self._low_peak(1 + self.low_disk_ahead)

    @property
    def streams_base(self) -> bool:
        """True when the merge reads the base as its shards arrive (a hub base in safetensors shards with an index,
        shards still to download) instead of downloading it whole first; low-disk mode deletes each once merged."""
        base = self.sources[0]
        return base.streamable and INDEX in base.files

    @property
    def fits(self) -> bool:
        return self.peak_disk <= self.free_disk

    @property
    def fits_low_disk(self) -> bool:
        return self.peak_disk_low is not None and self.peak_disk_low <= self.free_disk

    @property
    def ram_fits(self) -> bool:
        return self.free_ram is None or self.ram_bytes <= self.free_ram

    def summary(self) -> str:
        """A few lines for the user: download, output, peak disk (both modes), peak RAM, the verdict."""
        o = self.options
        lines = [f"plan: {self.sources[0].ref}" + "".join(f" + {s.ref}" for s in self.sources[1:])
                 + f" -> {o.fmt.upper()} {o.outtype}" + (" (sizes estimated from the catalog)"
                                                        if any(s.estimated for s in self.inputs) else "")]
        for s in self.inputs:
            w = s.weights
            shards = f" in {len(w)} files, largest {human_bytes(max(w.values()))}" if len(w) > 1 else ""
            lines.append(f"  {s.role:8s} {human_bytes(s.total):>9s}{shards}; to download {human_bytes(s.to_download)}"
                         f"  ({s.ref})")
        lines.append(f"  output   {human_bytes(self.output_bytes):>9s}  ({self.out_dir})")
        low = self.peak_disk_low
        held = self.low_disk_held
        lines.append(f"  disk     {human_bytes(self.peak_disk):>9s} at the peak"
                     + (f", {human_bytes(low)} in low-disk mode ({held})" if low is not None else "")
                     + f"; {human_bytes(self.free_disk)} free")
        lines.append(f"  RAM      {human_bytes(self.ram_bytes):>9s} at the peak"
                     + (f"; {human_bytes(self.free_ram)} available" if self.free_ram is not None else ""))
        verdict = ("fits" if self.fits else f"fits in low-disk mode ({held})" if self.fits_low_disk
                   else "does NOT fit the disk")
        lines.append(f"  -> {verdict}" + ("" if self.ram_fits else "; does NOT fit the RAM"))
        return "\n".join(lines)

    @property
    def chosen_peak_disk(self) -> int:
        """The peak disk in the mode chosen (:attr:`low_disk`)."""
        return self.peak_disk_low if self.low_disk and self.peak_disk_low is not None else self.peak_disk

    def refusal(self) -> str | None:
        """Why the merge cannot run here in the mode chosen, naming what would fit (None: it fits)."""
        if not self.ram_fits:
            return (f"the merge needs about {human_bytes(self.ram_bytes)} of RAM and "
                    f"{human_bytes(self.free_ram or 0)} are available: close other programs or use a larger runtime")
        if self.low_disk and not self.sources[0].streamable:
            return (f"low-disk mode needs a base on the hub in several safetensors shards; {self.sources[0].ref} is "
                    "not one: merge without low-disk mode")
        if self.chosen_peak_disk <= self.free_disk:
            return None
        return (f"the merge needs {human_bytes(self.chosen_peak_disk)} of disk ({human_bytes(self.download_bytes)} "
                f"to download, {human_bytes(self.output_bytes)} of output) but {human_bytes(self.free_disk)} are "
                f"free: {self.disk_fixes()}")

    def disk_fixes(self) -> str:
        """What would make the disk fit: low-disk mode, a smaller type, another place ("use ..., or ...")."""
        ways = []
        if not self.low_disk and self.fits_low_disk:
            ways.append(f"low-disk mode (--low-disk: {human_bytes(self.peak_disk_low)})")
        smaller = _smaller_type(self)
        if smaller:
            ways.append(smaller)
        ways.append("another output folder or runtime with more free space")
        return "use " + ", or ".join(ways)


def _smaller_type(plan: ResourcePlan) -> str | None:
    """A type with fewer bits than the plan's that would make it fit, named with its peak (None: none would)."""
    if plan.options.fmt != "gguf":
        return None
    current = BITS_PER_WEIGHT[plan.options.outtype]
    peak = plan.peak_disk_low if plan.fits_low_disk else plan.peak_disk
    for t in SMALLER_TYPES:
        if BITS_PER_WEIGHT[t] >= current:
            continue
        need = peak - plan.output_bytes + int(plan.output_bytes * BITS_PER_WEIGHT[t] / current)
        if need <= plan.free_disk:
            return f"a smaller type such as --outtype {t} (about {human_bytes(need)})"
    return None


def resource_plan(sources: Sources, *, options: MergeOptions, out: str | Path, free_disk: int | None = None,
                  free_ram: int | None = None) -> ResourcePlan:
    """What the merge of ``sources`` needs, and whether this machine (or the one assumed) has it, with low-disk
    mode decided: as ``options.low_disk`` asks, or (``None``) only when the full download does not fit and low-disk
    mode does.

    Args:
        sources: the inputs and the model they make (:func:`.sources.gather_sources`).
        options: format, type and the rest of the merge's settings.
        out: the output path (its filesystem's free space counts, and the hub cache's).
        free_disk, free_ram: assume these instead of measuring (e.g. free Colab's 78 GB and 12.7 GB).

    What an interrupted run left in the output's partial folder (:func:`~helpers.util.partial_path`) is not needed
    again.
    """
    target = options.target(out)
    if free_disk is None:
        free_disk = min(free_disk_bytes(target.parent), free_disk_bytes(hub_cache_dir()))
    written = tree_bytes(partial_path(target))
    size = output_size(sources.config, sources.tensors, options, sources.tokenizer_bytes)
    plan = ResourcePlan(sources=sources.files, options=options, output_bytes=max(size - written, 0),
                        ram_bytes=peak_ram(sources.config, sources.tensors, options), free_disk=free_disk,
                        free_ram=available_ram_bytes() if free_ram is None else free_ram, out_dir=target,
                        tensors=tuple(sources.tensors), awq=sources.awq)
    requested = options.low_disk
    low = bool(requested) or (requested is None and not plan.fits and plan.fits_low_disk)
    if low and not sources.files[0].missing:  # the base is on this machine already: nothing to stream
        low = False
    return dataclasses.replace(plan, low_disk=low)


def checked_plan(sources: Sources, *, options: MergeOptions, out: Path) -> ResourcePlan:
    """:func:`resource_plan`, printed; refused with one line naming what would fit when it does not.

    Raises:
        UserError: the merge does not fit in the mode chosen.
    """
    plan = resource_plan(sources, options=options, out=out)
    print(plan.summary())
    if plan.low_disk and options.low_disk is None:
        print("the full download does not fit: low-disk mode (each base shard is deleted once merged)")
    refusal = plan.refusal()
    if refusal:
        raise UserError(refusal)
    return plan


def plan_resources(base: str, loras: list[str] = (), patch: str | None = None, *, options: MergeOptions,
                   out: str | Path, offline: bool = False, fresh: bool = False, free_disk: int | None = None,
                   free_ram: int | None = None) -> ResourcePlan:
    """Plan a merge before anything is downloaded: :func:`.sources.gather_sources`, then :func:`resource_plan`.

    Args:
        base, loras, patch: as for :func:`helpers.merge.merge`.
        options: format, type and the rest of the merge's settings.
        out: the output path (its filesystem's free space counts, and the hub cache's).
        offline: estimate catalog releases from their architectures instead of reading the hub's listing.
        fresh: count every hub file as still to download (planning for a new runtime).
        free_disk, free_ram: assume these instead of measuring (e.g. free Colab's 78 GB and 12.7 GB).
    """
    sources = with_awq(gather_sources(base, loras, patch, offline=offline, fresh=fresh), options.awq, offline=offline,
                       fresh=fresh)
    return resource_plan(sources, options=options, out=out, free_disk=free_disk, free_ram=free_ram)
