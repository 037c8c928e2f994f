"""URL configuration of Ringfence."""

from django.contrib import admin
from django.urls import include, path

from api import pages as api_pages

# Instructors run their classrooms here; the admin speaks of Ringfence, not of Django.
admin.site.site_header = "Ringfence classroom admin"
admin.site.site_title = "Ringfence admin"
admin.site.index_title = "Your classrooms, markets and engine"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
    path("api-keys/", api_pages.api_keys, name="api-keys"),
    path("api-keys/<int:pk>/revoke", api_pages.api_key_revoke_view, name="api-key-revoke"),
    path("", include("web.urls")),
]
