"""Pages, files and the JSON API."""

from django.contrib.auth import views as auth_views
from django.urls import path

from vidsearch.web.library import api, views

urlpatterns = [
    path("", views.home, name="home"),
    path("videos/<str:video_id>/", views.player, name="player"),
    path("media/<str:video_id>/video", views.video_file, name="video-file"),
    path("media/<str:video_id>/frames/<int:index>.jpg", views.thumbnail, name="thumbnail"),
    path("upload/", views.upload, name="upload"),
    path("upload/<uuid:job_id>/", views.upload_status, name="upload-status"),
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/search", api.search, name="api-search"),
    path("api/search/image", api.search_image, name="api-search-image"),
    path("search/image", views.search_image, name="search-image"),
    path("api/search/clip", api.search_clip, name="api-search-clip"),
    path("search/clip", views.search_clip, name="search-clip"),
    path("api/videos/<str:video_id>", api.video, name="api-video"),
    path("api/videos/<str:video_id>/similar", api.similar, name="api-video-similar"),
    path("videos/<str:video_id>/similar/", views.similar, name="similar"),
    path("api/health", api.health, name="api-health"),
    path("api/openapi.json", api.openapi_description, name="api-openapi"),
]

handler404 = "vidsearch.web.library.errors.not_found"
handler500 = "vidsearch.web.library.errors.server_error"
