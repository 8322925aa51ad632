"""The shell's hub variables: the tests run in an environment of their own (tests/testenv.py), and when one of
those variables is why a download fails, the error names it with the one-line fix (helpers/hub/environment.py).

Each message is checked where a user meets it: the CLI's one ``error:`` line with the variable exported, then the
same command with the fix applied (unset, or a writable folder), which must get past the point that failed.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import testenv
from faults import readonly_folder
from helpers.util import UserError

ROOT = Path(__file__).resolve().parents[1]
BASE, LORA = "meta-llama/Llama-2-7b-hf", "hfl/chinese-alpaca-2-lora-7b"
HOSTILE = {"HF_ENDPOINT": "https://hf-mirror.com", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": "/root/.cache/huggingface", "HF_HUB_CACHE": "/x", "HUGGINGFACE_HUB_CACHE": "/y",
           "HF_TOKEN": "hf_real_token_of_the_user", "HUGGING_FACE_HUB_TOKEN": "hf_old", "HTTPS_PROXY": "http://p:1",
           "http_proxy": "http://p:1", "CUDA_VISIBLE_DEVICES": "7", "PYTHONWARNINGS": "error",
           "HELPERS_LOCAL_MODELS": "/elsewhere", "HELPERS_VERIFY_SHA256": "0", "NOTEBOOK_SMOKE": "0",
           "COLAB_RELEASE_TAG": "x", "PATH": "/usr/bin", "PYTHONPATH": "/src"}


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helpers", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def one_error(p: subprocess.CompletedProcess) -> str:
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert p.returncode == 2 and len(errors) == 1 and "Traceback" not in p.stderr, p.stderr
    return errors[0]


# ------------------------------------------------------------------------------------------ the tests' environment
def test_the_tests_environment_replaces_what_the_shell_exports(tmp_path):
    env = testenv.environment(HOSTILE, tmp_path)
    assert env == {"PATH": "/usr/bin", "PYTHONPATH": "/src", **testenv.controlled(tmp_path)}
    assert env["HF_HOME"] == str(tmp_path / "hf-home") and env["HF_HUB_OFFLINE"] == "1"
    kept = testenv.environment(HOSTILE, tmp_path, keep=["NOTEBOOK_SMOKE", "HF_ENDPOINT"])
    assert kept["NOTEBOOK_SMOKE"] == "0" and kept["HF_ENDPOINT"] == "https://hf-mirror.com"


def test_this_process_and_its_children_run_in_it(test_env):
    assert {k for k in os.environ if testenv.is_cleared(k)} == set(testenv.controlled("/r"))  # only the tests' own
    assert "HF_ENDPOINT" not in os.environ and "HF_TOKEN" not in os.environ and "PYTHONWARNINGS" not in os.environ
    home = Path(os.environ["HF_HOME"])
    assert home.is_dir() and not any(home.iterdir()) and home.name == "hf-home"
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    child = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
    assert {k: v for k, v in child.items() if testenv.is_cleared(k)} == \
        {k: v for k, v in test_env.items() if testenv.is_cleared(k)}
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE and constants.HF_HOME == str(home)
    assert constants.ENDPOINT == "https://huggingface.co"


def test_what_a_test_changes_is_undone(monkeypatch):
    before = dict(os.environ)
    os.environ["HELPERS_LEFT_BEHIND"] = "1"
    os.environ["HF_HOME"] = "/somewhere/else"
    del os.environ["HELPERS_NO_PROGRESS"]
    testenv.restore(before)
    assert dict(os.environ) == before


# ------------------------------------------------------------------------------------------------- offline mode
@pytest.mark.parametrize("setting", ["HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "HF_HUB_OFFLINE=true"])
def test_offline_mode_names_the_variable(hub_twin, tmp_path, test_env, setting):
    name, _, value = setting.partition("=")
    env = {k: v for k, v in test_env.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update({"HF_ENDPOINT": hub_twin.endpoint, "HF_HOME": str(tmp_path / "home"), name: value})
    args = ("plan", "--base", BASE, "--lora", LORA, "--disk-gb", "100", "--ram-gb", "100")
    line = one_error(cli(*args, env=env, cwd=tmp_path))
    assert line == (f"error: {setting} is set: unset it to download base {BASE!r}, or give a local folder (or set "
                    "HELPERS_LOCAL_MODELS to a folder of downloaded models)")
    del env[name]  # the fix
    p = cli(*args, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr


def test_offline_mode_read_at_import_is_named_too(monkeypatch):
    """huggingface_hub reads HF_HUB_OFFLINE once: unset later in a notebook, it is still offline."""
    from huggingface_hub import constants

    from helpers.hub import list_files

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match=r"huggingface_hub was imported in offline mode .* restart the runtime"):
        list_files(BASE)


def test_offline_errors_raised_by_huggingface_hub_name_the_variable(monkeypatch):
    from huggingface_hub.errors import OfflineModeIsEnabled

    from helpers.hub import resolve as hub

    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "ON")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(UserError, match=r"^TRANSFORMERS_OFFLINE=ON is set: unset it to download model 'hfl/x'"):
        with hub.hub_errors("hfl/x", "model"):
            raise OfflineModeIsEnabled("Cannot reach https://huggingface.co/api/models/hfl/x: offline mode is enabled")


# --------------------------------------------------------------------------------------- an HF_ENDPOINT that is dead
def test_an_endpoint_that_does_not_answer_is_named(tmp_path, test_env):
    env = {**test_env, "HF_ENDPOINT": "https://hf-endpoint.invalid", "HF_HUB_OFFLINE": "0"}
    line = one_error(cli("plan", "--base", BASE, "--lora", LORA, env=env, cwd=tmp_path))
    assert line.startswith("error: cannot reach HF_ENDPOINT=https://hf-endpoint.invalid to download " + BASE)
    assert "HF_ENDPOINT is set; unset it to use huggingface.co (`unset HF_ENDPOINT`)" in line
    del env["HF_ENDPOINT"]  # the fix: huggingface.co, which this machine cannot reach either; the message says so
    line = one_error(cli("plan", "--base", BASE, "--lora", LORA, env=env, cwd=tmp_path))
    assert "HF_ENDPOINT=" not in line and "cannot reach the Hugging Face hub" in line


# ----------------------------------------------------------------------------------------- a read-only HF_HOME
def test_a_read_only_hf_home_is_named(hub_twin, tmp_path, test_env):
    env = {**test_env, "HF_ENDPOINT": hub_twin.endpoint}
    env.pop("HF_HUB_OFFLINE")
    args = ("merge", "--base", BASE, "--lora", LORA, "--out", str(tmp_path / "m.gguf"), "--format", "gguf",
            "--no-progress")
    with readonly_folder(tmp_path / "ro") as ro:
        env["HF_HOME"] = str(ro)
        line = one_error(cli(*args, env=env, cwd=tmp_path))
    assert line.startswith(f"error: cannot write the Hugging Face cache that HF_HOME={ro} chooses ({ro}/hub")
    assert line.endswith("set HF_HOME to a writable folder (e.g. `export HF_HOME=/tmp/hf-home`) or unset it")
    assert not (tmp_path / "m.gguf").exists()
    env["HF_HOME"] = str(tmp_path / "writable")  # the fix
    p = cli(*args, env=env, cwd=tmp_path)
    assert p.returncode == 0 and (tmp_path / "m.gguf").is_file(), p.stderr


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_cache_write_errors_name_the_variable_that_chose_the_cache(monkeypatch, tmp_path, code):
    from helpers.hub.environment import cache_not_writable

    cache = tmp_path / "c"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    err = cache_not_writable(OSError(code, os.strerror(code), str(cache / "models--a--b" / "blobs")), roots=[cache])
    assert str(err).startswith(f"cannot write the Hugging Face cache that HF_HUB_CACHE={cache} chooses")
    assert ("read-only disk" in str(err)) == (code == errno.EROFS)
    assert cache_not_writable(OSError(code, "x", str(tmp_path / "mine")), roots=[cache]) is None  # not the cache
    assert cache_not_writable(OSError(errno.ENOSPC, "x", str(cache / "f")), roots=[cache]) is None  # a full disk


# -------------------------------------------------------------------------------------------- a rejected token
def test_a_rejected_token_is_named(hub_standin, monkeypatch):
    from helpers.hub import list_files

    monkeypatch.setenv("HF_TOKEN", "hf_revoked")
    with pytest.raises(UserError) as err:
        list_files("alice/model")
    assert str(err.value) == (f"{hub_standin.endpoint} rejected HF_TOKEN (401: the token is wrong, expired or "
                              "revoked): unset HF_TOKEN (public models need none), or set a valid token from "
                              "https://huggingface.co/settings/tokens")
    monkeypatch.delenv("HF_TOKEN")  # the fix: without a token the repo is found or not, as for anyone
    with pytest.raises(UserError, match=r"'alice/model' does not exist on http://127\.0\.0\.1:\d+ \(or needs a token"):
        list_files("alice/model")


def test_a_rejected_token_through_the_cli(hub_standin, tmp_path, test_env):
    env = {**test_env, "HF_ENDPOINT": hub_standin.endpoint, "HF_TOKEN": "hf_revoked"}
    env.pop("HF_HUB_OFFLINE")
    line = one_error(cli("plan", "--base", "alice/base", env=env, cwd=tmp_path))
    assert line.startswith(f"error: {hub_standin.endpoint} rejected HF_TOKEN (401")
