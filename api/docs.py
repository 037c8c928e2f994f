"""The OpenAPI schema, and Swagger UI from the sidecar package, served under the strict CSP
(no inline code)."""

from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from api.throttling import CountsRefusedRequests


class SchemaView(CountsRefusedRequests, SpectacularAPIView):
    """The schema is costly to build: requests with a refused key count as well."""


class SwaggerView(CountsRefusedRequests, SpectacularSwaggerSplitView):
    """The split view loads its start-up script from a URL, so no inline script is needed."""

    template_name = "api/swagger_ui.html"
