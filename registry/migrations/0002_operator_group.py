from django.db import migrations

OPERATOR_GROUP = "Platform operators"
OPERATOR_PERMISSIONS = [
    ("registry", "provider", ("view", "add", "change")),
    ("registry", "providermembership", ("view", "add", "change", "delete")),
    ("registry", "site", ("view",)),
    ("registry", "resource", ("view", "change")),
    ("registry", "downtime", ("view",)),
    ("core", "auditentry", ("view",)),
    ("auth", "user", ("view", "add", "change")),
]


def create_operator_group(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=OPERATOR_GROUP)
    for app_label, model, actions in OPERATOR_PERMISSIONS:
        for action in actions:
            permission = Permission.objects.get(content_type__app_label=app_label,
                                                codename=f"{action}_{model}")
            group.permissions.add(permission)


class Migration(migrations.Migration):
    dependencies = [
        ("registry", "0001_initial"),
        ("core", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_operator_group, migrations.RunPython.noop)]
