"""Login throttling: per account and per address, refused before any password is hashed; one password check at a
time."""

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.urls import reverse

from vidsearch.web.library import throttle

PASSWORD = "a long password"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    cache.clear()
    fake = FakeClock()
    monkeypatch.setattr(throttle, "clock", fake)
    yield fake
    cache.clear()


@pytest.fixture
def account(db):
    return User.objects.create_user("alice", password=PASSWORD)


def log_in(client, username: str, password: str, address: str = "10.0.0.1"):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address)


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_the_right_password_after_too_many_wrong_ones_is_refused_until_the_lockout_ends(client, account, clock):
    for attempt in range(throttle.ACCOUNT_FAILURES):
        response = log_in(client, "alice", f"wrong {attempt}")
        assert response.status_code == 200 and "do not match" in response.content.decode()
    refused = log_in(client, "alice", PASSWORD)
    assert refused.status_code == 429 and refused["Retry-After"] == "60", refused.status_code
    assert "Too many failed logins: try again in 15 minutes." in refused.content.decode()
    assert not logged_in(client)
    clock.now += throttle.LOCKOUT_S - 1
    assert log_in(client, "alice", PASSWORD, address="10.0.0.2").status_code == 429  # the account is locked
    clock.now += 2
    assert log_in(client, "alice", PASSWORD).status_code == 302 and logged_in(client)


def test_one_address_is_locked_after_failures_over_many_accounts(client, account, clock):
    for attempt in range(throttle.ADDRESS_FAILURES):
        assert log_in(client, f"guess{attempt}", "wrong").status_code == 200
    assert log_in(client, "alice", PASSWORD).status_code == 429 and not logged_in(client)
    assert log_in(client, "alice", PASSWORD, address="10.0.0.9").status_code == 302 and logged_in(client)


def test_a_success_forgets_the_accounts_failures(client, account, clock):
    for attempt in range(throttle.ACCOUNT_FAILURES - 1):
        log_in(client, "alice", "wrong")
    assert log_in(client, "alice", PASSWORD).status_code == 302
    client.logout()
    assert log_in(client, "alice", "wrong").status_code == 200
    assert log_in(client, "alice", PASSWORD).status_code == 302


def test_a_login_while_another_password_is_checked_is_answered_busy_without_hashing(client, account, clock,
                                                                                     monkeypatch):
    checked = []
    monkeypatch.setattr(User, "check_password", lambda self, raw: checked.append(raw) or True)
    with throttle.password_check_slot() as mine:
        assert mine
        response = log_in(client, "alice", PASSWORD)
    assert response.status_code == 429 and "checking another login" in response.content.decode()
    assert checked == [] and not logged_in(client)
    assert log_in(client, "alice", PASSWORD).status_code == 302 and checked == [PASSWORD]
