"""Domain errors of the RL engine, each with a stable code."""


class PolicyError(Exception):
    """Base class; ``code`` is stable and safe to show to API clients."""

    code = "policy_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PolicyGateError(PolicyError):
    """A candidate's evaluation does not clear the promotion gate."""

    code = "policy_gate_failed"

    def override_hint(self, label: str) -> str:
        """How a person who has weighed the figures promotes it anyway."""
        return (
            f"To serve it anyway, with the reason on record: manage.py "
            f'promote_policy {label} --force --reason "..."'
        )


class PolicyStateError(PolicyError):
    """The version is not in a state that allows the action."""

    code = "policy_state_invalid"


class ArtifactIntegrityError(PolicyError):
    """A policy artifact is missing or its checksum does not match the registry."""

    code = "policy_artifact_corrupt"


class TrainingDataError(PolicyError):
    """There is not enough logged feedback to train or evaluate on."""

    code = "training_data_insufficient"
