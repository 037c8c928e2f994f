"""Generated bad input on every form that takes a POST: the learner pages and the
instructors' admin actions and change forms.

Whatever a field holds (numbers too large or too small for any column, exponents, NaN and
infinities, digits of other scripts, separators, whitespace, NUL bytes, 10,000 characters,
random text), the answer is a page with a message, or the change done: never a 500.
A refusal writes nothing, and after every post the ledger still balances.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from accounts.models import Classroom, TradingAccount
from accounts.services import account_adjust
from api.services import api_key_create
from liquidation.models import PriceFeed
from positions.models import Instrument, Order
from positions.services import order_place, position_open
from tests.admin.conftest import build_class, make_instructor
from tests.admin.forms import admin_form_data
from tests.conftest import _delete_counters
from tests.core.profiles import PROFILE, searching
from tests.factories import BTC_BRACKETS
from tests.invariants import assert_ledger_invariants, money_snapshot
from tests.web.conftest import PASSWORD

pytestmark = pytest.mark.django_db

FUZZ = settings(
    settings.get_profile(PROFILE),
    max_examples=25 if PROFILE == "core" else 500,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,  # each example sets up what it needs itself
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

# Each kind of value is as likely as any other, however many examples it has.
KINDS = [
    [  # beyond every column, or below its places
        "1e400", "-1e400", "1e-400", "-1e-400", "99999999999999999999999",
        "-99999999999999999999999", "0.000000000000000000001", "2147483648",
        "9223372036854775808", "9999999999999999.99999999", "1.123456789012",
    ],
    ["1E+5", "2.5e3", "5e-3", "1e8", "1e-8", "0e0", "-0e-5"],  # exponents
    ["-0", "-0.0", "+0", "0", "00"],  # zeros
    ["NaN", "nan", "-NaN", "sNaN", "-sNaN", "NaN123", "Infinity", "-Infinity", "inf", "-inf"],
    [  # digits of other scripts: Arabic-Indic, fullwidth, superscript, bold, Devanagari
        "\u0661\u0662\u0663", "\u0660\u066b\u0665", "\u0661\u0665\u0660\u0660\u0660",
        "\uff11\uff12\uff13", "\uff11\uff0e\uff15", "\uff15\uff10\uff10\uff10\uff10",
        "\u00b2", "\u00bd", "\U0001d7d3", "\u0967\u0968\u0969",
    ],
    ["1,000", "1,5", "1_000", "1 000", "1'000", "0x10", "1/2", "--1", "+-1", "1..5", ".", "-"],
    ["", " ", "\t", " 5 ", "\t5\n", "\u00a05", "5\u200b"],  # blanks around numbers
    ["9" * 10_000, "x" * 10_000, "1." + "1" * 10_000, "\u00e9" * 10_000],  # 10,000 characters
    ["\x00", "5\x00", "\x005", "1\x00000"],  # NUL bytes
    ["-1", "-5", "-0.00000001", "-60000"],  # negative
    [  # valid somewhere
        "0.00000001", "0.001", "0.1", "0.5", "1", "2", "5", "10", "20", "21", "100", "125",
        "1000", "59000", "59000.1", "59000.05", "61000", "60000",
    ],
]  # fmt: skip
NASTY = st.one_of(
    st.sampled_from(KINDS).flatmap(st.sampled_from),
    st.text(st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=6),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.floats().map(repr),
    st.text(max_size=40),
)


def overrides(fields: list[str]) -> st.SearchStrategy[dict[str, str]]:
    """Up to three of ``fields`` given bad values; the others keep their valid ones (some
    examples change none, so the services also run on what came before)."""
    return st.one_of(st.just({}), st.dictionaries(st.sampled_from(fields), NASTY, max_size=3))


def check(response: Any, allowed: set[int], before: Any = None) -> None:
    assert response.status_code != 500
    assert response.status_code in allowed, response.status_code
    if before is not None and response.status_code == 400:
        assert money_snapshot() == before, "a refused form wrote to the ledger"
    assert_ledger_invariants()


# --- signing up and in ----------------------------------------------------------------------


@searching
@FUZZ
@given(bad=overrides(["username", "password1", "password2", "join_code"]), n=st.integers(0, 10**6))
def test_sign_up(client, classroom, bad, n):
    _delete_counters()
    data = {
        "username": f"learner{n}",
        "password1": "a-long-passphrase-1",
        "password2": "a-long-passphrase-1",
        "join_code": classroom.join_code,
        **bad,
    }
    before = money_snapshot()
    response = client.post(reverse("signup"), data)
    client.logout()
    check(response, {200, 302, 400}, before)


@searching
@FUZZ
@given(bad=overrides(["username", "password"]))
@pytest.mark.parametrize("page", ["login", "admin:login"])
def test_sign_in(client, account, page, bad):
    _delete_counters()
    if page == "admin:login":
        account.user.is_staff = True
        account.user.save()
    response = client.post(reverse(page), {"username": "alice", "password": PASSWORD, **bad})
    client.logout()
    check(response, {200, 302, 400})


@searching
@FUZZ
@given(bad=overrides(["old_password", "new_password1", "new_password2"]))
def test_password_change(client, account, bad):
    # Each example starts signed in with the same password, whatever the one before changed.
    account.user.set_password(PASSWORD)
    account.user.save()
    client.force_login(account.user)
    data = {
        "old_password": PASSWORD,
        "new_password1": "another-long-passphrase",
        "new_password2": "another-long-passphrase",
        **bad,
    }
    check(client.post(reverse("password_change"), data), {200, 302, 400})


@searching
@FUZZ
@given(bad=overrides(["join_code"]))
def test_join_a_classroom(client, account, bad):
    _delete_counters()
    joiner = account.user.__class__.objects.create_user(
        username=f"joiner{account.user.__class__.objects.count()}", password=PASSWORD
    )
    client.force_login(joiner)
    before = money_snapshot()
    data = {"join_code": account.classroom.join_code, **bad}
    check(client.post(reverse("classrooms"), data), {200, 302, 400}, before)


def funded(account: TradingAccount) -> None:
    """Tops the free balance up as earlier examples spend it: each example can still trade."""
    account.refresh_from_db()
    if account.balance < 1000:
        account_adjust(account_id=account.pk, amount=Decimal(10_000), reason="Fuzz top-up")


# --- the trade ticket -----------------------------------------------------------------------

TRADE_FIELDS = [
    "instrument", "side", "type", "quantity", "notional", "leverage", "extra_collateral",
    "price", "stop_price", "take_profit", "stop_loss", "client_order_id",
]  # fmt: skip


def ticket(btc: Instrument) -> st.SearchStrategy[dict[str, str]]:
    """A ticket a learner could send, of any order type and size, with bad fields."""

    def build(side: str, kind: str, size: tuple[str, str], levels: bool, **rest: Any) -> Any:
        long = side == "long"
        post = {"instrument": str(btc.pk), "side": side, "type": kind, size[0]: size[1], **rest}
        if kind == "limit":
            post["price"] = "59000" if long else "61000"
        if kind == "stop":
            post["stop_price"] = "61000" if long else "59000"
        if levels:
            post["take_profit"], post["stop_loss"] = (
                ("65000", "58000") if long else ("55000", "62000")
            )
        return post

    valid = st.builds(
        build,
        side=st.sampled_from(["long", "short"]),
        kind=st.sampled_from(["market", "limit", "stop"]),
        size=st.sampled_from([("quantity", "0.001"), ("quantity", "0.01"), ("notional", "500")]),
        levels=st.booleans(),
        leverage=st.sampled_from(["1", "5", "20"]),
        extra_collateral=st.sampled_from(["", "0", "10"]),
    )
    return st.builds(lambda v, b: {**v, **b}, valid, overrides(TRADE_FIELDS))


@searching
@FUZZ
@given(data=st.data(), wanted=st.one_of(st.just(""), NASTY))
@pytest.mark.parametrize("endpoint", ["trade", "trade-preview"])
def test_trade_ticket(alice_client, account, btc, endpoint, data, wanted):
    post = data.draw(ticket(btc))
    funded(account)
    before = money_snapshot()
    # The instrument a link preselects comes in the query string, and is read on a post too.
    page = f"{reverse(endpoint, args=[account.pk])}?{urlencode({'instrument': wanted})}"
    response = alice_client.post(page, post)
    check(response, {200, 302, 400}, before)


# --- the position page and resting orders ---------------------------------------------------


def fresh_position(account: TradingAccount, btc: Instrument) -> Any:
    """A small position of its own for each example: what one example closed or changed
    leaves the next one's alone."""
    funded(account)
    return position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.01", leverage=20
    )


def post_to_a_fresh_position(client, account, btc, name: str, data: dict[str, str]) -> None:
    """Post ``data`` to the form ``name`` of a new position: never a 500, and a refusal
    writes no money."""
    position = fresh_position(account, btc)
    before = money_snapshot()
    check(client.post(reverse(name, args=[position.pk]), data), {302, 400}, before)


@searching
@FUZZ
@given(
    action=st.sampled_from(["add", "remove"]),
    amount=st.one_of(st.sampled_from(["1", "0.5", "29"]), NASTY),
)
def test_position_margin(alice_client, account, btc, action, amount):
    data = {"margin-action": action, "margin-amount": amount}
    post_to_a_fresh_position(alice_client, account, btc, "position-margin", data)


@searching
@FUZZ
@given(bad=overrides(["close-quantity", "close-client_order_id"]))
def test_position_close(alice_client, account, btc, bad):
    data = {"close-quantity": "0.005", **bad}
    post_to_a_fresh_position(alice_client, account, btc, "position-close", data)


@searching
@FUZZ
@given(bad=overrides(["tpsl-take_profit", "tpsl-stop_loss"]))
def test_position_tpsl(alice_client, account, btc, bad):
    data = {"tpsl-take_profit": "65000", "tpsl-stop_loss": "58000", **bad}
    post_to_a_fresh_position(alice_client, account, btc, "position-tpsl", data)


@searching
@FUZZ
@given(after=st.one_of(st.just("/"), NASTY))
def test_order_cancel(alice_client, account, btc, after):
    order = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="0.001", leverage=5, price="50000",
    )  # fmt: skip
    response = alice_client.post(reverse("order-cancel", args=[order.pk]), {"next": after})
    check(response, {302})
    assert Order.objects.get(pk=order.pk).status == Order.Status.CANCELLED


@searching
@FUZZ
@given(
    kind=st.sampled_from(["limit", "stop"]),
    bad=overrides(["quantity", "price", "stop_price", "client_order_id", "next"]),
)
def test_order_change(alice_client, account, btc, kind, bad):
    account_adjust(account_id=account.pk, amount=Decimal(1000), reason="Fuzz top-up")
    at = {"price": "50000"} if kind == "limit" else {"stop_price": "65000"}
    order = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type=kind,
        quantity="0.001", leverage=5, price=at.get("price"), stop_price=at.get("stop_price"),
    )  # fmt: skip
    before = money_snapshot()
    response = alice_client.post(
        reverse("order-change", args=[order.pk]), {"quantity": "0.002", **at, **bad}
    )
    check(response, {302, 400}, before)


@searching
@FUZZ
@given(
    name=st.sampled_from(["trade", "trade-preview", "position-margin", "position-close",
                          "position-tpsl", "order-cancel", "order-change", "api-key-revoke"]),
    pk=st.one_of(st.integers(0, 10**30), st.sampled_from([2**31, 2**63, 10**400])),
)  # fmt: skip
def test_posts_to_rows_that_are_not_there_or_not_yours(alice_client, account, name, pk):
    check(alice_client.post(reverse(name, args=[pk]), {}), {302, 400, 404})


# --- API keys -------------------------------------------------------------------------------


@searching
@FUZZ
@given(bad=overrides(["name", "scope", "expires_on"]))
def test_api_key_create(alice_client, account, bad):
    data = {"name": "momentum bot", "scope": "read", "expires_on": "", **bad}
    check(alice_client.post(reverse("api-keys"), data), {302, 400})


@searching
@FUZZ
@given(body=st.dictionaries(st.sampled_from(["pk", "id", "next", "confirm"]), NASTY, max_size=2))
def test_api_key_revoke(alice_client, account, body):
    key = api_key_create(user_id=account.user_id, name="bot", scope="read").api_key
    check(alice_client.post(reverse("api-key-revoke", args=[key.pk]), body), {302})


# --- the instructors' admin -----------------------------------------------------------------

ACCOUNTS = reverse("admin:accounts_tradingaccount_changelist")
CLASSROOMS = reverse("admin:accounts_classroom_changelist")
INSTRUMENTS = reverse("admin:positions_instrument_changelist")


@pytest.fixture
def alpha_class(db: Any) -> Classroom:
    """Alpha's classroom of the admin tests: a market, students, trades and engine rows."""
    return build_class(make_instructor("alpha"), prefix="alpha")


@pytest.fixture
def alpha_client(client: Any, alpha_class: Classroom) -> Any:
    client.force_login(alpha_class.instructor)
    return client


@pytest.fixture
def classroom_form(alpha_client: Any, alpha_class: Classroom) -> dict[str, Any]:
    """The change page's form as the browser would send it back, read once per test."""
    page = reverse("admin:accounts_classroom_change", args=[alpha_class.pk])
    return admin_form_data(alpha_client.get(page))


@pytest.fixture
def instrument_form(alpha_client: Any, alpha_class: Classroom) -> dict[str, Any]:
    btc = Instrument.objects.get(classroom=alpha_class)
    page = reverse("admin:positions_instrument_change", args=[btc.pk])
    return admin_form_data(alpha_client.get(page))


def row(model: Any, pk: int) -> dict[str, Any]:
    return dict(model.objects.filter(pk=pk).values().get())


def action(client: Any, changelist: str, name: str, objects: list[Any], **data: Any) -> Any:
    return client.post(
        changelist,
        {"action": name, "_selected_action": [o.pk for o in objects], "confirm": "yes", **data},
    )


@searching
@FUZZ
@given(
    direction=st.one_of(st.sampled_from(["grant", "deduct"]), NASTY),
    bad=overrides(["amount", "reason"]),
)
def test_admin_grant_or_deduct(alpha_class, alpha_client, direction, bad):
    accounts = list(TradingAccount.objects.filter(classroom=alpha_class))
    before = money_snapshot()
    data = {"direction": direction, "amount": "10", "reason": "bonus", **bad}
    response = action(alpha_client, ACCOUNTS, "grant_or_deduct", accounts, **data)
    check(response, {200, 302})
    if response.status_code == 200:
        assert money_snapshot() == before


@searching
@FUZZ
@given(
    direction=st.one_of(st.sampled_from(["top_up", "draw_down"]), NASTY),
    bad=overrides(["amount", "reason"]),
)
def test_admin_insurance_fund(alpha_class, alpha_client, direction, bad):
    before = money_snapshot()
    data = {"direction": direction, "amount": "10", "reason": "seed", **bad}
    response = action(alpha_client, CLASSROOMS, "adjust_insurance_fund", [alpha_class], **data)
    check(response, {200, 302})
    if response.status_code == 200:
        assert money_snapshot() == before


@searching
@FUZZ
@given(
    kind=st.one_of(st.sampled_from(["move", "set_price"]), NASTY),
    bad=overrides(["percent", "target_price", "duration_seconds"]),
)
def test_admin_scenario(alpha_class, alpha_client, kind, bad):
    btc = Instrument.objects.get(classroom=alpha_class)
    fields = {
        "move": {"percent": "-10", "duration_seconds": "0"},
        "set_price": {"target_price": "59000"},
    }
    data = {"kind": kind, **fields.get(kind, {}), **bad}
    before = money_snapshot()
    response = action(alpha_client, INSTRUMENTS, "start_scenario", [btc], **data)
    check(response, {200, 302})
    assert money_snapshot() == before  # a scenario moves the mark; the engine moves money


@searching
@FUZZ
@given(
    rows=st.lists(st.tuples(st.one_of(st.just("0"), NASTY), st.one_of(st.just("60000"), NASTY)),
                  max_size=4),
    header=st.booleans(),
    speed=st.one_of(st.just("1"), NASTY),
)  # fmt: skip
def test_admin_replay_upload(alpha_class, alpha_client, rows, header, speed):
    btc = Instrument.objects.get(classroom=alpha_class)
    lines = (["time,price"] if header else []) + [f"{t},{p}" for t, p in rows]
    upload = SimpleUploadedFile("prices.csv", "\n".join(lines).encode(), "text/csv")
    before = money_snapshot()
    response = action(alpha_client, INSTRUMENTS, "replay_csv", [btc], csv_file=upload, speed=speed)
    check(response, {200, 302})
    assert money_snapshot() == before


CLASSROOM_FIELDS = [
    "name", "starting_balance", "currency", "max_leverage", "trading_opens_at_0",
    "trading_opens_at_1", "trading_closes_at_0", "trading_closes_at_1", "liquidation_fee_rate",
    "leftover_policy", "ranking", "insurance_fund_seed",
]  # fmt: skip


@searching
@FUZZ
@given(bad=overrides(CLASSROOM_FIELDS), n=st.integers(0, 10**6))
def test_admin_classroom_add(alpha_class, alpha_client, bad, n):
    data = {
        "name": f"Options {n}", "starting_balance": "5000", "currency": "USDT",
        "max_leverage": "25", "trading_enabled": "on", "trading_opens_at_0": "",
        "trading_opens_at_1": "", "trading_closes_at_0": "", "trading_closes_at_1": "",
        "liquidation_fee_rate": "0.005", "leftover_policy": "insurance_fund", "ranking": "raw",
        "insurance_fund_seed": "250", **bad,
    }  # fmt: skip
    count = Classroom.objects.count()
    response = alpha_client.post(reverse("admin:accounts_classroom_add"), data)
    check(response, {200, 302})
    assert Classroom.objects.count() == count + (response.status_code == 302)


@searching
@FUZZ
@given(bad=overrides(CLASSROOM_FIELDS[:-1]))
def test_admin_classroom_change(alpha_class, alpha_client, classroom_form, bad):
    page = reverse("admin:accounts_classroom_change", args=[alpha_class.pk])
    data = {**classroom_form, **bad}
    before, rules = money_snapshot(), row(Classroom, alpha_class.pk)
    response = alpha_client.post(page, data)
    check(response, {200, 302})
    assert money_snapshot() == before  # the rules change; no money moves
    if response.status_code == 200:
        assert row(Classroom, alpha_class.pk) == rules


INSTRUMENT_FIELDS = [
    "symbol", "name", "tick_size", "lot_size", "min_notional", "max_leverage",
    "taker_fee_rate", "spread", "tiers-0-notional_floor", "tiers-0-notional_cap",
    "tiers-0-mmr", "tiers-0-max_leverage", "feed-0-volatility", "feed-0-jump_probability",
    "feed-0-jump_size", "feed-0-replay_speed", "feed-0-seed",
]  # fmt: skip


@searching
@FUZZ
# A minimum notional above a resting order's worth cancels it: its hold comes back.
@example(bad={"min_notional": "527"})
@given(bad=overrides(INSTRUMENT_FIELDS))
def test_admin_instrument_change(alpha_class, alpha_client, instrument_form, bad):
    btc = Instrument.objects.get(classroom=alpha_class)
    page = reverse("admin:positions_instrument_change", args=[btc.pk])
    data = {**instrument_form, **bad}
    before, funds = money_snapshot(), funds_by_account()
    market = row(Instrument, btc.pk), list(btc.tiers.values()), list(PriceFeed.objects.values())
    response = alpha_client.post(page, data)
    check(response, {200, 302})
    if response.status_code == 200:
        assert money_snapshot() == before
        assert market == (
            row(Instrument, btc.pk),
            list(btc.tiers.values()),
            list(PriceFeed.objects.values()),
        )
        return
    # A new tick size, lot size or minimum notional brings resting orders in line: a hold
    # comes back to the free balance or moves to the order that replaces it, and TP/SL levels
    # move onto the grid. Nothing else moves.
    assert_ledger_invariants()
    after = money_snapshot()
    assert (after.collateral, after.pockets) == (before.collateral, before.pockets)
    assert {pk: p[:6] for pk, p in after.positions.items()} == {
        pk: p[:6] for pk, p in before.positions.items()
    }
    assert funds_by_account() == funds


def funds_by_account() -> dict[int, Decimal]:
    """Each trading account's free balance plus what its resting orders hold."""
    funds = dict(TradingAccount.objects.values_list("pk", "balance"))
    for account_id, held in Order.objects.values_list("account_id", "held_margin"):
        funds[account_id] += held
    return funds


@searching
@FUZZ
@given(
    bad=overrides(
        [
            "symbol",
            "tick_size",
            "lot_size",
            "min_notional",
            "max_leverage",
            "taker_fee_rate",
            "spread",
            "mark_price",
            "tiers-0-notional_floor",
            "tiers-0-notional_cap",
            "tiers-0-mmr",
            "tiers-0-max_leverage",
        ]
    )
)
def test_admin_instrument_add(alpha_class, alpha_client, bad):  # fmt: skip
    data = {
        "classroom": str(alpha_class.pk), "symbol": "ETHUSDT", "name": "Ether",
        "tick_size": "0.01", "lot_size": "0.001", "min_notional": "5", "max_leverage": "100",
        "taker_fee_rate": "0.0005", "spread": "0", "is_tradable": "on", "mark_price": "3000",
        "tiers-TOTAL_FORMS": str(len(BTC_BRACKETS)), "tiers-INITIAL_FORMS": "0",
        "tiers-MIN_NUM_FORMS": "0", "tiers-MAX_NUM_FORMS": "1000",
        "feed-TOTAL_FORMS": "0", "feed-INITIAL_FORMS": "0", "feed-MIN_NUM_FORMS": "0",
        "feed-MAX_NUM_FORMS": "1", "scenarios-TOTAL_FORMS": "0", "scenarios-INITIAL_FORMS": "0",
        "scenarios-MIN_NUM_FORMS": "0", "scenarios-MAX_NUM_FORMS": "1000",
    }  # fmt: skip
    for i, (floor, cap, mmr, lev) in enumerate(BTC_BRACKETS):
        data[f"tiers-{i}-notional_floor"] = str(floor)
        data[f"tiers-{i}-notional_cap"] = "" if cap is None else str(cap)
        data[f"tiers-{i}-mmr"] = str(mmr)
        data[f"tiers-{i}-max_leverage"] = str(lev)
    data.update(bad)
    before = money_snapshot()
    check(alpha_client.post(reverse("admin:positions_instrument_add"), data), {200, 302})
    assert money_snapshot() == before
