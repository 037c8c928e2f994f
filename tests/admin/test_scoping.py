"""Instructor Alpha never sees nor touches anything of instructor Bravo's classroom.

The URLs are generated from the admin registry, so a newly registered model is covered
without touching this file (and fails until the fixture gives Bravo a row of it).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.urls import reverse

from accounts.admin_scoping import ClassroomScopedAdmin
from accounts.models import LedgerTransaction
from liquidation.models import PriceFeed
from positions.models import Instrument

BRAVO_MARKERS = (b"bravo", b"BRAUSDT")


def scoped_admins():
    return [
        (model, model_admin)
        for model, model_admin in admin.site._registry.items()
        if isinstance(model_admin, ClassroomScopedAdmin)
    ]


def url(model, view, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def assert_no_bravo(response):
    for marker in BRAVO_MARKERS:
        assert marker not in response.content, (
            f"{marker!r} leaked into {response.request['PATH_INFO']}"
        )


def test_every_model_has_bravo_rows(world):
    missing = [model.__name__ for model, _ in scoped_admins() if not world.bravo_rows[model]]
    assert missing == []


def test_lists_filters_and_search_show_only_alphas_rows(world, alpha_client):
    for model, _ in scoped_admins():
        for query in ("", "?q=student", "?q=USDT", "?q=class", "?q=1", "?all="):
            response = alpha_client.get(url(model, "changelist") + query)
            assert response.status_code == 200, (model, response.status_code)
            shown = {obj.pk for obj in response.context["cl"].result_list}
            assert not shown & world.bravo_rows[model], model
            assert_no_bravo(response)
            for spec in response.context["cl"].filter_specs:
                choices = [str(c.get("display")) for c in spec.choices(response.context["cl"])]
                assert not any("bravo" in c.lower() for c in choices), (model, choices)


def test_alpha_sees_her_own_rows(world, alpha_client):
    """The scoping is not simply empty: Alpha's classroom and students are listed."""
    response = alpha_client.get(url(world.alpha_class.__class__, "changelist"))
    assert [c.pk for c in response.context["cl"].result_list] == [world.alpha_class.pk]
    assert (
        b"alpha-student-1"
        in alpha_client.get(reverse("admin:accounts_tradingaccount_changelist")).content
    )


@pytest.mark.parametrize("view", ["change", "delete", "history"])
def test_bravos_objects_are_not_found(world, alpha_client, view):
    checked = 0
    for model, _ in scoped_admins():
        for pk in world.bravo_rows[model]:
            response = alpha_client.get(url(model, view, quote(pk)))
            assert response.status_code in (403, 404), (model, pk, view, response.status_code)
            checked += 1
    assert checked > 20


def test_posting_to_bravos_change_and_delete_pages_changes_nothing(world, alpha_client):
    classroom = world.bravo_class
    change = alpha_client.post(url(type(classroom), "change", classroom.pk), {"name": "Taken"})
    delete = alpha_client.post(url(type(classroom), "delete", classroom.pk), {"post": "yes"})
    assert (change.status_code, delete.status_code) in [
        (404, 404),
        (403, 403),
        (404, 403),
        (403, 404),
    ]
    classroom.refresh_from_db()
    assert classroom.name == "bravo class"


def test_actions_on_bravos_rows_are_refused(world, alpha_client, rf):
    request = rf.get("/")
    request.user = world.alpha
    ledger_before = LedgerTransaction.objects.count()
    checked = 0
    for model, model_admin in scoped_admins():
        for action in model_admin.get_actions(request):
            for pk in world.bravo_rows[model]:
                for confirm in ({}, {"confirm": "yes"}):
                    response = alpha_client.post(
                        url(model, "changelist"),
                        {"action": action, "_selected_action": [pk], **confirm},
                    )
                    assert response.status_code in (403, 404), (model, action, response.status_code)
                    checked += 1
    assert checked > 10
    assert LedgerTransaction.objects.count() == ledger_before
    world.bravo_class.refresh_from_db()
    assert world.bravo_class.trading_enabled


def test_live_monitor_of_bravos_classroom_is_not_found(world, alpha_client):
    response = alpha_client.get(
        reverse("admin:accounts_classroom_monitor", args=[world.bravo_class.pk])
    )
    assert response.status_code == 404
    own = alpha_client.get(reverse("admin:accounts_classroom_monitor", args=[world.alpha_class.pk]))
    assert own.status_code == 200
    assert_no_bravo(own)


def test_autocomplete_never_offers_bravos_rows(world, alpha_client):
    """Through every relation of every registered model: foreign keys, one-to-one fields (a
    price feed's instrument, the one instructors pick with an autocomplete) and many-to-many
    ones."""
    checked = 0
    answered = set()
    for source_model in admin.site._registry:
        for field in source_model._meta.get_fields():
            if not (field.is_relation and field.concrete):
                continue
            remote: Any = field.related_model
            remote_admin = admin.site._registry.get(remote)
            if remote_admin is None or not remote_admin.search_fields:
                continue
            for term in ("", "bra", "bravo"):
                response = alpha_client.get(
                    "/admin/autocomplete/",
                    {
                        "app_label": source_model._meta.app_label,
                        "model_name": source_model._meta.model_name,
                        "field_name": field.name,
                        "term": term,
                    },
                )
                assert response.status_code in (200, 403), (source_model, field.name)
                if response.status_code == 200:
                    ids = {r["id"] for r in json.loads(response.content)["results"]}
                    bravo = {str(pk) for pk in world.bravo_rows.get(remote, set())}
                    assert not ids & bravo, (source_model, field.name, term)
                    assert_no_bravo(response)
                    answered.add((source_model, field.name))
                    checked += 1
    assert checked > 5
    assert {(PriceFeed, "instrument"), (Instrument, "classroom")} <= answered


def test_unscoped_admins_are_closed_to_instructors(world, alpha_client):
    for model, model_admin in admin.site._registry.items():
        if isinstance(model_admin, ClassroomScopedAdmin):
            continue
        assert alpha_client.get(url(model, "changelist")).status_code == 403, model


def test_add_forms_offer_only_alphas_choices(world, alpha_client):
    checked = 0
    for model, _ in scoped_admins():
        response = alpha_client.get(url(model, "add"))
        if response.status_code == 403:
            continue
        assert response.status_code == 200, model
        assert_no_bravo(response)
        checked += 1
    assert checked >= 3  # classrooms, instruments, price feeds


def test_alphas_own_change_and_history_pages_open(world, alpha_client):
    checked = 0
    for model, _ in scoped_admins():
        pks = set(model._default_manager.values_list("pk", flat=True)) - world.bravo_rows[model]
        for pk in sorted(pks)[:3]:
            for view in ("change", "history"):
                response = alpha_client.get(url(model, view, quote(pk)))
                assert response.status_code == 200, (model, pk, view, response.status_code)
                assert_no_bravo(response)
                checked += 1
    assert checked > 30


def test_a_superuser_sees_both_classrooms_everywhere(world, client):
    from tests.factories import UserFactory

    client.force_login(UserFactory.create(is_staff=True, is_superuser=True))
    for model in admin.site._registry:
        response = client.get(url(model, "changelist"))
        assert response.status_code == 200, model
        if world.bravo_rows.get(model):
            shown = {obj.pk for obj in response.context["cl"].result_list}
            assert shown & world.bravo_rows[model] or response.context["cl"].result_count > 100, (
                model
            )
        add = client.get(url(model, "add"))
        assert add.status_code in (200, 403), model
    assert client.get(reverse("admin:index")).status_code == 200


def test_a_students_user_page_shows_who_they_are_without_password_or_permissions(
    world, alpha_client, admin_client
):
    from accounts.models import User

    student = User.objects.get(username="alpha-student-1")
    page = url(User, "change", student.pk)
    html = alpha_client.get(page).content.decode()
    assert "alpha-student-1" in html and "Date joined" in html
    password_page = reverse("admin:auth_user_password_change", args=[student.pk])
    assert password_page not in html and "Reset password" not in html
    assert "Superuser status" not in html and "pbkdf2" not in html
    assert alpha_client.get(password_page).status_code == 403
    # An operator, who may change users, still has the full page.
    operator = admin_client.get(page).content.decode()
    assert "Reset password" in operator and "Superuser status" in operator


def test_forms_naming_bravos_rows_are_refused_and_write_nothing(world, alpha_client):
    """Add pages and inline rows take only Alpha's rows, whatever id a crafted post names:
    an instrument in Bravo's classroom, a price feed for Bravo's instrument, Bravo's margin
    tier edited from Alpha's instrument page."""
    from liquidation.models import PriceFeed
    from positions.models import Instrument, MarginTier
    from tests.admin.forms import admin_form_data
    from tests.admin.test_market_and_classrooms import tier_post
    from tests.factories import BTC_BRACKETS

    bravo_btc = Instrument.objects.get(classroom=world.bravo_class)
    alpha_btc = Instrument.objects.get(classroom=world.alpha_class)
    bravo_feed = PriceFeed.objects.get(instrument=bravo_btc)
    bravo_tiers = list(MarginTier.objects.filter(instrument=bravo_btc).values())

    instrument = alpha_client.post(
        url(Instrument, "add"), tier_post(world.bravo_class, BTC_BRACKETS)
    )
    assert (
        instrument.status_code == 200 and "classroom" in instrument.context["adminform"].form.errors
    )
    assert not Instrument.objects.filter(symbol="ETHUSDT").exists()

    bravo_feed.delete()  # so that only the scoping, not "one feed each", can refuse it
    feed = alpha_client.post(
        url(PriceFeed, "add"),
        {
            "instrument": bravo_btc.pk, "kind": "manual", "is_active": "on", "seed": "1",
            "volatility": "0.001", "jump_probability": "0", "jump_size": "0",
            "replay_speed": "1", "replay_points-TOTAL_FORMS": "0",
            "replay_points-INITIAL_FORMS": "0",
        },
    )  # fmt: skip
    assert feed.status_code == 200 and "instrument" in feed.context["adminform"].form.errors
    assert not PriceFeed.objects.filter(instrument=bravo_btc).exists()

    page = url(Instrument, "change", alpha_btc.pk)
    data = admin_form_data(alpha_client.get(page))
    data.update(
        {
            "tiers-0-id": str(bravo_tiers[0]["id"]),
            "tiers-0-instrument": str(bravo_btc.pk),
            "tiers-0-mmr": "0.0041",
        }
    )
    assert alpha_client.post(page, data).status_code == 200
    assert list(MarginTier.objects.filter(instrument=bravo_btc).values()) == bravo_tiers
