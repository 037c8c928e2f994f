"""API keys: created on a page or by command, shown once, stored hashed, revocable, throttled."""

from __future__ import annotations

import hashlib
import re
import time
from io import StringIO

import pytest
import redis
from django.core.management import CommandError, call_command

from api.models import ApiKey
from tests.api.conftest import client_for, new_key

pytestmark = pytest.mark.django_db


def test_a_key_is_stored_only_as_its_hash(account):
    raw = new_key(account, "read")
    stored = ApiKey.objects.get()
    assert raw.startswith(f"rf_{stored.prefix}_")
    assert stored.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    secret = raw.split("_", 2)[2]
    assert len(secret) >= 40
    for value in ApiKey.objects.values().get().values():
        assert secret not in str(value)


def test_keys_page_creates_shows_once_lists_and_revokes(client, account):
    client.force_login(account.user)
    page = client.get("/api-keys/")
    assert page.status_code == 200
    assert b"You have no API keys yet" in page.content
    posted = client.post("/api-keys/", {"name": "momentum bot", "scope": "trade"})
    # Answered by a redirect, so reloading the page that shows the key posts nothing again.
    assert (posted.status_code, posted["Location"]) == (302, "/api-keys/")
    created = client.get(posted["Location"])
    assert created.status_code == 200
    assert created.headers["Cache-Control"] == "no-store"
    shown = re.search(rb'id="new-key">(rf_[^<]+)<', created.content)
    assert shown is not None
    raw = shown.group(1).decode()
    assert client_for(raw).get("/api/v1/me").json()["key_scope"] == "trade"
    again = client.get("/api-keys/")
    assert raw.encode() not in again.content
    assert "no-store" not in again.headers.get("Cache-Control", "")
    assert b"momentum bot" in again.content
    assert raw not in str(dict(client.session))  # never kept on the server
    assert not client.cookies["rf_new_api_key"].value  # and dropped from the browser once shown
    assert ApiKey.objects.count() == 1
    key = ApiKey.objects.get()
    revoked = client.post(f"/api-keys/{key.pk}/revoke")
    assert revoked.status_code == 302
    response = client_for(raw).get("/api/v1/me")
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "This API key has been revoked."


def test_keys_page_refuses_bad_input_and_other_peoples_keys(client, account, other_account):
    theirs = new_key(other_account, "trade")
    client.force_login(account.user)
    bad = client.post("/api-keys/", {"name": "", "scope": "admin"})
    assert bad.status_code == 400
    assert not ApiKey.objects.filter(user=account.user).exists()
    past = client.post("/api-keys/", {"name": "x", "scope": "read", "expires_on": "2000-01-01"})
    assert past.status_code == 400
    assert b"future" in past.content
    their_key = ApiKey.objects.get(user=other_account.user)
    assert client.post(f"/api-keys/{their_key.pk}/revoke").status_code == 404
    assert client_for(theirs).get("/api/v1/me").status_code == 200
    client.logout()
    assert client.get("/api-keys/").status_code == 302


def test_an_expiry_day_already_over_is_refused_next_to_the_day(client, account):
    client.force_login(account.user)
    past = client.post("/api-keys/", {"name": "bot", "scope": "read", "expires_on": "2000-01-01"})
    assert past.status_code == 400
    content = past.content.decode()
    error = content.split('id="id_expires_on_error"', 1)[1].split("</span>", 1)[0]
    assert "The expiry must be in the future." in error
    assert 'class="form-errors"' not in content  # not above the form, away from the day
    assert 'name="name" value="bot"' in content  # what was typed stays
    assert not ApiKey.objects.exists()


def test_expiry_date_ends_the_key(client, account):
    from datetime import timedelta

    from django.utils import timezone

    client.force_login(account.user)
    tomorrow = (timezone.now() + timedelta(days=1)).date().isoformat()
    client.post("/api-keys/", {"name": "short", "scope": "read", "expires_on": tomorrow})
    key = ApiKey.objects.get()
    assert key.expires_at is not None and key.expires_at > timezone.now() + timedelta(hours=1)


def test_a_deactivated_students_keys_are_refused_until_they_are_activated_again(account, btc):
    from liquidation.instructor import user_set_active
    from tests.api.conftest import order_body

    api = client_for(new_key(account))
    user_set_active(user_id=account.user_id, active=False)
    for response in (api.get("/api/v1/me"), api.post("/api/v1/orders/", order_body(account))):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "not_authenticated"
    assert ApiKey.objects.get().revoked_at is None  # kept: they work again on reactivation
    with pytest.raises(CommandError, match="deactivated"):
        call_command("create_api_key", "alice", stdout=StringIO())
    user_set_active(user_id=account.user_id, active=True)
    assert api.get("/api/v1/me").status_code == 200


def test_create_api_key_command_prints_a_working_key(account):
    out = StringIO()
    call_command("create_api_key", "alice", "--scope", "trade", "--name", "cli", stdout=out)
    raw = out.getvalue().strip()
    me = client_for(raw).get("/api/v1/me").json()
    assert (me["username"], me["key_scope"]) == ("alice", "trade")
    assert ApiKey.objects.get().name == "cli"
    with pytest.raises(CommandError):
        call_command("create_api_key", "nobody", stdout=StringIO())
    read = StringIO()
    call_command("create_api_key", "alice", stdout=read)
    assert client_for(read.getvalue().strip()).get("/api/v1/me").json()["key_scope"] == "read"


def test_throttling_answers_429_with_retry_after_per_key(account, settings):
    settings.API_THROTTLE_RATE = "3/hour"  # one window: the requests cannot straddle two
    first, second = client_for(new_key(account)), client_for(new_key(account))
    codes = [first.get("/api/v1/me").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    throttled = first.get("/api/v1/me")
    assert throttled.json()["error"]["code"] == "throttled"
    assert 0 < int(throttled.headers["Retry-After"]) <= 3600
    # Another key has its own budget.
    assert second.get("/api/v1/me").status_code == 200


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "cache"])
def test_more_keys_buy_a_student_at_most_three_keys_budgets(
    account, other_account, settings, shared
):
    settings.API_THROTTLE_RATE = "2/hour"
    if not shared:
        settings.REDIS_URL = ""
    keys = [client_for(new_key(account)) for _ in range(4)]
    codes = [key.get("/api/v1/me").status_code for key in keys for _ in range(2)]
    assert codes.count(200) == 6 and codes[-2:] == [429, 429]
    refused = keys[3].get("/api/v1/me")
    assert (
        refused.json()["error"]["code"] == "throttled" and int(refused.headers["Retry-After"]) > 0
    )
    # The answers still speak of the key's own budget; another student is not affected.
    assert keys[0].get("/api/v1/me").headers["X-RateLimit-Limit"] == "2"
    assert client_for(new_key(other_account)).get("/api/v1/me").status_code == 200


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "cache"])
def test_a_refusal_by_the_students_shared_budget_says_no_request_is_left(account, settings, shared):
    settings.API_THROTTLE_RATE = "2/hour"
    if not shared:
        settings.REDIS_URL = ""
    keys = [client_for(new_key(account)) for _ in range(4)]
    for key in keys[:3]:
        assert [key.get("/api/v1/me").status_code for _ in range(2)] == [200, 200]
    started = time.time()
    refused = keys[3].get("/api/v1/me")  # the fourth key's own budget is untouched
    assert refused.status_code == 429
    assert refused.headers["X-RateLimit-Limit"] == "2"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    # Whole again no sooner than Retry-After says the student may send again.
    retry_at = started + int(refused.headers["Retry-After"])
    assert int(refused.headers["X-RateLimit-Reset"]) >= int(retry_at) - 1


def test_the_keys_page_states_what_all_of_a_students_keys_may_make_together(
    client, account, settings
):
    settings.API_THROTTLE_RATE = "120/min"
    client.force_login(account.user)
    page = " ".join(client.get("/api-keys/").content.decode().split())
    assert (
        "Each key may make 120 requests a minute, and all your keys together 360 requests a "
        "minute;" in page
    )


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "cache"])
def test_every_answer_says_how_much_of_the_budget_is_left(account, settings, shared):
    settings.API_THROTTLE_RATE = "3/hour"  # one window: the four requests cannot straddle two
    if not shared:
        settings.REDIS_URL = ""  # the development set-up: DRF's history in the Django cache
    api = client_for(new_key(account))
    started = time.time()
    answers = [api.get("/api/v1/me") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["X-RateLimit-Limit"] for a in answers] == ["3"] * 4
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    resets = [int(a.headers["X-RateLimit-Reset"]) for a in answers]
    assert all(started < reset <= time.time() + 3601 for reset in resets), resets
    if shared:  # a fixed window: the same end for every request in it
        assert len(set(resets)) == 1, resets
    else:  # a sliding one: an hour after the newest counted request
        assert all(reset >= started + 3600 for reset in resets), resets
    # Another key has a budget of its own, and its headers say so.
    assert client_for(new_key(account)).get("/api/v1/me").headers["X-RateLimit-Remaining"] == "2"


def test_without_a_rate_there_are_no_budget_headers(api, settings):
    settings.API_THROTTLE_RATE = ""
    answer = api.get("/api/v1/me")
    assert answer.status_code == 200
    assert "X-RateLimit-Limit" not in answer.headers


def test_throttle_counter_lives_in_the_shared_cache(account, settings):
    from django.core.cache import cache

    settings.API_THROTTLE_RATE = "5/min"
    raw = new_key(account)
    before = int(time.time() // 60)
    client_for(raw).get("/api/v1/me")
    after = int(time.time() // 60)
    prefix = raw.split("_")[1]
    shared = redis.Redis.from_url(settings.REDIS_URL)
    counted = [
        shared.get(cache.make_key(f"throttle_api_key_{prefix}:{n}")) for n in {before, after}
    ]
    assert sorted(c for c in counted if c is not None) == [b"1"]  # this minute's window
    assert settings.CACHES["default"]["BACKEND"].endswith("RedisCache")


@pytest.mark.parametrize(
    ("rate", "words"),
    [
        ("600/min", "600 requests a minute"),
        ("5/s", "5 requests a second"),
        ("1000/hour", "1000 requests an hour"),
        ("20/day", "20 requests a day"),
        (None, ""),
        ("", ""),
        ("many/min", ""),
        ("10/fortnight", ""),
    ],
)
def test_the_keys_page_states_the_rate_limit_in_words(rate, words):
    from api.pages import rate_in_words

    assert rate_in_words(rate) == words


def test_a_new_key_comes_with_a_command_to_try_it_and_the_rate_limit(client, account, settings):
    settings.API_THROTTLE_RATE = "120/min"
    client.force_login(account.user)
    created = client.post(
        "/api-keys/", {"name": "grid bot", "scope": "read"}, follow=True
    ).content.decode()
    raw = re.search(r'id="new-key">(rf_[^<]+)<', created).group(1)  # type: ignore[union-attr]
    assert "Your new key “grid bot”" in created
    assert f'curl -H "Authorization: Bearer {raw}" http://testserver/api/v1/me' in created
    assert "Each key may make 120 requests a minute" in created
    listed = client.get("/api-keys/").content.decode()
    assert '<span class="badge gain">active</span>' in listed
    assert raw not in listed and "curl" not in listed


def test_an_expiry_day_beyond_ten_years_is_a_form_error_not_a_server_error(client, account):
    client.force_login(account.user)
    response = client.post(
        "/api-keys/", {"name": "forever", "scope": "read", "expires_on": "9999-12-31"}
    )
    assert response.status_code == 400
    assert "within the next ten years" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_a_new_key_is_shown_only_to_the_student_who_created_it(client, account, other_account):
    client.force_login(account.user)
    posted = client.post("/api-keys/", {"name": "alices grid bot", "scope": "trade"})
    assert posted.status_code == 302
    client.force_login(other_account.user)  # someone else signs in on the same browser
    page = client.get("/api-keys/").content.decode()
    assert 'id="new-key"' not in page
    assert "alices grid bot" not in page


def test_a_new_key_travels_only_over_https_where_the_sign_in_does(client, account, settings):
    """The cookie that carries a new key to the page showing it is as secure as the session's:
    behind a proxy that does not say the request came over HTTPS, the sign-in cookie is still
    sent over HTTPS only, and so is the key."""
    settings.SESSION_COOKIE_SECURE = True
    client.force_login(account.user)
    posted = client.post("/api-keys/", {"name": "momentum bot", "scope": "trade"})
    assert posted.status_code == 302
    cookie = posted.cookies["rf_new_api_key"]
    assert cookie.value and cookie["secure"] is True
    assert cookie["httponly"] is True and cookie["samesite"] == "Strict"


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "cache"])
def test_requests_one_key_is_refused_cost_the_students_other_keys_nothing(
    account, settings, shared
):
    settings.API_THROTTLE_RATE = "2/hour"
    if not shared:
        settings.REDIS_URL = ""
    runaway, steady = client_for(new_key(account)), client_for(new_key(account))
    # A bot that ignores Retry-After keeps knocking long after its key's budget is spent.
    codes = [runaway.get("/api/v1/me").status_code for _ in range(8)]
    assert codes == [200, 200] + [429] * 6
    # The student's shared budget (three keys' worth) counted only the two that got through.
    answers = [steady.get("/api/v1/me") for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["1", "0"]


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "cache"])
def test_callers_without_a_key_share_their_address_budget_whatever_they_forward(
    db, settings, shared
):
    """X-Forwarded-For is the client's say unless a trusted proxy appends to it: a new value on
    each request must not buy a new budget (for the schema, say, which is costly to build)."""
    settings.API_THROTTLE_RATE = "2/hour"
    if not shared:
        settings.REDIS_URL = ""
    anonymous = client_for(None)
    codes = [
        anonymous.get("/api/v1/health", HTTP_X_FORWARDED_FOR=f"10.9.8.{n}").status_code
        for n in range(3)
    ]
    assert codes == [200, 200, 429]
    assert anonymous.get("/api/schema/", HTTP_X_FORWARDED_FOR="10.9.8.9").status_code == 429
    # Another address has a budget of its own.
    assert anonymous.get("/api/v1/health", REMOTE_ADDR="10.0.0.2").status_code == 200


def test_behind_the_proxy_callers_without_a_key_are_counted_per_forwarded_address(db, settings):
    settings.API_THROTTLE_RATE = "2/hour"
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    anonymous = client_for(None)

    def health(claimed: str, seen: str) -> int:
        # The client may claim any address; the proxy appends the one it saw.
        forwarded = f"{claimed}, {seen}"
        return anonymous.get("/api/v1/health", HTTP_X_FORWARDED_FOR=forwarded).status_code

    assert [health(f"1.2.3.{n}", "10.0.0.1") for n in range(3)] == [200, 200, 429]
    assert health("1.2.3.4", "10.0.0.2") == 200


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "cache"])
def test_a_refused_key_spends_its_addresss_budget(account, settings, shared):
    """A bot retrying a wrong, revoked or expired key is answered 401 every time, but the
    retries are counted by address like any caller without a key, so they cannot go on for
    ever, on the API or on the schema."""
    settings.API_THROTTLE_RATE = "2/hour"
    if not shared:
        settings.REDIS_URL = ""
    wrong = client_for("rf_0123456789abcdef_not-a-real-secret")
    codes = [wrong.get("/api/v1/me").status_code for _ in range(2)]
    refused = wrong.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert [*codes, refused.status_code] == [401, 401, 429]
    assert refused.json()["error"]["code"] == "throttled"
    assert 0 < int(refused.headers["Retry-After"]) <= 3600
    assert wrong.get("/api/v1/me", REMOTE_ADDR="10.0.0.2").status_code == 401  # its own budget
    # A good key from the same address has a budget of its own.
    assert client_for(new_key(account)).get("/api/v1/me").status_code == 200


def test_a_read_only_keys_refused_writes_spend_its_budget(account, settings):
    settings.API_THROTTLE_RATE = "2/hour"
    watcher = client_for(new_key(account, "read", name="watcher"))
    answers = [watcher.delete("/api/v1/orders/") for _ in range(3)]
    assert [answer.status_code for answer in answers] == [403, 403, 429]
    assert answers[0]["X-RateLimit-Remaining"] == "1"
    assert watcher.get("/api/v1/me").status_code == 429
