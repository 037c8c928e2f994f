"""The admin of API keys: which students of a classroom run bots, and a way to stop one."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from accounts.models import Membership
from api.models import ApiKey
from api.services import api_key_revoke
from liquidation.admin import InstructorActionsMixin


class KeyStatusFilter(admin.SimpleListFilter):
    """Active, expired or revoked, as the status column says (``ApiKey.is_active``)."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "active"), ("expired", "expired"), ("revoked", "revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True).filter(
                Q(expires_at__isnull=True) | Q(expires_at__gt=now)
            )
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(InstructorActionsMixin):
    """Keys of the members of the instructor's classrooms; never their secret or its hash.

    Nobody creates or edits a key here (students do, on their API keys page); an instructor
    may revoke one, say a bot that floods the class.
    """

    classroom_path = "user__memberships__classroom"
    read_only_records = True
    list_display = (
        "name", "user", "shown_prefix", "scope", "created_at", "last_used_at", "expires_at",
        "status",
    )  # fmt: skip
    list_filter = (KeyStatusFilter, "scope")
    search_fields = ("name", "user__username", "prefix")
    list_select_related = ("user",)
    fields = (
        "name", "user", "shown_prefix", "scope", "created_at", "last_used_at", "expires_at",
        "revoked_at", "status",
    )  # fmt: skip
    readonly_fields = fields
    actions = ["revoke"]

    def scope(self, qs: QuerySet[Any], request: HttpRequest) -> QuerySet[Any]:
        # A student in two of the instructor's classrooms would otherwise be listed twice.
        scoped = super().scope(qs, request).distinct()
        if request.user.is_superuser:
            return scoped
        # A key is its student's, not a classroom's: a student who is also in another
        # instructor's class may run that class's bot with it. So an instructor sees (and
        # may revoke) only the keys of students who are in no one else's classroom; freezing
        # the student's account stops their trading in this class either way.
        elsewhere = Membership.objects.filter(user_id=OuterRef("user_id")).exclude(
            classroom__instructor_id=request.user.pk
        )
        return scoped.exclude(Exists(elsewhere))

    @admin.display(description="key starts with")
    def shown_prefix(self, key: ApiKey) -> str:
        return f"rf_{key.prefix}_…"

    @admin.display(description="status")
    def status(self, key: ApiKey) -> str:
        if key.revoked_at is not None:
            return "revoked"
        return "active" if key.is_active() else "expired"

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("api.change_apikey"))

    @admin.action(description="Revoke the selected keys", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[Any]) -> TemplateResponse | None:
        def revoke_one(key: ApiKey) -> str | None:
            if key.revoked_at is not None:
                return None  # revoked already: nothing to log or count
            api_key_revoke(user_id=key.user_id, api_key_id=key.pk)
            return "Revoked"

        return self.confirm_then_each(
            request,
            queryset,
            apply=revoke_one,
            done="Revoked {count} key(s): programs using them are refused from now on.",
            nothing="Nothing was changed: the selected keys were revoked already.",
            action="revoke",
            title="Revoke API keys",
            question="Revoke these keys?",
            consequence="Programs using them are refused at once; their owners can create "
            "new keys on their API keys page.",
            confirm_label="Yes, revoke them",
        )
