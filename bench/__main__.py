"""Run every benchmark module of this package against a scratch database and print a table."""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BENCH_DATABASE = "ringfence_bench"


def _bench_url() -> tuple[str, str]:
    """(URL of the benchmark database, URL of the server's maintenance database)."""
    base = os.environ.get("DATABASE_URL", "postgres://root@127.0.0.1:5432/ringfence")
    parts = urlsplit(base)
    if not parts.scheme.startswith("postgres"):
        sys.exit("The benchmarks need PostgreSQL: set DATABASE_URL=postgres://...")
    return (
        urlunsplit(parts._replace(path=f"/{BENCH_DATABASE}")),
        urlunsplit(parts._replace(path="/postgres")),
    )


def _recreate(admin_url: str, *, drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{BENCH_DATABASE}"')


def _modules(selected: list[str]) -> list[str]:
    here = os.path.dirname(__file__)
    names = sorted(
        info.name for info in pkgutil.iter_modules([here]) if not info.name.startswith("_")
    )
    return [n for n in names if not selected or n in selected]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None else str(value)


def as_rows(result: Any) -> tuple[list[dict[str, Any]], bool]:
    """A module's rows, and whether any of them counted errors (a missed goal is not one)."""
    rows = [row for row in (result or []) if isinstance(row, dict)]
    return rows, any(row.get("errors") for row in rows)


def print_table(rows: list[dict[str, Any]]) -> None:
    first: dict[str, float] = {}
    lines = [["benchmark", "size", "value", "unit", "ratio", "goal", "ok", "note"]]
    for row in rows:
        name = str(row.get("benchmark", "?"))
        value = row.get("value")
        ratio = ""
        if isinstance(value, int | float) and not isinstance(value, bool):
            base = first.setdefault(name, float(value))
            ratio = f"{float(value) / base:.2f}x" if base else ""
        ok = row.get("ok")
        lines.append([
            name, _fmt(row.get("size")), _fmt(value), _fmt(row.get("unit")), ratio,
            _fmt(row.get("goal")), "" if ok is None else ("yes" if ok else "NO"), _fmt(row.get("note")),
        ])  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for index, line in enumerate(lines):
        print("  ".join(cell.rjust(w) if 1 <= i <= 4 else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip())  # fmt: skip
        if index == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str]) -> int:
    bench_url, admin_url = _bench_url()
    _recreate(admin_url)
    os.environ["DATABASE_URL"] = bench_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings_test")
    try:
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0, interactive=False)
        rows: list[dict[str, Any]] = []
        failed = False
        for name in _modules(argv):
            module = importlib.import_module(f"bench.{name}")
            run = getattr(module, "run", None)
            if run is None:
                continue
            started = time.perf_counter()
            print(f"running bench.{name} ...", flush=True)
            try:
                result = run()
            except Exception as exc:  # a broken benchmark should not hide the others
                failed = True
                rows.append({"benchmark": name, "note": f"failed: {exc!r}", "ok": False})
                continue
            module_rows, module_failed = as_rows(result)
            rows += module_rows
            failed = failed or module_failed
            print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
        print()
        print_table(rows)
        return 1 if failed else 0
    finally:
        from django.db import connections

        connections.close_all()
        _recreate(admin_url, drop_only=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
