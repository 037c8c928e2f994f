from django.apps import AppConfig


class LiquidationConfig(AppConfig):
    name = "liquidation"
    verbose_name = "Engine and liquidations"
