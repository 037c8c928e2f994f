#!/usr/bin/env python3
"""A small Ringfence trading bot: plain ``requests``, one simple rule, careful with errors.

The rule (a toy, not advice): compare the average of the last few marks with the average
of a longer window. With no open position, go long when the short average is above the
long one and short otherwise. Close the position after ``--hold`` rounds, or earlier when
its unrealised PnL reaches +50% or -50% of its collateral.

    RINGFENCE_API_URL=http://127.0.0.1:8000 RINGFENCE_API_KEY=rf_... python examples/bot.py

The bot handles the API's answers the way every client should: ``429`` and ``503`` wait for
the ``Retry-After`` seconds and try again, a server error, a dropped connection or a timeout
is retried with the same ``client_order_id`` (so an order is never placed twice, nor a
position closed twice), and a refusal (``{"error": {"code": ...}}``) is printed and the bot
carries on, except a refused key (``401``) or a read-only one (``403``), which do not mend
themselves: the bot says so and stops.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from decimal import ROUND_CEILING, Decimal
from typing import Any

import requests


class ApiError(Exception):
    """A refusal from the API, with its stable code."""

    def __init__(self, status: int, code: str, message: str, fields: dict[str, Any]) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message, self.fields = status, code, message, fields


class Ringfence:
    """A thin client: authentication, throttling and retries in one place."""

    def __init__(self, url: str, key: str, *, retries: int = 6) -> None:
        self.url = url.rstrip("/") + "/api/v1"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"
        self.retries = retries

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        url = path if path.startswith("http") else self.url + path
        for attempt in range(self.retries):
            try:
                response = self.session.request(method, url, timeout=15, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                # No answer: the server may have done it or not. Sending the same request
                # again is safe for reads, and for orders and closes (same client_order_id:
                # the answer is the first one's).
                print(f"  no answer ({exc.__class__.__name__}); retrying", flush=True)
                time.sleep(min(2**attempt, 10))
                continue
            if response.status_code in (429, 503):
                # Throttled, or briefly unavailable (Ringfence cannot count requests while
                # its cache is down): nothing was done, and Retry-After says when to ask again.
                wait = float(response.headers.get("Retry-After", "1"))
                why = "throttled" if response.status_code == 429 else "unavailable"
                print(f"  {why}: waiting {wait:g}s as Retry-After asks", flush=True)
                time.sleep(min(max(wait, 0.1), 60))
                continue
            if response.status_code >= 500:
                print(f"  server error {response.status_code}; retrying", flush=True)
                time.sleep(min(2**attempt, 10))
                continue
            body = response.json() if response.content else None
            if response.status_code >= 400:
                error = (body or {}).get("error", {})
                raise ApiError(
                    response.status_code,
                    error.get("code", "unknown"),
                    error.get("message", response.reason),
                    error.get("fields", {}),
                )
            return body
        raise ApiError(0, "gave_up", f"{method} {path} failed {self.retries} times", {})

    def all_pages(self, path: str, **params: Any) -> list[dict[str, Any]]:
        page = self.call("GET", path, params=params)
        rows = list(page["results"])
        while page.get("next"):
            page = self.call("GET", page["next"])
            rows += page["results"]
        return rows


def average(values: list[Decimal]) -> Decimal:
    return sum(values, Decimal(0)) / len(values)


def trend(marks: list[Decimal], short: int = 5, long: int = 20) -> str:
    if len(marks) < 2:
        return "long"
    fast = average(marks[-short:])
    slow = average(marks[-long:])
    return "long" if fast >= slow else "short"


def order_quantity(instrument: dict[str, Any], mark: Decimal) -> Decimal:
    """The smallest lot-size multiple worth twice the minimum notional."""
    lot = Decimal(instrument["lot_size"])
    wanted = Decimal(instrument["min_notional"]) * 2 / mark
    return max(lot, (wanted / lot).to_integral_value(rounding=ROUND_CEILING) * lot)


def close_position(api: Ringfence, position_id: int) -> dict[str, Any]:
    """Close all of a position at market. Our own id: if the answer is lost and we retry,
    the position is not closed twice (nor is a retry refused because it closed)."""
    body = {"client_order_id": f"bot-close-{uuid.uuid4().hex[:20]}"}
    closed: dict[str, Any] = api.call("POST", f"/positions/{position_id}/close", json=body)
    return closed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("RINGFENCE_API_URL", "http://127.0.0.1:8000"),
        help="Ringfence's address (default: RINGFENCE_API_URL, else http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--key",
        default=os.environ.get("RINGFENCE_API_KEY"),
        help="an API key with the trade scope (default: RINGFENCE_API_KEY)",
    )
    parser.add_argument("--symbol", help="instrument to trade (default: the first one)")
    parser.add_argument("--account", type=int, help="trading account id (default: the first)")
    parser.add_argument(
        "--leverage", type=int, default=5, help="leverage of each order (default 5)"
    )
    parser.add_argument("--hold", type=int, default=3, help="rounds to hold a position (default 3)")
    parser.add_argument("--iterations", type=int, default=0, help="rounds to run (0: forever)")
    parser.add_argument(
        "--interval", type=float, default=5.0, help="seconds between rounds (default 5)"
    )
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("set RINGFENCE_API_KEY or pass --key (create one on the API keys page)")

    api = Ringfence(args.url, args.key)
    try:
        me = api.call("GET", "/me")
    except ApiError as exc:
        return stop(exc)
    if not me["accounts"]:
        print("this user has no trading account: join a classroom first", file=sys.stderr)
        return 1
    if args.account is None:
        account = me["accounts"][0]
    else:
        account = next((a for a in me["accounts"] if a["id"] == args.account), None)
        if account is None:
            mine = ", ".join(f"#{a['id']} ({a['classroom_name']})" for a in me["accounts"])
            print(f"no trading account #{args.account}; yours: {mine}", file=sys.stderr)
            return 1
    instruments = api.all_pages("/instruments/", classroom=account["classroom"])
    wanted = None if args.symbol is None else args.symbol.upper()
    instrument = next((i for i in instruments if wanted in (None, i["symbol"].upper())), None)
    if instrument is None:
        print(f"no instrument {args.symbol} in classroom {account['classroom']}", file=sys.stderr)
        return 1
    symbol = instrument["symbol"]
    print(
        f"{me['username']}: trading {symbol} on account #{account['id']} "
        f"(free balance {account['balance']} {account['currency']})",
        flush=True,
    )

    held: dict[int, int] = {}
    round_no = 0
    while args.iterations == 0 or round_no < args.iterations:
        round_no += 1
        try:
            trade_once(api, args, account, symbol, held, round_no)
        except ApiError as exc:
            if exc.status in (401, 403):
                return stop(exc)  # a refused key or scope does not mend itself
            # A refusal is part of trading: report it and try again next round.
            print(
                f"  refused ({exc.status} {exc.code}): {exc.message} {exc.fields or ''}", flush=True
            )
        if args.iterations == 0 or round_no < args.iterations:
            time.sleep(args.interval)
    return 0


def stop(exc: ApiError) -> int:
    """Say why the bot cannot go on (a wrong, revoked or expired key, a read-only key, an
    API that never answered) and end with a failure status."""
    print(f"stopping: {exc.status} {exc.code}: {exc.message}", file=sys.stderr)
    if exc.status in (401, 403):
        print("create a trade key on the API keys page and pass it as --key", file=sys.stderr)
    return 1


def trade_once(
    api: Ringfence,
    args: argparse.Namespace,
    account: dict[str, Any],
    symbol: str,
    held: dict[int, int],
    round_no: int,
) -> None:
    instrument = api.call(
        "GET", f"/instruments/{symbol}/", params={"classroom": account["classroom"]}
    )
    if instrument["mark_price"] is None:
        print(f"round {round_no}: {symbol} has no price yet", flush=True)
        return
    mark = Decimal(instrument["mark_price"])
    # The history runs oldest first: ask for the newest marks, not for its first page.
    history = api.call(
        "GET", f"/instruments/{symbol}/prices/",
        params={"classroom": account["classroom"], "latest": 20},
    )["results"]  # fmt: skip
    marks = [Decimal(t["price"]) for t in history] or [mark]
    mine = api.all_pages("/positions/", status="open", account=account["id"], symbol=symbol)
    print(f"round {round_no}: mark {mark}, open positions: {len(mine)}", flush=True)

    for position in mine:
        held[position["id"]] = held.get(position["id"], 0) + 1
        pnl = Decimal(position["unrealized_pnl"] or 0)
        collateral = Decimal(position["collateral"])
        done = held[position["id"]] >= args.hold
        if done or abs(pnl) >= collateral / 2:
            closed = close_position(api, position["id"])
            fills = api.all_pages("/fills/", position=closed["id"])
            fees = sum((Decimal(f["fee"]) for f in fills), Decimal(0))
            print(
                f"  closed position #{closed['id']} {closed['side']} at {closed['exit_price']}, "
                f"realised PnL {closed['realized_pnl']}, fees {fees} over {len(fills)} fills: "
                f"net {closed['net_result']} {account['currency']}",
                flush=True,
            )
            held.pop(position["id"], None)
    if mine:
        return

    # Outside the classroom's trading window an order would only be refused: wait for it.
    now = api.call("GET", f"/accounts/{account['id']}/")
    if not now["trading_open"]:
        opens = f", it opens at {now['trading_opens_at']}" if now["trading_opens_at"] else ""
        print(f"  trading is closed{opens}: waiting", flush=True)
        return

    side = trend(marks)
    body = {
        "account": account["id"],
        "symbol": symbol,
        "side": side,
        "type": "market",
        "quantity": str(order_quantity(instrument, mark)),
        "leverage": args.leverage,
        # Our own id: if the connection drops and we retry, the order is not placed twice.
        "client_order_id": f"bot-{uuid.uuid4().hex[:20]}",
    }
    preview = api.call("POST", "/orders/preview", json=body)
    print(
        f"  preview {side} {body['quantity']}: margin {preview['initial_margin']}, "
        f"fee {preview['fee']}, liquidation at {preview['liquidation_price']}",
        flush=True,
    )
    order = api.call("POST", "/orders/", json=body)
    print(
        f"  placed order #{order['id']} {order['side']} {order['quantity']} {symbol}: "
        f"{order['status']}, position #{order['position']}",
        flush=True,
    )
    recent = api.call("GET", "/orders/", params={"account": account["id"], "limit": 5})
    print(f"  listed {len(recent['results'])} recent orders", flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # Ctrl-C is how a bot that runs forever stops. It closes nothing on its way out.
        print(
            "\nstopped; any open position stays open (GET /positions/?status=open)", file=sys.stderr
        )
        sys.exit(130)
