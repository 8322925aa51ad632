"""A chat's settings, each declared once with :func:`~helpers.util.params.param` (``python -m helpers chat`` and
``serve`` make their flags from these declarations): how the model is loaded (:class:`LoadOptions`, the arguments of
:func:`~.load.load_backend`), how a reply is generated (:class:`ChatOptions`, the keywords of
:meth:`~.backend.Backend.chat`) and how the server runs (:class:`ServeOptions`, the arguments of
:func:`~.server.serve`)."""
from __future__ import annotations

from dataclasses import MISSING, dataclass

from ..tokens import TEMPLATES
from ..util import UserError
from ..util.params import param
from .admission import API_KEY_ENV, DEFAULT_QUEUE, DEFAULT_TIMEOUT
from .guidance import OFF, check_scale
from .llamacpp import DEFAULT_N_CTX

BACKENDS = ("auto", "transformers", "llama.cpp")


@dataclass(frozen=True)
class LoadOptions:
    """How :func:`~.load.load_backend` loads the model (``quantization``: ``--4bit`` or ``--8bit``)."""

    model: str = param(MISSING, "HF folder, .gguf file, hub id or catalog name")
    backend: str = param("auto", "transformers or llama.cpp (auto: llama.cpp for a GGUF)", choices=BACKENDS)
    template: str | None = param(None, "force a prompt template (alpaca, llama2-zh, llama2-zh-long, llama3, raw)")
    nf4: bool = param(False, "bitsandbytes NF4 (GPU)", flag="--4bit")
    int8: bool = param(False, "bitsandbytes 8-bit (GPU)", flag="--8bit")
    n_ctx: int | None = param(None, "context length", parse=int)
    rope: str | None = param(None, "config | auto | ntk | ntk:<alpha> | linear:<f> | yarn:<f>")
    n_gpu_layers: int | None = param(None, "llama.cpp layers on the GPU (-1: all)", parse=int)
    device: str | None = param(None, "transformers device (cuda, cpu)")
    trust_remote_code: bool = param(False, "run the model repo's own code (64K models)")

    def __post_init__(self) -> None:
        if self.nf4 and self.int8:
            raise UserError("--4bit and --8bit exclude each other: choose one")

    @property
    def quantization(self) -> str | None:
        """``"4bit"``, ``"8bit"`` or ``None``."""
        return "4bit" if self.nf4 else "8bit" if self.int8 else None

    def load(self):
        """The loaded :class:`~.backend.Backend`."""
        from .load import load_backend

        return load_backend(self.model, backend=self.backend, quantization=self.quantization, device=self.device,
                            n_gpu_layers=self.n_gpu_layers, n_ctx=self.n_ctx, rope=self.rope,
                            trust_remote_code=self.trust_remote_code, template=self.template)


@dataclass(frozen=True)
class ChatOptions:
    """How a reply is generated (``None``: the back end's default); the keywords of :meth:`Backend.chat`."""

    max_new_tokens: int | None = param(None, "tokens of a reply at most", parse=int)
    temperature: float | None = param(None, "0 decodes greedily", parse=float)
    top_k: int | None = param(None, "sample from the k likeliest tokens", parse=int)
    top_p: float | None = param(None, "sample from the likeliest tokens that hold this probability", parse=float)
    repetition_penalty: float | None = param(None, "above 1 discourages repeating tokens", parse=float)
    guidance_scale: float | None = param(None, "CFG sampling: 1 is off, above 1 steers away from --negative-prompt "
                                         "(e.g. 1.5)", parse=float)
    negative_prompt: str | None = param(None, "CFG sampling: put in place of the system prompt for the unconditional "
                                        "branch (default: the prompt's last token)")

    def __post_init__(self) -> None:
        """Refuse CFG options that cannot take effect, before the model loads."""
        if self.guidance_scale is not None:
            check_scale(self.guidance_scale)
        if self.negative_prompt and (self.guidance_scale is None or self.guidance_scale == OFF):
            raise UserError("--negative-prompt only acts with CFG sampling: add --guidance-scale above 1 (e.g. 1.5)")


@dataclass(frozen=True)
class ServeOptions:
    """The arguments of :func:`~.server.serve` a user sets."""

    model: str = param(MISSING, "a .gguf file, a catalog name or a hub id (downloaded and verified)")
    host: str = param("127.0.0.1", "interface to listen on (127.0.0.1: this machine only; any other needs --api-key)")
    port: int = param(8000, "TCP port", parse=int)
    api_key: str | None = param(None, f"clients must send 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}, else "
                                "none)")
    gguf_quant: str = param("q4_k", "which GGUF of a release repo (q4_k, q8_0, q4_k-im ...)")
    n_ctx: int = param(DEFAULT_N_CTX, "context length", parse=int)
    n_gpu_layers: int | None = param(None, "layers on the GPU (default: all when llama.cpp has GPU support)", parse=int)
    template: str | None = param(None, "the prompt template (default: the release's, from the GGUF's chat template)",
                                 choices=tuple(TEMPLATES))
    timeout: float = param(DEFAULT_TIMEOUT, "seconds one generation may run before it ends", parse=float)
    max_queue: int = param(DEFAULT_QUEUE, "requests waiting behind the one being answered before new ones get 503",
                           parse=int)

    def __post_init__(self) -> None:
        if self.max_queue < 0:
            raise UserError("--max-queue must be 0 or more")
        if self.timeout <= 0:
            raise UserError("--timeout must be more than 0 seconds")
