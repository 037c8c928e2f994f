"""Admin scoping: an instructor sees and changes only their own classrooms and what is in them.

Every admin class of Ringfence declares ``classroom_path``, the ORM path from its model
to the classroom it belongs to (``""`` for the classroom itself). The mixin narrows the
querysets of lists, change pages, search, filters, autocomplete and actions to that
path; superusers see everything. Objects outside the scope answer 404, never a redirect
that would confirm they exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import unquote
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Exists, Model, OuterRef, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse

from accounts.form_fields import WholeNumberField, WrittenDecimalField
from accounts.models import Classroom, Membership, User
from accounts.money import plain

# What a malformed id for the key type raises: not a number, or (on SQLite) a number beyond
# 64 bits, which PostgreSQL simply does not find.
MALFORMED_ID = (ValueError, TypeError, OverflowError, ValidationError)


def _sees_everything(user: Any) -> bool:
    return bool(user.is_active and user.is_superuser)


def scope_to_instructor(qs: QuerySet[Any], *, path: str | None, user: Any) -> QuerySet[Any]:
    """``qs`` narrowed to the rows under classrooms ``user`` teaches (all rows for superusers).

    ``path`` leads from the model to its classroom; ``None`` means the model belongs to no
    classroom, so only superusers see it.
    """
    if _sees_everything(user):
        return qs
    if path is None or not user.is_authenticated:
        return qs.none()
    key = f"{path}__instructor_id" if path else "instructor_id"
    return qs.filter(**{key: user.pk})


def scoped_choices(site: admin.AdminSite, db_field: Any, request: HttpRequest) -> Any:
    """The choices of a foreign key, narrowed like the admin pages of the model it points to."""
    related_admin = site._registry.get(db_field.related_model)
    if isinstance(related_admin, ClassroomScopedAdmin):
        return related_admin.scope(db_field.related_model._default_manager.all(), request)
    return None  # the field's own default


class PlainDecimalField(WrittenDecimalField):
    """A decimal form field that shows a stored value as written (0, 0.004), not as ``0E-8``:
    the embedded SQLite database hands back Decimals quantised to the column's places."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, Decimal) and value.is_finite():
            return plain(value)
        return value

    def to_python(self, value: Any) -> Any:
        # Refused here rather than in ``validate``: a signalling NaN raises when compared,
        # and an inline's form compares what was typed with its initial value first.
        number: Decimal | None = super().to_python(value)
        if number is not None and not number.is_finite():
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        return number


# The form fields of every Ringfence admin page: decimals shown as written, and whole numbers
# read in ASCII digits only. The admin takes the first class of a column's MRO that it has an
# override for, and has its own (a widget) for BigIntegerField: so both are named; every
# other integer column (small, positive) is an IntegerField before anything else here.
PLAIN_NUMBERS: Mapping[type[models.Field[Any, Any]], Mapping[str, Any]] = {
    models.DecimalField: {"form_class": PlainDecimalField},
    models.IntegerField: {"form_class": WholeNumberField},
    models.BigIntegerField: {"form_class": WholeNumberField},
}


def save_edited_fields(obj: Model, form: forms.BaseForm) -> None:
    """Save a changed ``obj``, writing only the model fields that ``form`` edits.

    The rest of the row belongs to services and the engine (a free balance, an instrument's
    mark, a feed's step and tick slot), which may have moved it since this request read it:
    a full save would put it back.
    """
    names = [
        f.name for f in obj._meta.concrete_fields if f.name in form.fields and not f.primary_key
    ]
    obj.save(update_fields=names)


class EditedFieldsForm(forms.ModelForm):  # type: ignore[type-arg]
    """A model form that saves a changed row through ``save_edited_fields``; for inlines,
    which save their rows through the form rather than through ``ModelAdmin.save_model``."""

    def save(self, commit: bool = True) -> Any:
        if not commit or self.instance._state.adding:
            return super().save(commit)
        instance = super().save(commit=False)
        save_edited_fields(instance, self)
        self.save_m2m()
        return instance


class ClassroomScopedAdmin(admin.ModelAdmin):
    """Base of every Ringfence admin: narrows everything to the instructor's classrooms."""

    formfield_overrides = PLAIN_NUMBERS
    classroom_path: str | None = None
    # Money and ledger records: nobody adds, changes or deletes them here; services do.
    read_only_records = False

    # --- querysets ------------------------------------------------------------------

    def scope(self, qs: QuerySet[Any], request: HttpRequest) -> QuerySet[Any]:
        return scope_to_instructor(qs, path=self.classroom_path, user=request.user)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return self.scope(super().get_queryset(request), request)

    def in_scope(self, request: HttpRequest, obj: Model) -> bool:
        if _sees_everything(request.user):
            return True
        return self.scope(self.model._default_manager.filter(pk=obj.pk), request).exists()

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        choices = scoped_choices(self.admin_site, db_field, request)
        if choices is not None:
            kwargs.setdefault("queryset", choices)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            return
        # Services and the engine write these rows too (a free balance, a mark, a feed's
        # step) while the page is saved: write only what the page edits, which for a
        # trading account is nothing.
        save_edited_fields(obj, form)

    # --- permissions ------------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        if self.read_only_records:
            return False
        return super().has_add_permission(request, *args)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and not self.in_scope(request, obj):
            return False
        return super().has_view_permission(request, obj)

    def _may_write(self, request: HttpRequest, obj: Any) -> bool:
        return not self.read_only_records and (obj is None or self.in_scope(request, obj))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may_write(request, obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may_write(request, obj) and super().has_delete_permission(request, obj)

    # --- views: someone else's object is not found -------------------------------------

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        # A page on which nothing can be edited (a trading account, a scenario: they change
        # through actions) offers "Close" rather than Save buttons that would save nothing.
        nothing_editable = not context["adminform"].form.fields and not context.get(
            "has_editable_inline_admin_formsets"
        )
        if change and nothing_editable:
            context.update(
                show_save=False, show_save_and_continue=False, show_save_and_add_another=False
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _require_in_scope(self, request: HttpRequest, object_id: str | None) -> None:
        if object_id is None:
            return
        try:
            exists = self.get_queryset(request).filter(pk=unquote(object_id)).exists()
        except MALFORMED_ID:
            exists = False
        if not exists:
            raise Http404("No such object.")

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        self._require_in_scope(request, object_id)
        return super().change_view(request, object_id, form_url, extra_context)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        self._require_in_scope(request, object_id)
        return super().delete_view(request, object_id, extra_context)

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        self._require_in_scope(request, object_id)
        return super().history_view(request, object_id, extra_context)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # An action naming rows outside the scope is refused as a whole, rather than
        # silently running on the rows that remain.
        if request.method == "POST" and "action" in request.POST:
            selected = request.POST.getlist(ACTION_CHECKBOX_NAME)
            if selected:
                try:
                    found = self.get_queryset(request).filter(pk__in=selected).count()
                except MALFORMED_ID:
                    found = -1
                if found != len(set(selected)):
                    raise Http404("No such object.")
        return super().changelist_view(request, extra_context)


class ScopedInline(admin.TabularInline):
    """An inline whose foreign-key choices follow the same scoping as the admin pages."""

    extra = 0
    formfield_overrides = PLAIN_NUMBERS

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        choices = scoped_choices(self.admin_site, db_field, request)
        if choices is not None:
            kwargs.setdefault("queryset", choices)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ReadOnlyInline(ScopedInline):
    """A list of records shown under their parent that nobody edits here."""

    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def users_in_scope(user: Any) -> QuerySet[User]:
    """The users an instructor may see: members of their classrooms, and themselves."""
    qs = User.objects.all()
    if _sees_everything(user):
        return qs
    if not user.is_authenticated:
        return qs.none()
    return qs.filter(Q(memberships__classroom__instructor_id=user.pk) | Q(pk=user.pk)).distinct()


def in_a_class_not_taught_by(instructor_id: Any, *, outer: str = "pk") -> Exists:
    """Whether the user that the outer query's field ``outer`` names is a member of some
    classroom that ``instructor_id`` does not teach.

    Such a person is not the instructor's alone: their API keys may run another class's bot,
    and their password signs them in to the other class too. So an instructor neither
    revokes their keys nor sets their password; the site's operator does.
    """
    return Exists(
        Membership.objects.filter(user_id=OuterRef(outer)).exclude(
            classroom__instructor_id=instructor_id
        )
    )


def password_refusal(actor: Any, user: User) -> str | None:
    """Why ``actor`` may not set a new password for ``user`` in the admin, or ``None``.

    An instructor may for a student of their own classrooms who is in no other instructor's
    class (as for API keys); never for themselves, staff, superusers or anyone who teaches.
    Superusers may for anyone but staff, who change theirs on their own user page.
    """
    if user.pk == actor.pk:
        return "That is you: change your own password with “Change password” at the top."
    if user.is_staff or user.is_superuser:
        return (
            f"{user} is staff (an instructor or operator): only the site's operator sets "
            "their password."
        )
    if not user.is_active:
        return f"{user}'s account is deactivated, so they cannot sign in: ask the site's operator."
    if _sees_everything(actor):
        return None
    teaches = Membership.objects.filter(user=user, role=Membership.Role.INSTRUCTOR).exists()
    if teaches or Classroom.objects.filter(instructor=user).exists():
        return f"{user} is an instructor: only the site's operator sets their password."
    students = Membership.objects.filter(
        user=user, role=Membership.Role.STUDENT, classroom__instructor_id=actor.pk
    )
    if not students.exists():
        return f"{user} is not a student of your classrooms."
    if User.objects.filter(pk=user.pk).filter(in_a_class_not_taught_by(actor.pk)).exists():
        return (
            f"{user} is also in a class you do not teach, where the same password signs them "
            "in: ask the site's operator."
        )
    return None
