from django.urls import path

from commerce.api import views

app_name = "api"

urlpatterns = [
    path("recommendations", views.RecommendationView.as_view(), name="recommendations"),
    path("events", views.EventBatchView.as_view(), name="events"),
    path("products", views.ProductsView.as_view(), name="products"),
    path("customers", views.CustomersView.as_view(), name="customers"),
    path("health", views.HealthView.as_view(), name="health"),
    path("ready", views.ReadinessView.as_view(), name="ready"),
]
