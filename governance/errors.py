"""Domain errors of governance, each with a stable code."""


class GovernanceError(Exception):
    """Base class; ``code`` is stable and safe to show to users."""

    code = "governance_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ReviewStateError(GovernanceError):
    """The review item is not in a state that allows the action."""

    code = "review_state_invalid"


class StaleReviewError(GovernanceError):
    """The item changed since the reviewer loaded it; reload and decide again."""

    code = "review_item_changed"


class InvalidDecisionError(GovernanceError):
    """A decision lacks its reason code or note, or names a bad override."""

    code = "decision_invalid"


class InvalidOverrideError(GovernanceError):
    """An override's target, value, scope or expiry does not fit its kind."""

    code = "override_invalid"
