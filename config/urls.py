"""URL configuration of Ringfence."""

from typing import Any

from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from api import pages as api_pages
from web.forms import AdminSignInForm
from web.views import admin_password_change

# Instructors run their classrooms here; the admin speaks of Ringfence, not of Django.
admin.site.site_header = "Ringfence classroom admin"
admin.site.site_title = "Ringfence admin"
admin.site.index_title = "Your classrooms, markets and engine"
admin.site.login_form = AdminSignInForm  # failed sign-ins are limited as on the site
# The old password typed to change one is counted as sign-ins are.
admin.site.password_change = admin_password_change  # type: ignore[assignment]


class FaviconRedirect(RedirectView):
    """Browsers ask for /favicon.ico on pages that name no icon (the admin, the API docs).

    The static URL is looked up per request, not when the URLs load: with hashed static
    names it exists only once ``collectstatic`` has run.
    """

    permanent = False  # the hashed name changes with the icon; never cache the redirect

    def get_redirect_url(self, *args: Any, **kwargs: Any) -> str:
        return static("img/favicon.svg")


urlpatterns = [
    path("favicon.ico", FaviconRedirect.as_view()),
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
    path("api-keys/", api_pages.api_keys, name="api-keys"),
    path("api-keys/<int:pk>/revoke", api_pages.api_key_revoke_view, name="api-key-revoke"),
    path("", include("web.urls")),
]
