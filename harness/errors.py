"""Exceptions that mean "the user asked for something wrong" (printed without a traceback)."""
from __future__ import annotations

from omegaconf.errors import OmegaConfBaseException

# ValueError covers WorkloadError, ModelDoesNotFitError, CheckpointError and config
# validation, which all subclass it; FileNotFoundError covers missing inputs;
# OmegaConf errors are bad values for typed config fields (e.g. workload.rate=abc)
# and missing mandatory ones (`???`).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, OmegaConfBaseException)
