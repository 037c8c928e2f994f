from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "api"
    verbose_name = "REST API for classroom bots"

    def ready(self) -> None:
        # Registers the OpenAPI description of the API-key authentication.
        from api import schema  # noqa: F401
