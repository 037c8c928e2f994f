"""A position's chart opens on its whole story, so a liquidation minutes ago is in view."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from liquidation.models import LiquidationEvent, PriceTick
from positions.models import Position
from positions.services import position_close, position_open
from tests.browser.conftest import make_learner, sign_in
from tests.engine.helpers import set_price
from tests.factories import make_classroom, make_instrument

pytestmark = pytest.mark.browser

MINUTES = 20  # far more one-second points than the chart's width shows at its default spacing


@pytest.mark.django_db(transaction=True)
def test_the_chart_of_an_old_liquidation_shows_the_whole_path(live_server, browser):
    from playwright.sync_api import expect

    classroom = make_classroom(name="Crash course")
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "lena")
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
    )
    opened = timezone.now() - timedelta(minutes=MINUTES)
    Position.objects.filter(pk=position.pk).update(opened_at=opened)
    PriceTick.objects.bulk_create(
        PriceTick(
            instrument=btc, price=Decimal(60000 - n % 7), created_at=opened + timedelta(seconds=n)
        )
        for n in range(MINUTES * 60 - 30)
    )
    set_price(btc, "50000")  # the engine liquidates it now, at the end of the path
    assert Position.objects.get(pk=position.pk).status == Position.Status.LIQUIDATED
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        sign_in(page, live_server.url, "lena")
        page.goto(f"{live_server.url}/positions/{position.pk}/")
        chart = page.locator("#mark-chart[data-ready=true]")
        expect(chart).to_have_count(1)
        assert int(chart.get_attribute("data-points") or 0) > MINUTES * 60 - 60
        # The time axis starts at the entry, not only a minute before the liquidation.
        page.wait_for_function(
            "bound => Number(document.getElementById('mark-chart').dataset.visibleFrom) <= bound",
            arg=opened.timestamp() + 1,
        )
    finally:
        context.close()


@pytest.mark.django_db(transaction=True)
def test_the_chart_of_a_position_closed_by_hand_stops_asking_for_its_path(live_server, browser):
    from playwright.sync_api import expect

    classroom = make_classroom(name="Quiet class")
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "quinn")
    closed = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=10
    )
    position_close(position_id=closed.pk)
    liquidated = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
    )
    set_price(btc, "57000")
    page = browser.new_page()
    page.set_default_timeout(15_000)
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    try:
        sign_in(page, live_server.url, "quinn")
        for position in (closed, liquidated):
            asked.clear()
            page.goto(f"{live_server.url}/positions/{position.pk}/")
            expect(page.locator("#mark-chart")).to_have_attribute("data-ready", "true")
            page.wait_for_timeout(5000)  # two and a half refresh intervals
            charts = [u for u in asked if u.endswith(f"/positions/{position.pk}/chart.json")]
            # Closed by hand, its path is whole: drawn once. A liquidation's lesson is the mark
            # after it, which the chart goes on drawing.
            if position == closed:
                assert len(charts) == 1
            else:
                assert len(charts) >= 3
    finally:
        page.close()


def _liquidated_just_now(username: str, *, opened_ago: timedelta = timedelta(seconds=30)):
    """A 20x long liquidated five seconds after it opened ``opened_ago``, the liquidation its
    newest point."""
    classroom = make_classroom(name=f"{username} class")
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, username)
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
    )
    opened = timezone.now() - opened_ago
    Position.objects.filter(pk=position.pk).update(opened_at=opened)
    PriceTick.objects.bulk_create(
        PriceTick(instrument=btc, price=Decimal(60000 - 300 * n), created_at=opened + second(n))
        for n in range(1, 5)
    )
    set_price(btc, "57000")
    liquidated = opened + second(5)
    LiquidationEvent.objects.filter(position=position).update(created_at=liquidated)
    Position.objects.filter(pk=position.pk).update(closed_at=liquidated)
    PriceTick.objects.filter(instrument=btc, created_at__gt=liquidated).update(
        created_at=liquidated
    )
    position.refresh_from_db()
    return position


@pytest.mark.django_db(transaction=True)
def test_the_liquidation_stays_in_view_as_the_mark_goes_on_after_it(live_server, browser):
    """A position of a few seconds, liquidated: while the page stays open the chart goes on
    drawing the mark after the liquidation, and its entry and liquidation stay in view instead
    of sliding out to the left with every new mark."""
    from playwright.sync_api import expect

    position = _liquidated_just_now("sol", opened_ago=timedelta(minutes=2))
    btc, opened = position.instrument, position.opened_at
    liquidated = LiquidationEvent.objects.get(position=position).created_at
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        sign_in(page, live_server.url, "sol")
        page.goto(f"{live_server.url}/positions/{position.pk}/")
        chart = page.locator("#mark-chart")
        expect(chart).to_have_attribute("data-points", "6")
        # The mark goes on falling after the liquidation, a point a second.
        PriceTick.objects.bulk_create(
            PriceTick(
                instrument=btc, price=Decimal(56900 - 10 * n), created_at=liquidated + second(n)
            )
            for n in range(1, 21)
        )
        expect(chart).to_have_attribute("data-points", "26")
        # The whole story is still in view: from the entry on, the liquidation with it.
        page.wait_for_function(
            "bound => Number(document.getElementById('mark-chart').dataset.visibleFrom) <= bound",
            arg=opened.timestamp(),
        )
    finally:
        context.close()


def second(n: int) -> timedelta:
    return timedelta(seconds=n)


@pytest.mark.django_db(transaction=True)
def test_the_loss_floor_is_drawn_as_steps_where_margin_moved_and_a_close_realised(
    live_server, browser
):
    """Long 0.5 at 60,000 with 1,500: 1,000 added at 5 s (floor -2,500), 0.2 closed at
    59,000 at 15 s (realises -200, releases 1,000: floor -1,700), the rest closed at 61,000 at
    25 s (+300 realised, +100 in all). The PnL chart draws the floor as a step line through
    those values, not one level at a number that was never true."""
    from playwright.sync_api import expect

    from accounts.models import LedgerTransaction
    from positions.models import Fill, Instrument
    from positions.services import position_add_margin

    classroom = make_classroom(name="Step class")
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "stella")
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
    )
    start = timezone.now() - timedelta(minutes=1)
    Position.objects.filter(pk=position.pk).update(opened_at=start)

    def stamp(seconds: int) -> None:
        at = start + second(seconds)
        newest = LedgerTransaction.objects.filter(position_id=position.pk).latest("pk")
        LedgerTransaction.objects.filter(pk=newest.pk).update(created_at=at)
        if newest.kind == LedgerTransaction.Kind.CLOSE:
            Fill.objects.filter(pk=Fill.objects.filter(position=position).latest("pk").pk).update(
                created_at=at
            )
            Position.objects.filter(pk=position.pk, status="closed").update(closed_at=at)

    def mark_at(seconds: int, price: str) -> None:
        PriceTick.objects.create(
            instrument=btc, price=Decimal(price), created_at=start + second(seconds)
        )
        Instrument.objects.filter(pk=btc.pk).update(mark_price=Decimal(price))

    stamp(0)
    position_add_margin(position_id=position.pk, amount="1000")
    stamp(5)
    mark_at(10, "59000")
    position_close(position_id=position.pk, quantity="0.2")
    stamp(15)
    mark_at(20, "61000")
    position_close(position_id=position.pk)
    stamp(25)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        sign_in(page, live_server.url, "stella")
        page.goto(f"{live_server.url}/positions/{position.pk}/")
        expect(page.locator("#mark-chart")).to_have_attribute("data-ready", "true")
        drawn = page.evaluate(
            """() => {
              const floor = window.ringfencePositionChart.floor;
              return {
                steps: floor.options().lineType === LightweightCharts.LineType.WithSteps,
                title: floor.options().title,
                values: floor.data().map(p => p.value),
              };
            }"""
        )
        assert drawn == {
            "steps": True,
            "title": "your maximum loss",
            "values": [-1500, -2500, -1700, 100],
        }
    finally:
        context.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("zone", "hours_minutes"), [("UTC", "14:05"), ("Asia/Kolkata", "19:35")])
def test_the_chart_axes_read_as_the_page_does(live_server, browser, zone, hours_minutes):
    """The formatters the charts were made with: prices with thousands separators on the
    instrument's tick (60,500.0 on a 0.1 tick, as the page writes them), PnL on the
    currency's cents, and times short, in the reader's zone on a 24-hour clock: HH:MM, the
    seconds only on a tick mark that asks for them."""
    from playwright.sync_api import expect

    classroom = make_classroom(name="Axis class")
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "axel")
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
    )
    context = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id=zone)
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        sign_in(page, live_server.url, "axel")
        page.goto(f"{live_server.url}/positions/{position.pk}/")
        expect(page.locator("#mark-chart")).to_have_attribute("data-ready", "true")
        at = 1795701909  # 2026-11-26 14:05:09 UTC
        labels = page.evaluate(
            """at => {
              const charts = window.ringfencePositionChart;
              const mark = charts.mark.options(), pnl = charts.pnl.options();
              const T = LightweightCharts.TickMarkType;
              const tick = t => mark.timeScale.tickMarkFormatter(at, t, "en-US");
              return {
                price: [60500, 1234567.26, 0.04].map(mark.localization.priceFormatter),
                pnl: [-1500, 1234.5, -0.001].map(pnl.localization.priceFormatter),
                time: tick(T.Time),
                seconds: tick(T.TimeWithSeconds),
                day: tick(T.DayOfMonth),
                month: tick(T.Month),
                year: tick(T.Year),
                crosshair: mark.localization.timeFormatter(at),
              };
            }""",
            at,
        )
        assert labels == {
            "price": ["60,500.0", "1,234,567.3", "0.0"],
            "pnl": ["-1,500.00", "1,234.50", "0.00"],
            "time": hours_minutes,
            "seconds": f"{hours_minutes}:09",
            "day": "Nov 26",
            "month": "Nov",
            "year": "2026",
            "crosshair": f"Nov 26 {hours_minutes}:09",
        }
    finally:
        context.close()


# Where the liquidation marker's label is drawn, by the chart's own coordinates, and where the
# price lines' titles begin at the pane's right edge (their box is the text and 16 px of padding
# and border), in the chart's font.
LIQUIDATION_LABEL = """() => {
  const charts = window.ringfencePositionChart;
  const layout = charts.mark.options().layout;
  const context = document.createElement("canvas").getContext("2d");
  context.font = `${layout.fontSize}px ${layout.fontFamily}`;
  const width = (text) => context.measureText(text).width;
  const marker = charts.markers.markers().find((m) => m.text === "Liquidated");
  const x = charts.mark.timeScale().timeToCoordinate(marker.time);
  const pane = charts.mark.timeScale().width();
  const titles = charts.lines().map((line) => width(line.options().title) + 16);
  return {
    left: x - width(marker.text) / 2,
    right: x + width(marker.text) / 2,
    pane: pane,
    titles: pane - Math.max(...titles),
  };
}"""


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("width", [1280, 390])
def test_the_liquidated_label_is_inside_the_chart_and_clear_of_the_price_line_titles(
    live_server, browser, width
):
    """Seconds after a liquidation it is the chart's newest point: its label stays whole inside
    the pane and left of the entry, liquidation and bankruptcy titles drawn at the right edge."""
    from playwright.sync_api import expect

    position = _liquidated_just_now("liam")
    context = browser.new_context(viewport={"width": width, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        sign_in(page, live_server.url, "liam")
        page.goto(f"{live_server.url}/positions/{position.pk}/")
        expect(page.locator("#mark-chart")).to_have_attribute("data-ready", "true")
        label = page.evaluate(LIQUIDATION_LABEL)
        assert label["left"] >= 0, label
        assert label["right"] <= label["titles"] < label["pane"], label
    finally:
        context.close()


# The line without the ring-fence as the PnL chart was told to draw it, with its colour's
# contrast against the chart's background, and the colours of everything else on the charts.
UNFENCED_LINE = """() => {
  const charts = window.ringfencePositionChart;
  const rgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  const luminance = (hex) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    const [r, g, b] = rgb(hex);
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const line = charts.unfenced.options();
  const background = charts.pnl.options().layout.background.color;
  const a = luminance(line.color), b = luminance(background);
  const pnl = charts.pnlSeries.options();
  return {
    color: line.color.toLowerCase(),
    contrast: (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05),
    chroma: Math.max(...rgb(line.color)) - Math.min(...rgb(line.color)),
    dashed: line.lineStyle !== LightweightCharts.LineStyle.Solid,
    width: line.lineWidth,
    title: line.title,
    others: [
      pnl.topLineColor, pnl.bottomLineColor, charts.floor.options().color,
      ...charts.lines().map((l) => l.options().color),
      charts.pnl.options().grid.horzLines.color,
    ].map((c) => c.toLowerCase()),
  };
}"""


@pytest.mark.django_db(transaction=True)
def test_the_line_without_the_ring_fence_is_plain_to_see_and_reads_as_secondary(
    live_server, browser
):
    from playwright.sync_api import expect

    position = _liquidated_just_now("una")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        sign_in(page, live_server.url, "una")
        page.goto(f"{live_server.url}/positions/{position.pk}/")
        expect(page.locator("#mark-chart")).to_have_attribute("data-ready", "true")
        line = page.evaluate(UNFENCED_LINE)
        assert line["contrast"] >= 3, line
        assert line["chroma"] >= 64, line  # a colour, not another grey like the entry's line
        assert line["color"] not in line["others"], line
        assert line["dashed"] and line["width"] >= 2, line
        assert line["title"] == "without the ring-fence"
    finally:
        context.close()


# Each stat card's height, and the height of a card with only its label and its value.
STAT_HEIGHTS = """() => {
  const cards = [...document.querySelectorAll("#position-live .stat")];
  const size = cards[0], style = getComputedStyle(size);
  const plain = [...size.children].reduce((h, el) => h + el.getBoundingClientRect().height, 0)
    + parseFloat(style.paddingTop) + parseFloat(style.paddingBottom)
    + parseFloat(style.borderTopWidth) + parseFloat(style.borderBottomWidth);
  return {
    plain: plain,
    tall: cards.filter((card) => card.getBoundingClientRect().height > plain + 1)
      .map((card) => card.querySelector(".label").textContent),
  };
}"""


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("width", [1280, 390])
def test_the_cards_of_a_liquidated_position_stay_compact_with_the_net_result_note_below(
    live_server, browser, width
):
    """The net result's note (its PnL and fees) is a sentence: it is read under
    the cards, and no card of a row grows to its height."""
    from playwright.sync_api import expect

    position = _liquidated_just_now("nora")
    context = browser.new_context(viewport={"width": width, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        sign_in(page, live_server.url, "nora")
        page.goto(f"{live_server.url}/positions/{position.pk}/")
        note = page.locator("#position-live").get_by_text("what it did to your free balance")
        expect(note).to_be_visible()
        expect(note).to_contain_text("PnL -1,500.00, fees 15.00")
        heights = page.evaluate(STAT_HEIGHTS)
        assert heights["tall"] == [], heights
    finally:
        context.close()
