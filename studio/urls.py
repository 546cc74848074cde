from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from studio import views

urlpatterns = [
    path("", views.project_list, name="project-list"),
    path("projects/<int:pk>/", views.project_detail, name="project-detail"),
    path("projects/<int:pk>/generate/", views.project_generate, name="project-generate"),
    path("images/<int:pk>/", views.illustration_image, name="illustration-image"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]
