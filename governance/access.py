"""Who may use the governance pages.

Staff are users in the ``reviewer`` or ``governance-admin`` group, or
superusers. Reviewers work the queue; administrators also take escalated
items and create or revoke overrides. Everyone else who is logged in (a
merchant, say) is refused with 403, and anonymous visitors are sent to log
in. Pages authenticate by session only: an API key opens none of them.
"""

from typing import Any

from django.contrib.auth.mixins import LoginRequiredMixin, UserPassesTestMixin

REVIEWER_GROUP = "reviewer"
GOVERNANCE_ADMIN_GROUP = "governance-admin"


def _group_names(user: Any) -> frozenset[str]:
    """The user's groups, read once per request object."""
    names = getattr(user, "_governance_group_names", None)
    if names is None:
        names = frozenset(user.groups.values_list("name", flat=True))
        user._governance_group_names = names
    return names


def is_governance_staff(user: Any) -> bool:
    if not (user.is_authenticated and user.is_active):
        return False
    return user.is_superuser or bool(
        _group_names(user) & {REVIEWER_GROUP, GOVERNANCE_ADMIN_GROUP}
    )


def is_governance_admin(user: Any) -> bool:
    if not (user.is_authenticated and user.is_active):
        return False
    return user.is_superuser or GOVERNANCE_ADMIN_GROUP in _group_names(user)


class StaffRequiredMixin(LoginRequiredMixin, UserPassesTestMixin):
    """Admit reviewers and administrators; others get a login page or 403."""

    def test_func(self) -> bool:
        return is_governance_staff(self.request.user)  # type: ignore[attr-defined]


class AdminRequiredMixin(StaffRequiredMixin):
    """Admit governance administrators (and superusers) only."""

    def test_func(self) -> bool:
        return is_governance_admin(self.request.user)  # type: ignore[attr-defined]
