from django.db import migrations

SCHEDULE_NAME = "notifications: resend pending notifications"


def forwards(apps, schema_editor):
    # the same helper as scans' schedules: adds the missing rows, never overwrites an edit
    from scans.schedules import ensure_schedules

    ensure_schedules(
        apps.get_model("django_celery_beat", "PeriodicTask"),
        apps.get_model("django_celery_beat", "IntervalSchedule"),
        # historical models throughout: it may also create other apps' crontab rows
        apps.get_model("django_celery_beat", "CrontabSchedule"),
    )


def backwards(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0001_initial"),
        ("scans", "0005_reliability_schedules"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
