"""What the CLIs print without a traceback, and the one run outcome that is a user error.

Only the project's UserError types (engines/errors.py: ConfigError, WorkloadError,
ModelDoesNotFitError, CheckpointError, NothingServedError) are user mistakes; any other
exception, a plain ValueError included, is a bug and keeps its traceback.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from engines.errors import NothingServedError, UserError

USER_ERRORS: tuple[type[BaseException], ...] = (UserError,)
_NUM_REASONS_SHOWN = 3


def config_conversion_error(err: OmegaConfBaseException) -> UserError:
    """A UserError for OmegaConf's failure to turn the composed config into dataclasses:
    a mandatory value (`???`) left unset, or an interpolation that cannot be resolved."""
    key = getattr(err, "full_key", None) or "?"
    if isinstance(err, MissingMandatoryValue):
        return UserError(f"{key} has no value and is required here: set it, e.g. {key}=...")
    return UserError(f"{key}: {str(err).splitlines()[0]}")


def nothing_served_error(summary: Mapping, run_dir: Path) -> NothingServedError | None:
    """The error for a run in which no request finished (every one rejected), naming the
    reasons; None if at least one was served (a run that served some and rejected others
    is a valid measurement, e.g. one point of a rate sweep)."""
    if summary["num_requests"] == 0 or summary["num_finished"] > 0:
        return None
    # Reasons name each request's length, so show a few; requests.csv has every one.
    reasons = sorted(summary.get("rejected_reasons", {}).items(), key=lambda kv: -kv[1])
    shown = "; ".join(f"{reason} ({n})" for reason, n in reasons[:_NUM_REASONS_SHOWN])
    more = f"; and {len(reasons) - _NUM_REASONS_SHOWN} other reasons" if len(reasons) > _NUM_REASONS_SHOWN else ""
    return NothingServedError(f"no request was served: all {summary['num_requests']} were rejected, e.g. "
                              f"{shown}{more}. The results are in {run_dir} (requests.csv: reject_reason).")
