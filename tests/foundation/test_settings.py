"""The settings module: driven by the environment, loud on malformed values, deploy-clean."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]

PRODUCTION_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "ringfence.example.org",
    "CSRF_TRUSTED_ORIGINS": "https://ringfence.example.org",
    "DATABASE_URL": "postgres://ringfence@127.0.0.1:5432/ringfence",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "REDIS_URL": "redis://127.0.0.1:6379/1",
    "SECURE_PROXY_SSL_HEADER": "1",  # as the README's production environment, behind TLS
}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in PRODUCTION_ENV and k != "DJANGO_SETTINGS_MODULE"
    }
    clean.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_environment_passes_check_deploy():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_flags_a_production_setting_left_insecure():
    # The same check fails when a hardening default is switched off: it is really checking.
    result = manage(
        "check", "--deploy", "--fail-level", "WARNING", **PRODUCTION_ENV, SECURE_HSTS_SECONDS="0"
    )
    assert result.returncode != 0
    assert "security.W004" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEBUG", "maybe"),
        ("TICK_SECONDS", "fast"),
        ("TICK_SECONDS", "0"),
        ("DATABASE_URL", "nonsense://nowhere"),
        ("CELERY_BROKER_URL", "localhost"),
        ("REDIS_URL", "127.0.0.1:6379"),
        ("SECURE_HSTS_SECONDS", "a year"),
        ("SESSION_HOURS", "0"),
        ("SESSION_HOURS", "half a day"),
        ("SESSION_HOURS", "100000000"),  # past any date a session could expire on
        ("API_THROTTLE_RATE", "600 per minute"),
        ("API_THROTTLE_RATE", "600/fortnight"),
        ("LOG_LEVEL", "loud"),
        ("CONN_MAX_AGE", "-5"),
    ],
)
def test_malformed_value_stops_start_up_naming_the_variable(name, value):
    result = manage("check", **{name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr


def test_production_without_a_secret_key_refuses_to_start():
    env = dict(PRODUCTION_ENV)
    del env["SECRET_KEY"]
    result = manage("check", **env)
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_tracked_files_hold_nothing_built_or_installed():
    files = subprocess.run(
        ["git", "ls-files"], cwd=BASE_DIR, capture_output=True, text=True, check=True
    )
    forbidden = (".venv/", "var/", "node_modules/", "staticfiles/", "__pycache__/")
    bad = [
        f for f in files.stdout.splitlines()
        if any(part in f"{f}" for part in forbidden) or f.endswith((".sqlite3", ".db", ".pyc"))
    ]  # fmt: skip
    assert bad == []


def test_the_readme_table_names_every_environment_variable_ringfence_reads():
    """Those the settings read (config/), and those of the start-up script (bin/run)."""
    import re

    readme = (BASE_DIR / "README.md").read_text()
    table = readme.split("## Environment variables")[1].split("\n## ")[0]
    documented = {
        name
        for line in table.splitlines()
        if line.startswith("| `")
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split(" | ")[0])
    }
    read = set()
    for source in (BASE_DIR / "config").glob("*.py"):
        if source.name != "settings_test.py":
            read |= set(re.findall(r'env_[a-z]+\(\s*"([A-Z][A-Z0-9_]+)"', source.read_text()))
    read |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]+):-", (BASE_DIR / "bin" / "run").read_text()))
    assert {"DEBUG", "PORT"} <= read  # the patterns still find what is read
    assert documented == read
