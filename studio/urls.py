from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from studio import character_views, operations, versions, views
from studio.views import webhooks

project_urls = [
    path("", views.project_detail, name="project-detail"),
    path("settings/", views.project_settings, name="project-settings"),
    path("cover/draw/", views.project_cover_draw, name="project-cover-draw"),
    path("cover/choose/", views.project_cover_choose, name="project-cover-choose"),
    path("export/", views.project_export, name="project-export"),
    path("export/upscale/", views.project_upscale, name="project-upscale"),
    path("book/", views.project_book, name="project-book"),
    path("gallery/<int:page_pk>/", views.page_gallery, name="page-gallery"),
    path("delete/", views.project_delete, name="project-delete"),
    path("pages/", views.project_pages, name="project-pages"),
    path("pages/add/", views.page_add, name="page-add"),
    path("poll/", views.project_poll, name="project-poll"),
    path("generating/", views.project_generating, name="project-generating"),
    path("generate/", views.project_generate, name="project-generate"),
    path("generate-section/", views.project_generate_section, name="project-generate-section"),
    path("pages/order/", views.pages_reorder, name="pages-reorder"),
    path("generate-clips/", views.project_generate_clips, name="project-generate-clips"),
    path(
        "retry-failed-clips/", views.project_retry_failed_clips, name="project-retry-failed-clips"
    ),
    path("retry-failed/", views.project_retry_failed, name="project-retry-failed"),
    path(
        "regenerate-outdated/",
        views.project_regenerate_outdated,
        name="project-regenerate-outdated",
    ),
    path("stop/", views.project_stop, name="project-stop"),
    path("pause/", views.project_pause, name="project-pause"),
    path("resume/", views.project_resume, name="project-resume"),
    path("switch-service/", views.project_switch_service, name="project-switch-service"),
    path("switch-model/", views.project_switch_model, name="project-switch-model"),
    path("approve-all/", versions.project_approve_all, name="project-approve-all"),
    path("characters/", character_views.character_list, name="character-list"),
]

character_urls = [
    path("", character_views.character_edit, name="character-edit"),
    path("upload/", character_views.character_upload, name="character-upload"),
    path("choose/", character_views.character_choose, name="character-choose"),
    path("draw/", character_views.character_draw, name="character-draw"),
    path("delete/", character_views.character_delete, name="character-delete"),
]

page_urls = [
    path("edit/", views.page_edit, name="page-edit"),
    path("delete/", views.page_delete, name="page-delete"),
    path("move/", views.page_move, name="page-move"),
    path("retry/", views.page_retry, name="page-retry"),
    path("regenerate/", views.page_regenerate, name="page-regenerate"),
    path("next/", views.page_next, name="page-next"),
    path("prompt/", views.page_prompt, name="page-prompt"),
    path("history/", views.page_history, name="page-history"),
    path("clip/", views.page_clip, name="page-clip"),
    path("variants/", versions.page_variants, name="page-variants"),
    path("keep-current/", versions.page_keep_current, name="page-keep-current"),
    path("approve/", versions.page_approve, name="page-approve"),
    path("unapprove/", versions.page_unapprove, name="page-unapprove"),
]

# A view's BadRequest says why in its 400 (Django's own 400 page gives no reason).
handler400 = "studio.views.common.bad_request"

urlpatterns = [
    path("", views.project_list, name="project-list"),
    path("projects/new/", views.project_create, name="project-create"),
    path("projects/new/premise/", views.project_create_premise, name="project-create-premise"),
    path("projects/<int:pk>/", include(project_urls)),
    path("pages/<int:pk>/", include(page_urls)),
    path("characters/<int:pk>/", include(character_urls)),
    path("references/<int:pk>/", character_views.reference_image, name="reference-image"),
    path("references/<int:pk>/delete/", character_views.reference_delete, name="reference-delete"),
    path("exports/<int:pk>/download/", views.export_download, name="export-download"),
    path("clips/<int:pk>/", views.clip_video, name="clip-video"),
    path("images/<int:pk>/", views.illustration_image, name="illustration-image"),
    path("covers/<int:pk>/", views.cover_image, name="cover-image"),
    path("images/<int:pk>/thumbnail/", views.illustration_thumbnail, name="illustration-thumbnail"),
    path("images/<int:pk>/use/", versions.version_use, name="version-use"),
    path("images/<int:pk>/delete/", versions.version_delete, name="version-delete"),
    path("settings/", views.editor_settings, name="editor-settings"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("operations/", operations.operations_page, name="operations"),
    path(
        "operations/accounts/resume/",
        operations.account_resume,
        name="operations-account-resume",
    ),
    path("healthz", operations.healthz, name="healthz"),
    # The services' calls when a job ends: verified by signature, no sign-in.
    path("webhooks/replicate/", webhooks.replicate_webhook, name="webhook-replicate"),
    path("webhooks/fal/", webhooks.fal_webhook, name="webhook-fal"),
    path("metrics", operations.prometheus_metrics, name="metrics"),
    path("admin/", admin.site.urls),
]
