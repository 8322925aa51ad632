"""The fault-injection tests' hook: a place where a run can be killed as ``kill -9`` would kill it."""
from __future__ import annotations

import os
import signal

FAULT_ENV = "HELPERS_FAULT_KILL"  # tests: "<site>:<n>" kills the process the n-th time it passes fault_point(site)
_fault_hits: dict[str, int] = {}


def fault_point(site: str) -> None:
    """A place where the fault-injection tests kill the process with SIGKILL, as ``kill -9`` would (no cleanup
    runs); does nothing unless ``$HELPERS_FAULT_KILL`` names ``site``."""
    spec = os.environ.get(FAULT_ENV)
    if spec and spec.rpartition(":")[0] == site:
        _fault_hits[site] = _fault_hits.get(site, 0) + 1
        if _fault_hits[site] >= int(spec.rpartition(":")[2]):
            os.kill(os.getpid(), signal.SIGKILL)
