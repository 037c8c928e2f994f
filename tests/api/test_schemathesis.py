"""Schemathesis against a live server: no server error and no response outside the schema.

The server is pytest-django's live server (a real HTTP server on a free port) serving the
generated OpenAPI schema; the caller is a student with a trade key. Generated ids are
swapped for the student's real ones half of the time so the services are reached too.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import FailedHealthCheck, Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from positions.services import order_place, position_open
from tests.api.conftest import new_key
from tests.core.profiles import PROFILE, searching
from tests.factories import make_classroom, make_instrument, make_student

# Per operation and generation mode; the trading core's longer profiles search longer here too.
MAX_EXAMPLES = 20 if PROFILE == "core" else 200


@pytest.fixture
def trading_student(transactional_db):
    classroom = make_classroom(name="Schema class", max_leverage=50)
    btc = make_instrument(classroom)
    account = make_student(classroom, username="schema-student")
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.01", leverage=10
    )
    order = order_place(
        account_id=account.pk,
        instrument_id=btc.pk,
        side="short",
        type="limit",
        quantity="0.01",
        leverage=5,
        price="65000",
    )
    return {
        "key": new_key(account, "trade"),
        "account": account.pk,
        "classroom": classroom.pk,
        "position": position.pk,
        "order": order.pk,
    }


def real_ids(case, student) -> None:
    """Point about half of the generated requests at the student's own objects."""
    path = case.operation.path
    ids = case.path_parameters or {}
    if isinstance(ids.get("id"), int) and ids["id"] % 2:
        for prefix, key in (
            ("/api/v1/accounts/", "account"),
            ("/api/v1/orders/", "order"),
            ("/api/v1/positions/", "position"),
            ("/api/v1/classrooms/", "classroom"),
        ):
            if path.startswith(prefix):
                ids["id"] = student[key]
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("account"), int) and body["account"] % 2:
        body["account"] = student["account"]
        body["symbol"] = "BTCUSDT"


@searching
@pytest.mark.django_db(transaction=True)
def test_api_matches_its_schema_and_never_fails(live_server, trading_student, settings):
    settings.API_THROTTLE_RATE = ""  # hundreds of requests from one key: test the API, not 429
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/")
    headers = {"Authorization": f"Bearer {trading_student['key']}"}
    failures: list[str] = []
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis_settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case) -> None:
                real_ids(case, trading_student)
                case.call_and_validate(
                    headers=headers, checks=[not_a_server_error, response_schema_conformance]
                )

            try:
                check()
            except (Unsatisfiable, FailedHealthCheck):
                continue  # nothing negative to say about an operation without inputs
            except Exception as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}")
            tested += 1
    assert tested >= 16, tested
    assert not failures, "\n\n".join(failures)
