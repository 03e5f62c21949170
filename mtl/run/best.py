"""The one rule for a run's best validation point, used for its best point and best.pt, an entry's
winner, ``best of`` and the report's winner: the highest grader (or the entry's ranking metric); a tie
goes to the higher IoU - SI-logRMSE (both tasks at once), then to the earlier step. A grader of 0 is
common early in training, so without the tie-break the first epoch would win over a later one that is
better on both tasks. A single-task run (config key ``tasks``) has no grader: its own best point is
ranked by its task's metric (:func:`run_rank_metric`)."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, TypeVar, Union

from mtl.run.model import GRADER_KEY, ValidationPoint

# A trace line (``val/`` keys) or a validation point's headline (attributes).
Point = Union[dict[str, Any], ValidationPoint]
P = TypeVar("P", dict[str, Any], ValidationPoint)


def is_finite_number(value: Any) -> bool:
    """A real int or float (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


TIE_BREAK = "IoU - SI-logRMSE"
# What a single-task run's own best point is ranked by: its task's metric, IoU higher and SI-logRMSE lower
# being better. A run of both tasks (or one recorded before ``tasks`` existed) is ranked by the grader.
TASK_RANK = {"semseg": ("val/iou", "max"), "depth": ("val/si_logrmse", "min")}


def run_rank_metric(tasks: Any) -> tuple[str, str]:
    """(metric, mode) a run's own best point is ranked by, from its config's ``tasks`` value."""
    return TASK_RANK.get(tasks, (GRADER_KEY, "max")) if isinstance(tasks, str) else (GRADER_KEY, "max")


def _metric(point: Point, name: str) -> Any:
    """``name`` of a trace line (``val/name``) or of a validation point's headline (its attribute)."""
    if isinstance(point, ValidationPoint):
        return getattr(point, name, None)
    return point.get(f"val/{name}")


def _key_value(point: Point, key: str) -> Any:
    """The ranking metric ``key`` of a point: ``val/x`` read as :func:`_metric` reads ``x``, else the key itself."""
    if key.startswith("val/"):
        return _metric(point, key[len("val/"):])
    return getattr(point, key, None) if isinstance(point, ValidationPoint) else point.get(key)


def tie_break_value(point: Point) -> float:
    """IoU - SI-logRMSE of a point; -inf when either is missing or not finite."""
    iou, si = _metric(point, "iou"), _metric(point, "si_logrmse")
    return float(iou - si) if is_finite_number(iou) and is_finite_number(si) else -math.inf


def point_rank(point: Point, key: str = GRADER_KEY, mode: str = "max") -> tuple[float, float, float]:
    """A sortable rank of a validation point: higher is better (see TIE_BREAK above)."""
    value = _key_value(point, key)
    primary = float(value) if is_finite_number(value) else -math.inf
    step = _key_value(point, "step")
    return (primary if mode == "max" else -primary, tie_break_value(point),
            -float(step) if is_finite_number(step) else -math.inf)


def better_point(candidate: Point, incumbent: Optional[Point], key: str = GRADER_KEY, mode: str = "max") -> bool:
    """Whether ``candidate`` beats ``incumbent`` (None: nothing yet) by the rule; a non-finite metric never wins."""
    if not is_finite_number(_key_value(candidate, key)):
        return False
    return incumbent is None or point_rank(candidate, key, mode) > point_rank(incumbent, key, mode)


def deciding_rule(first: tuple[float, ...], second: tuple[float, ...], metric: str = "grader") -> str:
    """Which part of two ranks (``point_rank`` or means of them) decides between them, in words."""
    if first[0] != second[0]:
        return f"by {metric}"
    if len(first) > 1 and first[1] != second[1]:
        return f"tie on {metric} {abs(first[0]):.2f}: decided by {TIE_BREAK}"
    return f"tie on {metric} and {TIE_BREAK}: decided by the earlier step/order"


def best_point(points: Sequence[P], key: str = GRADER_KEY, mode: str = "max") -> Optional[P]:
    """The best point by the rule above (finite ``key`` only); None if no point has one. Each point's rank
    is built once (a report ranks every point of a thousand runs)."""
    best: Optional[P] = None
    best_rank: Optional[tuple[float, float, float]] = None
    for point in points:
        if not is_finite_number(_key_value(point, key)):
            continue
        rank = point_rank(point, key, mode)
        if best_rank is None or rank > best_rank:
            best, best_rank = point, rank
    return best
