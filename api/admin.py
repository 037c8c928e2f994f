"""The admin of API keys and of students' sign-in: who runs bots, stopping one, new passwords.

The users admin is extended here, not in ``accounts.admin``, because a new password may come
with signing the student out everywhere, which revokes their API keys too.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.forms import SetPasswordForm
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from accounts.admin import UserAdmin as AccountsUserAdmin
from accounts.admin_scoping import in_a_class_not_taught_by, password_refusal
from accounts.credentials import live_session_count, user_set_password
from accounts.models import User
from api.models import ApiKey
from api.services import api_key_revoke, api_keys_revoke_all, key_works, working_keys
from liquidation.admin import InstructorActionsMixin
from liquidation.instructor import Deactivation, user_set_active
from web.attempts import sign_in_forgive


class KeyStatusFilter(admin.SimpleListFilter):
    """Active, expired or revoked, as the status column says (``ApiKey.is_active``)."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "active"), ("expired", "expired"), ("revoked", "revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(key_works(now))
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
        return scoped.exclude(in_a_class_not_taught_by(request.user.pk, outer="user_id"))

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # Django lets a list be filtered on any field of its own through the URL; on the hash,
        # ?key_hash__startswith= would give it away one digit at a time, as Django's own user
        # admin refuses for the password.
        return not lookup.startswith("key_hash") and super().lookup_allowed(lookup, value, request)

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


# --- students' passwords --------------------------------------------------------------


class StudentPasswordForm(SetPasswordForm):  # type: ignore[type-arg]
    """Django's new-password form (typed twice, through the site's password validators, which
    compare it with the student's own name), plus signing the student out everywhere."""

    sign_out_everywhere = forms.BooleanField(
        required=False,
        label="Sign them out everywhere",
        help_text="Ends every session they are signed in with (browsers, phones) and revokes "
        "their API keys, so that nobody who had their password or a key keeps access; they "
        "make new keys on their API keys page. Leave it off if they only forgot the password: "
        "where they are signed in they stay signed in, and their bots keep running.",
    )


def deactivation_message(user: User, done: Deactivation) -> str:
    """What the operator is told after deactivating ``user``."""
    said = (
        f"{user} is deactivated: {len(done.cancelled)} resting order(s) that would have opened "
        "a position were cancelled, their holds back in the free balance. Open positions stay "
        "open with their take-profit, stop-loss and reduce-only orders, and the engine still "
        "liquidates them; their instructor may reset or freeze the account."
    )
    if done.left_resting:
        said += (
            f" {len(done.left_resting)} order(s) whose hold the free balance could not take back "
            "still rest; the engine will not fill them."
        )
    return said


admin.site.unregister(User)


@admin.register(User)
class UserAdmin(InstructorActionsMixin, AccountsUserAdmin):
    """Users, with the instructor's action that sets a new password for one of their students."""

    actions = ["set_password"]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # Ticking "Active" off (or on) goes through the service, which cancels the resting
        # orders of a deactivated student; the rest of the page is saved as usual after it.
        if change and "is_active" in form.changed_data:
            done = user_set_active(user_id=obj.pk, active=obj.is_active)
            if not obj.is_active:
                self.message_user(request, deactivation_message(obj, done), messages.INFO)
        super().save_model(request, obj, form, change)

    def has_set_password_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("accounts.set_student_password"))

    @method_decorator(sensitive_post_parameters("new_password1", "new_password2"))
    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # The action posts the new password here: keep it out of error reports.
        return super().changelist_view(request, extra_context)

    @admin.action(description="Set a new password", permissions=["set_password"])
    def set_password(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        selected = list(queryset[:2])
        if len(selected) != 1:
            self.message_user(
                request,
                "Nothing was changed. Select one student at a time: each gets a password of "
                "their own.",
                messages.ERROR,
            )
            return None
        student: User = selected[0]
        refusal = password_refusal(request.user, student)
        if refusal is not None:
            self.message_user(request, f"Nothing was changed. {refusal}", messages.ERROR)
            return None
        form = StudentPasswordForm(student, request.POST if self.confirmed(request) else None)
        if form.is_valid():
            sign_out = bool(form.cleaned_data["sign_out_everywhere"])
            with transaction.atomic():
                sessions = user_set_password(
                    user_id=student.pk,
                    password=form.cleaned_data["new_password1"],
                    sign_out_everywhere=sign_out,
                )
                keys = api_keys_revoke_all(user_id=student.pk) if sign_out else 0
                if sign_out:
                    logged = (
                        f"Set a new password and signed them out everywhere: {sessions} "
                        f"session(s) ended, {keys} API key(s) revoked."
                    )
                    outcome = (
                        f"They are signed out everywhere: {sessions} session(s) ended and "
                        f"{keys} API key(s) revoked."
                    )
                else:
                    logged = (
                        "Set a new password; their sessions and API keys were left as they were."
                    )
                    where = (
                        f"Their {sessions} session(s) stay signed in"
                        if sessions
                        else "They were signed in nowhere"
                    )
                    outcome = f"{where}, and their API keys keep working."
                self.log_change(request, student, logged)
            sign_in_forgive(student.get_username())
            self.message_user(
                request,
                f"New password set for {student}. {outcome} Tell them the password yourself (it "
                "is not shown again); once signed in, they can change it by clicking their name "
                "at the top of the page.",
                messages.SUCCESS,
            )
            return None
        return self.confirmation(
            request,
            queryset,
            action="set_password",
            title=f"Set a new password for {student}",
            question="Set a new password for this student?",
            consequence="Their old password stops working at once. They are signed in with "
            f"{live_session_count(user_id=student.pk)} session(s) and have "
            f"{working_keys(student.pk).count()} API key(s) that work. Their failed sign-ins are "
            "forgotten: if they were refused for too many, they can sign in again at once.",
            form=form,
            confirm_label="Set the password",
        )
