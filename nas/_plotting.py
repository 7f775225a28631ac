"""matplotlib for the NAS pictures: drawn off screen, and left out (with one log line) where it is not installed."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def pyplot(what: str) -> Any | None:
    """``matplotlib.pyplot`` on the Agg backend, or None and a warning naming ``what`` is not drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no picture of the %s (pip install matplotlib)", what)
        return None
    return plt
