from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Classrooms and money"

    def ready(self) -> None:
        from accounts import admin_numbers

        admin_numbers.install()
