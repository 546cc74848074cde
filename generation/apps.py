from django.apps import AppConfig
from django.db.models.signals import post_migrate

SWEEP_SCHEDULE_NAME = "generation-sweep"


def register_sweep_schedule(sender, using="default", **kwargs) -> None:
    """Keep exactly one django-q2 schedule that runs the sweep every minute: a backstop,
    and the one sweep that looks at every open run (the live clusters sweep every beat)."""
    from django_q.models import Schedule

    Schedule.objects.using(using).update_or_create(
        name=SWEEP_SCHEDULE_NAME,
        defaults={
            "func": "generation.tasks.sweep",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
    )


def create_cache_tables(sender, using="default", **kwargs) -> None:
    """Create the database caches' tables (the workers' heartbeats); idempotent."""
    from django.core.management import call_command

    call_command("createcachetable", database=using, verbosity=0)


class GenerationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "generation"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from .sweeper import start_sweeper

        post_migrate.connect(register_sweep_schedule, sender=self)
        post_migrate.connect(create_cache_tables, sender=self)
        # Every worker process of a cluster sweeps in turn every beat (generation.sweeper).
        post_spawn.connect(start_sweeper, dispatch_uid="generation-sweeper")
