"""An instructor sets a new password for a student of their own classrooms who forgot theirs."""

from __future__ import annotations

from types import TracebackType

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.test import Client, RequestFactory
from django.urls import reverse
from django.views.debug import SafeExceptionReporterFilter

from accounts.credentials import user_set_password
from accounts.errors import NotFound
from accounts.models import Membership, User
from accounts.services import classroom_join
from api.models import ApiKey
from api.services import api_key_create
from tests.admin.conftest import make_instructor
from tests.api.conftest import client_for
from tests.factories import UserFactory, make_classroom
from web import attempts

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:accounts_user_changelist")
OLD = "ringfence-test"  # every factory user's password
NEW = "plum-harbour-42"


def set_password(client: Client, user: User, password: str = NEW, **extra: str):
    """Ask for the action on ``user``, then confirm it with ``password`` typed twice."""
    selected = {"action": "set_password", "_selected_action": [user.pk]}
    asked = client.post(CHANGELIST, selected)
    confirmed = client.post(
        CHANGELIST,
        {**selected, "confirm": "yes", "new_password1": password, "new_password2": password,
         **extra},
        follow=True,
    )  # fmt: skip
    return asked, confirmed


def signs_in(username: str, password: str) -> bool:
    response = Client().post(reverse("login"), {"username": username, "password": password})
    return response.status_code == 302


def signed_in(client: Client) -> bool:
    return client.get(reverse("classrooms")).status_code == 200


def logged(user: User) -> list[str]:
    return [e.get_change_message() for e in LogEntry.objects.filter(object_id=str(user.pk))]


def test_alpha_sets_a_new_password_and_the_student_signs_in_with_it_not_the_old(
    world, alpha_client
):
    student = User.objects.get(username="alpha-student-2")
    asked, done = set_password(alpha_client, student)
    page = asked.content.decode()
    assert "Set a new password for alpha-student-2" in page and "Sign them out everywhere" in page
    assert student.check_password(OLD)  # nothing happens before she confirms
    text = done.content.decode()
    assert "New password set for alpha-student-2. They were signed in nowhere" in text
    assert signs_in("alpha-student-2", NEW)
    assert not signs_in("alpha-student-2", OLD)
    # The history says what was done, never the password.
    history = alpha_client.get(reverse("admin:accounts_user_history", args=[student.pk]))
    assert "Set a new password" in history.content.decode()
    assert logged(student) and all(NEW not in message for message in logged(student))
    assert NEW not in text
    # The password was posted as a sensitive parameter: error reports leave it out.
    assert {"new_password1", "new_password2"} <= set(done.wsgi_request.sensitive_post_parameters)


def test_the_students_sessions_and_keys_stay_unless_she_signs_them_out(world, alpha_client):
    student = User.objects.get(username="alpha-student-1")
    phone = Client()
    phone.force_login(student)
    bot = client_for(api_key_create(user_id=student.pk, name="phone bot", scope="trade").raw)
    _, done = set_password(alpha_client, student)
    assert (
        "Their 1 session(s) stay signed in, and their API keys keep working"
        in done.content.decode()
    )
    assert signed_in(phone)
    assert bot.get("/api/v1/me").status_code == 200
    assert not ApiKey.objects.filter(user=student, revoked_at__isnull=False).exists()


def test_a_session_that_an_earlier_password_change_ended_stays_ended(world, alpha_client):
    """Someone signed in as the student before she changed her password herself is signed out
    by that change, though their session is only removed on their next request. A password
    the instructor sets later keeps the student's live sessions, never that one."""
    student = User.objects.get(username="alpha-student-1")
    intruder, own = Client(), Client()
    intruder.force_login(student)
    own.force_login(student)
    changed = own.post(
        reverse("password_change"),
        {"old_password": OLD, "new_password1": "quince-lantern-58",
         "new_password2": "quince-lantern-58"},
    )  # fmt: skip
    assert changed.status_code == 302
    selected = {"action": "set_password", "_selected_action": [student.pk]}
    asked = alpha_client.post(CHANGELIST, selected).content.decode()
    assert "signed in with 1 session(s)" in asked
    _, done = set_password(alpha_client, student)
    assert "Their 1 session(s) stay signed in" in done.content.decode()
    assert signed_in(own)
    assert not signed_in(intruder)


def test_signing_out_everywhere_ends_sessions_and_revokes_the_keys(world, alpha_client):
    student = User.objects.get(username="alpha-student-1")
    phone, laptop = Client(), Client()
    phone.force_login(student)
    laptop.force_login(student)
    bot = client_for(api_key_create(user_id=student.pk, name="phone bot", scope="trade").raw)
    selected = {"action": "set_password", "_selected_action": [student.pk]}
    asked = alpha_client.post(CHANGELIST, selected).content.decode()
    assert "signed in with 2 session(s) and have 2 API key(s) that work" in asked
    other = User.objects.get(username="alpha-student-2")
    neighbour = Client()
    neighbour.force_login(other)
    _, done = set_password(alpha_client, student, sign_out_everywhere="on")
    text = done.content.decode()
    assert "signed out everywhere: 2 session(s) ended and 2 API key(s) revoked" in text
    assert not signed_in(phone) and not signed_in(laptop)
    assert bot.get("/api/v1/me").status_code == 401
    assert not ApiKey.objects.filter(user=student, revoked_at__isnull=True).exists()
    assert signed_in(neighbour)  # other students are not touched
    assert signed_in(alpha_client)
    assert any("2 session(s) ended, 2 API key(s) revoked" in m for m in logged(student))


@pytest.mark.parametrize(
    ("password", "error"),
    [
        ("short1", "This password is too short."),
        ("password123", "This password is too common."),
        ("48151623420815", "This password is entirely numeric."),
        ("alpha-student-2", "The password is too similar to the username."),
    ],
)
def test_the_new_password_goes_through_the_password_validators(
    world, alpha_client, password, error
):
    student = User.objects.get(username="alpha-student-2")
    _, refused = set_password(alpha_client, student, password)
    page = refused.content.decode()
    assert error in page and "Set a new password for alpha-student-2" in page
    assert f'value="{password}"' not in page  # not echoed back into the form
    student.refresh_from_db()
    assert student.check_password(OLD) and not logged(student)


def test_the_two_typed_passwords_must_match(world, alpha_client):
    student = User.objects.get(username="alpha-student-2")
    selected = {"action": "set_password", "_selected_action": [student.pk], "confirm": "yes"}
    asked = alpha_client.post(
        CHANGELIST, {**selected, "new_password1": NEW, "new_password2": NEW + "x"}
    )
    assert asked.context["form"].has_error("new_password2", "password_mismatch")
    assert "Set a new password for alpha-student-2" in asked.content.decode()
    student.refresh_from_db()
    assert student.check_password(OLD) and not logged(student)


def assert_refused(client: Client, user: User, reason: str) -> None:
    _, done = set_password(client, user)
    text = done.content.decode()
    assert "Nothing was changed." in text and reason in text, text
    assert "Sign them out everywhere" not in text  # no form was offered
    user.refresh_from_db()
    assert user.check_password(OLD) and not signs_in(user.username, NEW)
    assert not logged(user)


def test_alpha_may_not_for_a_student_also_in_another_instructors_class(world, alpha_client):
    shared = User.objects.get(username="alpha-student-2")
    classroom_join(user_id=shared.pk, join_code=world.bravo_class.join_code)
    assert_refused(alpha_client, shared, "is also in a class you do not teach")


def test_alpha_may_not_for_staff_or_an_instructor_in_her_class(world, alpha_client):
    staff = UserFactory.create(username="helper", is_staff=True)
    operator = UserFactory.create(username="operator", is_superuser=True)
    co_teacher = UserFactory.create(username="co-teacher")  # no staff flag
    for user in (staff, operator):
        classroom_join(user_id=user.pk, join_code=world.alpha_class.join_code)
        assert_refused(alpha_client, user, "is staff")
    classroom_join(user_id=co_teacher.pk, join_code=world.alpha_class.join_code)
    Membership.objects.filter(user=co_teacher).update(role=Membership.Role.INSTRUCTOR)
    assert_refused(alpha_client, co_teacher, "is an instructor")


def test_alpha_may_not_for_someone_who_teaches_a_class_of_their_own(world, alpha_client):
    former = UserFactory.create(username="former-teacher")  # staff flag since taken away
    make_classroom(instructor=former, name="Evening class")
    classroom_join(user_id=former.pk, join_code=world.alpha_class.join_code)
    assert_refused(alpha_client, former, "is an instructor")


def test_alpha_may_not_for_herself(world, alpha_client):
    _, done = set_password(alpha_client, world.alpha)
    assert "That is you" in done.content.decode()
    world.alpha.refresh_from_db()
    assert world.alpha.check_password(OLD) and not logged(world.alpha)


def test_alpha_may_not_for_a_deactivated_student(world, alpha_client):
    student = User.objects.get(username="alpha-student-2")
    User.objects.filter(pk=student.pk).update(is_active=False)
    assert_refused(alpha_client, student, "deactivated")


def test_another_instructors_student_or_bravo_is_not_found(world, alpha_client):
    for user in (User.objects.get(username="bravo-student-1"), world.bravo):
        selected = {"action": "set_password", "_selected_action": [user.pk], "confirm": "yes"}
        response = alpha_client.post(
            CHANGELIST, {**selected, "new_password1": NEW, "new_password2": NEW}
        )
        assert response.status_code == 404
        user.refresh_from_db()
        assert user.check_password(OLD) and not logged(user)


def test_one_student_at_a_time(world, alpha_client):
    first, second = User.objects.filter(username__startswith="alpha-student-").order_by("pk")
    selected = {"action": "set_password", "_selected_action": [first.pk, second.pk]}
    page = alpha_client.post(
        CHANGELIST, {**selected, "confirm": "yes", "new_password1": NEW, "new_password2": NEW},
        follow=True,
    ).content.decode()  # fmt: skip
    assert "Select one student at a time" in page
    for user in (first, second):
        user.refresh_from_db()
        assert user.check_password(OLD) and not logged(user)


def test_staff_without_the_permission_is_not_offered_the_action(world, client):
    helper = UserFactory.create(username="helper", is_staff=True)
    helper.user_permissions.add(Permission.objects.get(codename="view_user"))
    make_classroom(instructor=helper, name="Helper class")
    student = UserFactory.create(username="helper-student")
    classroom_join(user_id=student.pk, join_code=helper.taught_classrooms.get().join_code)
    client.force_login(helper)
    assert "Set a new password" not in client.get(CHANGELIST).content.decode()
    set_password(client, student)
    student.refresh_from_db()
    assert student.check_password(OLD) and not logged(student)


def test_the_instructors_group_may_and_the_operator_may_for_a_shared_student(world, client):
    assert make_instructor("charlie").has_perm("accounts.set_student_password")
    shared = User.objects.get(username="alpha-student-2")
    classroom_join(user_id=shared.pk, join_code=world.bravo_class.join_code)
    client.force_login(UserFactory.create(username="root", is_staff=True, is_superuser=True))
    set_password(client, shared)
    assert signs_in("alpha-student-2", NEW)


def test_a_student_locked_out_by_failed_sign_ins_signs_in_with_the_new_password_at_once(
    world, alpha_client
):
    student = User.objects.get(username="alpha-student-2")
    guesses = [f"my-guess-{n}" for n in range(attempts.LIMIT)]
    for guess in guesses:
        assert not signs_in("alpha-student-2", guess)
    assert not signs_in("alpha-student-2", OLD)  # locked out, even with the right password
    set_password(alpha_client, student)
    assert signs_in("alpha-student-2", NEW)
    # A guesser who goes on guessing is counted again from zero, and stopped again.
    for guess in guesses:
        assert not signs_in("alpha-student-2", guess)
    assert not signs_in("alpha-student-2", NEW)


def test_a_new_password_set_while_redis_is_down_is_set_and_works_once_redis_is_back(
    own_redis, world, alpha_client
):
    student = User.objects.get(username="alpha-student-2")
    own_redis.kill()
    _, done = set_password(alpha_client, student)
    assert done.status_code == 200
    assert "New password set for alpha-student-2" in done.content.decode()
    student.refresh_from_db()
    assert student.check_password(NEW)
    assert not signs_in("alpha-student-2", NEW)  # sign-in itself waits for the counts
    own_redis.restart()
    assert signs_in("alpha-student-2", NEW)


def test_a_password_being_set_stays_out_of_error_reports(world):
    """The service holds the new password as an argument: a failure inside it (here a user
    gone meanwhile) must not write it into the report of the error."""
    missing = User.objects.order_by("-pk").values_list("pk", flat=True)[0] + 1
    with pytest.raises(NotFound) as caught:
        user_set_password(user_id=missing, password=NEW, sign_out_everywhere=False)
    request = RequestFactory().post(CHANGELIST)
    reporter_filter = SafeExceptionReporterFilter()
    frames = {}
    tb: TracebackType | None = caught.tb
    while tb is not None:
        frames[tb.tb_frame.f_code.co_name] = dict(
            reporter_filter.get_traceback_frame_variables(request, tb.tb_frame)
        )
        tb = tb.tb_next
    service = frames["user_set_password"]
    assert service["password"] == reporter_filter.cleansed_substitute
    assert service["user_id"] == missing
    assert not [name for name, names in frames.items() if NEW in repr(names)]
