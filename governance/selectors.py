"""What governance has put in force, as serving and training read it.

These selectors stand on governance and commerce models alone. Until reviewers
create overrides, nothing is in force and the constraints change no slate.
"""

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SlateConstraints:
    """Overrides that apply to one request, keyed by product SKU."""

    suppressed: frozenset[str] = frozenset()
    """Never shown."""
    score_multipliers: dict[str, float] = field(default_factory=dict)
    """Demotions (below 1) and boosts (above 1), applied to the score's margin
    over the lowest eligible score, so the order of signs cannot flip them."""

    def apply(
        self, item_ids: np.ndarray, scores: np.ndarray, eligible: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the scores and eligibility with the overrides applied."""
        if not self.suppressed and not self.score_multipliers:
            return scores, eligible
        eligible = eligible & ~np.isin(item_ids, list(self.suppressed))
        if self.score_multipliers and eligible.any():
            floor = scores[eligible].min()
            factors = np.array(
                [self.score_multipliers.get(item, 1.0) for item in item_ids]
            )
            scores = floor + (scores - floor) * factors
        return scores, eligible


NO_CONSTRAINTS = SlateConstraints()


def slate_constraints(*, customer_group: str | None = None) -> SlateConstraints:
    """Return the overrides in force for a slate served to ``customer_group``."""
    return NO_CONSTRAINTS
