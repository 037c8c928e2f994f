"""Instructors see which of their students run bots, and can stop one by revoking its key."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from accounts.models import User
from accounts.services import classroom_join
from api.models import ApiKey
from api.services import api_key_create, api_key_revoke
from tests.api.conftest import client_for

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:api_apikey_changelist")


def test_alpha_lists_her_students_keys_without_their_secret(world, alpha_client):
    key = ApiKey.objects.get(name="alpha momentum bot")
    page = alpha_client.get(CHANGELIST).content.decode()
    assert "alpha momentum bot" in page and "alpha-student-1" in page
    assert f"rf_{key.prefix}_…" in page
    detail = alpha_client.get(reverse("admin:api_apikey_change", args=[key.pk]))
    assert detail.status_code == 200
    assert key.key_hash not in page and key.key_hash not in detail.content.decode()
    assert alpha_client.get(reverse("admin:api_apikey_add")).status_code == 403
    # Read only: posting a change is refused and changes nothing.
    alpha_client.post(reverse("admin:api_apikey_change", args=[key.pk]), {"name": "renamed"})
    assert ApiKey.objects.get(pk=key.pk).name == "alpha momentum bot"


def test_alpha_revokes_a_students_key_and_its_bot_is_refused(world, alpha_client):
    student = User.objects.get(username="alpha-student-2")
    created = api_key_create(user_id=student.pk, name="flooding bot", scope="trade")
    bot = client_for(created.raw)
    assert bot.get("/api/v1/me").status_code == 200
    selected = {"action": "revoke", "_selected_action": [created.api_key.pk]}
    asked = alpha_client.post(CHANGELIST, selected).content.decode()
    assert "Revoke these keys?" in asked and "flooding bot" in asked
    assert bot.get("/api/v1/me").status_code == 200  # nothing happens before she confirms
    response = alpha_client.post(CHANGELIST, {**selected, "confirm": "yes"}, follow=True)
    assert "Revoked 1 key(s)" in response.content.decode()
    refused = bot.get("/api/v1/me")
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "This API key has been revoked."
    # The other keys of her class are untouched, and the key's history says who revoked it.
    assert ApiKey.objects.get(name="alpha momentum bot").revoked_at is None
    history = reverse("admin:api_apikey_history", args=[created.api_key.pk])
    assert "Revoked" in alpha_client.get(history).content.decode()


def test_keys_of_a_student_also_in_another_instructors_class_are_not_hers(world, alpha_client):
    """The key may run the other class's bot: alpha neither sees nor revokes it."""
    shared = User.objects.get(username="alpha-student-2")
    classroom_join(user_id=shared.pk, join_code=world.bravo_class.join_code)
    created = api_key_create(user_id=shared.pk, name="bravo class bot", scope="trade")
    assert "bravo class bot" not in alpha_client.get(CHANGELIST).content.decode()
    detail = reverse("admin:api_apikey_change", args=[created.api_key.pk])
    assert alpha_client.get(detail).status_code == 404
    selected = {"action": "revoke", "_selected_action": [created.api_key.pk], "confirm": "yes"}
    alpha_client.post(CHANGELIST, selected)
    assert ApiKey.objects.get(pk=created.api_key.pk).revoked_at is None
    assert client_for(created.raw).get("/api/v1/me").status_code == 200
    # Her own students' keys are still hers.
    assert "alpha momentum bot" in alpha_client.get(CHANGELIST).content.decode()


def test_revoking_a_revoked_key_again_neither_counts_nor_logs_it(world, alpha_client):
    student = User.objects.get(username="alpha-student-2")
    first = api_key_create(user_id=student.pk, name="old bot", scope="trade").api_key
    second = api_key_create(user_id=student.pk, name="new bot", scope="trade").api_key
    alpha_client.post(
        CHANGELIST, {"action": "revoke", "_selected_action": [first.pk], "confirm": "yes"}
    )
    revoked_at = ApiKey.objects.get(pk=first.pk).revoked_at
    assert revoked_at is not None

    selected = {"action": "revoke", "_selected_action": [first.pk, second.pk], "confirm": "yes"}
    page = alpha_client.post(CHANGELIST, selected, follow=True).content.decode()

    assert "Revoked 1 key(s)" in page
    assert ApiKey.objects.get(pk=first.pk).revoked_at == revoked_at
    assert ApiKey.objects.get(pk=second.pk).revoked_at is not None
    entries = LogEntry.objects.filter(object_id=str(first.pk), change_message__contains="Revoked")
    assert entries.count() == 1
    # Only revoked keys selected: nothing to do, and the message says so.
    selected = {"action": "revoke", "_selected_action": [first.pk], "confirm": "yes"}
    page = alpha_client.post(CHANGELIST, selected, follow=True).content.decode()
    assert "Nothing was changed: the selected keys were revoked already." in page
    assert "Revoked 0 key(s)" not in page


def test_keys_filter_by_status_so_the_active_bots_are_easy_to_find(world, alpha_client):
    from datetime import timedelta

    from django.utils import timezone

    student = User.objects.get(username="alpha-student-2")
    running = api_key_create(user_id=student.pk, name="running bot", scope="trade").api_key
    stopped = api_key_create(user_id=student.pk, name="stopped bot", scope="trade").api_key
    lapsed = api_key_create(user_id=student.pk, name="lapsed bot", scope="trade").api_key
    api_key_revoke(user_id=student.pk, api_key_id=stopped.pk)
    ApiKey.objects.filter(pk=lapsed.pk).update(expires_at=timezone.now() - timedelta(days=1))
    shown = {
        status: alpha_client.get(CHANGELIST, {"status": status}).content.decode()
        for status in ("active", "expired", "revoked")
    }
    assert running.name in shown["active"] and "alpha momentum bot" in shown["active"]
    assert stopped.name not in shown["active"] and lapsed.name not in shown["active"]
    assert lapsed.name in shown["expired"] and running.name not in shown["expired"]
    assert stopped.name in shown["revoked"] and lapsed.name not in shown["revoked"]


@pytest.mark.parametrize("lookup", ["key_hash", "key_hash__startswith", "key_hash__regex"])
def test_the_keys_list_cannot_be_filtered_on_the_stored_hash(world, alpha_client, lookup):
    """A filter on the hash typed into the URL would tell, one digit at a time, what the page
    never shows: the list is refused rather than narrowed."""
    key = ApiKey.objects.get(name="alpha momentum bot")
    value = {"key_hash": key.key_hash, "key_hash__regex": f"^{key.key_hash[0]}"}.get(
        lookup, key.key_hash[:2]
    )
    answer = alpha_client.get(CHANGELIST, {lookup: value})
    assert answer.status_code == 400
    assert key.key_hash not in answer.content.decode()
    # The list's own filters still work.
    assert alpha_client.get(CHANGELIST, {"status": "active"}).status_code == 200
