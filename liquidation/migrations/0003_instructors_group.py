"""The "Instructors" group: the model permissions an instructor needs in the admin.

An operator makes someone an instructor by setting ``is_staff`` and adding them to this
group; what they then see is narrowed to their own classrooms by the admin itself.
Money and ledger records get view permission only.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Instructors"
PERMISSIONS = {
    "accounts": {
        "user": ["view"],
        "classroom": ["view", "add", "change"],
        "membership": ["view", "change"],
        "tradingaccount": ["view", "change"],
        "classroompocket": ["view"],
        "ledgertransaction": ["view"],
        "ledgerentry": ["view"],
    },
    "positions": {
        "instrument": ["view", "add", "change"],
        "margintier": ["view", "add", "change", "delete"],
        "position": ["view"],
        "collateral": ["view"],
        "order": ["view"],
        "fill": ["view"],
    },
    "liquidation": {
        "pricefeed": ["view", "add", "change"],
        "replaypoint": ["view"],
        "pricetick": ["view"],
        "scenario": ["view", "add", "change"],
        "liquidationevent": ["view"],
        "adlfill": ["view"],
        "margincall": ["view"],
        "engineheartbeat": ["view"],
    },
}


def create_group(apps, schema_editor):
    # Permissions are normally created after migrate; this migration needs them now.
    for label in ("accounts", "positions", "liquidation"):
        app_config = apps.get_app_config(label)
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    for app_label, models in PERMISSIONS.items():
        for model, actions in models.items():
            for action in actions:
                group.permissions.add(
                    Permission.objects.get(
                        content_type__app_label=app_label, codename=f"{action}_{model}"
                    )
                )


def remove_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("accounts", "0001_initial"),
        ("positions", "0001_initial"),
        ("liquidation", "0002_engine_claims_and_margin_calls"),
    ]

    operations = [migrations.RunPython(create_group, remove_group)]
