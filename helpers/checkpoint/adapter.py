"""A PEFT LoRA folder opened for merging, in every layout that was released: :func:`open_adapter`.

Old (2023) PEFT layouts included: ``adapter_model.bin`` pickles (read tensor by tensor with
:func:`~.torchzip.open_pickle`, never unpickling code), configs with
fields newer PEFT does not know, ``modules_to_save`` keys without the ``modules_to_save.default`` infix.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..tokens import tokenizer_files, tokenizer_vocab_size
from ..tokens.files import has_tokenizer
from ..util import UserError, read_json
from .files import SafetensorsFile, corrupt_message
from .torchzip import LoadedPickle, TorchZipFile, open_pickle

if TYPE_CHECKING:
    import torch

_LORA_KEY = re.compile(r"(?P<mod>.+)\.(?P<ab>lora_A|lora_B)(?:\.[\w-]+)?\.weight")
_LORA_EMB_KEY = re.compile(r"(?P<mod>.+)\.(?P<ab>lora_embedding_A|lora_embedding_B)(?:\.[\w-]+)?")
_SAVED_KEY = re.compile(r"(?P<mod>.+)\.modules_to_save\.[\w-]+\.(?P<p>weight|bias)")


@dataclass(frozen=True)
class LoraPair:
    """Keys of one LoRA pair in the adapter file and how to apply it to a base weight."""

    a: str
    b: str
    scaling: float
    transpose: bool  # fan_in_fan_out (Conv1D-style weights) or an embedding LoRA


class Adapter:
    """A PEFT LoRA folder. Use :func:`open_adapter`.

    Attributes:
        path: the folder.
        config: ``adapter_config.json`` as a dict.
        r, alpha, scaling: rank, ``lora_alpha`` and ``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA).
        fan_in_fan_out: base weights stored transposed (GPT-2 ``Conv1D``).
        lora: HF weight name -> :class:`LoraPair`.
        saved: HF weight name -> key of its ``modules_to_save`` replacement in the adapter file.
        tokenizer_dir, tokenizer_vocab: the folder's tokenizer and its size (``None`` without one).
        files: files read (config, weights), for checksums.
    """

    def __init__(self, path: Path, weights: SafetensorsFile | None = None) -> None:
        self.path = path
        cfg_path = path / "adapter_config.json"
        if not cfg_path.is_file():
            raise UserError(f"{path} has no adapter_config.json, so it is not a complete LoRA folder; "
                            "download adapter_config.json from the LoRA's repository")
        self.config = cfg = read_json(cfg_path)
        if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
            raise UserError(f"{path} is a {cfg.get('peft_type')} adapter; only LoRA adapters can be merged")
        try:
            self.r = int(cfg["r"])
            self.alpha = float(cfg.get("lora_alpha", 8))
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{cfg_path} lacks a valid 'r'; download it again") from None
        self.use_rslora = bool(cfg.get("use_rslora", False))
        self.fan_in_fan_out = bool(cfg.get("fan_in_fan_out", False))
        self.scaling = self._scale(self.r, self.alpha)
        st, binf = path / "adapter_model.safetensors", path / "adapter_model.bin"
        self.remote_files: list[list] = []  # [name, size, sha256] of weights still downloading (the job's record)
        if weights is not None:  # still arriving (helpers.checkpoint.streamed.AdapterDownload)
            self._store = weights
            self.weights_file = st
        elif st.is_file():
            self._store: SafetensorsFile | TorchZipFile | LoadedPickle = SafetensorsFile(st)
            self.weights_file = st
        elif binf.is_file():
            self._store = open_pickle(binf)
            self.weights_file = binf
        else:
            raise UserError(f"{path} has no adapter_model.safetensors or adapter_model.bin; download it again")
        self.files = [cfg_path, self.weights_file]
        self.lora: dict[str, LoraPair] = {}
        self.saved: dict[str, str] = {}
        self._parse_keys(list(self._store.keys()))
        self._check_config()
        self.tokenizer_dir = path if has_tokenizer(path) else None
        self.tokenizer_vocab = tokenizer_vocab_size(path) if self.tokenizer_dir else None
        if self.tokenizer_dir:
            self.files += tokenizer_files(path)
            if self.tokenizer_vocab is None:
                raise UserError(f"the tokenizer in {path} cannot be read ({', '.join(f.name for f in tokenizer_files(path))}"
                                " holds no vocabulary); download the LoRA's tokenizer files again")

    def _scale(self, r: int, alpha: float) -> float:
        return alpha / (math.sqrt(r) if self.use_rslora else r)

    def _pattern(self, kind: str, module: str) -> float | None:
        """The ``rank_pattern`` / ``alpha_pattern`` value for ``module`` (PEFT's matching), None when none applies."""
        for key, value in (self.config.get(kind) or {}).items():
            if _matches(key, module):
                return float(value)
        return None

    def _module_rank(self, module: str) -> int:
        r = self._pattern("rank_pattern", module)
        return self.r if r is None else int(r)

    def _module_scale(self, module: str) -> float:
        alpha = self._pattern("alpha_pattern", module)
        return self._scale(self._module_rank(module), self.alpha if alpha is None else alpha)

    def _check_config(self) -> None:
        """Every fact adapter_config.json states about the weights must hold: the rank of each pair (``r`` or
        ``rank_pattern``), the modules patterns and ``target_modules`` name, the modules saved in full.

        PEFT refuses an adapter whose ranks disagree with its config; merging it anyway would apply the wrong
        scale, so it is refused here too, naming both files."""
        cfg, weights = self.path / "adapter_config.json", self.weights_file.name
        modules = [name.removesuffix(".weight") for name in self.lora]
        for name, pair in self.lora.items():
            mod = name.removesuffix(".weight")
            a, b = self.key_shape(pair.a), self.key_shape(pair.b)
            rank, want = a[0], self._module_rank(mod)
            if len(a) != 2 or len(b) != 2 or b[1] != rank:
                raise UserError(corrupt_message(self.weights_file, f"{mod}'s LoRA pair has shapes {list(a)} and "
                                                                   f"{list(b)}, which do not multiply"))
            if rank != want:
                said = (f"gives {mod} rank {want} (rank_pattern)" if self._pattern("rank_pattern", mod) is not None
                        else f"says r={want}")
                raise UserError(f"{cfg} {said} but {weights} has rank {rank} weights for {mod}: the config and the "
                                "weights come from different trainings; download the LoRA again")
        for kind in ("rank_pattern", "alpha_pattern"):
            for key in self.config.get(kind) or {}:
                if not any(_matches(key, m) for m in modules):
                    raise UserError(f"{cfg} sets {kind} for {key!r}, but {weights} has no LoRA weights for such a "
                                    "module: the config and the weights do not belong together")
        targets = self.config.get("target_modules")
        if isinstance(targets, (list, tuple)):
            for mod in modules:
                if not any(_matches(re.escape(t), mod) for t in targets):
                    raise UserError(f"{weights} has LoRA weights for {mod}, which target_modules in {cfg} does not "
                                    "list: the config and the weights do not belong together")
            for t in targets:
                if not any(_matches(re.escape(t), m) for m in modules):
                    raise UserError(f"{cfg} lists {t} in target_modules but {weights} has no LoRA weights for it: the "
                                    "file is incomplete or from another training; download the LoRA again")
        saved = self.config.get("modules_to_save")
        if isinstance(saved, (list, tuple)):
            for name in self.saved:
                mod = name.rsplit(".", 1)[0]
                if not any(_matches(re.escape(m), mod) for m in saved):
                    raise UserError(f"{weights} replaces {mod}, which modules_to_save in {cfg} does not list (PEFT "
                                    "would ignore it): the config and the weights do not belong together")

    def _parse_keys(self, keys: list[str]) -> None:
        halves: dict[str, dict[str, str]] = {}
        for key in keys:
            k = key.removeprefix("base_model.model.")
            if m := (_LORA_KEY.fullmatch(k) or _LORA_EMB_KEY.fullmatch(k)):
                halves.setdefault(m["mod"], {})[m["ab"]] = key
            elif m := _SAVED_KEY.fullmatch(k):
                self.saved[f"{m['mod']}.{m['p']}"] = key
            elif ".original_module." in k:
                continue
            elif "lora_magnitude_vector" in k:
                raise UserError(f"{self.path} is a DoRA adapter; merging DoRA is not supported")
            elif k.endswith((".weight", ".bias")):  # old PEFT: modules_to_save saved under the plain name
                self.saved[k] = key
        for mod, ab in halves.items():
            emb = "lora_embedding_A" in ab or "lora_embedding_B" in ab
            a, b = (ab.get("lora_embedding_A"), ab.get("lora_embedding_B")) if emb else (ab.get("lora_A"), ab.get("lora_B"))
            if a is None or b is None:
                raise UserError(corrupt_message(self.weights_file, f"{mod} has only half of its LoRA pair"))
            self.lora[f"{mod}.weight"] = LoraPair(a, b, self._module_scale(mod), emb or self.fan_in_fan_out)

    def key_shape(self, key: str) -> tuple[int, ...]:
        return self._store.shape(key)

    def _get(self, key: str, dtype: "torch.dtype") -> "torch.Tensor":
        return self._store.get(key, dtype=dtype)

    def delta_shape(self, name: str) -> tuple[int, ...]:
        """Shape of the weight the LoRA pair for ``name`` adds to."""
        p = self.lora[name]
        a, b = self.key_shape(p.a), self.key_shape(p.b)
        return (a[1], b[0]) if p.transpose else (b[0], a[1])

    def saved_shape(self, name: str) -> tuple[int, ...]:
        return self.key_shape(self.saved[name])

    def saved_in_file_order(self) -> list[str]:
        """The names of :attr:`saved`, in the order the weights file holds their data."""
        keys = list(self._store.keys())
        return sorted(self.saved, key=lambda n: keys.index(self.saved[n]))

    def get_saved(self, name: str, rows: tuple[int, int] | None = None) -> "torch.Tensor":
        """The ``modules_to_save`` replacement for ``name`` (or its rows ``[first, end)``, :attr:`reads_rows`), as a
        fresh float32 tensor."""
        import torch

        if rows is not None:
            return self._store.get(self.saved[name], dtype=torch.float32, rows=rows)
        return self._get(self.saved[name], torch.float32)

    @property
    def reads_rows(self) -> bool:
        """True when :meth:`get_saved` can read a tensor's rows apart (a safetensors file)."""
        return isinstance(self._store, SafetensorsFile)

    def add_delta(self, w: "torch.Tensor", name: str) -> None:
        """``w += scaling * B @ A`` in place (transposed for fan_in_fan_out / embedding LoRAs)."""
        import torch

        p = self.lora[name]
        a, b = self._get(p.a, torch.float32), self._get(p.b, torch.float32)
        if p.transpose:
            w.addmm_(a.t(), b.t(), alpha=p.scaling)
        else:
            w.addmm_(b, a, alpha=p.scaling)

    @property
    def embed_rows(self) -> int | None:
        """Rows of the saved embeddings (or lm_head): the LoRA's vocabulary, ``None`` if it saves neither."""
        for n in ("model.embed_tokens.weight", "lm_head.weight"):
            if n in self.saved:
                return self.saved_shape(n)[0]
        return None

    def close(self) -> None:
        self._store.close()


def _matches(pattern: str, module: str) -> bool:
    """PEFT's rule: a key names a module when it matches the whole name or its last dotted parts."""
    return re.match(rf"(.*\.)?({pattern})$", module) is not None


def open_adapter(path: str | Path, weights: SafetensorsFile | None = None) -> Adapter:
    """Open a PEFT LoRA folder (``adapter_config.json`` + ``adapter_model.{safetensors,bin}``, or ``weights``: its
    ``adapter_model.safetensors`` opened while it downloads).

    Raises:
        UserError: missing config or weights, pickled code in ``adapter_model.bin``, a corrupt file.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"LoRA folder {path} not found")
    return Adapter(path, weights)
