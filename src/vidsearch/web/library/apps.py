from django.apps import AppConfig


class LibraryConfig(AppConfig):
    name = "vidsearch.web.library"
    label = "library"
    verbose_name = "Video library"
