from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from studio import views

project_urls = [
    path("", views.project_detail, name="project-detail"),
    path("poll/", views.project_poll, name="project-poll"),
    path("generating/", views.project_generating, name="project-generating"),
    path("generate/", views.project_generate, name="project-generate"),
    path("retry-failed/", views.project_retry_failed, name="project-retry-failed"),
    path("stop/", views.project_stop, name="project-stop"),
    path("pause/", views.project_pause, name="project-pause"),
    path("resume/", views.project_resume, name="project-resume"),
]

page_urls = [
    path("retry/", views.page_retry, name="page-retry"),
    path("regenerate/", views.page_regenerate, name="page-regenerate"),
    path("next/", views.page_next, name="page-next"),
    path("prompt/", views.page_prompt, name="page-prompt"),
    path("history/", views.page_history, name="page-history"),
]

urlpatterns = [
    path("", views.project_list, name="project-list"),
    path("projects/<int:pk>/", include(project_urls)),
    path("pages/<int:pk>/", include(page_urls)),
    path("images/<int:pk>/", views.illustration_image, name="illustration-image"),
    path("images/<int:pk>/thumbnail/", views.illustration_thumbnail, name="illustration-thumbnail"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]
