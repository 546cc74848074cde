from datetime import timedelta

from django.core.management.base import CommandError
from django.utils import timezone

from generation.management.base import OperatorCommand, usage_error
from studio import files


class Command(OperatorCommand):
    help = (
        "Remove stored files that no row owns (pictures, thumbnails, clips and exports left "
        "by a worker killed between writing a file and committing it). Files written in the "
        "last --min-age minutes are never touched: a live worker may be about to commit them."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="list what would be removed; remove nothing"
        )
        parser.add_argument(
            "--min-age",
            type=int,
            default=15,
            metavar="MINUTES",
            help="leave files written less than this many minutes ago (default 15)",
        )

    def handle(self, *args, dry_run, min_age, **options):
        if min_age < 0:
            raise usage_error("--min-age must be 0 or more minutes")
        search = files.OrphanSearch(written_before=timezone.now() - timedelta(minutes=min_age))
        count, size, failed = 0, 0, 0
        for orphan in search:
            self.stdout.write(f"{orphan.name}  {human_size(orphan.size)}")
            if not dry_run and files.delete_files([orphan.name]):
                failed += 1
                continue
            count, size = count + 1, size + orphan.size
        verb = "Would remove" if dry_run else "Removed"
        self.stdout.write(f"{verb} {count} orphan {_files(count)} ({human_size(size)}).")
        if search.too_new:
            self.stdout.write(
                f"Skipped {search.too_new} unowned {_files(search.too_new)} written in the "
                f"last {min_age} minutes."
            )
        if failed:
            raise CommandError(
                f"Could not remove {failed} {_files(failed)}; see the warnings above.",
                returncode=1,
            )


def _files(count: int) -> str:
    return "file" if count == 1 else "files"


def human_size(size: int) -> str:
    """Return a byte count as people read it: 512 bytes, 1.2 MB."""
    if size < 1024:
        return f"{size} byte{'' if size == 1 else 's'}"
    for unit in ("KB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}"
