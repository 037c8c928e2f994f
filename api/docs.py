"""Swagger UI from the sidecar package, served under the strict CSP (no inline code)."""

from drf_spectacular.views import SpectacularSwaggerSplitView


class SwaggerView(SpectacularSwaggerSplitView):
    """The split view loads its start-up script from a URL, so no inline script is needed."""

    template_name = "api/swagger_ui.html"
