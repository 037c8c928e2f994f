"""Classrooms created through the service, rules edited, margin tiers validated, money read-only."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.urls import reverse

from accounts.models import Classroom, ClassroomPocket, LedgerTransaction, Membership, User
from liquidation.instructor import classroom_grades
from positions.margin import tiers_from_table
from positions.models import Instrument, MarginTier, Position
from tests.admin.conftest import make_instructor
from tests.admin.forms import admin_form_data
from tests.factories import BTC_BRACKETS, UserFactory, make_classroom, make_instrument
from tests.invariants import assert_ledger_invariants

D = Decimal


def classroom_post(**overrides):
    data = {
        "name": "Options 201",
        "starting_balance": "5000",
        "currency": "USDT",
        "max_leverage": "25",
        "trading_enabled": "on",
        "trading_opens_at_0": "",
        "trading_opens_at_1": "",
        "trading_closes_at_0": "",
        "trading_closes_at_1": "",
        "liquidation_fee_rate": "0.005",
        "leftover_policy": "insurance_fund",
        "ranking": "raw",
        "insurance_fund_seed": "250",
    }
    data.update(overrides)
    return data


def test_instructor_creates_a_classroom_with_pockets_for_herself(db, client):
    teacher = make_instructor("teacher")
    someone = UserFactory.create(is_staff=True)
    client.force_login(teacher)
    response = client.post(
        reverse("admin:accounts_classroom_add"), classroom_post(instructor=someone.pk)
    )
    assert response.status_code == 302, response.context and response.context["errors"]
    classroom = Classroom.objects.get(name="Options 201")
    assert classroom.instructor == teacher  # not the instructor named in the POST
    assert classroom.starting_balance == D(5000) and classroom.max_leverage == 25
    assert set(classroom.pockets.values_list("kind", flat=True)) == {"house", "insurance", "fees"}
    assert Membership.objects.filter(
        classroom=classroom, user=teacher, role=Membership.Role.INSTRUCTOR
    ).exists()
    page = client.get(response["Location"]).content.decode()
    assert "has no instruments yet" in page
    (seed,) = LedgerTransaction.objects.filter(classroom=classroom)
    assert seed.kind == LedgerTransaction.Kind.INSURANCE_SEED
    assert ClassroomPocket.objects.get(classroom=classroom, kind="insurance").balance == D(250)
    assert LogEntry.objects.filter(object_id=str(classroom.pk), action_flag=ADDITION).exists()
    assert_ledger_invariants()


def test_invalid_classroom_rules_are_form_errors_and_write_nothing(db, client):
    client.force_login(make_instructor("teacher"))
    for bad in (
        {"starting_balance": "0"},
        {"max_leverage": "500"},
        {"liquidation_fee_rate": "0.5"},
        {"name": ""},
        {"insurance_fund_seed": "-1"},
        {"starting_balance": "5000000000000000"},  # the form's digits allow it, money does not
        {"insurance_fund_seed": "5000000000000000"},
        {
            "trading_opens_at_0": "2030-01-02", "trading_opens_at_1": "10:00",
            "trading_closes_at_0": "2030-01-01", "trading_closes_at_1": "10:00",
        },
    ):  # fmt: skip
        response = client.post(reverse("admin:accounts_classroom_add"), classroom_post(**bad))
        assert response.status_code == 200, bad
        assert response.context["errors"], bad
    assert not Classroom.objects.exists()
    assert not LedgerTransaction.objects.exists()


def test_form_errors_speak_plainly_instead_of_naming_constraints(db, client):
    client.force_login(make_instructor("teacher"))
    window = {
        "trading_opens_at_0": "2030-01-02", "trading_opens_at_1": "10:00",
        "trading_closes_at_0": "2030-01-01", "trading_closes_at_1": "10:00",
    }  # fmt: skip
    response = client.post(reverse("admin:accounts_classroom_add"), classroom_post(**window))
    assert "Trading must close after it opens." in response.content.decode()
    huge = client.post(
        reverse("admin:accounts_classroom_add"),
        classroom_post(starting_balance="5000000000000000"),
    )
    assert "The amount is too large." in huge.content.decode()
    assert "constraint" not in (response.content + huge.content).decode().lower()


def test_rules_are_editable_on_the_change_page(world, alpha_client):
    page = reverse("admin:accounts_classroom_change", args=[world.alpha_class.pk])
    response = alpha_client.get(page)
    assert b"alpha-student-1" in response.content  # the roster
    data = admin_form_data(response)
    data.update(max_leverage="7", leftover_policy="return_to_trader")
    response = alpha_client.post(page, data)
    assert response.status_code == 302, response.context and response.context["errors"]
    world.alpha_class.refresh_from_db()
    assert world.alpha_class.max_leverage == 7
    assert world.alpha_class.leftover_policy == "return_to_trader"


def test_an_operator_handing_a_class_to_another_instructor_moves_the_instructor_membership(
    world, client
):
    """The roster and the memberships name the class's new instructor, and the one who gave
    it up is no longer listed as teaching it."""
    carol = make_instructor("carol")
    client.force_login(UserFactory.create(is_staff=True, is_superuser=True))
    page = reverse("admin:accounts_classroom_change", args=[world.alpha_class.pk])
    data = admin_form_data(client.get(page))
    data["instructor"] = str(carol.pk)
    response = client.post(page, data)
    assert response.status_code == 302, response.context and response.context["errors"]
    world.alpha_class.refresh_from_db()
    assert world.alpha_class.instructor == carol
    teaching = Membership.objects.filter(
        classroom=world.alpha_class, role=Membership.Role.INSTRUCTOR
    )
    assert [m.user.username for m in teaching] == ["carol"]
    assert not Membership.objects.filter(classroom=world.alpha_class, user=world.alpha).exists()
    students = Membership.objects.filter(classroom=world.alpha_class, role="student").count()
    assert students == 2
    roster = client.get(page).content.decode()
    assert "carol" in roster.split('id="memberships-group"', 1)[1]


def test_a_class_is_not_handed_to_one_of_its_students(world, admin_client):
    student = User.objects.get(username="alpha-student-1")
    User.objects.filter(pk=student.pk).update(is_staff=True)
    before = list(Membership.objects.filter(classroom=world.alpha_class).values())
    page = reverse("admin:accounts_classroom_change", args=[world.alpha_class.pk])
    data = admin_form_data(admin_client.get(page))
    data["instructor"] = str(student.pk)
    response = admin_client.post(page, data)
    assert response.status_code == 200
    assert "alpha-student-1 is a student of alpha class" in str(
        response.context["adminform"].form.errors["instructor"]
    )
    world.alpha_class.refresh_from_db()
    assert world.alpha_class.instructor == world.alpha
    assert list(Membership.objects.filter(classroom=world.alpha_class).values()) == before


def test_the_roster_shows_roles_but_never_changes_them(world, alpha_client):
    """A role edited in the roster would grant nothing and drop the student from the grades."""
    page = reverse("admin:accounts_classroom_change", args=[world.alpha_class.pk])
    data = admin_form_data(alpha_client.get(page))
    assert not [name for name in data if name.endswith("-role")]
    before = dict(Membership.objects.values_list("pk", "role"))
    for index in range(int(data["memberships-TOTAL_FORMS"])):
        data[f"memberships-{index}-role"] = "instructor"
    response = alpha_client.post(page, data)
    assert response.status_code == 302, response.context and response.context["errors"]
    assert dict(Membership.objects.values_list("pk", "role")) == before


def test_a_membership_page_shows_the_role_but_never_changes_it(world, alpha_client):
    student = Membership.objects.filter(
        classroom=world.alpha_class, role=Membership.Role.STUDENT
    ).first()
    assert student is not None
    page = reverse("admin:accounts_membership_change", args=[student.pk])
    response = alpha_client.get(page)
    assert response.status_code == 200
    assert "role" not in response.context["adminform"].form.fields
    alpha_client.post(page, {"role": Membership.Role.INSTRUCTOR})
    student.refresh_from_db()
    assert student.role == Membership.Role.STUDENT  # still in the grade export


def tier_post(classroom, rows, **extra):
    data = {
        "classroom": classroom.pk,
        "symbol": "ETHUSDT",
        "name": "Ether",
        "tick_size": "0.01",
        "lot_size": "0.001",
        "min_notional": "5",
        "max_leverage": "100",
        "taker_fee_rate": "0.0005",
        "spread": "0",
        "is_tradable": "on",
        "mark_price": "3000",
        "tiers-TOTAL_FORMS": str(len(rows)),
        "tiers-INITIAL_FORMS": "0",
        "tiers-MIN_NUM_FORMS": "0",
        "tiers-MAX_NUM_FORMS": "1000",
        "feed-TOTAL_FORMS": "0",
        "feed-INITIAL_FORMS": "0",
        "feed-MIN_NUM_FORMS": "0",
        "feed-MAX_NUM_FORMS": "1",
        "scenarios-TOTAL_FORMS": "0",
        "scenarios-INITIAL_FORMS": "0",
        "scenarios-MIN_NUM_FORMS": "0",
        "scenarios-MAX_NUM_FORMS": "1000",
    }
    for i, (floor, cap, mmr, lev) in enumerate(rows):
        data[f"tiers-{i}-notional_floor"] = str(floor)
        data[f"tiers-{i}-notional_cap"] = "" if cap is None else str(cap)
        data[f"tiers-{i}-mmr"] = str(mmr)
        data[f"tiers-{i}-max_leverage"] = str(lev)
    data.update(extra)
    return data


def test_instrument_with_valid_tiers_gets_derived_maintenance_amounts(world, alpha_client):
    rows = [*BTC_BRACKETS[:-1], (D(12_000_000), None, D("0.02"), 25)]
    response = alpha_client.post(
        reverse("admin:positions_instrument_add"), tier_post(world.alpha_class, rows)
    )
    assert response.status_code == 302, response.context and response.context["errors"]
    eth = Instrument.objects.get(classroom=world.alpha_class, symbol="ETHUSDT")
    stored = [t.as_tier() for t in MarginTier.objects.filter(instrument=eth)]
    assert stored == tiers_from_table(rows)
    assert stored[1].cum == D(50)  # 50,000 x (0.5% - 0.4%)


@pytest.mark.parametrize(
    "rows",
    [
        [(D(10), None, D("0.01"), 50)],  # does not start at 0
        [(D(0), D(100), D("0.01"), 50), (D(200), None, D("0.02"), 25)],  # gap between caps
        [(D(0), D(100), D("0.02"), 50), (D(100), None, D("0.01"), 25)],  # rate decreases
        [(D(0), D(100), D("0.01"), 25), (D(100), None, D("0.02"), 40)],  # leverage increases
        [(D(0), D(100), D("0.01"), 50), (D(50), None, D("0.02"), 25)],  # overlapping
        [],  # no tier
    ],
)
def test_invalid_tiers_are_refused_and_nothing_is_written(world, alpha_client, rows):
    response = alpha_client.post(
        reverse("admin:positions_instrument_add"), tier_post(world.alpha_class, rows)
    )
    assert response.status_code == 200
    assert not Instrument.objects.filter(symbol="ETHUSDT").exists()
    assert not MarginTier.objects.filter(instrument__symbol="ETHUSDT").exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("taker_fee_rate", "-0.01", "greater than or equal to 0"),  # would pay traders
        ("taker_fee_rate", "2", "less than or equal to 0.1"),
        ("min_notional", "-5", "greater than or equal to 0"),
        ("tick_size", "0", "The tick size must be positive."),
        ("lot_size", "0", "The lot size must be positive."),
        ("spread", "-1", "The spread cannot be negative."),
        ("mark_price", "0", "The mark price must be positive."),
        # Where the engine, scenarios and replays stop the mark.
        ("mark_price", "1000000000000.1", "The mark price must be at most 1,000,000,000,000."),
    ],
)
def test_instrument_settings_out_of_range_are_form_errors(
    world, alpha_client, field, value, message
):
    rows = BTC_BRACKETS
    response = alpha_client.post(
        reverse("admin:positions_instrument_add"),
        tier_post(world.alpha_class, rows, **{field: value}),
    )
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Instrument.objects.filter(symbol="ETHUSDT").exists()


@pytest.mark.parametrize("symbol", ["BTC/USDT", "BTC USDT", "=1+2", "-BTC", "<b>BTC</b>"])
def test_a_symbol_a_bot_cannot_name_in_a_url_is_a_form_error(world, alpha_client, symbol):
    response = alpha_client.post(
        reverse("admin:positions_instrument_add"),
        tier_post(world.alpha_class, BTC_BRACKETS, symbol=symbol),
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["symbol"] == [
        "A symbol starts with a letter or digit and holds only letters, digits, '.', '_' or "
        "'-' (no spaces or slashes), such as BTCUSDT or BTC-PERP."
    ]
    assert not Instrument.objects.filter(symbol=symbol).exists()


@pytest.mark.parametrize("field", ["tiers-0-mmr", "tiers-1-notional_floor", "feed-0-volatility"])
@pytest.mark.parametrize("value", ["sNaN", "-sNaN", "NaN", "Infinity"])
def test_a_tier_or_feed_number_that_is_no_number_is_a_form_error(world, alpha_client, field, value):
    feed = {
        "feed-TOTAL_FORMS": "1", "feed-0-kind": "simulated", "feed-0-is_active": "on",
        "feed-0-seed": "1", "feed-0-volatility": "0.001", "feed-0-jump_probability": "0.002",
        "feed-0-jump_size": "0.02", "feed-0-step": "0", "feed-0-replay_speed": "1",
    }  # fmt: skip
    response = alpha_client.post(
        reverse("admin:positions_instrument_add"),
        tier_post(world.alpha_class, BTC_BRACKETS, **{**feed, field: value}),
    )
    assert response.status_code == 200
    assert "Enter a number." in response.content.decode()
    assert not Instrument.objects.filter(symbol="ETHUSDT").exists()


def test_a_symbol_the_classroom_has_in_another_letter_case_is_a_form_error(world, alpha_client):
    taken = Instrument.objects.get(classroom=world.alpha_class).symbol
    response = alpha_client.post(
        reverse("admin:positions_instrument_add"),
        tier_post(world.alpha_class, BTC_BRACKETS, symbol=taken.lower()),
    )
    assert response.status_code == 200
    assert f"This classroom already trades {taken}" in response.content.decode()
    assert Instrument.objects.filter(classroom=world.alpha_class).count() == 1
    # Renaming another instrument on its change page (classroom read-only) is refused alike.
    other = make_instrument(world.alpha_class, symbol="ETHUSDT", mark="3000")
    page = reverse("admin:positions_instrument_change", args=[other.pk])
    data = admin_form_data(alpha_client.get(page))
    data["symbol"] = taken.lower()
    response = alpha_client.post(page, data)
    assert response.status_code == 200
    assert f"This classroom already trades {taken}" in response.content.decode()
    assert Instrument.objects.get(pk=other.pk).symbol == "ETHUSDT"
    # Another classroom trades its own instrument of that symbol.
    second = make_classroom(instructor=world.alpha, name="alpha second class")
    response = alpha_client.post(
        reverse("admin:positions_instrument_add"),
        tier_post(second, BTC_BRACKETS, symbol=taken.lower()),
    )
    assert response.status_code == 302, response.context and response.context["errors"]
    assert Instrument.objects.filter(classroom=second, symbol=taken.lower()).exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [("volatility", "5"), ("volatility", "-3"), ("jump_probability", "5"),
     ("jump_size", "5"), ("replay_speed", "-1")],
)  # fmt: skip
def test_price_feed_settings_out_of_range_are_form_errors(world, alpha_client, field, value):
    feed = {
        "feed-TOTAL_FORMS": "1", "feed-0-kind": "simulated", "feed-0-is_active": "on",
        "feed-0-seed": "1", "feed-0-volatility": "0.001", "feed-0-jump_probability": "0.002",
        "feed-0-jump_size": "0.02", "feed-0-step": "0", "feed-0-replay_speed": "1",
    }  # fmt: skip
    feed[f"feed-0-{field}"] = value
    response = alpha_client.post(
        reverse("admin:positions_instrument_add"),
        tier_post(world.alpha_class, BTC_BRACKETS, **feed),
    )
    assert response.status_code == 200
    assert response.context["inline_admin_formsets"][1].formset.errors[0].get(field)
    assert not Instrument.objects.filter(symbol="ETHUSDT").exists()


def test_tiers_cannot_change_under_open_positions(world, alpha_client):
    btc = Instrument.objects.get(classroom=world.alpha_class)
    page = reverse("admin:positions_instrument_change", args=[btc.pk])
    data = admin_form_data(alpha_client.get(page))
    data["tiers-0-mmr"] = "0.003"
    response = alpha_client.post(page, data)
    assert response.status_code == 200
    assert b"open position" in response.content
    assert btc.tiers.get(notional_floor=0).mmr == D("0.004")


def test_money_records_are_read_only_even_for_superusers(world, client):
    root = UserFactory.create(is_staff=True, is_superuser=True)
    client.force_login(root)
    account = world.alpha_class.accounts.first()
    page = client.get(reverse("admin:accounts_tradingaccount_change", args=[account.pk]))
    assert page.status_code == 200
    assert b'name="balance"' not in page.content
    position = account.positions.first()
    page = client.get(reverse("admin:positions_position_change", args=[position.pk]))
    assert b'name="quantity"' not in page.content and b'name="entry_price"' not in page.content
    txn = LedgerTransaction.objects.order_by("pk")[0]
    for name in (
        "accounts_ledgertransaction",
        "accounts_ledgerentry",
        "accounts_classroompocket",
        "positions_collateral",
        "positions_position",
        "liquidation_liquidationevent",
    ):
        assert client.get(reverse(f"admin:{name}_add")).status_code == 403, name
    assert (
        client.post(
            reverse("admin:accounts_ledgertransaction_delete", args=[txn.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    response = client.post(
        reverse("admin:accounts_ledgertransaction_change", args=[txn.pk]), {"memo": "edited"}
    )
    assert response.status_code == 403
    txn.refresh_from_db()
    assert txn.memo != "edited"
    # The superuser sees both classrooms.
    listing = client.get(reverse("admin:accounts_classroom_changelist"))
    assert {c.pk for c in listing.context["cl"].result_list} == {
        world.alpha_class.pk,
        world.bravo_class.pk,
    }


def test_the_demo_teacher_runs_the_demo_class_from_the_admin(db, client):
    from django.core.management import call_command

    # The test runner turns DEBUG off, which seed_demo takes for a production site.
    call_command("seed_demo", "--allow-production", stdout=io.StringIO())
    client.force_login(User.objects.get(username="teacher"))
    listing = client.get(reverse("admin:accounts_classroom_changelist"))
    assert listing.status_code == 200
    assert [c.join_code for c in listing.context["cl"].result_list] == ["DEMO2026"]


def test_the_admin_index_speaks_of_ringfence_in_plain_names(world, alpha_client):
    page = alpha_client.get("/admin/").content.decode()
    assert "Ringfence classroom admin" in page
    assert "Django administration" not in page
    assert "Ledger entries" in page and "Ledger entrys" not in page
    assert "Auto-deleveraging fills" in page


def test_admin_shows_stored_numbers_as_written_never_in_exponent_form(world, alpha_client):
    btc = Instrument.objects.get(classroom=world.alpha_class)
    page = alpha_client.get(reverse("admin:positions_instrument_change", args=[btc.pk]))
    html = page.content.decode()
    assert 'name="tiers-0-notional_floor" value="0"' in html
    assert "E-" not in html and "E+" not in html
    closed = Position.objects.filter(account__classroom=world.alpha_class, status="closed").first()
    assert closed is not None and str(closed) == f"#{closed.pk} short 0.05 {btc.symbol}"


def test_the_memberships_page_shows_roles_but_never_changes_them(world, alpha_client):
    membership = Membership.objects.get(
        classroom=world.alpha_class, user__username="alpha-student-1"
    )
    page = reverse("admin:accounts_membership_change", args=[membership.pk])
    shown = alpha_client.get(page)
    assert shown.status_code == 200
    assert b"Student" in shown.content and b'name="role"' not in shown.content
    assert b'name="_save"' not in shown.content
    refused = alpha_client.post(page, {"role": "instructor"})
    assert refused.status_code == 403
    membership.refresh_from_db()
    assert membership.role == Membership.Role.STUDENT
    grades = [g.username for g in classroom_grades(classroom_id=world.alpha_class.pk)]
    assert "alpha-student-1" in grades


def test_a_tier_refusal_names_the_notional_as_written(world, alpha_client):
    rows = [(D(0), "5e4", D("0.004"), 125), ("6e4", None, D("0.005"), 100)]
    response = alpha_client.post(
        reverse("admin:positions_instrument_add"), tier_post(world.alpha_class, rows)
    )
    assert response.status_code == 200
    message = " ".join(response.context["inline_admin_formsets"][0].formset.non_form_errors())
    assert "tier ending at 50000 must be followed by a tier starting there" in message
    assert "E+" not in message
    assert not Instrument.objects.filter(symbol="ETHUSDT").exists()


@pytest.mark.django_db(transaction=True)
def test_the_database_keeps_symbols_unique_in_any_letter_case():
    """Whatever writes instruments (a script, the shell, a form racing another), one
    classroom never has BTCUSDT and btcusdt, which bots and pages would take for one."""
    from django.db import IntegrityError, transaction

    classroom = make_classroom(name="Any case")
    make_instrument(classroom, symbol="BTCUSDT")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_instrument(classroom, symbol="btcUSDT")
    assert make_instrument(make_classroom(name="Other"), symbol="btcusdt").symbol == "btcusdt"
    assert Instrument.objects.filter(symbol__iexact="btcusdt").count() == 2
