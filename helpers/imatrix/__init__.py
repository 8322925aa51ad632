"""Small GGUFs that stay good: llama.cpp's importance matrix, computed by llama.cpp, and the route to low-bit types.

- :mod:`.collect`: :class:`ActivationCollector`, the statistics ``llama-imatrix`` keeps, read from inside llama.cpp's
  graph through the context's eval callback;
- :mod:`.compute`: :func:`compute_imatrix` (``python -m helpers imatrix``), ``llama-imatrix`` through
  llama-cpp-python;
- :mod:`.calibration`: :func:`calibration_text`, the default Chinese calibration text (a hub data set);
- :mod:`.route`: :func:`imatrix_route`, merge -> Q8_0/F16 -> importance matrix -> low-bit type, in one call.
"""
from __future__ import annotations

from .calibration import CALIBRATION_NAME
from .route import (IMATRIX_CHUNK, INTERMEDIATES, RouteOptions, imatrix_path, imatrix_route, imatrix_seconds,
                    intermediate_path, offload_layers, route_recommended)

__all__ = ["CALIBRATION_NAME", "IMATRIX_CHUNK", "INTERMEDIATES", "RouteOptions", "imatrix_path", "imatrix_route",
           "imatrix_seconds", "intermediate_path", "offload_layers", "route_recommended"]
