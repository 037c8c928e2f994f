"""The example bot in examples/ trades the demo classroom through a real HTTP server."""

from __future__ import annotations

import importlib.util
import re
import signal
import subprocess
import sys
from decimal import Decimal
from io import StringIO
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from django.conf import settings
from django.core.management import call_command, get_commands

from accounts.models import TradingAccount, User
from positions.models import Fill, Instrument, Order, Position
from positions.services import position_close

BOT = str(settings.BASE_DIR / "examples" / "bot.py")


def seed_demo() -> None:
    """The demo of ``make run``: its own seeding command when there is one."""
    if "seed_demo" in get_commands():
        # The test runner turns DEBUG off, which seed_demo takes for a production site.
        call_command("seed_demo", "--allow-production", stdout=StringIO())
    else:  # the same shape: a classroom with a BTC market and students alice and bob
        from tests.factories import make_classroom, make_instrument, make_student

        classroom = make_classroom(name="Demo class")
        make_instrument(classroom)
        for name in ("alice", "bob"):
            account = make_student(classroom, username=name)
            account.user.set_password("ringfence-demo")
            account.user.save()
    # No engine runs here: give any instrument still waiting for its first tick a mark.
    Instrument.objects.filter(mark_price__isnull=True).update(mark_price=Decimal("60000"))
    # Start the bot from a flat book, whatever the demo opened for its students.
    for position in Position.objects.filter(status=Position.Status.OPEN):
        position_close(position_id=position.pk)


def run_bot(url: str, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, BOT, "--url", url, "--interval", "0", *args],
        env={"RINGFENCE_API_KEY": key, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=settings.BASE_DIR,
    )


def create_key(username: str) -> str:
    out = StringIO()
    call_command("create_api_key", username, "--scope", "trade", "--name", "bot", stdout=out)
    return out.getvalue().strip()


@pytest.mark.django_db(transaction=True)
def test_example_bot_places_lists_and_closes_orders(live_server):
    seed_demo()
    alice = User.objects.get(username="alice")
    closed_before = Position.objects.filter(account__user=alice, status="closed").count()
    result = run_bot(live_server.url, create_key("alice"), "--iterations", "4", "--hold", "1")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    placed = Order.objects.filter(account__user=alice, client_order_id__startswith="bot-")
    assert placed.filter(status=Order.Status.FILLED, reduce_only=False).count() == 2, output
    # Each close carries the bot's own id too, so a retried close never closes twice.
    assert placed.filter(reduce_only=True, client_order_id__startswith="bot-close-").count() == 2
    closed = Position.objects.filter(account__user=alice, status=Position.Status.CLOSED)
    assert closed.count() - closed_before == 2, output
    assert not Position.objects.filter(account__user=alice, status=Position.Status.OPEN).exists()
    assert output.count("placed order #") == 2
    assert output.count("closed position #") == 2
    # After each close the bot reads the position's fills: its opening and its close.
    reported = re.findall(
        r"closed position #(\d+) .*, fees ([0-9.]+) over (\d+) fills: net (-?[0-9.]+) USDT", output
    )
    assert len(reported) == 2, output
    for position_id, fees, count, net in reported:
        fills = Fill.objects.filter(position_id=int(position_id))
        assert int(count) == fills.count() == 2
        assert Decimal(fees) == sum(f.fee for f in fills)
        # What the position did to the balance: its realised PnL less every fee.
        ended = Position.objects.get(pk=int(position_id))
        assert Decimal(net) == ended.realized_pnl - ended.fees_paid
    assert "listed " in output and "open positions: 1" in output
    assert "refused" not in output, output


@pytest.mark.django_db(transaction=True)
def test_example_bot_waits_out_throttling_and_reports_refusals(live_server, settings):
    seed_demo()
    settings.API_THROTTLE_RATE = "2/s"
    result = run_bot(live_server.url, create_key("bob"), "--iterations", "2", "--leverage", "500")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "throttled: waiting" in output
    # Leverage 500 is refused by the classroom's rules: reported, nothing placed.
    assert "refused (400 leverage_too_high)" in output
    assert not Order.objects.filter(
        account__user__username="bob", client_order_id__startswith="bot-"
    ).exists()


@pytest.mark.django_db(transaction=True)
def test_example_bot_waits_while_trading_is_closed(live_server):
    from accounts.models import Classroom

    seed_demo()
    Classroom.objects.update(trading_enabled=False)
    result = run_bot(live_server.url, create_key("alice"), "--iterations", "2")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("trading is closed: waiting") == 2, output
    assert "refused" not in output, output  # it asked first instead of meeting trading_closed
    assert not Order.objects.filter(client_order_id__startswith="bot-").exists()


@pytest.mark.django_db(transaction=True)
def test_example_bot_trades_on_the_newest_marks_not_the_oldest(live_server):
    from datetime import timedelta

    from django.utils import timezone

    from liquidation.models import PriceTick

    seed_demo()
    btc = Instrument.objects.get(symbol="BTCUSDT")
    PriceTick.objects.filter(instrument=btc).delete()
    start = timezone.now() - timedelta(hours=1)
    # An hour ago the price fell for 1,100 ticks (a short signal); in the last 30 ticks it
    # rose (a long one). More than a page of history: its first page is all old marks.
    old = [Decimal(70000 - 5 * n) for n in range(1100)]
    new = [Decimal(60000 + 10 * n) for n in range(30)]
    PriceTick.objects.bulk_create(
        PriceTick(instrument=btc, price=price, created_at=start + timedelta(seconds=n))
        for n, price in enumerate(old + new)
    )
    btc.mark_price = new[-1]
    btc.save(update_fields=["mark_price"])
    result = run_bot(live_server.url, create_key("alice"), "--iterations", "1")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    placed = Order.objects.get(account__user__username="alice", client_order_id__startswith="bot-")
    assert placed.side == "long", output


def load_bot():
    """The example bot as a module, to drive its client from a test."""
    spec = importlib.util.spec_from_file_location("ringfence_example_bot", BOT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lose_the_next_posts_answer(client) -> list[dict[str, Any]]:
    """The server carries out the client's next POST, but its answer never arrives (a read
    timeout); the answer lost is kept in the list returned."""
    send = client.session.request
    lost: list[dict[str, Any]] = []

    def answer_lost_once(method, url, **kwargs):
        response = send(method, url, **kwargs)
        if method == "POST" and not lost:
            lost.append(response.json())
            raise requests.ReadTimeout("read timed out")
        return response

    client.session.request = answer_lost_once
    return lost


@pytest.mark.django_db(transaction=True)
def test_example_bot_retries_an_order_whose_answer_timed_out_and_places_it_once(live_server):
    seed_demo()
    bot = load_bot()
    client = bot.Ringfence(live_server.url, create_key("alice"))
    lost = lose_the_next_posts_answer(client)
    account = TradingAccount.objects.get(user__username="alice")
    body = {
        "account": account.pk,
        "symbol": "BTCUSDT",
        "side": "long",
        "quantity": "0.001",
        "leverage": 5,
        "client_order_id": "bot-timeout",
    }
    try:
        order = client.call("POST", "/orders/", json=body)
    finally:
        client.session.close()  # a kept-alive connection would hold the server's database one
    assert order["id"] == lost[0]["id"]
    assert Order.objects.filter(account=account, client_order_id="bot-timeout").count() == 1
    assert Position.objects.filter(account=account, status=Position.Status.OPEN).count() == 1


@pytest.mark.django_db(transaction=True)
def test_example_bot_waits_as_long_as_a_503_asks_and_then_gets_its_answer(
    live_server, own_redis, monkeypatch
):
    seed_demo()
    bot = load_bot()
    client = bot.Ringfence(live_server.url, create_key("alice"))
    waits: list[float] = []

    def wait_while_redis_comes_back(seconds: float) -> None:
        waits.append(seconds)
        own_redis.restart()

    # The bot's own clock only: the live server shares this process.
    monkeypatch.setattr(bot, "time", SimpleNamespace(sleep=wait_while_redis_comes_back))
    own_redis.kill()
    try:
        me = client.call("GET", "/me")
    finally:
        client.session.close()
    assert me["username"] == "alice"
    assert waits == [30.0]  # the 503's Retry-After, not the bot's own back-off (1 s)


@pytest.mark.django_db(transaction=True)
def test_example_bot_retries_a_close_whose_answer_timed_out_and_closes_once(live_server):
    seed_demo()
    bot = load_bot()
    client = bot.Ringfence(live_server.url, create_key("alice"))
    account = TradingAccount.objects.get(user__username="alice")
    opened = client.call(
        "POST",
        "/orders/",
        json={
            "account": account.pk,
            "symbol": "BTCUSDT",
            "side": "long",
            "quantity": "0.002",
            "leverage": 5,
        },
    )
    lost = lose_the_next_posts_answer(client)
    try:
        closed = bot.close_position(client, opened["position"])
    finally:
        client.session.close()  # a kept-alive connection would hold the server's database one
    # The retry got the first answer, not position_not_open: the bot knows it is closed.
    assert closed == lost[0]
    assert closed["status"] == "closed"
    assert Fill.objects.filter(position_id=opened["position"], kind="close").count() == 1
    assert Order.objects.get(position_id=opened["position"], reduce_only=True).client_order_id


@pytest.mark.django_db(transaction=True)
def test_example_bot_stops_on_an_account_that_is_not_yours_instead_of_trading_another(
    live_server,
):
    seed_demo()
    bobs = TradingAccount.objects.get(user__username="bob")
    result = run_bot(
        live_server.url, create_key("alice"), "--account", str(bobs.pk), "--iterations", "1"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    alices = TradingAccount.objects.get(user__username="alice")
    assert f"no trading account #{bobs.pk}; yours: #{alices.pk} (Demo class)" in result.stderr
    assert not Order.objects.filter(client_order_id__startswith="bot-").exists()


@pytest.mark.django_db(transaction=True)
def test_example_bot_finds_its_symbol_in_any_letter_case(live_server):
    seed_demo()
    result = run_bot(
        live_server.url, create_key("alice"), "--symbol", "ethusdt", "--iterations", "1"
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    placed = Order.objects.get(account__user__username="alice", client_order_id__startswith="bot-")
    assert placed.instrument.symbol == "ETHUSDT", output


@pytest.mark.django_db(transaction=True)
def test_example_bot_stops_on_ctrl_c_with_a_word_instead_of_a_traceback(live_server):
    seed_demo()
    bot = subprocess.Popen(
        [sys.executable, BOT, "--url", live_server.url, "--interval", "30"],
        env={"RINGFENCE_API_KEY": create_key("alice"), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=settings.BASE_DIR,
        # As from a terminal: a test run started in the background ignores Ctrl-C, and a
        # child would inherit that (Python then installs no handler for it).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert bot.stdout is not None
        for line in bot.stdout:  # runs forever: wait for its first round, then interrupt it
            if line.startswith("round 1"):
                break
        bot.send_signal(signal.SIGINT)
        _, errors = bot.communicate(timeout=30)
    finally:
        bot.kill()
    assert bot.returncode == 130, errors
    assert "Traceback" not in errors
    assert "stopped; any open position stays open" in errors


@pytest.mark.django_db(transaction=True)
def test_example_bot_stops_on_a_wrong_key_with_a_word_instead_of_a_traceback(live_server):
    seed_demo()
    result = run_bot(live_server.url, "rf_0123456789abcdef_not-a-real-secret", "--iterations", "3")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "not_authenticated" in result.stderr and "This API key is not valid." in result.stderr


@pytest.mark.django_db(transaction=True)
def test_example_bot_stops_when_its_key_is_revoked_instead_of_retrying_for_ever(live_server):
    """A refused key does not mend itself: the bot says so and stops, rather than being
    refused round after round (each refusal spends its address's budget)."""
    from api.models import ApiKey
    from api.services import api_key_revoke

    seed_demo()
    key = create_key("alice")
    bot = subprocess.Popen(
        [sys.executable, BOT, "--url", live_server.url, "--interval", "0.2", "--hold", "1000"],
        env={"RINGFENCE_API_KEY": key, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=settings.BASE_DIR,
    )
    try:
        assert bot.stdout is not None
        for line in bot.stdout:
            if "round 2" in line:
                break
        api_key = ApiKey.objects.get(prefix=key.split("_")[1])
        api_key_revoke(user_id=api_key.user_id, api_key_id=api_key.pk)
        _, stderr = bot.communicate(timeout=60)
    finally:
        bot.kill()
    assert bot.returncode == 1, stderr
    assert "This API key has been revoked." in stderr and "Traceback" not in stderr
