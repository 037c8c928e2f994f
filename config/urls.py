"""URL configuration of Ringfence."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from accounts import views as account_views
from api import pages as api_pages

urlpatterns = [
    path("", account_views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
    path("api-keys/", api_pages.api_keys, name="api-keys"),
    path("api-keys/<int:pk>/revoke", api_pages.api_key_revoke_view, name="api-key-revoke"),
]
