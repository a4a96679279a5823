"""The staff pages, mounted under /governance/."""

from django.urls import path

from governance import views

app_name = "governance"

urlpatterns = [
    path("", views.QueueView.as_view(), name="queue"),
    path("claim-next/", views.ClaimNextView.as_view(), name="claim_next"),
    path("items/<int:pk>/", views.ReviewItemView.as_view(), name="item"),
    path("items/<int:pk>/claim/", views.ClaimItemView.as_view(), name="claim"),
    path("items/<int:pk>/release/", views.ReleaseItemView.as_view(), name="release"),
    path("items/<int:pk>/escalate/", views.EscalateItemView.as_view(), name="escalate"),
    path("items/<int:pk>/decide/", views.DecideItemView.as_view(), name="decide"),
    path("overrides/", views.OverrideListView.as_view(), name="overrides"),
    path("overrides/new/", views.OverrideCreateView.as_view(), name="override_create"),
    path(
        "overrides/<int:pk>/revoke/",
        views.RevokeOverrideView.as_view(),
        name="override_revoke",
    ),
    path("audits/", views.AuditRunListView.as_view(), name="audits"),
    path("audits/<int:pk>/", views.AuditRunView.as_view(), name="audit"),
    path("log/", views.EventLogView.as_view(), name="log"),
]
