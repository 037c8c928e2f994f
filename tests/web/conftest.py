"""Fixtures of the learner pages: a signed-in student, an outsider and a 20x long."""

from __future__ import annotations

import pytest

from positions.services import position_open

PASSWORD = "ringfence-test"


@pytest.fixture
def alice_client(client, account):
    client.login(username="alice", password=PASSWORD)
    return client


@pytest.fixture
def bob_client(client, other_account):
    client.login(username="bob", password=PASSWORD)
    return client


@pytest.fixture
def position(account, btc):
    return position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
    )
