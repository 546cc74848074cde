"""Content: an editor's projects and their pages."""

from django.conf import settings
from django.db import models
from django.urls import reverse


class Project(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="projects"
    )
    title = models.CharField(max_length=200)
    style_guide = models.TextField(
        blank=True, help_text="Art style and recurring characters, added to every page prompt."
    )
    # Spend and speed controls; empty means no limit beyond the studio's own.
    budget = models.DecimalField(
        max_digits=10,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Stop before an illustration would take spending past this (USD).",
    )
    max_concurrent = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="At most this many calls at once for this project."
    )
    requests_per_minute = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="At most this many calls a minute for this project."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("project-detail", args=[self.pk])


class Page(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="pages")
    number = models.PositiveIntegerField()
    # An optional name editors number by: "Beat 1.1", "Scene 3 · Shot 2".
    label = models.CharField(max_length=80, blank=True)
    text = models.TextField()
    prompt = models.TextField(
        blank=True, help_text="What to draw. Leave empty to illustrate the page text."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="page_number_unique"),
            models.CheckConstraint(condition=models.Q(number__gte=1), name="page_number_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.project} · page {self.number}"

    @property
    def illustration_prompt(self) -> str:
        """Return what this page asks the image service to draw (without the style guide)."""
        return self.prompt.strip() or self.text.strip()
