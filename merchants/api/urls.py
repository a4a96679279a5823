"""The read-only merchant API, mounted under /api/v1/merchant/."""

from django.urls import path

from merchants.api import views

app_name = "merchant_api"

urlpatterns = [
    path("products", views.ProductListView.as_view(), name="products"),
    path("products/<int:pk>", views.ProductDetailView.as_view(), name="product"),
    path(
        "products/<int:pk>/why-recommended",
        views.WhyRecommendedView.as_view(),
        name="why_recommended",
    ),
    path("products/<int:pk>/why-not", views.WhyNotView.as_view(), name="why_not"),
    path(
        "products/<int:pk>/governance",
        views.GovernanceView.as_view(),
        name="governance",
    ),
    path("decisions", views.MerchantDecisionsView.as_view(), name="decisions"),
    path("ranking", views.RankingView.as_view(), name="ranking"),
]
