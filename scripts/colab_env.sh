#!/usr/bin/env bash
# An environment with Colab's versions of the notebook packages (ci/colab-constraints.txt: ipywidgets 7.7.1,
# its kernel, matplotlib, tqdm, the classic notebook) without reinstalling torch & co.: an "overlay" venv
# whose own site-packages hold those pins and which sees .venv's site-packages after its own (a .pth file
# appended last), so its pins win and everything else (torch, transformers, llama-cpp-python, helpers)
# comes from .venv. pip never touches .venv from here ("outside environment").
#
#   scripts/colab_env.sh                  # idempotent; run scripts/setup.sh first (make colab-env does)
#   VENV=.venv COLAB_VENV=.venv-colab scripts/colab_env.sh
#
# It ends by checking that the overlay really resolves every pin and that a Jupyter kernel started from
# it (as nbmake starts one) runs the overlay's python with the same ipywidgets.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
COLAB_VENV=${COLAB_VENV:-.venv-colab}
CONSTRAINTS=${COLAB_CONSTRAINTS:-ci/colab-constraints.txt}

export PYDEVD_DISABLE_FILE_VALIDATION=1  # ipykernel 6.17 + debugpy on Python 3.11+: a warning per kernel

log() { printf '[colab-env] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
    log "no $VENV: run scripts/setup.sh (make setup) first"
    exit 2
fi
BASE_SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [ ! -x "$COLAB_VENV/bin/python" ]; then
    log "creating $COLAB_VENV over $VENV"
    # No pip/setuptools of its own: .venv's (seen through the .pth below) install into the overlay.
    "$VENV/bin/python" -m venv --without-pip "$COLAB_VENV"
fi
PY="$COLAB_VENV/bin/python"
OWN_SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# "zz" sorts after the overlay's own .pth files; addsitedir appends .venv's folder to sys.path and runs its
# .pth files (the editable helpers install among them).
printf "import site; site.addsitedir(%s)\n" "'$BASE_SITE'" > "$OWN_SITE/zz_base_venv.pth"

log "installing Colab's pins from $CONSTRAINTS"
"$PY" -m pip --disable-pip-version-check -q install -r "$CONSTRAINTS" -c "$CONSTRAINTS" 2>&1 \
    | { grep -v "outside environment" || true; } >&2
"$PY" -m pip --disable-pip-version-check check >/dev/null 2>&1 \
    || log "warning: pip check finds conflicts between the pins and $VENV's packages ($PY -m pip check)"
# nbmake and jupyter_client start the kernel named in the notebooks ("python3"): make it this python.
"$PY" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (Colab versions)" >/dev/null

"$PY" - "$CONSTRAINTS" <<'EOF'
import importlib.metadata as md
import re
import sys

from jupyter_client.manager import start_new_kernel

pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", open(sys.argv[1]).read(), flags=re.M))
wrong = [f"{name} {md.version(name)} (pinned {want})" for name, want in pins.items() if md.version(name) != want]
if wrong:
    sys.exit("[colab-env] the overlay does not resolve its pins: " + ", ".join(wrong))
km, kc = start_new_kernel(kernel_name="python3")
out = []
try:
    kc.execute_interactive("import sys, ipywidgets; print(sys.prefix, ipywidgets.__version__)", timeout=120,
                           output_hook=lambda m: out.append(m["content"].get("text", "")))
finally:
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    del kc, km
got = "".join(out).split()
want = [sys.prefix, pins["ipywidgets"]]
if got != want:
    sys.exit(f"[colab-env] a kernel started from {sys.executable} runs {got}, expected {want}")
print(f"[colab-env] ok: {sys.prefix}: " + ", ".join(f"{n} {v}" for n, v in pins.items()) + "; the kernel uses them too",
      file=sys.stderr)
EOF
