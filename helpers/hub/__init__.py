"""Everything that talks to the Hugging Face Hub (or a mirror of it), and the checks on what comes back.

The package's face is what the rest of :mod:`helpers` uses; tests and tools may import the modules directly:

* :mod:`~helpers.hub.ref`: a model reference classified once (:class:`ModelRef`: local, mirror or hub id);
* :mod:`~helpers.hub.resolve`: a model reference (local folder, offline mirror folder, hub id) to files on disk,
  listings read without downloading the weights;
* :mod:`~helpers.hub.headers`: safetensors headers read off the hub before any download;
* :mod:`~helpers.hub.fetch`: downloads, several files at once, bounded retries of an overloaded mirror;
* :mod:`~helpers.hub.integrity`: every downloaded file checked against the hub's digest or a published SHA256;
* :mod:`~helpers.hub.arriving`: a file read while it downloads (its bytes as they are written);
* :mod:`~helpers.hub.meter`: the bytes a job's downloads received (its progress line), and stopping them;
* :mod:`~helpers.hub.access`: gated repos and data sets (what access a plan needs, one file of a data set);
* :mod:`~helpers.hub.environment`: endpoint, offline mode, token and cache settings, and their error messages.
"""
from .arriving import Arriving
from .access import access_problem
from .environment import LOCAL_MODELS_ENV, demo_dir
from .integrity import DamagedDownload
from .meter import Meter
from .ref import ModelRef, current_hub_id, looks_like_hub_id
from .resolve import (cached_files, download_small_files, fetch_file, file_listing, file_sizes, forget_file,
                      hub_cache_dir, hub_endpoint, is_local, list_files, require_online, resolve_model)
from .headers import safetensors_file_header, safetensors_headers

__all__ = ["LOCAL_MODELS_ENV", "Arriving", "DamagedDownload", "ModelRef", "Meter", "access_problem", "cached_files",
           "current_hub_id", "demo_dir", "download_small_files", "fetch_file", "file_listing", "file_sizes",
           "forget_file", "hub_cache_dir", "hub_endpoint", "is_local", "list_files", "looks_like_hub_id",
           "require_online", "resolve_model", "safetensors_file_header", "safetensors_headers"]
