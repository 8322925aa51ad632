"""``python -m helpers push PATH... --repo ID``: upload outputs to the hub with a model card."""
from __future__ import annotations

import re
from dataclasses import MISSING, dataclass
from pathlib import Path

from ..util import UserError
from ..util.params import param
from .card import CARD_KINDS, ReleaseCard
from .push import push_to_hub

# a GGUF type in a file name: ggml-model-q4_k.gguf, model.Q4_K_M.gguf, x-f16.gguf, y-iq2_xs-im.gguf
_QUANT_IN_NAME = re.compile(r"(?i)(?:^|[-_.])((?:i?q\d(?:_[a-z0-9]+)*)|bf16|f16|f32)(?=[-.]|$)")


@dataclass(frozen=True)
class PushOptions:
    """What is pushed, where, and the model card's facts."""

    paths: list[str] = param(MISSING, "files and folders to push (one folder: its files at the root)", flag="paths",
                             many=True)
    repo: str = param(MISSING, "owner/name, or name for your own account")
    base: str | None = param(None, "the base model (catalog name, hub id or folder): writes a model card")
    lora: list[str] = param([], "a LoRA merged into the base, in order", many=True)
    kind: str | None = param(None, "what is pushed (default: gguf when a .gguf is among the paths, adapter for an "
                             "adapter folder, else merged)", choices=CARD_KINDS)
    quant: str | None = param(None, "the GGUF type (default: read from the .gguf file name)")
    how: str = param("", "how it was made, for the model card")
    public: bool = param(False, "create the repo public (default: private)")

    def card(self) -> ReleaseCard | None:
        """The model card these options describe (``None`` without ``--base``)."""
        if not self.base:
            return None
        paths = [Path(p) for p in self.paths]
        ggufs = [p for p in paths if p.suffix == ".gguf"]
        adapter = any((p / "adapter_config.json").is_file() for p in paths if p.is_dir())
        kind = self.kind or ("gguf" if ggufs else "adapter" if adapter and not self.lora else "merged")
        quant = self.quant
        if kind == "gguf" and not quant:
            found = {m.group(1).lower() for p in ggufs if (m := _QUANT_IN_NAME.search(p.stem))}
            if len(found) != 1:
                raise UserError("cannot tell the GGUF type from the file names; give --quant (e.g. --quant q4_k_m)")
            quant = found.pop()
        return ReleaseCard(self.base, tuple(self.lora), kind=kind, quant=quant if kind == "gguf" else None,
                           how=self.how)


OPTIONS = (PushOptions,)


def main(options: PushOptions) -> int:
    """Push; print where it went."""
    print(push_to_hub(options.paths, options.repo, card=options.card(), private=not options.public))
    return 0
