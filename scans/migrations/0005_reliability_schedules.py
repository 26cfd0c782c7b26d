from django.db import migrations


def forwards(apps, schema_editor):
    from scans.schedules import ensure_schedules

    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    # 0002 named the sweeper after what it did then (fail); it now re-enqueues first
    PeriodicTask.objects.filter(name="scans: fail stalled scans").update(name="scans: sweep stalled scans")
    ensure_schedules(PeriodicTask, apps.get_model("django_celery_beat", "IntervalSchedule"))


def backwards(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name="scans: relay pending dispatches").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("scans", "0004_reliability_ledger_dead_letters_outbox"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
