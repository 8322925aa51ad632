"""The hub twin: the demo stand-ins served under their real hub ids by a local olah server.

A Colab user's first cells download from huggingface.co. The twin lets tests and CI take that same path with
no network: ``huggingface_hub`` talks to ``HF_ENDPOINT=http://127.0.0.1:<port>`` as it talks to the hub (repo
info, file listings with sizes, downloads, resumed downloads), and the server's access log shows what was
downloaded.

- :func:`build_mirror` lays out ``<root>/models/<org>/<name>`` as git repositories (branch ``main``), one per
  demo asset under the hub id it stands for (the manifest's ``stands_for``, else the catalog's current id for
  the folder's repo name), plus what the real repos also hold: the Llama-2 weights again as ``.bin`` shards,
  the Llama-3 weights again as Meta's ``original/consolidated.00.pth``, and a GGUF release repo
  (``hfl/chinese-alpaca-2-7b-gguf``: F16, Q8_0, Q4_K and the importance-matrix ``Q4_K-im``, made from the demo
  model with this project's converter and llama.cpp's quantizer), and the authors' AWQ results repo
  (``hfl/chinese-llama-alpaca-2-awq``: a stand-in ``<model>-w4-g128.pt`` per published model, ``tests/awqstandin.py``). Weights, tokenizers and GGUFs are Git LFS
  pointers with their objects under ``.git/lfs/objects``, where olah reads them, as on the hub.
- :func:`add_dataset` adds a hub *data set* repo (a test's stand-in files) to a built or running twin; the demo
  twin serves :func:`calibration_standin` as the default calibration set (``hfl/cmrc2019``);
- :func:`start` runs olah (``tests/hubtwin_server.py``, in olah's own environment ``.venv-hubtwin``, see
  ``scripts/setup.sh``) on a free 127.0.0.1 port and waits until it answers; :meth:`HubTwin.stop` ends it.
- :meth:`HubTwin.requests` parses the server's access log.

By hand (to run the notebooks or the CLI against it)::

    python tests/hubtwin.py            # builds into a temp folder, serves, prints what to export
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
SERVER = Path(__file__).with_name("hubtwin_server.py")
TWIN_VENV = ".venv-hubtwin"
GGUF_REPO = "hfl/chinese-alpaca-2-7b-gguf"
V3_GGUF_REPO = "hfl/llama-3-chinese-8b-instruct-v3-gguf"
GGUF_QUANTS = ("f16", "q8_0", "q4_k", "q4_k-im")
# Stored as Git LFS objects (the hub's default .gitattributes sends these types to LFS).
_LFS_SUFFIXES = {".bin", ".safetensors", ".gguf", ".pth", ".pt", ".model", ".h5", ".msgpack", ".ckpt", ".onnx"}
_GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in sorted(_LFS_SUFFIXES))
_ACCESS = re.compile(r'"(GET|HEAD|POST) (\S+) HTTP/[\d.]+" (\d{3})')
_RESOLVE = re.compile(r"/(?P<repo>(?:datasets/)?[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>[^?]+)")


# ---------------------------------------------------------------------------------------------------- the repos
def demo_hub_ids(demo: Path) -> dict[str, Path]:
    """``{hub id: demo folder}`` for every demo asset that stands for a catalog repo."""
    from helpers import catalog
    from helpers.util import read_json

    out: dict[str, Path] = {}
    for folder, info in read_json(demo / "manifest.json")["assets"].items():
        entry = catalog.get(info.get("stands_for") or folder)
        out[entry.hub_id] = demo / folder
    return out


def _llama2_bin_copy(src: Path, dst: Path) -> None:
    """The Llama-2 repo's second copy of its weights: ``pytorch_model-*.bin`` shards beside the safetensors."""
    import torch
    from safetensors.torch import load_file

    index = json.loads((src / "model.safetensors.index.json").read_text())
    names = {}
    for shard in sorted(set(index["weight_map"].values())):
        bin_name = shard.replace("model-", "pytorch_model-").replace(".safetensors", ".bin")
        torch.save(load_file(src / shard), dst / bin_name)
        names[shard] = bin_name
    weight_map = {k: names[v] for k, v in index["weight_map"].items()}
    (dst / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": index.get("metadata", {}),
                                                                  "weight_map": weight_map}, indent=2))


def _meta_original_copy(src: Path, dst: Path, work: Path) -> None:
    """The Llama-3 repo's Meta copy: ``original/consolidated.00.pth`` and ``params.json`` (Meta layout)."""
    from helpers.merge import MergeOptions, Recipe, merge

    out = work / "llama3-pth"
    merge(Recipe(src, []), out, MergeOptions(fmt="pth", outtype="bf16", progress=False, write_sha256=False))
    (dst / "original").mkdir()
    for name in ("consolidated.00.pth", "params.json"):
        shutil.copy(out / name, dst / "original" / name)


def _write_imatrix(f16: Path, out: Path) -> Path:
    """A legacy ``.dat`` importance matrix for every block weight of ``f16`` (deterministic, non-uniform)."""
    import struct

    import gguf
    import numpy as np

    tensors = [t for t in gguf.GGUFReader(str(f16)).tensors if t.name.startswith("blk.") and len(t.shape) == 2]
    with open(out, "wb") as f:
        f.write(struct.pack("<i", len(tensors)))
        for t in tensors:
            cols = int(t.shape[0])
            name = t.name.encode()
            f.write(struct.pack("<i", len(name)) + name + struct.pack("<ii", 1, cols))
            f.write((1.0 + (np.arange(cols) % 7) / 3.0).astype("<f4").tobytes())
    return out


def _gguf_release(model: Path, dst: Path, work: Path) -> None:
    """``ggml-model-{f16,q8_0,q4_k,q4_k-im}.gguf`` of ``model``, named like the hfl GGUF releases."""
    from helpers.gguf import QuantizeOptions, convert_hf_to_gguf, quantize

    f16 = convert_hf_to_gguf(model, dst / "ggml-model-f16.gguf", outtype="f16")
    imatrix = _write_imatrix(f16, work / "imatrix.dat")
    for q in GGUF_QUANTS[1:]:
        qtype = q.removesuffix("-im")
        quantize(f16, dst / f"ggml-model-{q}.gguf",
                 QuantizeOptions(qtype=qtype, imatrix=imatrix if q.endswith("-im") else None, threads=1,
                                 modelfile=False))


def stand_in_of(entry, served: dict[str, Path]) -> str:
    """The hub id whose stand-in also stands for catalog ``entry`` (another size or version of the same kind of
    release: the 13B LoRA gets the 7B's tiny stand-in, a Llama-3 GGUF release the Llama-3 GGUF stand-in)."""
    name = entry.name
    if entry.kind == "gguf":
        return V3_GGUF_REPO if entry.family == "llama3" else GGUF_REPO
    if entry.kind == "patch":
        return "openlmlab/open-chinese-llama-7b-patch"
    if entry.kind == "lora":
        if entry.family == "llama3":
            return "hfl/llama-3-chinese-8b-instruct-v2-lora"
        if entry.family == "llama2":
            return f"hfl/chinese-{'alpaca' if 'alpaca' in name else 'llama'}-2-lora-7b"
        kind = "alpaca-plus" if "alpaca-p" in name else "llama-plus" if "plus" in name else name.split("-")[1]
        return f"hfl/chinese-{kind}-lora-7b"
    if entry.family == "llama3":
        return "meta-llama/Meta-Llama-3-8B-Instruct"
    if entry.generation == "original":
        return "huggyllama/llama-7b" if entry.family == "llama" else "meta-llama/Llama-2-7b-hf"
    return "hfl/chinese-alpaca-2-1.3b" if entry.size == "1.3B" else "hfl/chinese-alpaca-2-7b"


def _stage(demo: Path, stage: Path) -> dict[str, Path]:
    """Every repo's files in a plain folder, ``{hub id: folder}``: the demo assets under the ids they stand for,
    the copies real repos also hold, the GGUF releases, and every other catalog release under a stand-in of its
    kind (:func:`stand_in_of`), and the AWQ results of the models the authors published them for."""
    from awqstandin import stage_awq_repo

    from helpers.catalog.releases import CATALOG
    from helpers.merge.awq import AWQ_REPO

    repos: dict[str, Path] = {}
    for hub_id, src in demo_hub_ids(demo).items():
        repos[hub_id] = dst = stage / hub_id
        shutil.copytree(src, dst, copy_function=_link_or_copy)
    _llama2_bin_copy(demo / "Llama-2-7b-hf", repos["meta-llama/Llama-2-7b-hf"])
    _meta_original_copy(demo / "Meta-Llama-3-8B-Instruct", repos["meta-llama/Meta-Llama-3-8B-Instruct"], stage.parent)
    for repo, model in ((GGUF_REPO, "chinese-alpaca-2-7b"), (V3_GGUF_REPO, "Meta-Llama-3-8B-Instruct")):
        repos[repo] = stage / repo
        repos[repo].mkdir(parents=True)
        _gguf_release(demo / model, repos[repo], stage.parent)
    for entry in CATALOG.values():
        if entry.hub_id not in repos:
            repos[entry.hub_id] = stage / entry.hub_id
            shutil.copytree(repos[stand_in_of(entry, repos)], repos[entry.hub_id], copy_function=_link_or_copy)
    repos[AWQ_REPO] = stage_awq_repo(stage / AWQ_REPO, repos, stage.parent)
    for hub_id, folder in repos.items():
        (folder / "README.md").write_text(f"---\nlicense: other\n---\n# {hub_id}\n\nA tiny random stand-in served by "
                                          "the hub twin for tests; not the released model.\n", encoding="utf-8")
        (folder / ".gitattributes").write_text(_GITATTRIBUTES, encoding="utf-8")
    return repos


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _git(repo: Path, *args: str) -> None:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z"}
    subprocess.run(["git", "-c", "user.name=hubtwin", "-c", "user.email=hubtwin@localhost", *args], cwd=repo,
                   env=env, check=True, capture_output=True)


def _git_repo(files: Path, repo: Path, hub_id: str, lfs: frozenset[str] | set[str] = frozenset(_LFS_SUFFIXES)
              ) -> list[str]:
    """Commit ``files`` into a new git repository at ``repo`` (branch main), files with a suffix in ``lfs`` as
    LFS pointers."""
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    names = []
    for src in sorted(p for p in files.rglob("*") if p.is_file()):
        rel = src.relative_to(files).as_posix()
        dst = repo / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix in lfs:
            data = src.read_bytes()
            oid = hashlib.sha256(data).hexdigest()
            obj = repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
            obj.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(str(src), str(obj))
            dst.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n")
        else:
            _link_or_copy(str(src), str(dst))
        if rel != ".gitattributes":
            names.append(rel)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", f"Upload {hub_id}")
    return names


def build_mirror(root: str | Path, demo: str | Path) -> dict[str, list[str]]:
    """Build the twin's repositories under ``root/models/`` from the demo assets in ``demo``, and the stand-in of the
    default calibration data set (:func:`calibration_standin`) under ``root/datasets/``.

    Returns ``{hub id: [file names]}`` of the models (also written to ``root/twin.json``). Nothing is left under
    ``root`` if the build fails (it is built beside it and renamed).
    """
    listing = build_mirror_from(root, lambda stage: _stage(Path(demo), stage))
    from helpers.imatrix.calibration import CALIBRATION_FILE, CALIBRATION_REPO

    add_dataset_repo(root, CALIBRATION_REPO, {CALIBRATION_FILE: calibration_standin()[0]})  # kept when there
    return listing


def build_mirror_from(root: str | Path, stage: "Callable[[Path], dict[str, Path]]") -> dict[str, list[str]]:
    """Build a twin's repositories under ``root/models/`` from ``stage(folder)``, which fills ``folder`` and returns
    ``{hub id: folder of its files}`` (any models: the benchmarks serve bigger ones than the demo). As
    :func:`build_mirror`: built beside ``root`` and renamed; an existing complete ``root`` is reused."""
    root = Path(root)
    if (root / "twin.json").is_file():
        return json.loads((root / "twin.json").read_text())
    work = root.with_name(root.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    (work / "stage").mkdir(parents=True)
    listing = {hub_id: _git_repo(files, work / "mirror" / "models" / hub_id, hub_id)
               for hub_id, files in stage(work / "stage").items()}
    (work / "mirror" / "twin.json").write_text(json.dumps(listing, indent=1, sort_keys=True))
    shutil.rmtree(work / "stage")
    os.replace(work / "mirror", root)
    shutil.rmtree(work, ignore_errors=True)
    return listing


_DATASET_LFS = frozenset({".parquet", ".zip", ".tar", ".gz", ".arrow"})  # the hub's .gitattributes sends these to LFS


def add_model_repo(mirror: str | Path, hub_id: str, files: str | Path | dict[str, str | bytes]) -> Path:
    """As :func:`add_dataset_repo`, a model repo (at ``mirror/models/<hub id>``; weights are Git LFS objects)."""
    return add_dataset_repo(mirror, hub_id, files, kind="models")


def add_dataset_repo(mirror: str | Path, hub_id: str, files: str | Path | dict[str, str | bytes], *,
                     kind: str = "datasets") -> Path:
    """Serve ``files`` (a folder, or ``{path in the repo: text or bytes}``) as the data set repo ``hub_id`` of a built
    twin, at ``mirror/datasets/<hub id>``; data files (parquet, archives) are Git LFS objects, as on the hub. A running
    twin serves it at once (olah reads its mirrors on each request). An existing repo of that id is kept as it is, so
    tests sharing a twin can each add theirs. Returns its folder."""
    repo = Path(mirror) / kind / hub_id
    if repo.is_dir():
        return repo
    work = repo.with_name(repo.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    source = Path(files) if not isinstance(files, dict) else work / "files"
    for name, data in (files.items() if isinstance(files, dict) else ()):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    _git_repo(source, work / "repo", hub_id, lfs=_DATASET_LFS | _LFS_SUFFIXES)
    os.replace(work / "repo", repo)
    shutil.rmtree(work, ignore_errors=True)
    return repo


def calibration_standin() -> tuple[bytes, str]:
    """A stand-in for the default calibration file (``helpers.imatrix.calibration.CALIBRATION_FILE``, CMRC 2019's cloze layout)
    made from the demo's Chinese corpus: each four lines one story, its first and last sentences cut out as
    ``[BLANK1]`` / ``[BLANK2]`` with a distractor among the choices. Returns the file's bytes and the text
    ``calibration_text`` must rebuild from it."""
    lines = (ROOT / "helpers" / "data" / "corpus_zh.txt").read_text(encoding="utf-8").split()
    items, whole = [], []
    for i in range(0, len(lines) - 3, 4):
        story = lines[i:i + 4]
        first, last = story[0].removesuffix("。"), story[-1].removesuffix("。")
        items.append({"context_id": f"DEV_{i // 4}", "context": "[BLANK1]。" + "".join(story[1:-1]) + "[BLANK2]。",
                      "choices": ["这是一个干扰句", last, first], "answers": [2, 1]})
        whole.append("".join(story))
    return json.dumps({"data": items}, ensure_ascii=False, indent=1).encode("utf-8"), "\n\n".join(whole) + "\n"


# ---------------------------------------------------------------------------------------------------- the server
def twin_python() -> Path:
    """The Python of olah's environment: ``$HUBTWIN_PYTHON``, else ``.venv-hubtwin`` beside the repo or its venv.

    Raises:
        RuntimeError: olah is not installed (``scripts/setup.sh`` installs it).
    """
    if os.environ.get("HUBTWIN_PYTHON"):
        return Path(os.environ["HUBTWIN_PYTHON"])
    for base in (ROOT, Path(sys.prefix).parent):
        python = base / TWIN_VENV / "bin" / "python"
        if (python.parent / "olah-cli").is_file():
            return python
    raise RuntimeError(f"olah (the hub twin's server) is not installed: run scripts/setup.sh, which puts it in "
                       f"{ROOT / TWIN_VENV}, or set HUBTWIN_PYTHON to a Python that has olah")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Request:
    """One line of the access log."""

    method: str
    path: str
    status: int

    @property
    def file(self) -> tuple[str, str] | None:
        """``(hub id, file name)`` of a ``/resolve/`` request (a data set's id as ``datasets/<id>``), else ``None``."""
        m = _RESOLVE.fullmatch(self.path.split("?")[0])
        return (m["repo"], m["file"]) if m else None


@dataclass
class HubTwin:
    """A running twin: its ``endpoint`` (for ``HF_ENDPOINT``), its server ``log`` and the repos it serves."""

    endpoint: str
    log: Path
    mirror: Path
    repos: dict[str, list[str]]
    process: subprocess.Popen = field(repr=False)

    def requests(self, since: int = 0) -> list[Request]:
        """Requests in the access log, from byte offset ``since`` on."""
        with open(self.log, "rb") as f:
            f.seek(since)
            text = f.read().decode("utf-8", "replace")
        return [Request(m[1], m[2], int(m[3])) for m in _ACCESS.finditer(text)]

    def downloads(self, since: int = 0) -> list[tuple[str, str]]:
        """``(hub id, file)`` of every file GET answered with its bytes (200 or 206), in order."""
        return [r.file for r in self.requests(since) if r.method == "GET" and r.status in (200, 206) and r.file]

    def drop_once(self, hub_id: str, file: str, after_bytes: int) -> None:
        """Make the next full download of ``file`` break after ``after_bytes`` bytes (to test resuming)."""
        faults = self.log.with_name("faults.json")
        data = json.loads(faults.read_text()) if faults.is_file() else {}
        data[f"{hub_id}/{file}"] = after_bytes
        tmp = faults.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, faults)

    @contextlib.contextmanager
    def gated(self, *hub_ids: str) -> Iterator[None]:
        """Serve ``hub_ids`` as gated repos (as the hub serves Meta's Llama-2/3) while in the block: their info says
        so, and their files answer 401 ``GatedRepo`` to a client without a token."""
        gated = self.log.with_name("gated.json")
        tmp = gated.with_suffix(".tmp")
        tmp.write_text(json.dumps(list(hub_ids)))
        os.replace(tmp, gated)
        try:
            yield
        finally:
            gated.unlink(missing_ok=True)

    def log_size(self) -> int:
        """The log's size now (an offset for :meth:`requests`)."""
        return self.log.stat().st_size

    def stop(self) -> None:
        """End the server (SIGTERM, then SIGKILL after 10 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(mirror: str | Path, workdir: str | Path, *, port: int | None = None, timeout: float = 60) -> HubTwin:
    """Start olah serving ``mirror`` (from :func:`build_mirror`) on 127.0.0.1 and wait until it answers.

    ``workdir`` receives the olah configuration, its (unused) cache folder and the server log ``hubtwin.log``.
    Without ``port``, a free one is taken (and another one if it was taken meanwhile).

    Raises:
        RuntimeError: olah is missing, or the server did not answer within ``timeout`` seconds.
    """
    mirror, workdir = Path(mirror).resolve(), Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    repos = json.loads((mirror / "twin.json").read_text())
    python = twin_python()
    for attempt in range(3):
        twin = _launch(python, mirror, workdir, repos, port or free_port())
        try:
            _wait(twin, timeout)
            return twin
        except RuntimeError:
            twin.stop()
            clash = "address already in use" in twin.log.read_text(errors="replace").lower()
            if port or not clash or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _launch(python: Path, mirror: Path, workdir: Path, repos: dict, port: int) -> HubTwin:
    config = workdir / "olah.toml"
    config.write_text(f'[basic]\nhost = "127.0.0.1"\nport = {port}\nrepos-path = "{workdir / "olah-cache"}"\n'
                      f'mirrors-path = ["{mirror}"]\n\n[accessibility]\noffline = true\n', encoding="utf-8")
    log = workdir / "hubtwin.log"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir), "PYTHONUNBUFFERED": "1",
           "HF_HUB_OFFLINE": "1", "NO_PROXY": "*", "HUBTWIN_FAULTS": str(workdir / "faults.json"),
           "HUBTWIN_GATED": str(workdir / "gated.json")}
    with open(log, "ab") as out:
        process = subprocess.Popen([str(python), str(SERVER), "--config", str(config), "--log-path",
                                    str(workdir / "olah-logs")], cwd=workdir, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return HubTwin(f"http://127.0.0.1:{port}", log, mirror, repos, process)


def _wait(twin: HubTwin, timeout: float) -> None:
    """Wait until the twin answers a repo-info request (no proxy: it is on loopback)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    probe = f"{twin.endpoint}/api/models/{next(iter(sorted(twin.repos)))}/revision/main"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if twin.process.poll() is not None:
            raise RuntimeError(f"the hub twin's server exited ({twin.process.returncode}): "
                               + twin.log.read_text(errors="replace")[-2000:])
        try:
            with opener.open(probe, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the hub twin did not answer on {twin.endpoint} within {timeout:.0f}s: "
                       + twin.log.read_text(errors="replace")[-2000:])


def no_proxy_for_loopback() -> str:
    """``NO_PROXY`` with 127.0.0.1 and localhost added (clients must reach the twin directly)."""
    current = [h for h in os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")).split(",") if h]
    return ",".join(dict.fromkeys(current + ["127.0.0.1", "localhost"]))


def main() -> int:
    """Build the twin from the demo assets into a temp folder and serve it until interrupted."""
    import argparse
    import tempfile

    sys.path.insert(0, str(ROOT))
    from helpers.demo import use_demo_assets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--dir", default=None, help="work folder (default: a new temp folder)")
    args = parser.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="hubtwin-"))
    demo = use_demo_assets(through_hub=True)
    build_mirror(work / "mirror", demo)
    twin = start(work / "mirror", work, port=args.port)
    print(f"hub twin serving {len(twin.repos)} repos at {twin.endpoint} (log: {twin.log})\n"
          f"  export HF_ENDPOINT={twin.endpoint} HF_HOME={work / 'hf-home'} HELPERS_DEMO_DIR={demo}\n"
          "  (HELPERS_DEMO_DIR: the stand-ins it serves, built here, pass the v1 releases' published-sum check)\n"
          "  NOTEBOOK_SMOKE=1 ... runs the notebooks' smoke mode through it; Ctrl-C stops it", flush=True)
    try:
        twin.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        twin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
