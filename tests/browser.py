"""What tests/test_browser.py needs around the notebook: a Jupyter front end on 127.0.0.1 with a token, a client
for its kernel, and headless Chromium through Playwright.

The front end follows the ipywidgets the test runs under (its kernel runs the same Python): ipywidgets 7 (Colab's)
renders in the classic notebook 6.5 (``make colab-env`` installs it), ipywidgets 8 in JupyterLab 4.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Headless and quiet: no sandbox (root in containers), and nothing that calls home on a closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
REQUIRED_ENV = "CLLAMA_BROWSER_TESTS"  # "required" (CI): fail instead of skipping when a browser is missing


def skip_or_fail(reason: str) -> None:
    """Skip the test for ``reason``, or fail when ``$CLLAMA_BROWSER_TESTS`` is ``required``."""
    if os.environ.get(REQUIRED_ENV) == "required":
        pytest.fail(f"{reason} ({REQUIRED_ENV}=required)")
    pytest.skip(reason)


def find_chromium() -> str | None:
    """``$CHROMIUM``, or the first Chromium-family browser on ``PATH``."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], Any], *, timeout: float, what: str, context: Callable[[], str] = str) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` and ``context()`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{context()}", pytrace=False)
        time.sleep(0.2)


# ----------------------------------------------------------------------------- front ends
@dataclass(frozen=True)
class Frontend:
    """A Jupyter front end: how to start it, open a notebook, and drive it from the page."""

    name: str
    module: str  # python -m <module>
    kernel_ready_js: str  # true once the notebook's kernel is connected and widgets can render
    run_all_js: str
    notebook_path: str  # URL path of a notebook, {name} to fill

    def server_args(self, port: int, token: str, root: Path) -> list[str]:
        common = ["--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0"]
        if self.name == "classic":
            return [*common, f"--NotebookApp.token={token}", f"--notebook-dir={root}"]
        return [*common, f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]


CLASSIC = Frontend(
    "classic", "notebook",
    kernel_ready_js="() => { const k = window.Jupyter && Jupyter.notebook && Jupyter.notebook.kernel;"
                    " return !!(k && k.is_connected() && k.widget_manager); }",
    run_all_js="() => Jupyter.notebook.execute_all_cells()",
    notebook_path="/notebooks/{name}")
LAB = Frontend(
    "lab", "jupyterlab",
    kernel_ready_js="() => { const w = window.jupyterapp && jupyterapp.shell.currentWidget;"
                    " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
                    " return !!(k && k.connectionStatus === 'connected' && k.status === 'idle'); }",
    run_all_js="() => window.jupyterapp.commands.execute('notebook:run-all-cells')",
    notebook_path="/lab/tree/{name}")


def frontend_for_widgets() -> tuple[str, Frontend]:
    """The installed ipywidgets version and the front end that renders it; skips when that front end is absent."""
    widgets = importlib.metadata.version("ipywidgets")
    if widgets.startswith("7."):
        notebook = _version("notebook")
        if not notebook or int(notebook.split(".")[0]) >= 7:
            skip_or_fail(f"ipywidgets {widgets} renders in the classic notebook (notebook<7), found notebook "
                         f"{notebook}: `make colab-env` builds such an environment")
        return widgets, CLASSIC
    if not (_version("jupyterlab") and _version("jupyterlab_widgets")):
        skip_or_fail(f"ipywidgets {widgets} needs JupyterLab and jupyterlab_widgets (pip install jupyterlab)")
    return widgets, LAB


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------- the server
@dataclass
class Server:
    """A running Jupyter server: its URL, token, log and kernels."""

    frontend: Frontend
    proc: subprocess.Popen
    port: int
    token: str
    log: Path
    runtime_dir: Path

    def url(self, notebook: str) -> str:
        return f"http://127.0.0.1:{self.port}{self.frontend.notebook_path.format(name=notebook)}?token={self.token}"

    def api(self, path: str, method: str = "GET") -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def log_tail(self, chars: int = 3000) -> str:
        return "server log (tail):\n" + self.log.read_text(errors="replace")[-chars:]

    def run_in_kernel(self, code: str, *, timeout: float = 60) -> str:
        """Run ``code`` in the notebook's (only) kernel from a second client; its stdout."""
        from jupyter_client import BlockingKernelClient

        kernels = self.api("kernels")
        assert len(kernels) == 1, f"expected the notebook's kernel alone, found {kernels}"
        kc = BlockingKernelClient()
        kc.load_connection_file(str(self.runtime_dir / f"kernel-{kernels[0]['id']}.json"))
        kc.start_channels()
        out: list[str] = []
        try:
            kc.wait_for_ready(timeout=timeout)
            reply = kc.execute_interactive(code, timeout=timeout, output_hook=lambda m: out.append(
                m["content"].get("text", "") if m["msg_type"] == "stream" else ""))
        finally:
            kc.stop_channels()
        assert reply["content"]["status"] == "ok", reply["content"]
        return "".join(out)


@contextlib.contextmanager
def jupyter_server(frontend: Frontend, root: Path, *, env: dict[str, str], timeout: float = 90) -> Iterator[Server]:
    """Start ``frontend`` on a free port of 127.0.0.1 with a random token, serving ``root``; stop it (and its
    kernels) on exit. Config, data, runtime and settings live under ``root/.jupyter`` so nothing of the user's
    (kernel specs, settings, workspaces) leaks in, and the kernel is this Python's."""
    home = root / ".jupyter"
    dirs = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data", "JUPYTER_RUNTIME_DIR": "runtime",
            "JUPYTERLAB_SETTINGS_DIR": "settings", "JUPYTERLAB_WORKSPACES_DIR": "workspaces"}
    env = {**env, **{k: str(home / v) for k, v in dirs.items()}, "JUPYTER_PLATFORM_DIRS": "0"}
    for sub in dirs.values():
        (home / sub).mkdir(parents=True, exist_ok=True)
    port, token = free_port(), secrets.token_hex(16)
    log = root / f"jupyter-{frontend.name}.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", frontend.module, *frontend.server_args(port, token, root)],
                                cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(frontend, proc, port, token, log, home / "runtime")
    try:
        wait_until(lambda: proc.poll() is not None or _answers(server), timeout=timeout,
                   what=f"the {frontend.name} Jupyter server on port {port}", context=server.log_tail)
        if proc.poll() is not None:
            pytest.fail(f"the {frontend.name} Jupyter server exited ({proc.returncode})\n{server.log_tail()}",
                        pytrace=False)
        yield server
    finally:
        _stop(server)


def _answers(server: Server) -> bool:
    try:
        server.api("status")
        return True
    except OSError:
        return False


def _stop(server: Server) -> None:
    with contextlib.suppress(Exception):
        for kernel in server.api("kernels"):
            server.api(f"kernels/{kernel['id']}", method="DELETE")
    server.proc.terminate()
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGKILL)  # anything the server left in its session
    server.proc.wait(timeout=10)


# ----------------------------------------------------------------------------- the browser
@contextlib.contextmanager
def chromium_page(executable: str, profile: Path) -> Iterator[Any]:
    """A Playwright page in headless ``executable`` with a fresh profile; console errors land in ``page.errors``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(profile), executable_path=executable, headless=True,
                                                   args=CHROMIUM_ARGS)
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.errors = []
            page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
            page.on("pageerror", lambda e: page.errors.append(str(e)))
            page.set_default_timeout(30_000)
            yield page
        finally:
            ctx.close()
