"""Admin pages of the accounts app: users, memberships, classroom pockets and the ledger.

Classrooms and trading accounts are registered by ``liquidation.admin``: their instructor
tools (resets, grades, the live monitor) reach into the positions and the engine.
Ledger records and pockets are read-only for everyone; money moves only through services.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.admin_scoping import ClassroomScopedAdmin, ReadOnlyInline, users_in_scope
from accounts.models import ClassroomPocket, LedgerEntry, LedgerTransaction, Membership, User

related_only = admin.RelatedOnlyFieldListFilter


@admin.register(User)
class UserAdmin(ClassroomScopedAdmin, DjangoUserAdmin):
    """Users; an instructor sees the members of their classrooms (and may not change them)."""

    list_filter = ("is_staff", "is_superuser", "is_active")

    def scope(self, qs: QuerySet[Any], request: HttpRequest) -> QuerySet[Any]:
        return qs.filter(pk__in=users_in_scope(request.user).values("pk"))

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None or self.has_change_permission(request, obj):
            return super().get_fieldsets(request, obj)
        # Someone who may only look (an instructor) gets who the person is: no password
        # box whose "Reset password" leads to a page they may not open, and none of the
        # site's permissions, which are the operator's business.
        return (
            (None, {"fields": ("username",)}),
            ("Personal info", {"fields": ("first_name", "last_name", "email")}),
            ("Important dates", {"fields": ("last_login", "date_joined")}),
        )


@admin.register(Membership)
class MembershipAdmin(ClassroomScopedAdmin):
    """Who is in which classroom as what; members join with the classroom's code.

    Read-only, as in the classroom's roster: the role follows from how someone came in (the
    instructor creates the class, students join with its code), and an edited role would
    grant nothing but drop the student from the grades.
    """

    classroom_path = "classroom"
    read_only_records = True  # classroom_create and classroom_join write memberships
    ordering = ("classroom_id", "role", "user__username")
    list_display = ("user", "classroom", "role", "joined_at")
    list_filter = ("role", ("classroom", related_only))
    search_fields = ("user__username", "user__first_name", "user__last_name", "classroom__name")
    list_select_related = ("user", "classroom")
    fields = ("user", "classroom", "role", "joined_at")


@admin.register(ClassroomPocket)
class ClassroomPocketAdmin(ClassroomScopedAdmin):
    """The house, insurance fund and fee pockets of each classroom (read-only)."""

    classroom_path = "classroom"
    read_only_records = True
    list_display = ("classroom", "kind", "balance")
    list_filter = ("kind", ("classroom", related_only))
    search_fields = ("classroom__name",)
    list_select_related = ("classroom",)


class LedgerEntryInline(ReadOnlyInline):
    model = LedgerEntry
    fields = ("pocket", "account", "position_id", "order_id", "amount")
    readonly_fields = fields


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ClassroomScopedAdmin):
    """Every movement of paper money, with its balanced entries (read-only)."""

    classroom_path = "classroom"
    read_only_records = True
    ordering = ("-id",)  # the latest movement first: the one an instructor just made
    list_display = ("id", "created_at", "classroom", "kind", "memo", "position_id", "created_by")
    list_filter = ("kind", ("classroom", related_only), ("created_by", related_only))
    search_fields = ("memo", "=position_id", "=id")
    list_select_related = ("classroom", "created_by")
    date_hierarchy = "created_at"
    inlines = [LedgerEntryInline]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ClassroomScopedAdmin):
    """One leg of a ledger transaction (read-only)."""

    classroom_path = "classroom"
    read_only_records = True
    ordering = ("-id",)
    list_display = (
        "id", "transaction", "classroom", "pocket", "account", "position_id", "order_id", "amount",
    )  # fmt: skip
    list_filter = ("pocket", ("classroom", related_only), "transaction__kind")
    search_fields = ("=transaction__id", "=position_id", "=order_id", "account__user__username")
    list_select_related = ("transaction", "classroom", "account__user", "account__classroom")
