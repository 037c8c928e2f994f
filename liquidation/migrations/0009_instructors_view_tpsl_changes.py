"""Instructors read the take-profit and stop-loss changes of their classrooms' positions (a
read-only list on the position's admin page)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Instructors"
CODENAME = "view_tpslchange"


def grant(apps, schema_editor):
    app_config = apps.get_app_config("positions")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    group.permissions.add(
        Permission.objects.get(content_type__app_label="positions", codename=CODENAME)
    )


def withdraw(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.filter(name=GROUP).first()
    if group is not None:
        group.permissions.remove(
            *Permission.objects.filter(content_type__app_label="positions", codename=CODENAME)
        )


class Migration(migrations.Migration):
    dependencies = [
        ("positions", "0012_take_profit_stop_loss_changes"),
        ("liquidation", "0008_confirmed_action_tokens"),
    ]

    operations = [migrations.RunPython(grant, withdraw)]
