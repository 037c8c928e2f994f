"""Domain errors: every rejection a service can raise, each with a stable code.

Views turn them into form errors, the API into ``{"error": {...}}`` bodies; the code is
part of the public contract and never changes.
"""

from __future__ import annotations


class DomainError(Exception):
    """A request the rules refuse; nothing was written."""

    code = "invalid_request"
    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    @property
    def fields(self) -> dict[str, list[str]]:
        return {self.field: [self.message]} if self.field else {}


class NotFound(DomainError):
    code = "not_found"
    status = 404


class InvalidJoinCode(DomainError):
    code = "invalid_join_code"


class AlreadyJoined(DomainError):
    code = "already_joined"
    status = 409


class TradingClosed(DomainError):
    code = "trading_closed"
    status = 409


class AccountFrozen(DomainError):
    code = "account_frozen"
    status = 409


class InstrumentNotAllowed(DomainError):
    code = "instrument_not_allowed"


class NoMarkPrice(DomainError):
    code = "no_mark_price"
    status = 409


class InvalidQuantity(DomainError):
    code = "invalid_quantity"


class BelowMinNotional(DomainError):
    code = "below_min_notional"


class LeverageTooHigh(DomainError):
    code = "leverage_too_high"


class InvalidLeverage(DomainError):
    code = "invalid_leverage"


class InvalidAmount(DomainError):
    code = "invalid_amount"


class InvalidPrice(DomainError):
    code = "invalid_price"


class InsufficientBalance(DomainError):
    code = "insufficient_balance"
    status = 409


class MarginRemovalTooLarge(DomainError):
    code = "margin_removal_too_large"
    status = 409


class PositionNotOpen(DomainError):
    code = "position_not_open"
    status = 409


class AmountTooLarge(DomainError):
    """A movement that would carry a stored amount past what a money column holds
    (``MONEY_LIMIT``): a free balance already near it cannot take a large profit."""

    code = "amount_too_large"
    status = 409


class PositionLiquidating(DomainError):
    code = "position_liquidating"
    status = 409


class OrderNotCancellable(DomainError):
    code = "order_not_cancellable"
    status = 409


class InvalidOrder(DomainError):
    code = "invalid_order"


class ClientOrderIdReused(DomainError):
    """A client_order_id repeated with other terms: a retry must be the same order."""

    code = "client_order_id_reused"
    status = 409


class ClientRequestIdReused(DomainError):
    """A client_request_id repeated for another margin change: a retry must be the same one."""

    code = "client_request_id_reused"
    status = 409
