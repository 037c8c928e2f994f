"""The embedded default's SQLite database keeps money exact through a position's whole life.

SQLite stores NUMERIC columns as binary floating point. Opening a position and closing it
in parts must still release its collateral to exactly zero, or the CHECK that keeps
collateral non-negative refuses the last close (a server error for the student).
"""

from __future__ import annotations

import json

from tests.foundation.test_settings import manage

# Run by ``manage.py shell`` against a fresh SQLite file: opens and closes in three parts
# at many prices and leverages, and prints what was refused and what was left behind.
SCRIPT = """
import json, random
from decimal import Decimal
from django.db.models import Sum
from positions.models import Collateral, Position
from positions.services import position_close, position_open
from tests.factories import make_classroom, make_instrument, make_student

classroom = make_classroom(name="Embedded", max_leverage=100)
btc = make_instrument(classroom)
account = make_student(classroom)
rng = random.Random(1)
failed = []
for _ in range(40):
    btc.mark_price = Decimal(str(round(rng.uniform(50000, 70000), 1)))
    btc.save(update_fields=["mark_price"])
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side=rng.choice(["long", "short"]),
        quantity="0.005", leverage=rng.choice([3, 7, 10, 13]),
    )
    try:
        position_close(position_id=position.pk, quantity="0.001")
        position_close(position_id=position.pk, quantity="0.001")
        position_close(position_id=position.pk)
    except Exception as exc:
        failed.append(type(exc).__name__)
print(json.dumps({
    "failed": failed,
    "open": Position.objects.filter(status="open").count(),
    "collateral_left": [str(a) for a in Collateral.objects.exclude(amount=0).values_list("amount", flat=True)],
}))
"""


def run_on_fresh_sqlite(tmp_path, script: str) -> object:
    """Run ``script`` by ``manage.py shell`` on a freshly migrated SQLite file, as the
    embedded default is, and read the JSON of its last line."""
    env = {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'ringfence.sqlite3'}",
        "RINGFENCE_VAR_DIR": str(tmp_path),
    }
    migrated = manage("migrate", "--noinput", "-v0", **env)
    assert migrated.returncode == 0, migrated.stderr
    result = manage("shell", "-c", script, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_closing_in_parts_releases_collateral_to_exactly_zero_on_sqlite(tmp_path):
    summary = run_on_fresh_sqlite(tmp_path, SCRIPT)
    assert summary == {"failed": [], "open": 0, "collateral_left": []}


# An instructor's admin pages on SQLite, asked for an id beyond 64 bits (a tampered link or
# form): SQLite cannot even compare such a number, where PostgreSQL finds no row.
ADMIN_SCRIPT = """
import json
from django.contrib.auth.models import Group
from django.test import Client
from tests.factories import UserFactory, make_classroom, make_student

teacher = UserFactory.create(username="teacher2", is_staff=True)
teacher.groups.add(Group.objects.get(name="Instructors"))
account = make_student(make_classroom(name="Embedded", instructor=teacher))
client = Client(SERVER_NAME="localhost")
client.force_login(teacher)
huge = str(2**70)
base = "/admin/accounts/tradingaccount/"
answers = {
    "change": client.get(f"{base}{huge}/change/").status_code,
    "history": client.get(f"{base}{huge}/history/").status_code,
    "action": client.post(
        base, {"action": "freeze_trading", "_selected_action": [str(account.pk), huge]}
    ).status_code,
    "own": client.get(f"{base}{account.pk}/change/").status_code,
}
print(json.dumps(answers))
"""


def test_admin_ids_beyond_64_bits_are_not_found_on_sqlite(tmp_path):
    answers = run_on_fresh_sqlite(tmp_path, ADMIN_SCRIPT)
    assert answers == {"change": 404, "history": 404, "action": 404, "own": 200}


# Resting orders hold their margin on SQLite too: placed at many prices and leverages, then
# cancelled, triggered, or refused when they trigger, and what is left held and how the
# classroom's money adds up.
HOLD_SCRIPT = """
import json, random
from decimal import Decimal
from accounts.models import TradingAccount
from liquidation.instructor import account_reset
from positions.models import Order
from positions.services import order_cancel, order_execute, order_place
from tests.factories import make_classroom, make_instrument, make_student

classroom = make_classroom(name="Embedded", max_leverage=100)
btc = make_instrument(classroom)
account = make_student(classroom)
rng = random.Random(3)
failed = []
for i in range(30):
    limit = Decimal(str(round(rng.uniform(40000, 59000), 1)))
    try:
        order = order_place(
            account_id=account.pk, instrument_id=btc.pk, side="long", type="limit", price=limit,
            quantity="0.003", leverage=rng.choice([3, 7, 13]), extra_collateral="0.37",
        )
        if i % 3 == 0:
            order_cancel(order_id=order.pk)
        elif i % 3 == 1:
            btc.mark_price = limit - 1
            btc.save(update_fields=["mark_price"])
            order_execute(order_id=order.pk)
            btc.mark_price = Decimal(60000)
            btc.save(update_fields=["mark_price"])
        else:
            classroom.trading_enabled = False
            classroom.save(update_fields=["trading_enabled"])
            btc.mark_price = limit - 1
            btc.save(update_fields=["mark_price"])
            order_execute(order_id=order.pk)
            classroom.trading_enabled = True
            classroom.save(update_fields=["trading_enabled"])
            btc.mark_price = Decimal(60000)
            btc.save(update_fields=["mark_price"])
    except Exception as exc:
        failed.append(repr(exc))
for limit in ("50000", "51000.3"):
    order_place(
        account_id=account.pk, instrument_id=btc.pk, side="short", type="stop",
        stop_price=limit, quantity="0.007", leverage=9,
    )
held_before_reset = [
    str(h) for h in Order.objects.filter(status="resting").order_by("pk").values_list(
        "held_margin", flat=True
    )
]
account_reset(account_id=account.pk)
print(json.dumps({
    "failed": failed,
    "held_before_reset": held_before_reset,
    "statuses": sorted(set(Order.objects.values_list("status", flat=True))),
    "held": [str(h) for h in Order.objects.exclude(held_margin=0).values_list("held_margin", flat=True)],
    "starting_balance_back": TradingAccount.objects.get(pk=account.pk).balance == 10000,
}))
"""


def test_order_margin_is_held_and_given_back_exactly_on_sqlite(tmp_path):
    summary = run_on_fresh_sqlite(tmp_path, HOLD_SCRIPT)
    assert summary == {
        "failed": [],
        # 0.007 x 50,000 / 9 = 38.88888889 (rounded up) + 0.175 fee; and at 51,000.3.
        "held_before_reset": ["39.06388889", "39.84540105"],
        "statuses": ["cancelled", "filled", "rejected"],
        "held": [],
        "starting_balance_back": True,
    }
