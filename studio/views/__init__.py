"""Editor-facing pages, one module a screen. Every view requires sign-in and sees only the
editor's projects.

    projects   the project list, new projects, a project's settings, its deletion
    review     the review page with its poll, and the generating view
    gallery    one page's pictures as large as the window allows, to choose among
    controls   what the review page's buttons do to a project's run and its pages
    pages      the story editor, and a page's prompt and history
    images     a picture and its thumbnail
    cover      the front cover's picture: a page's or its own generated one
    exports    the book preview, exports and their downloads
    clips      clips: queue, retry, play
    settings   the editor's own settings
    webhooks   the services' calls when a job ends (no sign-in: each is signature-verified)

Every view is importable from here (`from studio.views import project_detail`), as
studio.urls does.
"""

from .clips import clip_video, page_clip, project_generate_clips, project_retry_failed_clips
from .controls import (
    page_next,
    page_regenerate,
    page_retry,
    project_generate,
    project_generate_section,
    project_pause,
    project_regenerate_outdated,
    project_resume,
    project_retry_failed,
    project_stop,
    project_switch_model,
    project_switch_service,
)
from .cover import cover_image, project_cover_choose, project_cover_draw
from .exports import export_download, project_book, project_export, project_upscale
from .gallery import page_gallery
from .images import illustration_image, illustration_thumbnail
from .pages import (
    page_add,
    page_delete,
    page_edit,
    page_history,
    page_move,
    page_prompt,
    pages_reorder,
    project_pages,
)
from .projects import (
    project_create,
    project_create_premise,
    project_delete,
    project_list,
    project_settings,
)
from .review import project_detail, project_generating, project_poll
from .settings import editor_settings

__all__ = [
    "clip_video",
    "cover_image",
    "editor_settings",
    "export_download",
    "illustration_image",
    "illustration_thumbnail",
    "page_add",
    "page_clip",
    "page_delete",
    "page_edit",
    "page_gallery",
    "page_history",
    "page_move",
    "page_next",
    "page_prompt",
    "page_regenerate",
    "page_retry",
    "pages_reorder",
    "project_book",
    "project_cover_choose",
    "project_cover_draw",
    "project_create",
    "project_create_premise",
    "project_delete",
    "project_detail",
    "project_export",
    "project_upscale",
    "project_generate",
    "project_generate_clips",
    "project_generate_section",
    "project_generating",
    "project_list",
    "project_pages",
    "project_pause",
    "project_poll",
    "project_regenerate_outdated",
    "project_resume",
    "project_retry_failed",
    "project_retry_failed_clips",
    "project_settings",
    "project_stop",
    "project_switch_model",
    "project_switch_service",
]
