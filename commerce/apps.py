from django.apps import AppConfig


class CommerceConfig(AppConfig):
    name = "commerce"
    verbose_name = "Commerce"

    def ready(self) -> None:
        # Registers the API-key scheme with drf-spectacular.
        from commerce.api import schema  # noqa: F401
