"""The learner pages' number filters: what a number shows as, and the colour it is painted."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from web.templatetags import ringfence
from web.templatetags.ringfence import money, nonzero, pct, pnl, share_pct, tone


@pytest.mark.parametrize(
    ("value", "currency", "shown", "expected_tone"),
    [
        (Decimal("12.5"), "USDT", "+12.50", "gain"),
        (Decimal("-0.01"), "USDT", "-0.01", "loss"),
        (Decimal("-0.004"), "USDT", "0.00", "flat"),  # a loss too small to show is not red
        (Decimal("0.0049"), "USDT", "0.00", "flat"),
        (Decimal("0"), "USDT", "0.00", "flat"),
        (Decimal("-0.00004"), "BTC", "-0.00004000", "loss"),  # BTC shows eight places
        (None, "USDT", "—", "flat"),
    ],
)
def test_a_pnl_is_painted_by_what_it_shows(value, currency, shown, expected_tone):
    assert pnl(value, currency) == shown
    assert tone(value, currency) == expected_tone


def test_a_percentage_is_painted_by_its_two_shown_places():
    assert (pct(Decimal("-0.003"), True), tone(Decimal("-0.003"))) == ("0.00%", "flat")
    assert (pct(Decimal("-0.006"), True), tone(Decimal("-0.006"))) == ("-0.01%", "loss")


@pytest.mark.parametrize(
    ("share", "shown"),
    [
        (Decimal("0.04"), "4.00%"),  # a 10x BTC long's margin ratio
        (Decimal("0.88092308"), "88.09%"),
        (Decimal("1"), "100.00%"),
        (Decimal("0.00004"), "0.00%"),
        (None, "—"),
    ],
)
def test_a_share_is_shown_as_a_percentage(share, shown):
    assert share_pct(share) == shown


@pytest.mark.parametrize(
    ("value", "currency", "expected"),
    [
        (Decimal("1000"), "USDT", True),
        (Decimal("0.004"), "USDT", False),
        (Decimal("0.004"), "BTC", True),
        (None, "USDT", False),
    ],
)
def test_an_amount_is_nonzero_when_it_shows_as_nonzero(value, currency, expected):
    assert nonzero(value, currency) is expected
    assert (money(value, currency) not in ("0.00", "—")) is expected


def test_how_long_ago_reads_just_now_in_the_first_minute():
    now = timezone.now()
    assert ringfence.ago(now - timedelta(seconds=20)) == "just now"
    assert ringfence.ago(now - timedelta(minutes=5, seconds=3)) == "5\xa0minutes ago"
    assert ringfence.ago(None) == ""
