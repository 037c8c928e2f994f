"""Instructors may set a new password for a student of their classrooms (the admin action
narrows it to students who are in no one else's class)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Instructors"
CODENAME = "set_student_password"


def grant(apps, schema_editor):
    app_config = apps.get_app_config("accounts")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    group.permissions.add(
        Permission.objects.get(content_type__app_label="accounts", codename=CODENAME)
    )


def withdraw(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.filter(name=GROUP).first()
    if group is not None:
        group.permissions.remove(
            *Permission.objects.filter(content_type__app_label="accounts", codename=CODENAME)
        )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0005_user_set_student_password_permission"),
        ("liquidation", "0005_price_feed_bounds"),
    ]

    operations = [migrations.RunPython(grant, withdraw)]
