from django.db import migrations

OPERATOR_GROUP = "Platform operators"
PERMISSIONS = [
    ("client", ("view", "add", "change")),
    ("nodekey", ("view",)),
    ("providercredential", ("view",)),
    ("statuslist", ("view",)),
]


def grant(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=OPERATOR_GROUP)
    for model, actions in PERMISSIONS:
        for action in actions:
            group.permissions.add(Permission.objects.get(content_type__app_label="identity",
                                                         codename=f"{action}_{model}"))


class Migration(migrations.Migration):
    dependencies = [("identity", "0001_initial"), ("registry", "0002_operator_group")]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
