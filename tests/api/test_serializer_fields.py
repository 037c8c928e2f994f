"""Every serializer binds fields of its own, however cheaply they are copied."""

from __future__ import annotations

from typing import Any, cast

from api import serializers as s


def test_two_serializers_never_share_a_bound_field():
    first, second = s.OrderSerializer(), s.OrderSerializer()
    assert first.fields["quantity"] is not second.fields["quantity"]
    assert first.fields["quantity"].parent is first
    assert second.fields["quantity"].parent is second
    first.fields["quantity"].label = "Size"
    assert second.fields["quantity"].label == "Quantity"
    assert s.OrderSerializer().fields["quantity"].label == "Quantity"


def test_a_child_field_is_bound_within_its_own_serializer():
    # Its "fields" field hides the serializer's own .fields from the type checker.
    detail = cast(Any, s.ErrorDetailSerializer(context={"caller": "bot"}))
    messages = detail.fields["fields"]
    assert messages.parent is detail
    assert messages.child.parent is messages
    assert messages.child.context == {"caller": "bot"}
    assert cast(Any, s.ErrorDetailSerializer()).fields["fields"].child.context == {}


def test_a_request_serializer_reads_and_refuses_as_declared():
    body = s.PlaceOrderSerializer(
        data={"account": 1, "symbol": "BTCUSDT", "side": "BUY", "quantity": "0.01"}
    )
    assert body.is_valid(), body.errors
    assert body.validated_data["side"] == "long"
    assert body.validated_data["type"] == "market"
    wrong = s.PlaceOrderSerializer(data={"account": 0, "symbol": "BTCUSDT", "side": "up"})
    assert not wrong.is_valid()
    assert set(wrong.errors) == {"account", "side", "quantity"}
