"""Finished GGUF files: Ollama Modelfile, checksum, llama.cpp-style shards, export from Colab.

These work on any GGUF on disk (written by :mod:`.sink`, :mod:`.quantize` or llama.cpp): :func:`write_modelfile`
and :func:`write_checksum` put ``<stem>.Modelfile`` and ``<file>.sha256`` beside it, :func:`split_gguf` rewrites
it as ``-00001-of-0000N.gguf`` shards and :func:`export_file` copies it to Google Drive or downloads it in Colab.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..env import in_colab
from ..publish import copy_to_workspace
from ..tokens import generation_defaults, get_template, ollama_template, template_from_chat_template
from ..util import UserError, atomic_path, human_bytes, remove, tmp_name, write_sha256_listing
from .metadata import read_metadata


# ---------------------------------------------------------------------------------------------- Modelfile, checksum
def write_modelfile(gguf_path: str | Path, *, template: str | None = None, system: str | None = None,
                    context_length: int | None = None) -> Path:
    """Write an Ollama Modelfile ``<stem>.Modelfile`` beside ``gguf_path``; returns its path.

    ``ollama create NAME -f <stem>.Modelfile`` then imports the model with its prompt template, stop tokens,
    default system prompt and the releases' sampling settings. ``template``: a template id (default: the one the
    GGUF carries, else ``raw``); ``context_length``: the model's, when the caller wrote the file and knows it. What
    is not given is read from the GGUF, in one read (seconds for a large vocabulary).
    """
    gguf_path = Path(gguf_path)
    if template is None or context_length is None:
        template, context_length = _modelfile_metadata(gguf_path, template, context_length)
    t = get_template(template)
    system = t.default_system if system is None else system
    lines = [f"FROM ./{gguf_path.name}", f'TEMPLATE """{ollama_template(t)}"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    stops = list(dict.fromkeys([*t.stop_strings, *([t.eot_token] if t.eot_token else [])]))
    lines += [f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in stops]
    g = generation_defaults(t.name)
    lines += [f"PARAMETER temperature {g.temperature}", f"PARAMETER top_k {g.top_k}", f"PARAMETER top_p {g.top_p}",
              f"PARAMETER repeat_penalty {g.repetition_penalty}"]
    if context_length:
        lines.append(f"PARAMETER num_ctx {min(int(context_length), 8192)}")
    out = modelfile_path(gguf_path)
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _modelfile_metadata(gguf_path: Path, template: str | None, ctx: int | None) -> tuple[str, int | None]:
    """``template`` (else the GGUF's, else ``raw``) and ``ctx`` (else the GGUF's; None where unreadable, as for a
    shard or a file being written: Ollama's default then)."""
    try:
        meta = read_metadata(gguf_path, ("tokenizer.chat_template", "llama.context_length"))
    except Exception:  # noqa: BLE001 - a shard or a file being written: not worth failing the Modelfile for
        meta = {}
    found = template_from_chat_template(meta.get("tokenizer.chat_template"))
    return template or found or "raw", ctx if ctx is not None else meta.get("llama.context_length")


def modelfile_path(gguf_path: str | Path) -> Path:
    """Where :func:`write_modelfile` puts the Modelfile of ``gguf_path``: ``<stem>.Modelfile`` beside it."""
    gguf_path = Path(gguf_path)
    return gguf_path.with_name(gguf_path.stem + ".Modelfile")


def ollama_command(gguf_path: str | Path, name: str | None = None) -> str:
    """The command that imports a GGUF into Ollama with its Modelfile, run in the GGUF's folder."""
    gguf_path = Path(gguf_path)
    name = name or gguf_path.stem.lower().replace("_", "-")
    return f"ollama create {name} -f {modelfile_path(gguf_path).name}"


def write_checksum(path: str | Path) -> Path:
    """Write ``<file>.sha256`` (``sha256sum -c`` format) beside ``path``; returns its path."""
    path = Path(path)
    return write_sha256_listing([path], path.with_name(path.name + ".sha256"))


# ---------------------------------------------------------------------------------------------- split + export
def split_gguf(path: str | Path, max_size: int) -> list[Path]:
    """Rewrite a GGUF as llama.cpp-compatible shards ``<stem>-00001-of-0000N.gguf`` (each under ``max_size`` bytes
    of tensor data); returns the shards (just ``path`` when it already fits). Same result as ``llama-gguf-split``.
    """
    import gguf
    import numpy as np

    path = Path(path)
    reader = gguf.GGUFReader(str(path))
    if sum(int(t.n_bytes) for t in reader.tensors) <= max_size:
        return [path]
    arch = reader.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(None, arch, split_max_size=int(max_size))
    for key, field in reader.fields.items():
        if key.startswith(("GGUF.", "split.")) or key == "general.architecture":
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, field.contents(), vtype, sub_type=sub)
    for t in reader.tensors:
        w.add_tensor_info(t.name, [int(x) for x in reversed(t.shape)], np.dtype(np.float32), int(t.n_bytes),
                          raw_dtype=t.tensor_type)
    tmpdir = tmp_name(path)
    tmpdir.mkdir()
    try:
        w.write_header_to_file(path=tmpdir / path.name)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for t in reader.tensors:
            w.write_tensor_data(np.ascontiguousarray(t.data))
        w.close()
        out = []
        for src in w.format_shard_names(tmpdir / path.name):
            os.replace(src, path.with_name(src.name))
            out.append(path.with_name(src.name))
    finally:
        remove(tmpdir)
    return out


DRIVE_ROOT = "/content/drive/MyDrive"  # where Colab mounts the user's Drive


def export_file(path: str | Path, *, to_drive: bool = False, download: bool = False, split_gb: float | None = None,
                drive_dir: str = "chinese-llama-alpaca", drive_root: str | Path = DRIVE_ROOT) -> list[Path]:
    """Show a file's size, optionally split it, copy it to Google Drive and/or download it (Colab only).

    Sidecar files (``.Modelfile``, ``.sha256``) travel with the GGUF. Outside Colab it only reports the path.

    Args:
        path: the file to export.
        to_drive: copy to ``/content/drive/MyDrive/<drive_dir>/`` (Drive must be mounted), through
            :func:`helpers.publish.copy_to_workspace`.
        download: start a browser download through ``google.colab.files.download``.
        split_gb: split a GGUF larger than this many GiB into ``-0000i-of-0000N.gguf`` shards first.
        drive_dir: folder under MyDrive.
        drive_root: where Drive is mounted.
    Returns:
        the local files that were exported.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found")
    size = path.stat().st_size
    print(f"{path.name}: {human_bytes(size)}")
    files = [path]
    if split_gb and path.suffix == ".gguf" and size > split_gb * 1024**3:
        files = split_gguf(path, int(split_gb * 1024**3))
        for f in files:
            write_checksum(f)
            print(f"  shard {f.name}: {human_bytes(f.stat().st_size)}")
        print("  llama.cpp loads the shards when given the first one; Ollama needs the unsplit file")
    sidecars = (p for f in files for p in (f.with_name(f.name + ".sha256"), f.with_name(f.stem + ".Modelfile")))
    extras = [p for p in sidecars if p.is_file()]
    if modelfile_path(path).is_file():
        print(f"  Ollama: {ollama_command(path)}   (in the folder holding both files)")
    if not in_colab():
        if to_drive or download:
            print("  (not in Colab: nothing copied or downloaded)")
        print(f"  saved at {path.resolve()}")
        return files
    if to_drive:
        root = Path(drive_root)
        if not root.is_dir():
            print("  Google Drive is not mounted: run `from google.colab import drive; drive.mount('/content/drive')`")
        else:
            for f in [*files, *extras]:  # progress, SHA256 read back, atomic; what is already there is kept
                print(f"  {copy_to_workspace(f, root / drive_dir)}")
    if download:
        from google.colab import files as colab_files  # type: ignore[import-not-found]

        for f in [*files, *extras]:
            colab_files.download(str(f))
    return files
