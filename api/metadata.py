"""What ``OPTIONS`` answers on every endpoint: the endpoint's name, description and media types."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rest_framework.metadata import BaseMetadata

if TYPE_CHECKING:  # DRF imports this module while rest_framework.views is loading
    from rest_framework.request import Request
    from rest_framework.views import APIView


class EndpointMetadata(BaseMetadata):
    """DRF's ``SimpleMetadata`` without its ``actions``.

    Those are built by instantiating the view's serializer, which endpoints that take a body
    but declare no ``serializer_class`` (the order preview, position actions) cannot do: it
    answered 500. The request and response shapes are in the OpenAPI schema instead.
    """

    def determine_metadata(self, request: Request, view: APIView) -> dict[str, Any]:
        return {
            "name": view.get_view_name(),
            "description": view.get_view_description(),
            "renders": [renderer.media_type for renderer in view.renderer_classes],
            "parses": [parser.media_type for parser in view.parser_classes],
        }
