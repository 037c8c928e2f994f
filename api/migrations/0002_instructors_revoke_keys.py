"""Instructors see the API keys of their classrooms' members and may revoke them."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Instructors"
ACTIONS = ("view", "change")  # change: revoking, the only change the admin allows


def grant(apps, schema_editor):
    app_config = apps.get_app_config("api")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    for action in ACTIONS:
        group.permissions.add(
            Permission.objects.get(content_type__app_label="api", codename=f"{action}_apikey")
        )


def withdraw(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.filter(name=GROUP).first()
    if group is not None:
        group.permissions.remove(
            *Permission.objects.filter(
                content_type__app_label="api", codename__in=[f"{a}_apikey" for a in ACTIONS]
            )
        )


class Migration(migrations.Migration):
    dependencies = [
        ("api", "0001_initial"),
        ("liquidation", "0003_instructors_group"),
    ]

    operations = [migrations.RunPython(grant, withdraw)]
