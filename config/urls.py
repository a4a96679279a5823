from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path, reverse_lazy
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from commerce.api.views import NotFoundView
from merchants import views as merchant_views

urlpatterns = [
    path("", merchant_views.HomeView.as_view(), name="home"),
    path("admin/", admin.site.urls),
    path(
        "accounts/login/",
        # Staff land on the review queue, merchants on their products.
        auth_views.LoginView.as_view(next_page=reverse_lazy("home")),
        name="login",
    ),
    path(
        "accounts/logout/",
        auth_views.LogoutView.as_view(next_page="login"),
        name="logout",
    ),
    path(
        "governance/slates/<uuid:slate_id>/",
        merchant_views.SlateExplanationView.as_view(),
        name="slate_explanation",
    ),
    path("governance/", include("governance.urls")),
    path("merchants/", include("merchants.urls")),
    path(
        "transparency/",
        merchant_views.TransparencyView.as_view(),
        name="transparency",
    ),
    path("api/v1/merchant/", include("merchants.api.urls")),
    path("api/v1/", include("commerce.api.urls")),
    path("api/v1/schema", SpectacularAPIView.as_view(), name="schema"),
    path(
        "api/v1/docs",
        SpectacularSwaggerView.as_view(url_name="schema"),
        name="swagger-ui",
    ),
    # Last: any other path under /api/ answers the API's JSON 404.
    re_path(r"^api(/|$)", NotFoundView.as_view(), name="api-not-found"),
]
