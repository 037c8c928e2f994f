"""The engine's management commands and the services instructors call."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts.errors import DomainError
from accounts.models import Classroom, ClassroomPocket, Membership, TradingAccount, User
from liquidation.models import PriceFeed, PriceTick, ReplayPoint, Scenario
from liquidation.services import replay_upload, scenario_start, scenario_stop
from positions.models import Instrument
from tests.engine.helpers import tick

pytestmark = pytest.mark.django_db

# The test runner turns DEBUG off, which seed_demo takes for a production site.
SEED_DEMO = ("seed_demo", "--allow-production")


def _run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_seed_demo_is_idempotent():
    first = _run(*SEED_DEMO)
    _run(*SEED_DEMO)
    assert "DEMO2026" in first and "ringfence-demo" in first
    classroom = Classroom.objects.get(join_code="DEMO2026")
    assert classroom.name == "Demo class" and Classroom.objects.count() == 1
    teacher = User.objects.get(username="teacher")
    assert teacher.is_staff and teacher.check_password("ringfence-demo")
    assert classroom.instructor == teacher
    for name in ("alice", "bob"):
        assert User.objects.get(username=name).check_password("ringfence-demo")
        assert TradingAccount.objects.get(user__username=name, classroom=classroom).balance == 10000
    assert Membership.objects.filter(classroom=classroom).count() == 3
    symbols = set(Instrument.objects.filter(classroom=classroom).values_list("symbol", flat=True))
    assert symbols == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    assert PriceFeed.objects.filter(kind="simulated", is_active=True).count() == 3
    assert ClassroomPocket.objects.get(classroom=classroom, kind="insurance").balance > 0
    assert all(i.tiers.count() >= 3 and i.mark_price for i in Instrument.objects.all())


def test_seed_demo_refuses_a_production_configuration_unless_told():
    """DEBUG is off here, as on a production site: no published staff password is created."""
    with pytest.raises(CommandError, match="DEBUG is off") as refused:
        _run("seed_demo")
    assert "--allow-production" in str(refused.value)
    assert not User.objects.exists() and not Classroom.objects.exists()


MAKE_RUN_UNSET = {"DJANGO_SETTINGS_MODULE", "DEBUG", "DATABASE_URL", "REDIS_URL",
                  "CELERY_BROKER_URL", "SECRET_KEY", "ALLOWED_HOSTS"}  # fmt: skip


def migrate_and_seed(*flags: str) -> str:
    return (
        "from django.core.management import call_command\n"
        "call_command('migrate', verbosity=0)\n"
        f"call_command('seed_demo', *{flags!r})"
    )


def _manage(tmp_path: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``code`` run by manage.py in a fresh process with the environment of ``make run``
    (none of the test run's settings) plus ``env``, on an in-memory SQLite database."""
    clean = {k: v for k, v in os.environ.items() if k not in MAKE_RUN_UNSET}
    clean.update(RINGFENCE_VAR_DIR=str(tmp_path), DATABASE_URL="sqlite:///:memory:", **env)
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=settings.BASE_DIR, env=clean, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_seed_demo_runs_with_the_default_settings_of_make_run(tmp_path):
    done = _manage(tmp_path, migrate_and_seed())
    assert done.returncode == 0, done.stderr
    assert "Demo class ready (join code DEMO2026)" in done.stdout


def test_seed_demo_refuses_a_site_started_with_debug_off(tmp_path):
    production = {"DEBUG": "0", "SECRET_KEY": "x" * 50, "ALLOWED_HOSTS": "ringfence.example.org"}
    refused = _manage(tmp_path, migrate_and_seed(), **production)
    assert refused.returncode != 0
    assert "DEBUG is off" in refused.stderr and "Demo class ready" not in refused.stdout
    allowed = _manage(tmp_path, migrate_and_seed("--allow-production"), **production)
    assert allowed.returncode == 0, allowed.stderr
    assert "Demo class ready (join code DEMO2026)" in allowed.stdout


def test_price_shock_moves_the_mark_on_the_next_tick():
    _run(*SEED_DEMO)
    btc = Instrument.objects.get(symbol="BTCUSDT")
    out = _run("price_shock", "BTCUSDT", "-30")
    assert "BTCUSDT in Demo class moves -30% from 60000 over 0 s." in out
    result = tick(btc)
    assert result.mark == Decimal("42000")
    assert Scenario.objects.get().status == "finished"
    longer = _run("price_shock", "BTCUSDT", "-12.5", "--over", "20")
    assert "moves -12.5% from 42000 over 20 s." in longer  # as people write it, not 2E+1


def test_price_shock_over_a_duration_moves_progressively(btc):
    scenario = scenario_start(
        instrument_id=btc.pk, kind="move", percent="-30", duration_seconds="60"
    )
    Scenario.objects.filter(pk=scenario.pk).update(
        started_at=timezone.now() - timedelta(seconds=30)
    )
    result = tick(btc)
    assert result.mark is not None and Decimal("50900") < result.mark <= Decimal("51000")
    assert Scenario.objects.get().status == "active"
    scenario_stop(scenario_id=scenario.pk)
    assert Scenario.objects.get().status == "cancelled"


def test_price_shock_refuses_unknown_symbols_and_bad_percentages(btc):
    with pytest.raises(CommandError):
        _run("price_shock", "NOPE", "-10")
    with pytest.raises(CommandError):
        _run("price_shock", "BTCUSDT", "abc")
    with pytest.raises(CommandError):
        _run("price_shock", "BTCUSDT", "-150")
    assert not Scenario.objects.exists()


@pytest.mark.parametrize(
    ("percent", "over", "message"),
    [
        ("1e-9999999", "0", "Use at most 4 decimal places for the move."),
        ("-30.12345", "0", "Use at most 4 decimal places for the move."),
        ("-30", "1e-9999999", "Use at most 3 decimal places for the duration."),
        ("-30", "0.0001", "Use at most 3 decimal places for the duration."),
    ],
)
def test_price_shock_refuses_more_places_than_a_scenario_keeps(btc, percent, over, message):
    """As the admin's scenario form does: rather than a database error, or a move silently
    rounded to other than what was typed."""
    with pytest.raises(CommandError, match=message):
        _run("price_shock", "BTCUSDT", percent, "--over", over)
    assert not Scenario.objects.exists()


def test_replay_upload_plays_the_csv(btc):
    feed = replay_upload(
        instrument_id=btc.pk, csv_text="offset,price\n0,100\n10,110\n20,120\n", speed=1
    )
    assert ReplayPoint.objects.filter(feed=feed).count() == 3
    PriceFeed.objects.filter(pk=feed.pk).update(
        replay_started_at=timezone.now() - timedelta(seconds=12)
    )
    assert tick(btc).mark == Decimal("110")


def test_replay_upload_rejects_bad_csv_and_writes_nothing(btc):
    with pytest.raises(DomainError) as exc:
        replay_upload(instrument_id=btc.pk, csv_text="0,100\n5,abc\n")
    assert exc.value.field == "csv"
    with pytest.raises(DomainError):
        replay_upload(instrument_id=btc.pk, csv_text="10,100\n5,101\n")
    assert not PriceFeed.objects.exists() and not ReplayPoint.objects.exists()


def test_replay_timestamps_with_and_without_a_zone_mix_as_utc(btc):
    feed = replay_upload(
        instrument_id=btc.pk,
        csv_text="2026-03-01T10:00:00Z,100\n2026-03-01T10:00:30,101\n2026-03-01T11:01:00+01:00,99\n",
    )
    offsets = list(ReplayPoint.objects.filter(feed=feed).values_list("offset_seconds", flat=True))
    assert offsets == [Decimal(0), Decimal(30), Decimal(60)]


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("0,100\n1e12,101\n", "at most ten years"),
        ("0001-01-01T00:00:00Z,100\n9999-12-31T00:00:00Z,101\n", "at most ten years"),
        ("0,100\n1,1e13\n", "at most 1,000,000,000,000"),
    ],
)
def test_replays_too_long_or_too_dear_are_refused(btc, csv_text, message):
    with pytest.raises(DomainError) as exc:
        replay_upload(instrument_id=btc.pk, csv_text=csv_text)
    assert message in exc.value.message
    assert not ReplayPoint.objects.exists()


def test_no_scenario_or_walk_takes_the_mark_past_the_ceiling(btc):
    with pytest.raises(DomainError):
        scenario_start(instrument_id=btc.pk, kind="set_price", target_price="1e13")
    scenario_start(instrument_id=btc.pk, kind="move", percent="1000", duration_seconds=0)
    btc.mark_price = Decimal(10) ** 11 * 5
    btc.save(update_fields=["mark_price"])
    PriceFeed.objects.filter(instrument=btc).update(last_tick_at=None)
    scenario_start(instrument_id=btc.pk, kind="move", percent="1000", duration_seconds=0)
    assert tick(btc).mark == Decimal(10) ** 12


def test_engine_status_shows_lag_per_instrument():
    _run(*SEED_DEMO)
    tick(Instrument.objects.get(symbol="ETHUSDT"))
    out = _run("engine_status")
    assert "BTCUSDT" in out and "ETHUSDT" in out and "lag" in out
    assert PriceTick.objects.count() == 4


def test_the_docs_name_every_command_of_ringfence_and_only_commands_that_exist():
    import re

    from django.apps import apps
    from django.core.management import get_commands

    base = Path(settings.BASE_DIR)
    docs = [base / "README.md", *(base / "docs").glob("*.md")]
    named = {name for doc in docs for name in re.findall(r"manage\.py (\w+)", doc.read_text())}
    ringfence = {c.name for c in apps.get_app_configs() if Path(c.path).parent == base}
    commands = get_commands()
    assert named <= set(commands)
    assert {name for name, app in commands.items() if app in ringfence} <= named
