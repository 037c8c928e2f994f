"""Bad input on every form: a message next to the field, status 400, never a 500, nothing written."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.urls import reverse
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

from accounts.models import LedgerTransaction, Membership, TradingAccount
from positions.models import Order, Position
from tests.factories import make_classroom, make_student
from web import attempts

pytestmark = pytest.mark.django_db

BAD_TRADES = [
    ("quantity", "-1", "Must be greater than zero."),
    ("quantity", "0", "Must be greater than zero."),
    ("quantity", "abc", "Enter a number."),
    ("quantity", "0.000000001", "no more than 8 decimal places"),
    ("quantity", "0.0015", "multiple of the lot size 0.001"),
    ("quantity", "1000", "your free balance is"),
    ("quantity", "1e400", "no more than 24 digits in total"),
    ("quantity", "NaN", "Enter a number."),
    ("quantity", "0.00001", "multiple of the lot size"),
    ("leverage", "0", "greater than or equal to 1"),
    ("leverage", "-5", "greater than or equal to 1"),
    ("leverage", "21", "less than or equal to 20"),
    ("leverage", "2.5", "Enter a whole number."),
    ("leverage", "x", "Enter a whole number."),
    # Python's int, under Django's field, reads each of these as 10.
    ("leverage", "1_0", "digits 0 to 9 only, without separators"),
    ("leverage", "\uff11\uff10", "digits 0 to 9 only"),  # full-width
    ("leverage", "\u0661\u0660", "digits 0 to 9 only"),  # Arabic-Indic
    # Decimal reads "0_1" as 1, and other scripts' digits: the services' rule refuses them.
    ("quantity", "0_1", "digits 0 to 9 and a point only, without separators"),
    ("quantity", "\uff10.\uff11", "digits 0 to 9 and a point only"),
    ("extra_collateral", "1_000", "without separators"),
    ("take_profit", "70_000", "without separators"),
    ("notional", "\u0665\u0660\u0660", "digits 0 to 9 and a point only"),
    ("extra_collateral", "-5", "greater than or equal to 0"),
    ("extra_collateral", "1.123456789", "no more than 8 decimal places"),
    ("take_profit", "0", "Must be greater than zero."),
    ("stop_loss", "59000.05", "multiple of the tick size 0.1"),
    # The ticket is a market order: a limit or stop price would be ignored, so it is refused.
    ("price", "59000", "Only a limit order uses a limit price"),
    ("stop_price", "59000", "Only a stop order uses a stop price"),
    ("notional", "-10", "Must be greater than zero."),
    ("notional", "5000", "Give a quantity or a notional, not both."),  # _trade has a quantity
]
# Rules the order service checks when the order is placed (the preview shows the quote).
BAD_ORDERS = [
    ("take_profit", "50000", "A take-profit must be above"),
    ("stop_loss", "61000", "A stop-loss must be below"),
    ("stop_loss", "10000", "beyond the liquidation price"),
]
# A stop the mark has already passed names the mark as every page writes it.
BAD_STOPS = [
    ("long", "59000", "A stop to buy triggers when the mark rises to it, and the mark is already "
     "60,000.0: set it above the mark"),
    ("short", "61000", "A stop to sell triggers when the mark falls to it, and the mark is already "
     "60,000.0: set it below the mark"),
]  # fmt: skip


@pytest.mark.parametrize(("side", "stop_price", "message"), BAD_STOPS)
@pytest.mark.parametrize("endpoint", ["trade", "trade-preview"])
def test_a_stop_the_mark_has_passed_is_refused_naming_the_mark(
    alice_client, account, btc, endpoint, side, stop_price, message
):
    response = alice_client.post(
        reverse(endpoint, args=[account.pk]),
        _trade(instrument=btc.pk, side=side, type="stop", stop_price=stop_price),
    )
    assert response.status_code == (400 if endpoint == "trade" else 200)
    error = response.content.decode().split('id="id_stop_price_error"', 1)[1].split("</span>")[0]
    assert message in error
    assert not Order.objects.exists()
    assert TradingAccount.objects.get(pk=account.pk).balance == Decimal(10000)


@pytest.mark.parametrize(("field", "value", "message"), BAD_ORDERS)
def test_orders_breaking_the_tpsl_rules_are_refused_next_to_the_field(
    alice_client, account, btc, field, value, message
):
    response = alice_client.post(
        reverse("trade", args=[account.pk]), _trade(instrument=btc.pk, **{field: value})
    )
    assert response.status_code == 400
    assert (
        message
        in response.content.decode().split(f'id="id_{field}_error"', 1)[1].split("</span>")[0]
    )
    assert not Position.objects.exists()
    assert TradingAccount.objects.get(pk=account.pk).balance == Decimal(10000)


def test_collateral_beyond_the_free_balance_is_refused(alice_client, account, btc):
    response = alice_client.post(
        reverse("trade", args=[account.pk]), _trade(instrument=btc.pk, extra_collateral="999999")
    )
    assert response.status_code == 400
    # Amounts read as the pages show them, not as stored (1001514.00000000); the margin is the
    # margin, and the extra collateral, the field to change, is named next to it.
    error = response.content.decode().split('id="id_extra_collateral_error"', 1)[1]
    assert (
        "This needs 1,001,514.00 (margin 1,500.00 + extra collateral 999,999.00 + fee 15.00); "
        "your free balance is 10,000.00." in error.split("</span>", 1)[0]
    )
    quantity_error = response.content.decode().split('id="id_quantity_error"', 1)[1]
    assert quantity_error.split("</span>", 1)[0].endswith('role="alert">')
    assert not Position.objects.exists()


def test_the_preview_sizes_nothing_when_the_extra_collateral_takes_the_whole_balance(
    alice_client, account, btc
):
    response = alice_client.post(
        reverse("trade-preview", args=[account.pk]),
        _trade(instrument=btc.pk, quantity="0.01", extra_collateral="999999"),
    )
    content = response.content.decode()
    assert "This needs" in content.split('id="id_extra_collateral_error"', 1)[1]
    # Nothing is left to open a position with: no size on offer that would be refused too.
    sizing = content.split('data-testid="sizing">', 1)[1].split("</p>", 1)[0]
    assert 'data-testid="max-quantity">0.000</strong>' in sizing
    assert "data-fill-quantity" not in sizing


def test_a_size_beyond_the_free_balance_with_extra_collateral_is_refused_at_the_quantity(
    alice_client, account, btc
):
    response = alice_client.post(
        reverse("trade", args=[account.pk]),
        _trade(instrument=btc.pk, quantity="5", extra_collateral="100"),
    )
    assert response.status_code == 400
    # 5 x 60,000 / 20 = 15,000 margin is past the 10,000 free without the extra collateral.
    error = response.content.decode().split('id="id_quantity_error"', 1)[1].split("</span>")[0]
    assert "This needs 15,250.00 (margin 15,000.00 + extra collateral 100.00 + fee 150.00)" in error
    assert not Position.objects.exists()


def _trade(**override):
    data = {"side": "long", "type": "market", "quantity": "0.5", "leverage": "20"}
    data.update(override)
    return data


@pytest.mark.parametrize(("field", "value", "message"), BAD_TRADES)
@pytest.mark.parametrize("endpoint", ["trade", "trade-preview"])
def test_bad_trade_input_is_refused_next_to_the_field(
    alice_client, account, btc, endpoint, field, value, message
):
    response = alice_client.post(
        reverse(endpoint, args=[account.pk]), _trade(instrument=btc.pk, **{field: value})
    )
    content = response.content.decode()
    assert response.status_code == (400 if endpoint == "trade" else 200)
    error_span = content.split(f'id="id_{field}_error"', 1)[1].split("</span>", 1)[0]
    assert message in error_span
    assert error_span.count("<li") <= 1  # one message per mistake, not the same one twice
    assert not Position.objects.exists()
    assert not Order.objects.exists()
    assert TradingAccount.objects.get(pk=account.pk).balance == Decimal(10000)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"side": "sideways"}, "Select a valid choice."),
        ({"type": "iceberg"}, "Select a valid choice."),
        ({"instrument": "999999"}, "Select a valid choice."),
        ({"type": "limit"}, "A limit order needs a price."),
        ({"type": "limit", "price": "59000.05"}, "multiple of the tick size 0.1"),
        ({"type": "stop", "stop_price": "59000", "price": "59000"}, "Only a limit order uses"),
        ({"type": "limit", "price": "59000", "stop_price": "59000"}, "Only a stop order uses"),
        ({"type": "stop"}, "A stop order needs a stop price."),
        ({"quantity": ""}, "Enter a quantity or a notional."),
        ({"quantity": "", "notional": "1"}, "less than one lot"),
    ],
)
def test_bad_trade_shapes_are_refused(alice_client, account, btc, data, message):
    response = alice_client.post(
        reverse("trade", args=[account.pk]), {**_trade(instrument=btc.pk), **data}
    )
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Position.objects.exists()


def test_a_classroom_with_trading_closed_says_so_above_the_form(alice_client, account, btc):
    account.classroom.trading_enabled = False
    account.classroom.save()
    response = alice_client.post(reverse("trade", args=[account.pk]), _trade(instrument=btc.pk))
    assert response.status_code == 400
    assert "Trading is closed in this classroom right now." in response.content.decode()
    assert not Position.objects.exists()
    # The preview says why, and does not send the student looking for a red field.
    preview = alice_client.post(
        reverse("trade-preview", args=[account.pk]), _trade(instrument=btc.pk)
    ).content.decode()
    assert "Trading is closed in this classroom right now." in preview
    assert "marked in red" not in preview


BAD_MARGIN = [
    ("add", "-1", "Must be greater than zero."),
    ("add", "0", "Must be greater than zero."),
    ("add", "ten", "Enter a number."),
    ("add", "1.000000001", "no more than 8 decimal places"),
    ("add", "20000", "Your free balance is 8,485.00."),
    ("remove", "1400", "At most 0.00 can be removed"),
    ("sideways", "10", "Select a valid choice."),
]


@pytest.mark.parametrize(("action", "amount", "message"), BAD_MARGIN)
def test_bad_margin_changes_are_refused(alice_client, position, action, amount, message):
    before = LedgerTransaction.objects.count()
    response = alice_client.post(
        reverse("position-margin", args=[position.pk]),
        {"margin-action": action, "margin-amount": amount},
    )
    assert response.status_code == 400
    assert message in response.content.decode()
    position.refresh_from_db()
    assert position.collateral.amount == Decimal(1500)
    assert LedgerTransaction.objects.count() == before


@pytest.mark.parametrize(
    ("quantity", "message"),
    [
        ("-0.1", "Must be greater than zero."),
        ("0", "Must be greater than zero."),
        ("half", "Enter a number."),
        ("0.000000001", "no more than 8 decimal places"),
        ("0.6", "Only 0.5 is open"),
    ],
)
def test_bad_close_quantities_are_refused(alice_client, position, quantity, message):
    response = alice_client.post(
        reverse("position-close", args=[position.pk]), {"close-quantity": quantity}
    )
    assert response.status_code == 400
    assert message in response.content.decode()
    position.refresh_from_db()
    assert position.quantity == Decimal("0.5") and position.status == Position.Status.OPEN


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tpsl-take_profit": "-1"}, "Must be greater than zero."),
        ({"tpsl-take_profit": "abc"}, "Enter a number."),
        ({"tpsl-take_profit": "59000"}, "A take-profit must be above 60,000.0."),
        ({"tpsl-stop_loss": "1.00000000001"}, "no more than 10 decimal places"),
        ({"tpsl-stop_loss": "10000"}, "beyond the liquidation price 57,229.0 and would"),
    ],
)
def test_bad_tpsl_is_refused(alice_client, position, data, message):
    response = alice_client.post(reverse("position-tpsl", args=[position.pk]), data)
    assert response.status_code == 400
    assert message in response.content.decode()
    position.refresh_from_db()
    assert position.take_profit is None and position.stop_loss is None


def test_actions_on_a_closed_position_are_refused(alice_client, position):
    alice_client.post(reverse("position-close", args=[position.pk]), {"close-quantity": ""})
    response = alice_client.post(
        reverse("position-margin", args=[position.pk]),
        {"margin-action": "add", "margin-amount": "5"},
    )
    assert response.status_code == 400
    assert "no longer open" in response.content.decode()


def test_a_position_past_its_liquidation_price_is_left_to_the_liquidation(
    alice_client, position, btc
):
    btc.mark_price = Decimal(57200)  # the liquidation price is 57,229.0
    btc.save(update_fields=["mark_price"])
    before = LedgerTransaction.objects.count()
    for url, data in (
        ("position-close", {"close-quantity": ""}),
        ("position-margin", {"margin-action": "add", "margin-amount": "500"}),
    ):
        response = alice_client.post(reverse(url, args=[position.pk]), data)
        assert response.status_code == 400
        assert "the position is being liquidated" in response.content.decode()
    position.refresh_from_db()
    assert position.status == Position.Status.OPEN and position.collateral.amount == 1500
    assert LedgerTransaction.objects.count() == before


@pytest.mark.parametrize(("mark", "liquidating"), [("57200", True), ("57230", False)])
def test_the_position_page_says_when_the_engine_is_liquidating_it(
    alice_client, position, btc, mark, liquidating
):
    btc.mark_price = Decimal(mark)  # the liquidation price is 57,229.0
    btc.save(update_fields=["mark_price"])
    for url in ("position", "position-live"):
        page = " ".join(alice_client.get(reverse(url, args=[position.pk])).content.decode().split())
        banner = (
            "Being liquidated — the mark 57,200.0 has reached the liquidation price 57,229.0: "
            "the engine closes this position on this tick and takes its collateral, "
            "1,500.00 USDT, and nothing more."
        )
        assert (banner in page) is liquidating
        assert ("margin ratio at warning level" in page) is not liquidating
    # The collateral can no longer be changed: no lesson asks for more of it.
    for url in ("position", "dashboard", "dashboard-live"):
        pk = position.pk if url == "position" else position.account_id
        page = alice_client.get(reverse(url, args=[pk])).content.decode()
        assert 'data-testid="lesson"' in page
        if liquidating:
            assert "more collateral" not in page


def test_bad_sign_up_input_is_refused(client, classroom):
    response = client.post(
        reverse("signup"),
        {"username": "", "password1": "x", "password2": "y", "join_code": ""},
    )
    assert response.status_code == 400
    assert response.content.decode().count('class="field has-error"') >= 3


def test_sign_ins_stop_being_checked_after_ten_failures_for_that_username(client, account):
    login = reverse("login")
    for _ in range(10):
        failed = client.post(login, {"username": "alice", "password": "guess"})
        assert "correct username and password" in failed.content.decode()
    blocked = client.post(login, {"username": "alice", "password": "ringfence-test"})
    assert "Too many failed attempts" in blocked.content.decode()
    assert "_auth_user_id" not in client.session  # the right password no longer gets in
    # Another username from the same address is not locked out by alice's guesser.
    make_student(account.classroom, username="carol")
    other = client.post(login, {"username": "carol", "password": "ringfence-test"})
    assert other.status_code == 302


@pytest.mark.parametrize(
    "spelling",
    [
        "\uff41\uff4c\uff49\uff43\uff45",  # alice in fullwidth letters
        "\U0001d68a\U0001d695\U0001d692\U0001d68c\U0001d68e",  # alice in monospace letters
        "al\u2170ce",  # with the small roman numeral one for the i
    ],
)
def test_another_spelling_of_the_same_username_shares_its_failures(client, account, spelling):
    """The sign-in reads a username in NFKC form, so these sign in as alice: each must not
    get ten guesses of its own."""
    login = reverse("login")
    for _ in range(10):
        client.post(login, {"username": "alice", "password": "guess"})
    blocked = client.post(login, {"username": spelling, "password": "ringfence-test"})
    assert "Too many failed attempts" in blocked.content.decode()
    assert "_auth_user_id" not in client.session


def test_an_empty_password_neither_counts_nor_resets_the_failures(client, account):
    login = reverse("login")
    for _ in range(3):
        for _ in range(4):
            client.post(login, {"username": "alice", "password": "guess"})
        client.post(login, {"username": "alice", "password": ""})
    blocked = client.post(login, {"username": "alice", "password": "ringfence-test"})
    assert "Too many failed attempts" in blocked.content.decode()  # 12 guesses, not 3 x 4
    assert "_auth_user_id" not in client.session


def test_the_admin_sign_in_is_limited_too(client, classroom):
    instructor = classroom.instructor
    instructor.set_password("teach-2026-x")
    instructor.save()
    login = reverse("admin:login")
    for _ in range(10):
        client.post(login, {"username": instructor.username, "password": "guess"})
    right = client.post(login, {"username": instructor.username, "password": "teach-2026-x"})
    assert "Too many failed attempts" in right.content.decode()
    assert "_auth_user_id" not in client.session


def test_the_password_change_stops_checking_the_old_password_after_ten_failures(
    alice_client, account
):
    """A classmate at a computer left signed in must not guess the password without limit on
    the password page: its old-password check shares the sign-in's count."""
    page = reverse("password_change")
    new = {
        "new_password1": "another-long-passphrase-7",
        "new_password2": "another-long-passphrase-7",
    }
    for _ in range(10):
        wrong = alice_client.post(page, {"old_password": "guess", **new})
        assert "Your old password was entered incorrectly" in wrong.content.decode()
    blocked = alice_client.post(page, {"old_password": "ringfence-test", **new})
    assert blocked.status_code == 200
    assert "Too many failed attempts" in blocked.content.decode()
    account.user.refresh_from_db()
    assert account.user.check_password("ringfence-test")  # the right password changed nothing
    # The guesses count against signing in as alice too, from this address.
    alice_client.logout()
    login = alice_client.post(reverse("login"), {"username": "alice", "password": "ringfence-test"})
    assert "Too many failed attempts" in login.content.decode()


def test_the_admin_password_change_is_limited_too(client, classroom):
    instructor = classroom.instructor
    instructor.set_password("teach-2026-x")
    instructor.save()
    client.force_login(instructor)
    page = reverse("admin:password_change")
    new = {
        "new_password1": "another-long-passphrase-7",
        "new_password2": "another-long-passphrase-7",
    }
    for _ in range(10):
        wrong = client.post(page, {"old_password": "guess", **new})
        assert "Your old password was entered incorrectly" in wrong.content.decode()
    blocked = client.post(page, {"old_password": "teach-2026-x", **new})
    assert "Too many failed attempts" in blocked.content.decode()
    instructor.refresh_from_db()
    assert instructor.check_password("teach-2026-x")


def test_the_right_old_password_changes_it_and_clears_the_count(alice_client, account):
    page = reverse("password_change")
    new = {
        "new_password1": "another-long-passphrase-7",
        "new_password2": "another-long-passphrase-7",
    }
    for _ in range(9):
        alice_client.post(page, {"old_password": "guess", **new})
    assert alice_client.post(page, {"old_password": "ringfence-test", **new}).status_code == 302
    account.user.refresh_from_db()
    assert account.user.check_password("another-long-passphrase-7")
    alice_client.logout()
    login = alice_client.post(
        reverse("login"), {"username": "alice", "password": "another-long-passphrase-7"}
    )
    assert login.status_code == 302


def test_join_codes_stop_being_checked_after_ten_wrong_ones(alice_client, classroom):
    other = make_classroom(name="Physics")
    page = reverse("classrooms")
    for n in range(10):
        wrong = alice_client.post(page, {"join_code": f"WRONG{n}"})
        assert "No classroom has this join code." in wrong.content.decode()
    blocked = alice_client.post(page, {"join_code": other.join_code})
    assert "Too many failed attempts" in blocked.content.decode()
    assert not Membership.objects.filter(classroom=other, user__username="alice").exists()


def test_behind_the_proxy_failures_count_per_forwarded_address(client, classroom, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    signup = reverse("signup")

    def sign_up(address: str, code: str):
        data = {"username": f"new{address[-1]}", "password1": "a-long-pass-9281",
                "password2": "a-long-pass-9281", "join_code": code}  # fmt: skip
        # The client may claim any address; the proxy appends the one it saw.
        return client.post(signup, data, HTTP_X_FORWARDED_FOR=f"1.2.3.4, {address}")

    for n in range(attempts.ADDRESS_LIMIT):
        assert "No classroom has this join code." in sign_up("10.0.0.1", f"BAD{n}").content.decode()
    assert "Too many failed attempts" in sign_up("10.0.0.1", classroom.join_code).content.decode()
    assert sign_up("10.0.0.2", classroom.join_code).status_code == 302


def test_accounts_made_one_after_another_share_their_address_budget_of_join_codes(
    client, classroom
):
    """Each new account gets its own ten guesses, but not more than the address allows."""
    target = make_classroom(name="Physics")
    page = reverse("classrooms")
    school, elsewhere = {"REMOTE_ADDR": "10.0.0.7"}, {"REMOTE_ADDR": "10.0.0.8"}
    checked = 0
    for n in range(attempts.ADDRESS_LIMIT // attempts.LIMIT + 1):
        client.force_login(make_student(classroom, username=f"sock{n}").user)
        for m in range(attempts.LIMIT):
            answer = client.post(page, {"join_code": f"WRONG{m}"}, **school).content.decode()
            if "Too many failed attempts" in answer:
                break
            assert "No classroom has this join code." in answer
            checked += 1
    assert checked == attempts.ADDRESS_LIMIT
    client.force_login(make_student(classroom, username="fresh").user)
    blocked = client.post(page, {"join_code": target.join_code}, **school)
    assert "Too many failed attempts" in blocked.content.decode()
    assert not Membership.objects.filter(classroom=target, user__username="fresh").exists()
    assert client.post(page, {"join_code": target.join_code}, **elsewhere).status_code == 302


def test_a_class_mistyping_its_join_code_behind_one_school_address_all_sign_up(client, classroom):
    signup = reverse("signup")
    for n in range(30):
        data = {"username": f"pupil{n}", "password1": "a-long-pass-9281",
                "password2": "a-long-pass-9281"}  # fmt: skip
        for typo in ("0", "O", "1"):
            mistyped = client.post(signup, {**data, "join_code": classroom.join_code[:-1] + typo})
            assert "No classroom has this join code." in mistyped.content.decode()
        assert client.post(signup, {**data, "join_code": classroom.join_code}).status_code == 302
        client.logout()
    assert (
        Membership.objects.filter(classroom=classroom, user__username__startswith="pupil").count()
        == 30
    )


def test_sign_up_names_a_wrong_join_code_together_with_a_weak_password(client, classroom):
    response = client.post(
        reverse("signup"),
        {"username": "newbie", "password1": "123", "password2": "123", "join_code": "NOPE42"},
    )
    content = response.content.decode()
    assert response.status_code == 400
    assert "No classroom has this join code." in content
    assert "This password is too short" in content
    # A right code with a weak password is not called wrong.
    right = client.post(
        reverse("signup"),
        {"username": "newbie", "password1": "123", "password2": "123",
         "join_code": classroom.join_code.lower()},
    ).content.decode()  # fmt: skip
    assert "No classroom has this join code." not in right


def _described_by_missing(content: str) -> list[str]:
    """The ids that an ``aria-describedby`` on the page names but no element carries."""
    ids = set(re.findall(r'\bid="([^"]+)"', content))
    named = re.findall(r'aria-describedby="([^"]+)"', content)
    return [i for value in named for i in value.split() if i not in ids]


def test_each_field_points_screen_readers_at_its_help_and_its_error(
    client, alice_client, account, btc, position
):
    """A field's help and its error are announced with it: ``aria-describedby`` names
    elements that exist, and a refused field is marked ``aria-invalid``."""
    pages = [
        alice_client.post(
            reverse("trade", args=[account.pk]), _trade(instrument=btc.pk, quantity="abc")
        ),
        alice_client.post(
            reverse("position-margin", args=[position.pk]),
            {"margin-action": "remove", "margin-amount": "-1"},
        ),
        alice_client.post(reverse("api-keys"), {"name": "", "scope": "read"}),
        alice_client.post(reverse("classrooms"), {"join_code": "NOPE1234"}),
    ]
    alice_client.logout()
    pages.append(
        client.post(reverse("signup"), {"username": "x", "password1": "1", "join_code": "NOPE"})
    )
    for response in pages:
        assert response.status_code == 400
        content = response.content.decode()
        assert 'aria-invalid="true"' in content
        assert re.findall(r'aria-describedby="[^"]*_error\b', content)  # the error is named
        assert _described_by_missing(content) == [], response.request["PATH_INFO"]


@pytest.mark.parametrize("wanted", ["\u00b2", "9" * 5000, "-1", "1e3"])
def test_a_preselected_instrument_that_is_no_id_is_ignored(alice_client, account, btc, wanted):
    page = reverse("trade", args=[account.pk])
    shown = alice_client.get(page, {"instrument": wanted})
    assert shown.status_code == 200
    assert shown.context["form"]["instrument"].value() != wanted
    response = alice_client.post(f"{page}?instrument={wanted}", _trade(instrument=btc.pk))
    assert response.status_code == 302
    assert Position.objects.filter(account=account).count() == 1


def test_a_preselected_instrument_is_chosen_on_the_ticket(alice_client, account, btc):
    shown = alice_client.get(reverse("trade", args=[account.pk]), {"instrument": str(btc.pk)})
    assert shown.context["form"]["instrument"].value() == btc.pk


# What an error report (with DEBUG off: a mailed or logged 500) may show of a request.
SECRET = "plum-harbour-42"


def reported_post(request) -> dict[str, str]:
    return dict(SafeExceptionReporterFilter().get_post_parameters(request).items())


def test_sign_up_keeps_the_chosen_password_out_of_error_reports(client, classroom):
    response = client.post(
        reverse("signup"),
        {"username": "dora", "password1": SECRET, "password2": SECRET, "join_code": "NOPE"},
    )
    assert response.status_code == 400
    reported = reported_post(response.wsgi_request)
    stars = SafeExceptionReporterFilter.cleansed_substitute
    assert reported["password1"] == reported["password2"] == stars
    assert reported["username"] == "dora" and reported["join_code"] == "NOPE"
    text = ExceptionReporter(response.wsgi_request, None, None, None).get_traceback_text()
    assert "dora" in text and SECRET not in text


@pytest.mark.parametrize("page", ["password_change", "admin:password_change"])
def test_a_password_change_keeps_every_password_out_of_error_reports(client, classroom, page):
    instructor = classroom.instructor
    client.force_login(instructor)
    response = client.post(
        reverse(page),
        {"old_password": SECRET, "new_password1": SECRET, "new_password2": SECRET},
    )
    assert response.status_code == 200  # the old password is wrong
    reported = reported_post(response.wsgi_request)
    assert set(reported) == {"old_password", "new_password1", "new_password2"}
    assert set(reported.values()) == {SafeExceptionReporterFilter.cleansed_substitute}


@pytest.mark.parametrize(
    ("notional", "min_notional", "message"),
    [
        # 1,000,000 of BTC at 20x needs 50,000 of margin, past the 10,000 free.
        ("1000000", "5", "This needs 50,"),
        # 0.001 BTC at 60,000 is one lot, worth 60, short of this instrument's minimum 100.
        ("70", "100", "the minimum is 100.00"),
    ],
)
@pytest.mark.parametrize("endpoint", ["trade", "trade-preview"])
def test_a_ticket_sized_by_notional_is_refused_next_to_the_notional(
    alice_client, account, btc, endpoint, notional, min_notional, message
):
    """The student typed a notional and left the quantity empty: a refusal of the size the
    notional came to is shown next to what they typed, not next to the empty quantity."""
    btc.min_notional = Decimal(min_notional)
    btc.save()
    response = alice_client.post(
        reverse(endpoint, args=[account.pk]),
        _trade(instrument=btc.pk, quantity="", notional=notional),
    )
    content = response.content.decode()
    assert response.status_code == (400 if endpoint == "trade" else 200)
    notional_error = content.split('id="id_notional_error"', 1)[1].split("</span>", 1)[0]
    assert message in notional_error
    quantity_error = content.split('id="id_quantity_error"', 1)[1].split("</span>", 1)[0]
    assert quantity_error.endswith(">")  # nothing next to the quantity left empty
    if endpoint == "trade":  # the ticket comes back with what was typed
        assert f'name="notional" value="{notional}"' in content
    assert not Order.objects.exists()
    assert TradingAccount.objects.get(pk=account.pk).balance == Decimal(10000)


@pytest.mark.parametrize("endpoint", ["trade", "trade-preview"])
def test_a_ticket_for_an_instrument_halted_since_it_was_opened_says_so_and_keeps_it(
    alice_client, account, btc, endpoint
):
    """The instructor stopped trading BTCUSDT while the ticket was open: the student is told
    why, and the ticket comes back with BTCUSDT still chosen, not another instrument that a
    second click on Place order would trade instead."""
    from tests.factories import make_instrument

    make_instrument(account.classroom, symbol="AAAUSDT", mark="100")  # listed first
    btc.is_tradable = False
    btc.save()
    response = alice_client.post(reverse(endpoint, args=[account.pk]), _trade(instrument=btc.pk))
    content = response.content.decode()
    assert response.status_code == (400 if endpoint == "trade" else 200)
    error = content.split('id="id_instrument_error"', 1)[1].split("</span>", 1)[0]
    assert "BTCUSDT is not open for trading." in error
    if endpoint == "trade":
        assert re.search(rf'<option value="{btc.pk}" selected>BTCUSDT', content)
    assert not Order.objects.exists()
    assert TradingAccount.objects.get(pk=account.pk).balance == Decimal(10000)


def test_the_ticket_opened_from_a_halted_instrument_on_the_ticker_keeps_it_chosen(
    alice_client, account, btc
):
    """The dashboard's ticker lists every instrument of the class and links each to the
    ticket: one not open for trading opens the ticket on itself, named so, and not on another
    instrument the student did not click."""
    from tests.factories import make_instrument

    make_instrument(account.classroom, symbol="AAAUSDT", mark="100")  # listed first
    btc.is_tradable = False
    btc.save()
    dashboard = alice_client.get(reverse("dashboard", args=[account.pk])).content.decode()
    link = f"{reverse('trade', args=[account.pk])}?instrument={btc.pk}"
    assert f'href="{link}"' in dashboard
    page = alice_client.get(link).content.decode()
    assert re.search(
        rf'<option value="{btc.pk}" selected>BTCUSDT \(not open for trading\)</option>', page
    )
