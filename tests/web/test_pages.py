"""The learner pages through HTTP: sign-up, dashboard, trade ticket, position page, history."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.sessions.models import Session
from django.contrib.staticfiles import finders
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import Classroom, LedgerTransaction, TradingAccount, User
from accounts.money import price_text
from accounts.services import account_adjust
from liquidation.models import LiquidationEvent, MarginCall, PriceTick
from positions.models import Fill, Instrument, Order, Position
from positions.selectors import position_valuation
from positions.services import order_place, position_close, position_open, position_set_tpsl
from tests.engine.helpers import open_position, set_price
from tests.factories import make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants
from web.views import HISTORY_ORDERS, HISTORY_POSITIONS

pytestmark = pytest.mark.django_db


def test_sign_up_with_the_join_code_creates_a_funded_account_and_signs_in(client, classroom, btc):
    response = client.post(
        reverse("signup"),
        {
            "username": "carol",
            "password1": "a-long-passphrase-42",
            "password2": "a-long-passphrase-42",
            "join_code": classroom.join_code.lower(),
        },
    )
    account = TradingAccount.objects.get(user__username="carol")
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard", args=[account.pk])
    assert account.balance == Decimal("10000")
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert b"10,000.00" in page.content


def test_sign_up_with_a_wrong_join_code_creates_no_user(client, classroom):
    response = client.post(
        reverse("signup"),
        {
            "username": "mallory",
            "password1": "a-long-passphrase-42",
            "password2": "a-long-passphrase-42",
            "join_code": "NOPE1234",
        },
    )
    assert response.status_code == 400
    assert b"No classroom has this join code." in response.content
    assert not User.objects.filter(username="mallory").exists()


def test_a_student_in_two_classrooms_picks_one(alice_client, account):
    other = make_classroom(name="Advanced Futures")
    alice_client.post(reverse("classrooms"), {"join_code": other.join_code})
    response = alice_client.get(reverse("home"))
    assert response["Location"] == reverse("classrooms")
    page = alice_client.get(reverse("classrooms"))
    assert b"Trading 101" in page.content and b"Advanced Futures" in page.content


def test_joining_twice_is_refused_next_to_the_field(alice_client, account):
    response = alice_client.post(reverse("classrooms"), {"join_code": account.classroom.join_code})
    assert response.status_code == 400
    assert b"already a member" in response.content
    assert TradingAccount.objects.filter(user=account.user).count() == 1


def test_anonymous_visitors_are_sent_to_sign_in(client, account):
    response = client.get(reverse("dashboard", args=[account.pk]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_a_sign_in_lasts_a_school_day(client, account):
    signed_in = client.post(reverse("login"), {"username": "alice", "password": "ringfence-test"})
    assert signed_in.status_code == 302
    assert signed_in.cookies["sessionid"]["max-age"] == 12 * 3600
    session = Session.objects.get(session_key=client.session.session_key)
    left = session.expire_date - timezone.now()
    assert timedelta(hours=11, minutes=59) < left <= timedelta(hours=12)
    assert client.get(reverse("dashboard", args=[account.pk])).status_code == 200
    # Past that, the pages ask to sign in again.
    Session.objects.filter(pk=session.pk).update(expire_date=timezone.now())
    later = client.get(reverse("dashboard", args=[account.pk]))
    assert later.status_code == 302 and later["Location"].startswith(reverse("login"))


def test_password_change(alice_client, account):
    response = alice_client.post(
        reverse("password_change"),
        {
            "old_password": "ringfence-test",
            "new_password1": "another-long-passphrase-7",
            "new_password2": "another-long-passphrase-7",
        },
    )
    assert response.status_code == 302
    account.user.refresh_from_db()
    assert account.user.check_password("another-long-passphrase-7")


def test_dashboard_shows_money_positions_and_ticker(alice_client, account, btc, position):
    response = alice_client.get(reverse("dashboard", args=[account.pk]))
    content = response.content.decode()
    assert response.status_code == 200
    assert "BTCUSDT</strong> 60,000.0" in content  # the ticker, priced to the 0.1 tick
    assert f"#{position.pk} BTCUSDT" in content
    assert "1,500.00" in content  # collateral locked
    # Each position's collateral is named for what it is to the learner: all it can lose.
    assert '<th>Collateral <small class="muted">= max loss</small></th>' in content
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert (
        '<span class="label">Collateral = your max loss</span>'
        '<span class="value" data-testid="collateral">1,500.00</span>'
    ) in page
    assert "57,229.0" in content  # liquidation price 57,228.92 on the tick, towards the entry
    assert 'hx-trigger="every 2s"' in content


def test_the_distance_to_liquidation_is_measured_to_the_liquidation_price_shown(
    alice_client, account, position
):
    """Long 0.5 at 60,000, 20x: the liquidation price 57,228.92 shows as 57,229.0, so the
    mark at 60,000 is 2,771.0 from it, as a learner subtracting the two would find, not 2,771.1."""
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    stat = page.split('<span class="label">Distance to liquidation</span>', 1)[1]
    assert stat.startswith('<span class="value">2,771.0 (4.62%)</span>')
    dashboard = alice_client.get(reverse("dashboard", args=[account.pk])).content.decode()
    assert "<td>57,229.0</td>\n        <td>2,771.0 <small>(4.62%)</small></td>" in dashboard


def test_a_mark_past_the_liquidation_price_shows_the_distance_as_reached(
    alice_client, account, btc, position
):
    """At 57,200 the long is 29.0 past its liquidation price 57,229.0: no distance is left,
    which a positive 29.0 would deny beside the "Being liquidated" banner."""
    btc.mark_price = Decimal("57200")
    btc.save(update_fields=["mark_price"])
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    stat = page.split('<span class="label">Distance to liquidation</span>', 1)[1]
    assert stat.startswith('<span class="value">reached</span>')
    dashboard = alice_client.get(reverse("dashboard", args=[account.pk])).content.decode()
    assert "<td>57,229.0</td>\n        <td>reached</td>" in dashboard
    assert '<dd data-field="distance">reached</dd>' in dashboard
    assert "29.0 <small>" not in dashboard


def test_the_margin_ratio_is_shown_as_a_percentage_of_the_collateral(alice_client, account, btc):
    position = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=10
    ).position
    assert position is not None
    # Maintenance 0.4% of 6,000 against 600 of collateral: 4% of the way to liquidation.
    dashboard = alice_client.get(reverse("dashboard", args=[account.pk])).content.decode()
    assert 'title="4.00%"' in dashboard and "<small>4.00%</small>" in dashboard
    page = alice_client.get(reverse("position-live", args=[position.pk])).content.decode()
    assert "</meter> 4.00%" in page


def test_a_margin_call_shows_its_ratio_as_a_percentage(alice_client, account, btc, position):
    set_price(btc, "57260")  # maintenance 114.52 against a margin balance of 130
    dashboard = alice_client.get(reverse("dashboard", args=[account.pk])).content.decode()
    assert "ratio 88.09% at 57,260.0" in dashboard


def test_the_live_partial_renders_without_the_page_around_it(alice_client, account, position):
    response = alice_client.get(
        reverse("dashboard-live", args=[account.pk]), HTTP_HX_REQUEST="true"
    )
    content = response.content.decode()
    assert content.lstrip().startswith('<div id="dashboard-live"')
    assert "<html" not in content


def test_the_ticket_says_what_its_optional_fields_do(alice_client, account, btc):
    """A learner meets extra collateral, take-profit and stop-loss here first: each says what
    it does, and is announced with its field."""
    page = alice_client.get(reverse("trade", args=[account.pk])).content.decode()
    for name, words in [
        ("extra_collateral", "moves the liquidation price away, and is at risk too."),
        ("take_profit", "takes the gain"),
        ("stop_loss", "cuts the loss before liquidation"),
        ("price", "fills at this price or better."),
        ("stop_price", "fills at market once the mark reaches it."),
    ]:
        assert f'aria-describedby="id_{name}_helptext"' in page
        help_text = page.split(f'<small class="help" id="id_{name}_helptext">', 1)[1]
        assert words in help_text.split("</small>", 1)[0], name


@pytest.mark.parametrize("instrument", ["none", "not tradable"])
def test_a_classroom_with_nothing_to_trade_says_so_instead_of_an_empty_ticket(
    alice_client, account, classroom, instrument
):
    if instrument == "not tradable":
        btc = make_instrument(classroom)
        Instrument.objects.filter(pk=btc.pk).update(is_tradable=False)
    response = alice_client.get(reverse("trade", args=[account.pk]))
    page = response.content.decode()
    assert response.status_code == 200
    assert 'data-testid="nothing-to-trade"' in page
    assert "None of this classroom's instruments takes orders right now." in page
    # No empty instrument list, refused before the student did anything.
    assert 'id="ticket"' not in page
    assert "Place order" not in page
    assert "This field is required." not in page


def test_the_preview_shows_margin_fee_liquidation_and_maximum_loss(alice_client, account, btc):
    response = alice_client.post(
        reverse("trade-preview", args=[account.pk]),
        {
            "instrument": btc.pk,
            "side": "long",
            "type": "market",
            "quantity": "0.5",
            "leverage": "20",
        },
    )
    content = response.content.decode()
    assert response.status_code == 200
    assert "1,500.00" in content  # initial margin and maximum loss
    assert "15.00" in content  # fee 0.05% of 30,000
    assert '<dd data-testid="preview-lp">57,229.0</dd>' in content
    # Measured to the liquidation price shown: 60,000 - 57,229.0, not 60,000 - 57,228.92.
    assert "<dt>Distance to liquidation</dt><dd>2,771.0 (4.62%)</dd>" in content
    assert '<dd class="maxloss loss" data-testid="preview-max-loss">1,500.00</dd>' in content
    assert "The fee (15.00) is paid when the order fills, win or lose." in content
    assert "57,000.0" in content  # bankruptcy price
    assert not Position.objects.exists()


def test_the_preview_refuses_a_stop_loss_beyond_the_liquidation_price(alice_client, account, btc):
    response = alice_client.post(
        reverse("trade-preview", args=[account.pk]),
        {
            "instrument": btc.pk,
            "side": "long",
            "type": "market",
            "quantity": "0.5",
            "leverage": "20",
            "stop_loss": "57000",
        },
    )
    content = response.content.decode()
    assert "beyond the liquidation price" in content
    assert 'data-testid="preview-lp"' not in content
    assert not Position.objects.exists()


def test_the_preview_of_an_untouched_ticket_asks_for_a_size_without_an_error(
    alice_client, account, btc
):
    untouched = {"instrument": btc.pk, "side": "long", "type": "market", "leverage": "10"}
    response = alice_client.post(reverse("trade-preview", args=[account.pk]), untouched)
    content = response.content.decode()
    assert response.status_code == 200
    assert "Enter a quantity or a notional to see the margin" in content
    quantity_error = content.split('id="id_quantity_error"', 1)[1].split("</span>", 1)[0]
    assert quantity_error.endswith(">")  # the field's error span, swapped in empty
    assert "Fix the fields marked in red" not in content
    # Other mistakes still show before a size is typed, and placing still needs a size.
    response = alice_client.post(
        reverse("trade-preview", args=[account.pk]), {**untouched, "type": "limit"}
    )
    assert "Fix the fields marked in red" in response.content.decode()
    assert "A limit order needs a price." in response.content.decode()
    response = alice_client.post(reverse("trade", args=[account.pk]), untouched)
    assert response.status_code == 400
    assert "Enter a quantity or a notional." in response.content.decode()
    assert not Position.objects.exists()


def test_the_preview_converts_a_notional_into_whole_lots(alice_client, account, btc):
    response = alice_client.post(
        reverse("trade-preview", args=[account.pk]),
        {
            "instrument": btc.pk,
            "side": "short",
            "type": "market",
            "notional": "30010",
            "leverage": "10",
        },
    )
    assert "0.500 · notional 30,000.00" in response.content.decode()


def test_placing_a_market_order_opens_the_position_and_shows_its_page(alice_client, account, btc):
    response = alice_client.post(
        reverse("trade", args=[account.pk]),
        {
            "instrument": btc.pk,
            "side": "long",
            "type": "market",
            "quantity": "0.5",
            "leverage": "20",
            "extra_collateral": "100",
            "take_profit": "70000",
            "stop_loss": "58000",
        },
    )
    position = Position.objects.get()
    assert response["Location"] == reverse("position", args=[position.pk])
    assert position.collateral.amount == Decimal("1600")
    assert position.take_profit == Decimal("70000")
    page = alice_client.get(response["Location"])
    assert page.status_code == 200
    assert b"Position opened" in page.content  # the timeline
    assert_ledger_invariants()


def test_a_limit_order_rests_and_can_be_cancelled(alice_client, account, btc):
    response = alice_client.post(
        reverse("trade", args=[account.pk]),
        {
            "instrument": btc.pk,
            "side": "long",
            "type": "limit",
            "quantity": "0.1",
            "leverage": "5",
            "price": "55000",
        },
    )
    order = Order.objects.get()
    assert order.status == Order.Status.RESTING
    assert response["Location"] == reverse("dashboard", args=[account.pk])
    assert f"#{order.pk} Limit".encode() in alice_client.get(response["Location"]).content
    alice_client.post(reverse("order-cancel", args=[order.pk]), {"next": "https://evil.example/"})
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED


@pytest.mark.parametrize("after", ["1e400", "dashboard", "logout", "positions", "\x00"])
def test_a_cancel_sent_back_to_no_page_of_the_site_lands_on_the_dashboard(
    alice_client, account, btc, after
):
    order = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="0.001", leverage=5, price="50000",
    )  # fmt: skip
    response = alice_client.post(reverse("order-cancel", args=[order.pk]), {"next": after})
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard", args=[account.pk])
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED


def test_a_cancel_sent_twice_says_the_order_is_cancelled_not_that_it_failed(
    alice_client, account, btc
):
    order = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="0.001", leverage=5, price="50000",
    )  # fmt: skip
    url = reverse("order-cancel", args=[order.pk])
    first = alice_client.post(url, follow=True)
    second = alice_client.post(url, follow=True)
    assert [str(m) for m in first.context["messages"]] == [f"Order #{order.pk} cancelled."]
    assert [(m.level_tag, str(m)) for m in second.context["messages"]] == [
        ("info", f"Order #{order.pk} is cancelled.")
    ]
    assert_ledger_invariants()


def test_a_cancel_of_an_order_filled_meanwhile_names_the_order(alice_client, account, btc):
    """The dashboard was left open while the order filled: the refusal says which order."""
    order = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="0.001", leverage=5, price="59000",
    )  # fmt: skip
    set_price(btc, "58900")  # the limit fills
    order.refresh_from_db()
    assert order.status == Order.Status.FILLED
    response = alice_client.post(reverse("order-cancel", args=[order.pk]), follow=True)
    assert [(m.level_tag, str(m)) for m in response.context["messages"]] == [
        ("error", f"Order #{order.pk} is filled; only resting orders can be cancelled.")
    ]


def test_the_dashboard_shows_what_resting_orders_hold_until_cancelled(alice_client, account, btc):
    ticket = {"instrument": btc.pk, "side": "long", "type": "limit", "quantity": "0.1"}
    alice_client.post(
        reverse("trade", args=[account.pk]), ticket | {"leverage": "5", "price": "55000"}
    )
    order = Order.objects.get()
    live = reverse("dashboard-live", args=[account.pk])
    content = alice_client.get(live).content.decode()
    # 0.1 x 55,000 / 5 = 1,100 margin + 2.75 fee at the limit.
    assert (
        '<span class="label">Held by orders</span><span class="value" data-testid="order-margin">1,102.75</span>'
        in content
    )
    assert '<span class="value" data-testid="free-balance">8,897.25</span>' in content
    assert '<span class="value" data-testid="equity">10,000.00</span>' in content
    assert '<span class="muted" data-testid="order-hold">holds 1,102.75</span>' in content
    alice_client.post(reverse("order-cancel", args=[order.pk]))
    content = alice_client.get(live).content.decode()
    assert 'data-testid="order-margin">0.00</span>' in content
    assert 'data-testid="free-balance">10,000.00</span>' in content
    assert_ledger_invariants()


def test_a_resting_reduce_only_order_on_the_dashboard_names_the_position_it_closes(
    alice_client, account, position, btc
):
    # A stop to sell below the mark: on its own it reads as a short waiting to open.
    order = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="short", type="stop",
        quantity="0.2", stop_price="58000", reduce_only=True, position_id=position.pk,
    )  # fmt: skip
    content = alice_client.get(reverse("dashboard-live", args=[account.pk])).content.decode()
    line = content.split(f"Order #{order.pk} ", 1)[1].split("</li>", 1)[0]
    assert line.startswith("Stop market short 0.200 BTCUSDT")
    assert (
        f'(reduce only: closes <a href="/positions/{position.pk}/">Position #{position.pk}</a>)'
        in line
    )
    assert "holds" not in line  # a reduce-only order holds nothing
    assert_ledger_invariants()


@pytest.mark.parametrize(
    ("order", "held"),
    [
        ({"type": "limit", "price": "59000"}, "2,964.75"),  # 2,950 margin + 14.75 fee at 59,000
        ({"type": "stop", "stop_price": "61000"}, "3,065.25"),  # 3,050 + 15.25 at 61,000
    ],
)
def test_the_preview_of_a_resting_order_says_what_it_will_hold(
    alice_client, account, btc, order, held
):
    ticket = {"instrument": btc.pk, "side": "long", "quantity": "0.5", "leverage": "10"}
    url = reverse("trade-preview", args=[account.pk])
    content = alice_client.post(url, ticket | order).content.decode()
    assert f'<dt>Held while it rests</dt><dd data-testid="preview-hold">{held}</dd>' in content
    assert f"Until it triggers, this order holds {held} of your free balance" in content
    assert "(the margin and the fee)" in content
    extra = alice_client.post(url, ticket | order | {"extra_collateral": "100"}).content
    assert "(the margin, the extra collateral and the fee)" in extra.decode()
    market = alice_client.post(url, ticket | {"type": "market"}).content.decode()
    assert "preview-hold" not in market
    assert "<dt>Total from your balance</dt><dd>3,015.00</dd>" in market
    assert not Order.objects.exists()


def test_position_actions_add_remove_margin_tpsl_and_close(alice_client, account, position, btc):
    url = reverse("position-margin", args=[position.pk])
    alice_client.post(url, {"margin-action": "add", "margin-amount": "500"})
    position.refresh_from_db()
    assert position.collateral.amount == Decimal("2000")
    assert position.liquidation_price == Decimal("56224.8995983936")
    alice_client.post(url, {"margin-action": "remove", "margin-amount": "200"})
    position.refresh_from_db()
    assert position.collateral.amount == Decimal("1800")
    alice_client.post(
        reverse("position-tpsl", args=[position.pk]),
        {"tpsl-take_profit": "65000", "tpsl-stop_loss": ""},
    )
    position.refresh_from_db()
    assert position.take_profit == Decimal("65000") and position.stop_loss is None
    alice_client.post(reverse("position-close", args=[position.pk]), {"close-quantity": "0.2"})
    position.refresh_from_db()
    assert position.quantity == Decimal("0.3")
    set_price(btc, "61000")
    alice_client.post(reverse("position-close", args=[position.pk]), {"close-quantity": ""})
    position.refresh_from_db()
    assert position.status == Position.Status.CLOSED
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    for label in ("Margin added", "Margin removed", "<strong>Close</strong>", "Closed"):
        assert label in page
    # Collateral moving back to the free balance is not a loss: shown as what comes back,
    # uncoloured; only the result is coloured.
    assert page.count("<strong>Close</strong> 0.2 of position") == 1
    # Each close says what it realised, so a partial close's result is not lost in the total.
    partial = page.split("<strong>Close</strong> 0.2", 1)[1].split("</li>", 1)[0]
    assert "at 60,000.0: realised PnL 0.00, fee 6.00" in partial  # written as the page writes
    assert '; collateral released <span class="flat">+720.00</span>' in partial
    result = page.split("<strong>Closed</strong>", 1)[1].split("</li>", 1)[0]
    assert position.realized_pnl > 0
    assert result.count(f"{position.realized_pnl:,.2f}") == 1  # said once, not twice
    assert '<span class="gain">+' in result
    # A closed position no longer refreshes, and shows its exit, not a liquidation price.
    assert 'hx-trigger="every 2s"' not in page.split('id="position-live"', 1)[1].split(">", 1)[0]
    # Closed 0.2 at 60,000 and 0.3 at 61,000: the exit its PnL comes from is their average.
    assert (
        '<span class="label">Average exit</span>'
        '<span class="value" data-testid="average-exit">60,600.0</span>'
        '<small class="muted">over 2 closes, the last at 61,000.0</small>'
    ) in page
    assert_ledger_invariants()


def test_chart_json_has_the_mark_path_lines_markers_and_the_loss_floor(alice_client, position, btc):
    # The engine ticks: a margin call at 57,260 (ratio above 80%), the liquidation at 57,000.
    for price in ("59500", "57260", "57000", "50000"):
        set_price(btc, price)
    assert LiquidationEvent.objects.filter(position=position).exists()
    data = alice_client.get(reverse("position-chart", args=[position.pk])).json()
    # After the liquidation the PnL stays at minus the collateral; without the ring-fence
    # the same path would have kept losing.
    assert Decimal(data["pnl"][-1]["value"]) == Decimal("-1500")
    assert Decimal(data["pnl_unfenced"][-1]["value"]) == Decimal("-5000")
    assert all(Decimal(p["value"]) >= Decimal("-1500") for p in data["pnl"])
    assert data["status"] == "liquidated"
    # The lines carry the prices the page shows: on the tick, rounded towards the entry
    # (57,228.92 is 57,229.0 for a long), so the chart's labels and the page agree.
    lines = {name: Decimal(value) for name, value in data["lines"].items()}
    assert lines == {
        "entry": Decimal("60000"),
        "liquidation": Decimal("57229.0"),
        "bankruptcy": Decimal("57000"),
    }
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert '<span class="label">Liquidation price</span><span class="value">57,229.0<' in page
    assert Decimal(data["floor"][-1]["value"]) == Decimal("-1500")
    assert [m["kind"] for m in data["markers"]] == ["margin_call", "liquidation"]
    assert data["mark"] and all(isinstance(p["value"], str) for p in data["mark"])
    times = [p["time"] for p in data["mark"]]
    assert times == sorted(set(times))  # one point per second, strictly increasing


def test_a_run_of_margin_calls_is_labelled_once_on_the_chart(alice_client, position, btc):
    """The mark hovers about the warning level: three margin calls seconds apart print one
    label over three dots, not three labels over one another; a call long before them on the
    hour's chart keeps a label of its own."""
    Position.objects.filter(pk=position.pk).update(opened_at=timezone.now() - timedelta(hours=1))
    for price in ("57260", "59500", "57260", "59500", "57260", "59500", "57260"):
        set_price(btc, price)
    calls = list(MarginCall.objects.filter(position=position).order_by("created_at", "pk"))
    assert len(calls) == 4
    MarginCall.objects.filter(pk=calls[0].pk).update(
        created_at=timezone.now() - timedelta(minutes=50)
    )
    data = alice_client.get(reverse("position-chart", args=[position.pk])).json()
    assert [(m["kind"], m["text"]) for m in data["markers"]] == [
        ("margin_call", "Margin call"),
        ("margin_call", "3 margin calls"),
        ("margin_call", ""),
        ("margin_call", ""),
    ]
    times = [m["time"] for m in data["markers"]]
    assert times == sorted(times)


def test_the_pnl_chart_rounds_its_amounts_as_the_page_does(alice_client, account, btc):
    """1,500.015 of collateral shows as 1,500.02 on the page; the chart's floor says the same,
    instead of leaving a browser to round the binary 1500.01499… down to 1500.01."""
    position = open_position(account, btc, "long", "0.5", 20, extra_collateral="0.015")
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert 'data-testid="collateral">1,500.02<' in page
    data = alice_client.get(reverse("position-chart", args=[position.pk])).json()
    assert {p["value"] for p in data["floor"]} == {"-1500.02"}
    assert all(len(p["value"].partition(".")[2]) == 2 for p in data["pnl"])


def test_after_a_liquidation_the_pnl_chart_stays_at_the_lost_collateral(
    alice_client, position, btc
):
    """Liquidated at 57,100, before the bankruptcy price: the whole 1,500 of collateral is
    lost. When the market comes back to 58,000 the position is gone, so the PnL stays at
    -1,500; only the line without the ring-fence follows the market (-1,000)."""
    set_price(btc, "57100")
    position.refresh_from_db()
    assert position.status == "liquidated"
    set_price(btc, "58000")
    data = alice_client.get(reverse("position-chart", args=[position.pk])).json()
    assert (
        Decimal(data["pnl"][-1]["value"]) == Decimal(-1500) == Decimal(data["floor"][-1]["value"])
    )
    assert Decimal(data["pnl_unfenced"][-1]["value"]) == Decimal(-1000)


def test_the_pnl_chart_of_a_position_closed_in_parts_adds_what_each_close_realised(
    alice_client, position, btc
):
    """Long 0.5 at 60,000: up 1,000 it is +500; 0.2 closed there realise +200; down at 59,000
    the 0.3 left is -300, -100 in all; closing them at 59,000 ends the chart at the realised
    -100, not at the whole 0.5 marked at the exit (-500)."""
    start = timezone.now() - timedelta(minutes=1)
    Position.objects.filter(pk=position.pk).update(opened_at=start)

    def mark_at(seconds: int, price: str) -> None:
        at = start + timedelta(seconds=seconds)
        PriceTick.objects.create(instrument=btc, price=Decimal(price), created_at=at)
        Instrument.objects.filter(pk=btc.pk).update(mark_price=Decimal(price))

    def close_at(seconds: int, quantity: str | None) -> None:
        position_close(position_id=position.pk, quantity=quantity)
        newest = Fill.objects.filter(position=position).order_by("-pk")[:1].get()
        Fill.objects.filter(pk=newest.pk).update(created_at=start + timedelta(seconds=seconds))

    def chart() -> tuple[dict[int, Decimal], Decimal]:
        data = alice_client.get(reverse("position-chart", args=[position.pk])).json()
        return {p["time"]: Decimal(p["value"]) for p in data["pnl"]}, Decimal(
            data["floor"][-1]["value"]
        )

    mark_at(10, "61000")
    close_at(15, "0.2")
    mark_at(20, "59000")
    position.refresh_from_db()
    assert position.realized_pnl == Decimal(200)
    pnl, floor = chart()
    assert pnl[int((start + timedelta(seconds=10)).timestamp())] == Decimal(500)
    assert pnl[int((start + timedelta(seconds=20)).timestamp())] == Decimal(-100)
    # The 0.3 still open can lose its collateral and no more, after the 200 already realised.
    assert floor == Decimal(200) - position.collateral.amount
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert '<span class="label">Realised so far</span><span class="value gain">+200.00<' in page

    close_at(25, None)
    Position.objects.filter(pk=position.pk).update(closed_at=start + timedelta(seconds=25))
    position.refresh_from_db()
    assert position.realized_pnl == Decimal(-100)
    pnl, _ = chart()
    assert pnl[max(pnl)] == position.realized_pnl


def test_the_pnl_chart_measures_a_past_loss_against_the_collateral_held_then(
    alice_client, position, btc
):
    """Long 0.5 at 60,000 with 1,500 of collateral; 3,000 added, the mark dips to 56,000
    (-2,000, well inside the 4,500 then held), comes back to 62,000, and 2,900 is taken out.
    The dip is drawn as the -2,000 it was: the ring-fence never cut it, though the 1,600 left
    now is less than that loss."""
    from positions.services import position_add_margin, position_remove_margin

    start = timezone.now() - timedelta(minutes=1)
    Position.objects.filter(pk=position.pk).update(opened_at=start)

    def stamp_last_movement(seconds: int) -> None:
        newest = LedgerTransaction.objects.filter(position_id=position.pk).order_by("-pk")[:1]
        LedgerTransaction.objects.filter(pk__in=list(newest.values_list("pk", flat=True))).update(
            created_at=start + timedelta(seconds=seconds)
        )

    def mark_at(seconds: int, price: str) -> None:
        at = start + timedelta(seconds=seconds)
        PriceTick.objects.create(instrument=btc, price=Decimal(price), created_at=at)
        Instrument.objects.filter(pk=btc.pk).update(mark_price=Decimal(price))

    stamp_last_movement(0)  # the opening
    position_add_margin(position_id=position.pk, amount="3000")
    stamp_last_movement(5)
    mark_at(10, "56000")
    mark_at(20, "62000")
    position_remove_margin(position_id=position.pk, amount="2900")
    stamp_last_movement(25)
    position.refresh_from_db()
    assert position.collateral.amount == Decimal(1600)
    data = alice_client.get(reverse("position-chart", args=[position.pk])).json()
    pnl = {p["time"]: Decimal(p["value"]) for p in data["pnl"]}
    assert pnl[int((start + timedelta(seconds=10)).timestamp())] == Decimal(-2000)
    assert data["pnl_unfenced"] == []  # no point where the two paths part
    # What it could lose at each moment: 1,500, 4,500 from the top-up on, 1,600 from now on.
    assert [Decimal(p["value"]) for p in data["floor"]] == [
        Decimal(-1500),
        Decimal(-4500),
        Decimal(-1600),
        Decimal(-1600),
    ]


def _chart_story(position, btc):
    """Helpers that stamp a position's events and marks some seconds after its opening."""
    start = timezone.now() - timedelta(minutes=1)
    Position.objects.filter(pk=position.pk).update(opened_at=start)

    def second(seconds: int) -> int:
        return int((start + timedelta(seconds=seconds)).timestamp())

    def stamp(seconds: int) -> None:
        """The newest ledger transaction of the position, and its fill if it made one."""
        at = start + timedelta(seconds=seconds)
        newest = LedgerTransaction.objects.filter(position_id=position.pk).order_by("-pk")[:1]
        LedgerTransaction.objects.filter(pk__in=list(newest.values_list("pk", flat=True))).update(
            created_at=at
        )
        if newest.get().kind == LedgerTransaction.Kind.CLOSE:
            fill = Fill.objects.filter(position=position).order_by("-pk")[:1].get()
            Fill.objects.filter(pk=fill.pk).update(created_at=at)
            Position.objects.filter(pk=position.pk, status="closed").update(closed_at=at)

    def mark_at(seconds: int, price: str) -> None:
        PriceTick.objects.create(
            instrument=btc, price=Decimal(price), created_at=start + timedelta(seconds=seconds)
        )
        Instrument.objects.filter(pk=btc.pk).update(mark_price=Decimal(price))

    stamp(0)  # the opening
    return second, stamp, mark_at


def _floor_at(floor: list[dict[str, object]], time: int) -> Decimal:
    return [Decimal(str(p["value"])) for p in floor if int(str(p["time"])) <= time][-1]


def test_the_pnl_chart_floor_steps_with_each_margin_change_and_close(alice_client, position, btc):
    """Long 0.5 at 60,000 with 1,500 of collateral, worked by hand (the PnL before fees, as
    the chart and the page's "Realised so far" show it; the floor is what was realised minus
    the collateral held then):

    - 0 s, opened: nothing realised, 1,500 held: floor -1,500;
    - 5 s, 1,000 added: 2,500 held: floor -2,500;
    - 10 s, mark 59,000: PnL 0.5 x -1,000 = -500;
    - 15 s, 0.2 closed at 59,000: realises -200 and releases 2,500 x 0.2 / 0.5 = 1,000, so
      1,500 is held for the 0.3 left: floor -200 - 1,500 = -1,700 (the fee of 5.90 comes out
      of the 1,000 released, not of what stays); PnL -200 + 0.3 x -1,000 = -500;
    - 20 s, mark 61,000: PnL -200 + 300 = +100;
    - 25 s, 500 taken out: 1,000 held: floor -1,200;
    - 30 s, mark 59,500: PnL -200 - 150 = -350;
    - 35 s, the 0.3 closed at 59,500: realises -150, nothing held: floor and PnL -350.

    The old floor, the last close's realised PnL before it minus the peak collateral
    (-200 - 2,500 = -2,700), was never true at any moment."""
    from positions.services import position_add_margin, position_remove_margin

    second, stamp, mark_at = _chart_story(position, btc)
    position_add_margin(position_id=position.pk, amount="1000")
    stamp(5)
    mark_at(10, "59000")
    position_close(position_id=position.pk, quantity="0.2")
    stamp(15)
    mark_at(20, "61000")
    position_remove_margin(position_id=position.pk, amount="500")
    stamp(25)
    mark_at(30, "59500")
    position_close(position_id=position.pk)
    stamp(35)
    position.refresh_from_db()
    assert position.realized_pnl == Decimal(-350)

    data = alice_client.get(reverse("position-chart", args=[position.pk])).json()
    floor = [(p["time"], Decimal(p["value"])) for p in data["floor"]]
    assert floor == [
        (second(0), Decimal(-1500)),
        (second(5), Decimal(-2500)),
        (second(15), Decimal(-1700)),
        (second(25), Decimal(-1200)),
        (second(35), Decimal(-350)),
    ]
    pnl = {p["time"]: Decimal(p["value"]) for p in data["pnl"]}
    assert pnl == {
        second(0): Decimal(0),
        second(5): Decimal(0),
        second(10): Decimal(-500),
        second(15): Decimal(-500),
        second(20): Decimal(100),
        second(25): Decimal(100),
        second(30): Decimal(-350),
        second(35): Decimal(-350),
    }
    assert all(value >= _floor_at(data["floor"], time) for time, value in pnl.items())
    assert data["pnl_unfenced"] == []


def test_the_fence_of_a_liquidated_pnl_is_the_floor_of_its_moment(alice_client, position, btc):
    """Long 0.5 at 60,000 with 1,500: 0.2 closed at 61,000 realise +200 and release 600, so
    900 is held for the 0.3 left: floor 200 - 900 = -700. The mark crashes to 50,000 (the
    0.3 would be -3,000): the fenced PnL stops at that floor, -700, where the line without
    the ring-fence (200 - 3,000 = -2,800) parts from it, and the liquidation leaves it
    there."""
    second, stamp, mark_at = _chart_story(position, btc)
    mark_at(5, "61000")
    position_close(position_id=position.pk, quantity="0.2")
    stamp(10)
    set_price(btc, "50000")
    position.refresh_from_db()
    assert position.status == "liquidated"
    assert LiquidationEvent.objects.get(position=position).collateral_lost == Decimal(900)

    data = alice_client.get(reverse("position-chart", args=[position.pk])).json()
    floor = [(p["time"], Decimal(p["value"])) for p in data["floor"]]
    assert floor[:3] == [
        (second(0), Decimal(-1500)),
        (second(10), Decimal(-700)),
        (data["pnl"][-1]["time"], Decimal(-700)),
    ]
    assert len(floor) == 3
    crash = next(p["time"] for p in data["mark"] if Decimal(p["value"]) == 50000)
    pnl = {p["time"]: Decimal(p["value"]) for p in data["pnl"]}
    assert pnl[second(5)] == Decimal(500)
    assert pnl[crash] == Decimal(-700) == _floor_at(data["floor"], crash)
    unfenced = {p["time"]: Decimal(p["value"]) for p in data["pnl_unfenced"]}
    assert unfenced[crash] == Decimal(-2800)
    # The line without the ring-fence starts where the two parted: the last point above it.
    assert min(unfenced) < crash and unfenced[min(unfenced)] == pnl[min(unfenced)]


@pytest.mark.parametrize(
    ("price", "memo", "timeline", "headline"),
    [
        (
            "57900",
            "at 57900 (stop-loss 58000 reached)",
            "at 57,900.0 (stop-loss 58,000.0 reached)",
            "at 57,900.0 by your stop-loss at 58,000.0",
        ),
        (
            "62100",
            "at 62100 (take-profit 62000 reached)",
            "at 62,100.0 (take-profit 62,000.0 reached)",
            "at 62,100.0 by your take-profit at 62,000.0",
        ),
    ],
)
def test_a_close_by_take_profit_or_stop_loss_says_so(
    alice_client, account, position, btc, price, memo, timeline, headline
):
    """The engine closes the position, not the student: the headline, the timeline and the
    statement say which of the two levels the mark reached."""
    position_set_tpsl(position_id=position.pk, take_profit="62000", stop_loss="58000")
    set_price(btc, price)
    position.refresh_from_db()
    assert position.status == "closed"
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert f"<strong>Close</strong> 0.5 of position #{position.pk} {timeline}:" in page
    assert f'data-testid="position-status">Closed {headline}; realised PnL' in page
    history = alice_client.get(reverse("history", args=[account.pk])).content.decode()
    assert f"{memo}: realised PnL" in history
    # The orders table names the close order after the level, not as a market order.
    close = Order.objects.get(position=position, reduce_only=True)
    row = history.split(f'<tr data-order="{close.pk}">')[1].split("</tr>")[0]
    kind, level = headline.split("by your ")[1].split(" at ")
    assert f"<td>{kind.capitalize()} <span" in row
    assert f"{kind} {level}; filled at {price_text(close.fills.get().price, btc.tick_size)}" in row


def test_a_close_by_hand_names_no_trigger(alice_client, position):
    alice_client.post(reverse("position-close", args=[position.pk]), {"close-quantity": ""})
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert f"<strong>Close</strong> 0.5 of position #{position.pk} at 60,000.0: realised" in page
    assert 'data-testid="position-status">Closed at 60,000.0; realised PnL' in page


def test_liquidated_position_page_tells_the_isolation_lesson(alice_client, account, position, btc):
    balance_before = TradingAccount.objects.get(pk=account.pk).balance
    set_price(btc, "59000")
    set_price(btc, "57000")  # the engine liquidates the position
    set_price(btc, "42000")  # and the market keeps falling
    content = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert "Liquidated at 57,000.0" in content
    assert '<span class="value loss" data-testid="loss">-1,500.00</span>' in content
    assert f'data-testid="free-balance">{balance_before:,.2f}<' in content
    assert "Cross margin (whole account as collateral)" in content
    assert '<dd data-testid="cross-survived">Yes</dd>' in content
    assert "7,584.00" in content  # the smallest extra collateral that survives 42,000
    assert "26.32%" in content  # how far the mark went after the liquidation at 57,000
    assert_ledger_invariants()
    dashboard = alice_client.get(reverse("dashboard", args=[account.pk])).content.decode()
    assert 'data-testid="lesson"' in dashboard
    # The net result (the collateral and the 15.00 opening fee) reads the same on the
    # position page and in the history.
    balance_after = TradingAccount.objects.get(pk=account.pk).balance
    assert balance_after - (balance_before + 1500 + 15) == Decimal("-1515")  # opened at 1,515
    assert 'data-testid="net-result">-1,515.00<' in content
    # Liquidated at the bankruptcy price: nothing was left for the insurance fund, and the
    # note adds up without a part it does not name.
    assert "what it did to your free balance: PnL -1,500.00, fees 15.00.</p>" in content
    history = alice_client.get(reverse("history", args=[account.pk])).content.decode()
    assert f'data-testid="net-result-{position.pk}">-1,515.00<' in history


def test_the_net_result_of_a_liquidation_counts_what_went_to_the_insurance_fund(
    alice_client, account, btc
):
    """Liquidated before the bankruptcy price: part of the collateral goes to the insurance
    fund, not into the realised PnL; the net result is still what the balance lost."""
    Classroom.objects.filter(pk=account.classroom_id).update(liquidation_fee_rate=Decimal("0.001"))
    start = TradingAccount.objects.get(pk=account.pk).balance
    position = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.01", leverage=20
    ).position
    assert position is not None
    # Past the liquidation price 57,228.9, short of bankruptcy at 57,000: 1.00 is left, of
    # which 0.571 is the liquidation fee and the rest goes to the insurance fund.
    set_price(btc, "57100")
    position.refresh_from_db()
    assert position.status == "liquidated"
    lost = TradingAccount.objects.get(pk=account.pk).balance - start
    assert lost == Decimal("-30.3")  # the collateral and the opening fee
    assert position.realized_pnl - position.fees_paid != lost  # not what the PnL says
    history = alice_client.get(reverse("history", args=[account.pk])).content.decode()
    assert f'data-testid="net-result-{position.pk}">-30.30<' in history
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert 'data-testid="net-result">-30.30<' in page
    # The note under the cards names each part, and they add up: -29.00 - 0.87 - 0.43 = -30.30.
    assert (
        "what it did to your free balance: PnL -29.00, fees 0.87 (the liquidation fee 0.57 "
        "included), and 0.43 of collateral left after the loss, which went to the insurance "
        "fund.</p>"
    ) in page


def test_a_long_history_says_that_older_positions_and_orders_are_not_listed(
    alice_client, account, btc
):
    url = reverse("history", args=[account.pk])
    opened = []
    for _ in range(HISTORY_POSITIONS):
        position = position_open(
            account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.001", leverage=5
        )
        position_close(position_id=position.pk)
        opened.append(position)
    assert Order.objects.filter(account=account).count() > HISTORY_ORDERS
    page = alice_client.get(url).content.decode()
    # Every closed position is listed, and nothing says otherwise; the orders are cut.
    assert 'data-testid="older-positions"' not in page
    assert f">Position #{opened[0].pk} BTCUSDT<" in page
    assert "These are your latest 100 orders" in page
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.001", leverage=5
    )
    position_close(position_id=position.pk)
    page = alice_client.get(url).content.decode()
    # The oldest is no longer on the page: the page says so and where to find it.
    assert f">Position #{opened[0].pk} BTCUSDT<" not in page
    assert f">Position #{position.pk} BTCUSDT<" in page
    assert "These are your latest 200 closed positions; the CSV has every one." in page
    csv_rows = list(
        csv.DictReader(
            io.StringIO(
                alice_client.get(reverse("positions-csv", args=[account.pk])).content.decode()
            )
        )
    )
    assert len(csv_rows) == HISTORY_POSITIONS + 1
    assert_ledger_invariants()


def test_history_lists_closed_positions_and_the_statement_downloads_as_csv(
    alice_client, account, position
):
    alice_client.post(reverse("position-close", args=[position.pk]), {"close-quantity": ""})
    page = alice_client.get(reverse("history", args=[account.pk])).content.decode()
    assert f"#{position.pk} BTCUSDT" in page and "Starting balance" in page
    # Each statement line says what happened once: the service's memo, not "Kind memo".
    assert "Starting balance Starting balance" not in page
    assert f"<td>Close 0.5 of position #{position.pk} at 60000" in page
    response = alice_client.get(reverse("statement-csv", args=[account.pk]))
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [r["kind"] for r in rows] == [
        LedgerTransaction.Kind.DEPOSIT,
        LedgerTransaction.Kind.OPEN,
        LedgerTransaction.Kind.CLOSE,
    ]
    account.refresh_from_db()
    assert Decimal(rows[-1]["balance"]) == account.balance
    positions = list(
        csv.DictReader(
            io.StringIO(
                alice_client.get(reverse("positions-csv", args=[account.pk])).content.decode()
            )
        )
    )
    assert [(r["position"], r["status"]) for r in positions] == [(str(position.pk), "closed")]


def test_leaderboard_ranks_by_the_instructors_choice(alice_client, account, other_account, btc):
    position = order_place(
        account_id=other_account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
    ).position
    assert position is not None
    set_price(btc, "57000")
    assert LiquidationEvent.objects.filter(position=position).exists()
    page = alice_client.get(reverse("leaderboard", args=[account.pk])).content.decode()
    assert page.index("alice") < page.index("bob")
    assert "15.15%" in page  # bob's drawdown: 1,515 of 10,000 (fee + collateral)
    classroom = account.classroom
    classroom.ranking = "risk_adjusted"
    classroom.save()
    assert (
        "Return per unit of drawdown".lower()
        in alice_client.get(reverse("leaderboard", args=[account.pk])).content.decode()
    )


def test_leaderboard_leaves_out_deactivated_classmates(alice_client, account, other_account):
    """An operator deactivates someone who has left or must be kept out: their classmates no
    longer see their name and results."""
    gone = make_student(account.classroom, username="deactivated-dora")
    account_adjust(account_id=gone.pk, amount=Decimal(5000), reason="Prize")  # would rank first
    User.objects.filter(pk=gone.user_id).update(is_active=False)
    page = alice_client.get(reverse("leaderboard", args=[account.pk])).content.decode()
    assert "deactivated-dora" not in page
    assert "alice" in page and "bob" in page


@pytest.mark.parametrize("page", ["dashboard", "dashboard-live"])
def test_dashboard_and_position_list_queries_do_not_grow_with_positions(
    client, django_assert_max_num_queries, classroom, page
):
    accounts = {}
    for n in (2, 20):
        btc = make_instrument(classroom, symbol=f"BTC{n}")
        account = make_student(classroom, username=f"trader{n}")
        for _ in range(n):
            order_place(
                account_id=account.pk,
                instrument_id=btc.pk,
                side="long",
                quantity="0.01",
                leverage=10,
            )
        accounts[n] = account

    client.force_login(accounts[2].user)
    with CaptureQueriesContext(connection) as few:
        response = client.get(reverse(page, args=[accounts[2].pk]))
    assert response.content.decode().count('href="/positions/') >= 2
    # 16 since the holds of resting orders are read from the orders (an index scan) rather
    # than summed over the account's whole ledger history on every refresh; 17 with the
    # account's orders refused when they triggered in the last day (one query on the
    # order_account_status index, their instruments joined).
    assert len(few) <= 17

    client.force_login(accounts[20].user)
    with django_assert_max_num_queries(len(few)):
        response = client.get(reverse(page, args=[accounts[20].pk]))
    assert response.content.decode().count('href="/positions/') >= 20


def test_leaderboard_queries_do_not_grow_with_students_or_trades(
    client, django_assert_max_num_queries
):
    seen = {}
    for n in (2, 12):
        classroom = make_classroom(name=f"Board {n}")
        btc = make_instrument(classroom)
        students = [make_student(classroom, username=f"board{n}-{i}") for i in range(n)]
        for student in students:
            account_adjust(account_id=student.pk, amount=Decimal(100), reason="Bonus")
            for _ in range(n // 2):
                order_place(
                    account_id=student.pk,
                    instrument_id=btc.pk,
                    side="long",
                    quantity="0.01",
                    leverage=10,
                )
        seen[n] = students[0]

    client.force_login(seen[2].user)
    with CaptureQueriesContext(connection) as few:
        response = client.get(reverse("leaderboard", args=[seen[2].pk]))
    assert response.content.decode().count("<td>board2-") == 2
    assert len(few) <= 15

    client.force_login(seen[12].user)
    with django_assert_max_num_queries(len(few)):
        response = client.get(reverse("leaderboard", args=[seen[12].pk]))
    assert response.content.decode().count("<td>board12-") == 12


def test_a_losing_open_position_gets_its_lesson_on_the_dashboard(
    alice_client, account, position, btc
):
    btc.mark_price = Decimal("59900")  # 50.00 of 1,500.00 collateral: not yet a lesson
    btc.save()
    content = alice_client.get(reverse("dashboard", args=[account.pk])).content.decode()
    assert 'data-testid="lesson"' not in content
    btc.mark_price = Decimal("58000")
    btc.save()
    content = alice_client.get(reverse("dashboard", args=[account.pk])).content.decode()
    assert content.count('data-testid="lesson"') == 1
    assert '<dd class="loss" data-testid="isolated-loss">1,000.00</dd>' in content
    assert "Isolated margin (so far)" in content


def test_the_api_keys_link_appears_only_when_that_page_exists(alice_client, account):
    from django.urls import NoReverseMatch

    content = alice_client.get(reverse("dashboard", args=[account.pk])).content.decode()
    try:
        url = reverse("api-keys")
    except NoReverseMatch:
        assert "API keys" not in content
    else:
        assert f'href="{url}">API keys' in content


def test_the_ticket_bounds_the_leverage_slider_by_classroom_and_instrument(
    alice_client, account, btc
):
    eth = make_instrument(account.classroom, symbol="ETHUSDT", mark="3000", max_leverage=10)
    content = alice_client.get(reverse("trade", args=[account.pk])).content.decode()
    assert 'type="range"' in content and 'max="20"' in content
    assert f"&quot;{btc.pk}&quot;: 20" in content and f"&quot;{eth.pk}&quot;: 10" in content
    response = alice_client.post(
        reverse("trade", args=[account.pk]),
        {"instrument": eth.pk, "side": "long", "type": "market", "quantity": "1", "leverage": "15"},
    )
    assert response.status_code == 400
    assert "Leverage is capped at 10x" in response.content.decode()
    assert not Position.objects.exists()


def test_history_tells_why_a_resting_order_was_refused_when_it_triggered(
    alice_client, classroom, account, other_account, btc
):
    resting = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="0.1", leverage=10, price="55000",
    )  # fmt: skip
    big = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="1.5", leverage=10
    )
    cancelled = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="short", type="stop",
        quantity="0.01", leverage=5, stop_price="50000",
    )  # fmt: skip
    alice_client.post(reverse("order-cancel", args=[cancelled.pk]))
    bobs = order_place(
        account_id=other_account.pk, instrument_id=btc.pk, side="long", quantity="0.01", leverage=5
    )
    # Trading closes before the limit price is reached.
    classroom.trading_enabled = False
    classroom.save(update_fields=["trading_enabled"])
    set_price(btc, "55000")
    resting.refresh_from_db()
    assert resting.status == Order.Status.REJECTED

    dashboard = alice_client.get(reverse("dashboard", args=[account.pk])).content.decode()
    assert "Resting orders" not in dashboard  # it rested alone and rests no more
    refused_notice = dashboard.split('id="refused-orders"', 1)[1].split("</section>", 1)[0]
    assert f"Order #{resting.pk}</a>" in refused_notice  # the dashboard says it was refused
    page = alice_client.get(reverse("history", args=[account.pk])).content.decode()
    rows = {
        int(row.split('"', 1)[0]): row.split("</tr>", 1)[0]
        for row in page.split('<tr data-order="')[1:]
    }
    assert set(rows) == {resting.pk, big.pk, cancelled.pk}  # bob's order is not listed
    assert bobs.pk not in rows
    refused = rows[resting.pk]
    assert f"Order #{resting.pk} BTCUSDT" in refused and "Limit" in refused and "0.100" in refused
    assert "limit 55,000.0" in refused and ">rejected<" in refused
    assert "Trading is closed in this classroom right now." in refused
    filled = rows[big.pk]
    assert ">filled<" in filled and "market; filled at 60,000.0" in filled
    assert (
        f'opened <a href="/positions/{big.position_id}/">Position #{big.position_id}</a>' in filled
    )
    assert ">cancelled<" in rows[cancelled.pk] and "stop 50,000.0" in rows[cancelled.pk]


def test_the_timeline_and_statement_read_margin_moved_in_full_and_the_rest_in_cents_and_ticks(
    alice_client, account, position, btc
):
    url = reverse("position-margin", args=[position.pk])
    alice_client.post(url, {"margin-action": "add", "margin-amount": "500.125"})
    alice_client.post(url, {"margin-action": "remove", "margin-amount": "500.125"})
    history = alice_client.get(reverse("history", args=[account.pk])).content.decode()
    # The amount moved, every place of it: not 500.12, which is not what moved.
    assert f"Add 500.125 margin to position #{position.pk}" in history
    assert f"Remove 500.125 margin from position #{position.pk}" in history
    set_price(btc, "57260")  # a margin call
    set_price(btc, "57000")  # the liquidation
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert "Long 0.5 BTCUSDT at 60,000.0, 20x; collateral" in page
    assert "Margin ratio 88.09% at mark 57,260.0" in page
    liquidated = page.split("<strong>Liquidated</strong>", 1)[1].split("</li>", 1)[0]
    assert "Closed 0.5 at mark 57,000.0; collateral lost 1,500.00, liquidation fee " in liquidated
    assert "0000" not in liquidated  # no amount written to 8 or 10 places


def test_the_liquidation_on_the_timeline_names_the_collateral_as_what_it_lost(
    alice_client, account, position, btc
):
    set_price(btc, "57000")  # the liquidation
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    liquidated = page.split("<strong>Liquidated</strong>", 1)[1].split("</li>", 1)[0]
    # The loss is the collateral's, as the other events' amounts are: not read as a change of
    # the free balance that the same line says was untouched.
    assert re.search(
        r"free balance untouched; collateral <span class=\"loss\">-1,500.00</span>$", liquidated
    )
    account.refresh_from_db()
    assert f'<span class="value" data-testid="free-balance">{account.balance:,.2f}' in page


def test_auto_deleveraging_on_the_timeline_reads_as_a_close_that_paid_the_student(client):
    """A profitable position closed in part by auto-deleveraging: its collateral and its
    profit went to the free balance, so the timeline says so as for a close by hand, not as
    a loss of the collateral."""
    classroom = make_classroom(name="No fund", max_leverage=100)
    btc = make_instrument(classroom)
    alice, carol = make_student(classroom), make_student(classroom)
    open_position(alice, btc, "long", "0.05", 50)  # bankrupt at 58,800
    carol_short = open_position(carol, btc, "short", "0.1", 20)  # collateral 300
    set_price(btc, "58000")  # a gap past 58,800 that the empty insurance fund cannot pay
    carol_short.refresh_from_db()
    assert carol_short.quantity == Decimal("0.05")  # half of it closed at 58,800
    client.force_login(carol.user)
    page = client.get(reverse("position", args=[carol_short.pk])).content.decode()
    adl = page.split("<strong>Auto-deleveraging</strong>", 1)[1].split("</li>", 1)[0]
    # 0.05 x (60,000 - 58,800) = +60.00 realised; half the collateral, 150.00, released.
    assert f"0.05 of position #{carol_short.pk} at 58,800.0" in adl
    assert "realised PnL 60.00" in adl
    assert adl.endswith('collateral released <span class="flat">+150.00</span>')
    assert_ledger_invariants()


def test_the_take_profit_and_stop_loss_inputs_show_prices_on_the_tick(alice_client, position):
    alice_client.post(
        reverse("position-tpsl", args=[position.pk]),
        {"tpsl-take_profit": "62088.4", "tpsl-stop_loss": "58000"},
    )
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert 'value="62088.4"' in page and 'value="58000.0"' in page


def _message(response) -> str:
    return [str(m) for m in response.context["messages"]][-1]


def test_a_partial_close_says_what_was_closed_and_what_stays_open(alice_client, account, btc):
    position = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=10
    ).position
    assert position is not None
    url = reverse("position-close", args=[position.pk])
    response = alice_client.post(url, {"close-quantity": "0.03"}, follow=True)
    assert _message(response) == (
        f"Closed 0.030 of 0.100 BTCUSDT (realised PnL 0.00); 0.070 stays open in position "
        f"#{position.pk}."
    )
    set_price(btc, "61000")
    response = alice_client.post(url, {"close-quantity": ""}, follow=True)
    assert _message(response) == (
        f"Position #{position.pk} closed at 61,000.0 (realised PnL +70.00)."
    )


def test_the_last_close_after_partial_ones_says_the_total_the_page_shows(
    alice_client, account, btc
):
    position = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=10
    ).position
    assert position is not None
    url = reverse("position-close", args=[position.pk])
    set_price(btc, "61000")
    alice_client.post(url, {"close-quantity": "0.03"})  # +30.00
    set_price(btc, "62000")
    response = alice_client.post(url, {"close-quantity": ""}, follow=True)
    assert _message(response) == (
        f"Position #{position.pk} closed at 62,000.0 (realised PnL +140.00 on this close, "
        "+170.00 in all)."
    )
    assert "realised PnL <span" in response.content.decode()
    assert "+170.00" in response.content.decode().split('data-testid="position-status"', 1)[1]


def test_a_position_closed_by_hand_at_a_loss_gets_no_isolation_lesson(
    alice_client, account, position, btc
):
    """Its collateral is back in the free balance: a cross-margin comparison would count it
    twice."""
    set_price(btc, "58000")
    alice_client.post(reverse("position-close", args=[position.pk]), {"close-quantity": ""})
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert 'data-testid="lesson"' not in page
    assert "Cross margin" not in page


def test_a_margin_change_says_the_amount_and_the_new_liquidation_price(
    alice_client, account, position
):
    url = reverse("position-margin", args=[position.pk])
    response = alice_client.post(url, {"margin-action": "add", "margin-amount": "500"}, follow=True)
    assert _message(response) == (
        f"Added 500.00 to the collateral of position #{position.pk} (now 2,000.00 USDT); "
        "liquidation price now 56,224.9."
    )
    response = alice_client.post(
        url, {"margin-action": "remove", "margin-amount": "200"}, follow=True
    )
    assert _message(response) == (
        f"Removed 200.00 from the collateral of position #{position.pk} (now 1,800.00 USDT); "
        "liquidation price now 56,626.6."  # 56,626.506… rounded towards the entry
    )


@pytest.mark.parametrize(
    ("amount", "shown", "written"),
    [
        ("0.001", "0.001", "0.001"),
        ("500.125", "500.125", "500.125"),
        ("0.00000001", "0.00000001", "0.00000001"),
        ("1234.5", "1,234.50", "1234.5"),  # in cents where it has no more places
    ],
)
def test_a_margin_change_below_a_cent_says_the_amount_it_moved(
    alice_client, account, position, amount, shown, written
):
    """Money is kept to 8 places: 0.001 USDT moves 0.001, and every message, memo and
    timeline line about the change says so, instead of "Added 0.00" and "Add 0 margin"."""
    url = reverse("position-margin", args=[position.pk])
    response = alice_client.post(
        url, {"margin-action": "add", "margin-amount": amount}, follow=True
    )
    assert _message(response).startswith(
        f"Added {shown} to the collateral of position #{position.pk} (now "
    )
    response = alice_client.post(
        url, {"margin-action": "remove", "margin-amount": amount}, follow=True
    )
    assert _message(response).startswith(
        f"Removed {shown} from the collateral of position #{position.pk} (now "
    )
    memos = list(
        LedgerTransaction.objects.filter(position_id=position.pk)
        .exclude(kind="open")
        .order_by("pk")
        .values_list("memo", flat=True)
    )
    assert memos == [
        f"Add {written} margin to position #{position.pk}",
        f"Remove {written} margin from position #{position.pk}",
    ]
    history = alice_client.get(reverse("history", args=[account.pk])).content.decode()
    assert f"Add {written} margin to position #{position.pk}" in history
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    timeline = page.split("<h2>Timeline</h2>", 1)[1]
    assert f'<strong>Margin added</strong> collateral <span class="flat">+{shown}</span>' in (
        timeline
    )
    assert f'<strong>Margin removed</strong> collateral <span class="flat">-{shown}</span>' in (
        timeline
    )


def test_a_margin_change_names_the_liquidation_price_the_position_page_shows(
    alice_client, account, position
):
    """Rounded towards the entry, as the page and the API show it: 100 more collateral puts
    the exact price at 57,028.11…, which is 57,028.2 for a long, not the nearest 57,028.1."""
    url = reverse("position-margin", args=[position.pk])
    response = alice_client.post(url, {"margin-action": "add", "margin-amount": "100"}, follow=True)
    position.refresh_from_db()
    assert f"{position.liquidation_price:,.1f}" == "57,028.1"  # nearest and towards differ
    page = response.content.decode()
    shown = page.split('<span class="label">Liquidation price</span><span class="value">', 1)[1]
    shown = shown.split("<", 1)[0]
    assert shown == "57,028.2"
    assert _message(response).endswith(f"liquidation price now {shown}.")


def test_saving_take_profit_and_stop_loss_says_what_is_set_now(alice_client, position):
    url = reverse("position-tpsl", args=[position.pk])
    both = {"tpsl-take_profit": "65000", "tpsl-stop_loss": "58000"}
    response = alice_client.post(url, both, follow=True)
    assert _message(response) == (
        f"Saved for position #{position.pk}: take-profit at 65,000.0, stop-loss at 58,000.0."
    )
    # An emptied field clears its level: the message says so instead of "saved".
    response = alice_client.post(url, {**both, "tpsl-stop_loss": ""}, follow=True)
    assert _message(response) == (
        f"Saved for position #{position.pk}: take-profit at 65,000.0, no stop-loss."
    )


def _nav(content: str) -> str:
    return content.split('<nav aria-label="Main">', 1)[1].split("</nav>", 1)[0]


@pytest.mark.parametrize(
    ("page", "current"),
    [
        ("api-keys", "API keys"),
        ("classrooms", "Classrooms"),
        ("password_change", "alice"),
        ("password_change_done", None),
    ],
)
def test_pages_about_no_account_keep_the_navigation_and_the_class_bar(
    alice_client, account, page, current
):
    content = alice_client.get(reverse(page)).content.decode()
    nav = _nav(content)
    for name, label in [
        ("dashboard", "Dashboard"),
        ("trade", "Trade"),
        ("history", "History"),
        ("leaderboard", "Leaderboard"),
    ]:
        assert f'<a href="{reverse(name, args=[account.pk])}">{label}</a>' in nav
    assert '<div class="classbar">Trading 101' in content
    marked = [m.split("<", 1)[0] for m in nav.split('aria-current="page">')[1:]]
    assert marked == ([current] if current else [])


@pytest.mark.parametrize(
    ("page", "current"),
    [("dashboard", "Dashboard"), ("trade", "Trade"), ("history", "History"),
     ("leaderboard", "Leaderboard")],
)  # fmt: skip
def test_the_navigation_marks_the_page_being_read(alice_client, account, btc, page, current):
    nav = _nav(alice_client.get(reverse(page, args=[account.pk])).content.decode())
    assert nav.count('aria-current="page"') == 1
    assert f'aria-current="page">{current}</a>' in nav


def test_the_navigation_leads_to_the_classroom_last_opened(alice_client, account):
    other = make_classroom(name="Advanced Futures")
    alice_client.post(reverse("classrooms"), {"join_code": other.join_code})
    second = TradingAccount.objects.get(user=account.user, classroom=other)
    alice_client.get(reverse("dashboard", args=[account.pk]))
    content = alice_client.get(reverse("api-keys")).content.decode()
    assert f'href="{reverse("history", args=[account.pk])}"' in _nav(content)
    assert '<div class="classbar">Trading 101' in content
    alice_client.get(reverse("history", args=[second.pk]))
    content = alice_client.get(reverse("api-keys")).content.decode()
    assert f'href="{reverse("history", args=[second.pk])}"' in _nav(content)
    assert '<div class="classbar">Advanced Futures' in content


def test_a_user_without_an_account_gets_the_navigation_without_account_pages(client, classroom):
    client.force_login(classroom.instructor)
    content = client.get(reverse("classrooms")).content.decode()
    assert "Dashboard" not in _nav(content) and "Classrooms" in _nav(content)
    assert 'class="classbar"' not in content


def test_an_instructor_sees_the_classrooms_she_teaches_not_an_empty_list(client, classroom):
    make_classroom(name="Someone else's class")
    client.force_login(classroom.instructor)
    content = client.get(reverse("classrooms")).content.decode()
    assert "You are not in a classroom yet" not in content
    taught = content.split('data-testid="taught"', 1)[1].split("</section>", 1)[0]
    assert classroom.name in taught and classroom.join_code in taught
    assert "Someone else" not in taught
    assert reverse("admin:accounts_classroom_change", args=[classroom.pk]) in taught


def test_live_parts_are_one_element_each_so_each_refreshes_once(alice_client, account, position):
    dashboard = alice_client.get(reverse("dashboard", args=[account.pk])).content.decode()
    assert dashboard.count('id="dashboard-live"') == 1
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert page.count('id="position-live"') == 1


def test_the_statement_column_adds_up_to_the_balances_shown(alice_client, account):
    """Amounts with fractions of a cent: each line shows how the shown balance moved."""
    for amount in ("0.005", "0.005", "-0.004"):
        account_adjust(account_id=account.pk, amount=Decimal(amount), reason="Rounding drill")
    page = alice_client.get(reverse("history", args=[account.pk])).content.decode()
    amounts = [
        Decimal(cell.split(">", 1)[1].split("<", 1)[0].replace(",", ""))
        for cell in page.split('data-testid="statement-amount"')[1:]
    ]
    balances = [
        Decimal(cell.split(">", 1)[1].split("<", 1)[0].replace(",", ""))
        for cell in page.split('data-testid="statement-balance"')[1:]
    ]
    # Newest first: every balance is the one below it plus the amount on its line.
    for index in range(len(balances) - 1):
        assert balances[index] == balances[index + 1] + amounts[index]
    assert amounts[:3] == [Decimal(0), Decimal("0.01"), Decimal(0)]


def _max_quantity(alice_client, account, btc, **ticket):
    data = {"instrument": btc.pk, "side": "long", "type": "market", "leverage": "10", **ticket}
    page = alice_client.post(reverse("trade-preview", args=[account.pk]), data).content.decode()
    shown = page.split('data-testid="max-quantity">', 1)[1].split("<", 1)[0]
    filled = (
        page.split('data-fill-quantity="', 1)[1].split('"', 1)[0] if "data-fill" in page else ""
    )
    return shown, filled


def test_the_ticket_sizes_what_it_would_really_open(alice_client, account, btc):
    # At market: 10,000 / (60,000 x (1/10 + 0.05%)) = 1.658.
    assert _max_quantity(alice_client, account, btc) == ("1.658", "1.658")
    # A sell limited at 50,000 with the mark at 60,000 fills at once at 60,000: sized there.
    assert (
        _max_quantity(alice_client, account, btc, side="short", type="limit", price="50000")[0]
        == "1.658"
    )
    # A buy resting at 50,000 is sized at 50,000.
    assert _max_quantity(alice_client, account, btc, type="limit", price="50000")[0] == "1.990"
    # Extra collateral comes out of the balance first.
    assert _max_quantity(alice_client, account, btc, extra_collateral="5000")[0] == "0.829"
    # Large sizes go into the quantity input without thousands separators.
    account_adjust(account_id=account.pk, amount=Decimal(10_000_000), reason="Whale drill")
    shown, filled = _max_quantity(alice_client, account, btc, leverage="1")
    assert shown == "166.749" and filled == "166.749"  # 10,010,000 / 60,030
    account_adjust(account_id=account.pk, amount=Decimal(90_000_000), reason="Whale drill")
    shown, filled = _max_quantity(alice_client, account, btc, leverage="1")
    assert "," in shown and "," not in filled and Decimal(filled) > 1000


def test_every_page_has_an_icon(client, account):
    home = client.get(reverse("login")).content.decode()
    assert 'rel="icon" href="/static/img/favicon.svg"' in home
    icon = client.get("/favicon.ico")
    assert (icon.status_code, icon["Location"]) == (302, "/static/img/favicon.svg")
    assert finders.find("img/favicon.svg")  # collected with the other static files


def test_a_position_at_the_warning_level_is_marked_on_its_table_row_and_its_card(
    alice_client, account, position, btc
):
    row = '<tr class="at-risk">'
    card = f'<article class="position-card at-risk" data-position="{position.pk}">'
    live = reverse("dashboard-live", args=[account.pk])
    content = alice_client.get(live).content.decode()
    assert not position_valuation(position).at_risk
    assert row not in content and card not in content
    assert f'<article class="position-card" data-position="{position.pk}">' in content

    btc.mark_price = Decimal("57280")  # 51 above the liquidation price 57,229.0
    btc.save()
    position.refresh_from_db()
    assert position_valuation(position).at_risk
    content = alice_client.get(live).content.decode()
    assert row in content and card in content


def test_the_cross_margin_lesson_counts_what_resting_orders_hold(
    alice_client, account, position, btc
):
    """Cross margin backs a position with the whole account: what a resting order holds is
    still the account's, so the lesson's cross side counts it, before and after a liquidation."""
    # A limit order that holds 500 margin + 2.50 fee.
    order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit", price="50000",
        quantity="0.1", leverage=10,
    )  # fmt: skip
    # 8,485.00 free after opening the position (1,500 collateral + 15 fee), 502.50 of it held.
    whole = "<dt>Collateral</dt><dd>9,985.00</dd>"
    btc.mark_price = Decimal("58000")
    btc.save()
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert "Isolated margin (so far)" in page and whole in page
    dashboard = alice_client.get(reverse("dashboard", args=[account.pk])).content.decode()
    assert whole in dashboard
    set_price(btc, "57000")  # the engine liquidates the position; the order still rests
    assert LiquidationEvent.objects.filter(position=position).exists()
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert "Liquidated at 57,000.0" in page and whole in page
    dashboard = alice_client.get(reverse("dashboard", args=[account.pk])).content.decode()
    assert whole in dashboard
