"""URLs of the REST API (``/api/v1/``), its OpenAPI schema and its docs."""

from django.urls import include, path, re_path

from api import docs, views

v1 = [
    path("health", views.HealthView.as_view(), name="health"),
    path("me", views.MeView.as_view(), name="me"),
    path("accounts/", views.AccountListView.as_view(), name="account-list"),
    path("accounts/<int:pk>/", views.AccountDetailView.as_view(), name="account-detail"),
    path("instruments/", views.InstrumentListView.as_view(), name="instrument-list"),
    path(
        "instruments/<str:symbol>/",
        views.InstrumentDetailView.as_view(),
        name="instrument-detail",
    ),
    path(
        "instruments/<str:symbol>/prices/",
        views.PriceHistoryView.as_view(),
        name="instrument-prices",
    ),
    path("orders/preview", views.OrderPreviewView.as_view(), name="order-preview"),
    path("orders/", views.OrderListView.as_view(), name="order-list"),
    path("orders/<int:pk>/", views.OrderDetailView.as_view(), name="order-detail"),
    path("positions/", views.PositionListView.as_view(), name="position-list"),
    path("positions/<int:pk>/", views.PositionDetailView.as_view(), name="position-detail"),
    path("positions/<int:pk>/close", views.PositionCloseView.as_view(), name="position-close"),
    path("positions/<int:pk>/margin", views.PositionMarginView.as_view(), name="position-margin"),
    path("positions/<int:pk>/tpsl", views.PositionTpslView.as_view(), name="position-tpsl"),
    path("fills/", views.FillListView.as_view(), name="fill-list"),
    path("statement/", views.StatementView.as_view(), name="statement"),
    path("liquidations/", views.LiquidationListView.as_view(), name="liquidation-list"),
    path("margin-calls/", views.MarginCallListView.as_view(), name="margin-call-list"),
    path(
        "classrooms/<int:pk>/leaderboard",
        views.LeaderboardView.as_view(),
        name="classroom-leaderboard",
    ),
]

urlpatterns = [
    path("v1/", include((v1, "api"), namespace="api")),
    re_path(r"^v1/", views.unknown_endpoint),
    path("schema/", docs.SchemaView.as_view(), name="api-schema"),
    path("docs/", docs.SwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
