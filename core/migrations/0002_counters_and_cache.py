from django.core.management import call_command
from django.db import migrations


def create_counters(apps, schema_editor):
    Counter = apps.get_model("core", "Counter")
    for name in ("outbox", "audit"):
        Counter.objects.get_or_create(name=name)


def create_cache_table(apps, schema_editor):
    # The default shared cache (CIR_CACHE_URL unset) lives in the database; create its table here so
    # that ``migrate`` alone prepares a node.
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("core", "0001_initial")]

    operations = [
        migrations.RunPython(create_counters, migrations.RunPython.noop),
        migrations.RunPython(create_cache_table, migrations.RunPython.noop),
    ]
