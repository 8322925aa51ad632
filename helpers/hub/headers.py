"""Safetensors headers read off the hub before any download: the planner's shard order, the streamed base's
tensors, a LoRA's embedding rows.

Each header is read from the start of the file with a streamed request closed as soon as the header is in, whatever
the server does with ``Range`` (206 with the bytes asked, or 200 with the whole file, as olah answers), several
files at once, and once a process for a file the listing names by the same SHA256.
"""
from __future__ import annotations

import json

from ..util import UserError
from ..util.timings import phase
from .fetch import Remote, quiet_hub_logs, retrying
from .ref import current_hub_id
from .resolve import _hub_errors, _remote, fetch_file, file_listing, hub_endpoint, require_online

HEADER_FIRST_BYTES = 100_000  # what the first request asks for: most headers fit (huggingface_hub's own guess)
HEADER_LIMIT = 100_000_000  # safetensors' own bound on a header's length
HEADER_WORKERS = 8  # headers read at once (each is a round trip or two, mostly waiting)
_HEADERS: dict[tuple[str, str, str, str], dict] = {}  # (endpoint, repo, file, its SHA256) -> header, read once


def safetensors_headers(repo_id: str, *, what: str = "model") -> dict[str, dict[str, tuple[str, tuple[int, ...], int]]]:
    """``{shard: {tensor: (dtype, shape, data start)}}`` of a hub repo's safetensors files (its shards, or its one
    ``model.safetensors``), each read from the start of the file (:func:`safetensors_file_header`), several at once,
    before any shard is downloaded.

    A header is read once a process for a file the listing names by the same SHA256 (the planner and the merge
    both need them: a mirror such as olah takes seconds per read, reading the whole file for it)."""
    from concurrent.futures import ThreadPoolExecutor

    hub_id = current_hub_id(repo_id)
    names = file_listing(hub_id, what=what)
    if "model.safetensors.index.json" in names:
        index = json.loads(fetch_file(hub_id, "model.safetensors.index.json", what=what).read_text(encoding="utf-8"))
        shards = sorted(set((index.get("weight_map") or {}).values()))
    else:
        shards = sorted(n for n in names if n.endswith(".safetensors") and "/" not in n)

    def header(shard: str) -> dict:
        return _known_header(hub_id, shard, names.get(shard, (0, ""))[1], what=what)

    with quiet_hub_logs(), ThreadPoolExecutor(max(1, min(HEADER_WORKERS, len(shards)))) as pool:
        return {shard: _tensors(h) for shard, h in zip(shards, pool.map(header, shards))}


def _known_header(hub_id: str, filename: str, sha256: str, *, what: str) -> dict:
    """:func:`_read_header`, remembered for a file whose SHA256 the listing gives."""
    key = (hub_endpoint() or "", hub_id, filename, sha256)
    if not sha256 or key not in _HEADERS:
        header = _read_header(hub_id, filename, what=what)
        if not sha256:
            return header
        _HEADERS[key] = header
    return _HEADERS[key]


def safetensors_file_header(repo_id: str, filename: str, *, what: str = "model") -> dict[str, tuple[int, ...]]:
    """``{tensor: shape}`` of one safetensors file of a hub repo, read from the start of the file: a streamed
    request closed once the header is in, so a mirror that ignores ``Range`` (answering 200 with the whole file,
    as olah does) costs the header's bytes, not the file's."""
    return {name: shape for name, (_dtype, shape, _start) in
            _tensors(_read_header(current_hub_id(repo_id), filename, what=what)).items()}


def _tensors(header: dict) -> dict[str, tuple[str, tuple[int, ...], int]]:
    return {name: (t["dtype"], tuple(t["shape"]), int(t["data_offsets"][0]))
            for name, t in header.items() if name != "__metadata__"}


def _read_header(hub_id: str, filename: str, *, what: str) -> dict:
    """The JSON header of a safetensors file on the hub (retried as every hub call is)."""
    require_online(hub_id, what)
    remote = _remote()
    with quiet_hub_logs(), _hub_errors(hub_id, what), phase("header", f"{hub_id}/{filename}"):
        return retrying(lambda: _header_bytes(hub_id, filename, remote), remote=remote,
                        what=f"the header of {hub_id}/{filename}")


def _header_bytes(hub_id: str, filename: str, remote: Remote) -> dict:
    """Read the 8-byte length and the header from the start of the file with streamed GETs, each closed as soon as
    what it was for has arrived, whatever the server does with ``Range`` (206 with the bytes asked, or 200 with the
    whole file)."""
    from huggingface_hub import constants, get_session, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

    url = hf_hub_url(hub_id, filename, endpoint=remote.endpoint)
    want, data = HEADER_FIRST_BYTES, b""
    for _ in range(2):  # a header longer than the first request's bytes takes a second one
        headers = {**build_hf_headers(token=remote.token), "Range": f"bytes=0-{want - 1}"}
        buf = bytearray()
        with get_session().stream("GET", url, headers=headers, follow_redirects=True,
                                  timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT) as response:
            hf_raise_for_status(response)
            for chunk in response.iter_bytes():
                buf += chunk
                if len(buf) >= 8:
                    want = 8 + int.from_bytes(buf[:8], "little")
                    if want - 8 > HEADER_LIMIT:
                        raise UserError(f"{hub_id}/{filename} is not a safetensors file (a header of {want - 8} bytes)")
                    if len(buf) >= want:
                        break
        data = bytes(buf)
        if len(data) >= want:  # want is at least 8: the first request's size, then the header's end
            break
    if len(data) < want:
        raise UserError(f"{hub_id}/{filename}: the hub sent {len(data)} bytes, fewer than its safetensors header")
    try:
        return json.loads(data[8:want])
    except ValueError as err:
        raise UserError(f"{hub_id}/{filename} is not a safetensors file (its header is not JSON: {err})") from None
