"""OpenAPI description of the bearer-key authentication (loaded by the app config), of
the rate-limit headers every counted answer carries, and of the 503 when they cannot be
counted."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from the API keys page: `Authorization: Bearer rf_…`.",
        }


RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": "Requests this key may make in one window.",
    "X-RateLimit-Remaining": "Requests left in the current window.",
    "X-RateLimit-Reset": "Unix time at which the budget is whole again.",
}
# A 503 says that the throttle could not count. Refused keys (401) and refused writes (403)
# are counted too (``api.throttling.CountsRefusedRequests``).
UNCOUNTED = {"503"}


def rate_limit_headers(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: declare the throttle's headers on every counted answer."""
    headers = result.setdefault("components", {}).setdefault("headers", {})
    for name, description in RATE_LIMIT_HEADERS.items():
        headers[name] = {"description": description, "schema": {"type": "integer"}}
    refs = {name: {"$ref": f"#/components/headers/{name}"} for name in RATE_LIMIT_HEADERS}
    for item in result.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue  # a path item's shared parameters, not an operation
            for code, response in operation.get("responses", {}).items():
                if code not in UNCOUNTED:
                    response.setdefault("headers", {}).update(refs)
    return result


def service_unavailable(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: every throttled operation may answer 503 when the shared cache
    that holds its counter cannot be reached (see ``api.exceptions``)."""
    for item in result.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            responses = operation.get("responses", {})
            if "429" in responses:
                responses["503"] = {
                    "content": responses["429"].get("content", {}),
                    "description": "Briefly unavailable (`service_unavailable`): wait for "
                    "`Retry-After` seconds.",
                    "headers": {
                        "Retry-After": {
                            "description": "Seconds to wait before trying again.",
                            "schema": {"type": "integer"},
                        }
                    },
                }
    return result
