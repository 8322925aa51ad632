"""Small shared utilities, one module per concern:

- :mod:`.errors`: :class:`UserError`, what every command raises for a problem the user can fix (the CLI prints it
  as one ``error: ...`` line);
- :mod:`.files`: outputs written under a temporary name and renamed when complete (:func:`atomic_path`; a
  resumable output's hidden work name, :func:`partial_path`), JSON and
  UTF-8 text read with one clear error, the package's data folder;
- :mod:`.hashing`: SHA256 of files, ``sha256sum`` listings, a cheap sampled fingerprint;
- :mod:`.progress`: progress bars and byte counts for people;
- :mod:`.logs`: a writable folder for native tools' logs;
- :mod:`.faults`: the fault-injection tests' kill points.

Disk space and locks are :mod:`helpers.disk`.
"""
from __future__ import annotations

from .errors import UserError
from .faults import fault_point
from .files import DATA_DIR, atomic_path, partial_path, read_json, read_utf8, remove, tmp_name, tree_bytes, write_json
from .hashing import sample_digest, sha256_file, write_sha256_listing
from .logs import log_dir
from .progress import human_bytes, human_seconds, progress

__all__ = ["DATA_DIR", "UserError", "atomic_path", "fault_point", "human_bytes", "human_seconds", "log_dir",
           "partial_path", "progress", "read_json", "read_utf8", "remove", "sample_digest", "sha256_file", "tmp_name",
           "tree_bytes", "write_json", "write_sha256_listing"]
