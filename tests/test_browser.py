"""The inference notebook's chat box in a real browser: headless Chromium drives a Jupyter front end on 127.0.0.1.

The notebook runs its own cells up to the chat box (Setup, Parameters in smoke mode, Load, one reply, Chat box), so
this covers what users run, on the tiny offline demo model. Then it types two questions and watches the replies
stream in. The front end follows the ipywidgets under test (tests/browser.py): run it in .venv for ipywidgets 8
(JupyterLab) and in .venv-colab for Colab's 7.7.1 (classic notebook); ``make test`` does both.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import pytest

from browser import chromium_page, find_chromium, frontend_for_widgets, jupyter_server, skip_or_fail, wait_until

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "03_inference_chat.ipynb"
CURSOR = "▌"  # the chat box shows it after a reply that is still streaming
ERRORS = ("Traceback (most recent call last)", "Error displaying widget", "Failed to display Jupyter Widget")
OBSERVE = """el => { if (window.cllamaObserver) window.cllamaObserver.disconnect();
  const snaps = window.cllamaSnaps = [];
  window.cllamaObserver = new MutationObserver(() => snaps.push(el.textContent));
  window.cllamaObserver.observe(el, {childList: true, subtree: true, characterData: true}); }"""

pytestmark = [pytest.mark.browser, pytest.mark.widget, pytest.mark.slow]


def _chat_cells() -> tuple[dict, int]:
    """The inference notebook and the index of its chat box cell."""
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    at = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and "chat.widget(" in "".join(c["source"])]
    assert len(at) == 1, "the inference notebook has one chat box cell"
    return nb, at[0]


def test_the_notebook_displays_chat_widget_on_the_loaded_model():
    """What the browser test runs is what users run: the chat box cell ends with ``chat.widget()``, so the box is the
    cell's displayed result, on the model the Load cell loaded (``chat = plan.run(globals())``)."""
    nb, at = _chat_cells()
    last = ast.parse("".join(nb["cells"][at]["source"])).body[-1]
    assert isinstance(last, ast.Expr) and isinstance(last.value, ast.Call), "the chat box must be the cell's result"
    call = last.value
    assert isinstance(call.func, ast.Attribute) and call.func.attr == "widget" and call.func.value.id == "chat"
    assert any("chat = plan.run(globals())" in "".join(c["source"]) for c in nb["cells"][:at])


def test_chat_widget_streams_in_the_browser(tmp_path, test_env):
    chromium = find_chromium()
    if chromium is None:
        skip_or_fail("no Chromium found: apt-get install chromium (scripts/setup.sh does as root) or set CHROMIUM")
    if importlib.util.find_spec("playwright") is None:
        skip_or_fail("playwright is not installed: pip install playwright (the test extra)")
    from playwright.sync_api import Error as PlaywrightError

    widgets, frontend = frontend_for_widgets()
    nb, at = _chat_cells()  # the notebook up to its chat box: Setup, Parameters (smoke mode), Load, a reply, Chat box
    nb["cells"] = nb["cells"][: at + 1]
    (tmp_path / "chat.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    _lab_settings(tmp_path / ".jupyter" / "settings")
    # the tests' environment (no HF_ENDPOINT, offline, an empty HF_HOME, whatever the shell exports): smoke mode reads
    # the demo stand-ins from a local folder
    env = {**test_env, "NOTEBOOK_SMOKE": "1", "HELPERS_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1",
           "PYDEVD_DISABLE_FILE_VALIDATION": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), test_env.get("PYTHONPATH")]))}
    with jupyter_server(frontend, tmp_path, env=env) as server, chromium_page(chromium, tmp_path / "profile") as page:

        def context() -> str:
            body = page.locator("body").inner_text() if not page.is_closed() else ""
            return (f"front end: {frontend.name}, ipywidgets {widgets}\npage errors: {page.errors[-5:]}\n"
                    f"page text (tail):\n{body[-2500:]}\n{server.log_tail()}")

        try:
            first, streaming, second, state = _drive(page, server, context)
        except PlaywrightError as exc:  # an action's own 30 s timeout: show where the page was
            pytest.fail(f"{exc}\n{context()}", pytrace=False)
    assert (state["prefix"], state["ipywidgets"]) == (sys.prefix, widgets), "the kernel must run the tested packages"
    assert len(state["histories"]) == 1, state
    history = state["histories"][0]
    assert [q for q, _ in history] == ["你好", "再见"], history
    (q1, r1), (q2, r2) = history
    assert first == f"you: {q1}model: {_as_shown(r1)}"
    assert second == first + f"you: {q2}model: {_as_shown(r2)}"
    for seen in streaming:  # each streamed state showed a growing part of the final reply
        assert seen.startswith(f"you: {q1}model: ") and seen.endswith(f" {CURSOR}"), seen
        assert _as_shown(r1).startswith(seen.removeprefix(f"you: {q1}model: ").removesuffix(f" {CURSOR}")), (seen, r1)


def _drive(page, server, context) -> tuple[str, list[str], str, dict]:
    """Open the notebook, run its cells, check the controls, chat twice. Returns the transcript after each turn,
    the states it went through while the first reply streamed, and the kernel's view (its ChatBox histories)."""
    frontend = server.frontend
    # On connecting, the widget manager asks the kernel which widgets exist (comm_info) and rebuilds them; cells
    # that make widgets before that reply race it (the classic front end then shows nothing): wait for it.
    comm_info: list[bool] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda data: comm_info.append(
        "comm_info_reply" in (data if isinstance(data, str) else data.decode("utf-8", "replace")))))
    page.goto(server.url("chat.ipynb"))
    wait_until(lambda: page.evaluate(frontend.kernel_ready_js) and any(comm_info), timeout=120,
               what="the notebook's kernel and the widget manager's comm_info_reply", context=context)
    page.evaluate(frontend.run_all_js)
    wait_until(lambda: _rendered(page, context), timeout=300, what="the chat box (running the notebook's cells)",
               context=context)
    _check_controls(page, context)
    first, snaps = _turn(page, "你好", context)
    streaming = [s for s in dict.fromkeys(snaps) if CURSOR in s]
    assert len(streaming) >= 2, f"the reply did not stream (transcript states seen: {snaps})"
    assert "tok/s" in page.locator(".cllama-status").inner_text()
    second, _ = _turn(page, "再见", context)
    assert second.startswith(first), "the first exchange must stay in the transcript"
    state = json.loads(server.run_in_kernel(
        "import json, sys, ipywidgets\nfrom helpers.chat.widget import ChatBox\n"
        "boxes = [v for v in Out.values() if isinstance(v, ChatBox)]\n"
        "print(json.dumps({'prefix': sys.prefix, 'ipywidgets': ipywidgets.__version__,"
        " 'histories': [b.history for b in boxes]}))"))
    return first, streaming, second, state


def _rendered(page, context) -> bool:
    """Whether the chat box is on the page (its transcript starts empty, so look for the buttons under it); fails
    as soon as the notebook shows an error."""
    if any(e in page.locator("body").inner_text() for e in ERRORS):
        pytest.fail(f"the notebook shows an error\n{context()}", pytrace=False)
    send = _button(page, "Send")
    return send.count() == 1 and send.is_visible() and page.locator(".cllama-transcript").count() == 1


def _check_controls(page, context) -> None:
    """What the user sees: the buttons, a collapsed "settings" section that opens, the model in the status line."""
    for name in ("Send", "Stop", "Reset"):
        assert _button(page, name).is_visible(), f"no {name} button\n{context()}"
    temperature = page.get_by_text("temperature", exact=True)
    assert not temperature.is_visible(), "the settings start collapsed"
    page.get_by_text("settings", exact=True).click()
    temperature.wait_for(state="visible", timeout=10_000)
    status = page.locator(".cllama-status").inner_text()
    assert "transformers" in status and "template llama2-zh" in status, status


def _turn(page, text: str, context) -> tuple[str, list[str]]:
    """Type ``text``, press Send, wait for the complete reply; the transcript's text and its states on the way."""
    transcript = page.locator(".cllama-transcript")
    before = transcript.text_content()
    transcript.evaluate(OBSERVE)
    page.locator(".cllama-question textarea").fill(text)
    _button(page, "Send").click()

    def finished() -> str | None:
        now = transcript.text_content()
        done = now != before and f"you: {text}" in now[len(before):] and CURSOR not in now
        return now if done and _button(page, "Send").is_enabled() else None

    now = wait_until(finished, timeout=120, what=f"the streamed reply to {text!r}", context=context)
    assert page.locator(".cllama-question textarea").input_value() == "", "Send empties the question box"
    return now, page.evaluate("() => window.cllamaSnaps")


def _button(page, label: str):
    """The widget button showing ``label`` (its icon's glyph is part of its accessible name, so not by role)."""
    return page.locator("button.widget-button", has_text=re.compile(rf"^\s*{label}\s*$"))


def _as_shown(text: str) -> str:
    """``text`` as an HTML page shows it (the parser folds CR/CRLF into LF and NUL into U+FFFD)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")


def _lab_settings(settings: Path) -> None:
    """JupyterLab settings for the test: keep every cell in the page (no windowing, which may detach cells out of
    view) and no "news?" notification over the notebook."""
    for plugin, values in {"notebook-extension/tracker": {"windowingMode": "none"},
                           "apputils-extension/notification": {"fetchNews": "false"}}.items():
        path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")
