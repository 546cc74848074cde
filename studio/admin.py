from django.contrib import admin

from .models import Page, Project


class PageInline(admin.TabularInline):
    model = Page
    extra = 0
    fields = ["number", "text", "prompt"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["title", "owner", "created_at"]
    search_fields = ["title", "owner__username"]
    list_select_related = ["owner"]
    inlines = [PageInline]
