"""Hydra callback: after a multirun, draw the comparison figure from its run directories."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class CompareOnMultirunEnd(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from metrics.compare_plot import plot_comparison
        out = plot_comparison(Path(config.hydra.sweep.dir))
        if out is not None:
            print(f"comparison figure: {out}")
