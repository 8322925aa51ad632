"""Where the notebooks run: Colab detection, secrets and the machine's memory.

Nothing here downloads or builds anything; model references are resolved by :mod:`helpers.hub`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def in_colab() -> bool:
    """True when running inside Google Colab."""
    return "google.colab" in sys.modules or any(k.startswith("COLAB_") for k in os.environ)


def get_secret(name: str) -> str | None:
    """Return a secret from Colab's secrets panel, else from the environment, else None."""
    if in_colab():
        try:
            from google.colab import userdata  # type: ignore[import-not-found]

            value = userdata.get(name)
            if value:
                return value
        except Exception:  # noqa: BLE001 - secret missing or access not granted
            pass
    return os.environ.get(name) or None


def available_ram_bytes() -> int | None:
    """Available system memory in bytes (None when it cannot be read)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
