"""The merchant portal, mounted under /merchants/."""

from django.urls import path

from merchants import views

app_name = "merchants"

urlpatterns = [
    path("", views.ProductListView.as_view(), name="products"),
    path("products/<int:pk>/", views.ProductDetailView.as_view(), name="product"),
    path("products/<int:pk>/why-not/", views.WhyNotView.as_view(), name="why_not"),
]
