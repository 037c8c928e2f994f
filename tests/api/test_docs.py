"""The OpenAPI schema and the Swagger UI docs, rendered by Chromium under the strict CSP."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import resolve

pytestmark = pytest.mark.django_db


def test_schema_is_openapi_3_with_bearer_auth_and_every_endpoint(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert schema["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["apiKey"]["description"],
    }
    paths = set(schema["paths"])
    for path in (
        "/api/v1/me",
        "/api/v1/accounts/{id}/",
        "/api/v1/instruments/{symbol}/",
        "/api/v1/instruments/{symbol}/prices/",
        "/api/v1/orders/preview",
        "/api/v1/positions/{id}/margin",
        "/api/v1/classrooms/{id}/leaderboard",
    ):
        assert path in paths
    # The throttle's headers, on every answer it counted, refused credentials included.
    assert set(schema["components"]["headers"]) == {
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    }
    listing = schema["paths"]["/api/v1/orders/"]["get"]["responses"]
    assert set(listing["200"]["headers"]) == set(schema["components"]["headers"])
    assert set(listing["429"]["headers"]) == set(schema["components"]["headers"])
    assert set(listing["401"]["headers"]) == set(schema["components"]["headers"])
    assert not set(listing["503"]["headers"]) & set(schema["components"]["headers"])
    order = schema["components"]["schemas"]["PlaceOrderRequest"]["properties"]
    assert order["quantity"]["type"] == "string"
    position = schema["components"]["schemas"]["Position"]["properties"]
    assert position["liquidation_price"]["type"] == "string"


def test_docs_page_has_no_inline_script(client):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<script>" not in html and "<style>" not in html
    assert "Content-Security-Policy" in page.headers
    assert "unsafe-inline" not in page.headers["Content-Security-Policy"]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_swagger_ui_renders_under_the_strict_csp(live_server):
    from playwright.sync_api import sync_playwright

    violations: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page()
            page.on(
                "console",
                lambda m: (
                    violations.append(m.text) if "Content Security Policy" in m.text else None
                ),
            )
            page.goto(f"{live_server.url}/api/docs/")
            page.wait_for_selector("text=Ringfence API", timeout=20_000)
            page.wait_for_selector('[data-path="/api/v1/orders/preview"]', timeout=20_000)
            if shot := os.environ.get("RINGFENCE_SCREENSHOT"):
                page.screenshot(path=shot, full_page=False)
        finally:
            browser.close()
    assert violations == []


def test_the_schema_says_how_to_authenticate_retry_page_and_read_errors(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    description = schema["info"]["description"]
    for topic in ("Bearer", '"error"', "client_order_id", "next", "Retry-After"):
        assert topic in description, topic


def test_the_schema_lists_the_words_a_bot_may_read_in_every_enumerated_field(client):
    from liquidation.models import MarginCall
    from positions.models import Order

    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    components = schema["components"]["schemas"]

    def words(component: str, field: str) -> set[str]:
        spec = components[component]["properties"][field]
        refs = [spec, *spec.get("allOf", []), *spec.get("oneOf", [])]
        found = set()
        for ref in refs:
            if "$ref" in ref:
                found |= set(components[ref["$ref"].rsplit("/", 1)[1]].get("enum", []))
        return found - {""}

    assert words("MarginCall", "outcome") == set(MarginCall.Outcome.values)
    assert words("Order", "trigger") == set(Order.Trigger.values)
    assert words("Fill", "trigger") == set(Order.Trigger.values)


def test_docs_page_forgets_the_key_typed_into_it(client):
    """Swagger UI would keep an authorised key in the browser's local storage, where the
    next student at a shared classroom computer could trade with it."""
    script = client.get("/api/docs/", {"script": ""})
    assert script.status_code == 200
    start = script.content.decode().index("const swaggerSettings = ")
    settings_text = script.content.decode()[start:].split("=", 1)[1].split(";", 1)[0]
    assert json.loads(settings_text).get("persistAuthorization", False) is False


def _readme_endpoints() -> set[tuple[str, str]]:
    """(method, path) of every endpoint the README's endpoint list names, paths without the
    trailing slash ("`GET`/`DELETE /orders/{id}/`" names two)."""
    readme = (Path(settings.BASE_DIR) / "README.md").read_text()
    section = " ".join(readme.split("- **Endpoints.**")[1].split("\n- **")[0].split())
    named = set()
    for methods, path in re.findall(r"`((?:[A-Z]+`/`)*[A-Z]+) (/[^`?]*)", section):
        for method in methods.split("`/`"):
            named.add((method, path.rstrip("/")))
    return named


def test_the_readme_lists_every_endpoint_of_the_schema_and_no_other(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    served = {
        (method.upper(), path.removeprefix("/api/v1").rstrip("/"))
        for path, operations in schema["paths"].items()
        for method in operations
    }
    assert _readme_endpoints() == served


def test_the_schema_declares_exactly_the_query_parameters_each_endpoint_reads(client):
    """A view refuses a query parameter it does not read, so one the schema left out would
    be refused unannounced, and one it names but the view ignores would be refused too."""
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path, operations in schema["paths"].items():
        match = resolve(path.replace("{id}", "1").replace("{symbol}", "BTCUSDT"))
        view = match.func.view_class  # type: ignore[attr-defined]
        for method, operation in operations.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            assert declared == set(view.query_params.get(method, ())), (method, path)
