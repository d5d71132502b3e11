"""The thesis' caption database (§4.3.3, E-R diagram 4.5) and the upload jobs.

`Category` (id, name, number of videos) 1—n `VideoClip` (video id, category, sentences joined by newlines), as the
the thesis stored MSR-VTT's descriptions for its text-match mode. `UploadJob` follows one uploaded video through its check,
keyframes and indexing.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Category(models.Model):
    name = models.CharField(max_length=100, unique=True)
    video_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.name


TITLE_LENGTH = 200


def display_title(file_name: str) -> str:
    """An uploaded file's name as a title: its last path part, without control characters, at most TITLE_LENGTH."""
    name = file_name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in name if c.isprintable()).strip()[:TITLE_LENGTH]


class VideoClip(models.Model):
    video_id = models.CharField(max_length=128, primary_key=True)
    category = models.ForeignKey(Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="clips")
    sentences = models.TextField(blank=True, help_text="captions, one per line")
    title = models.CharField(max_length=TITLE_LENGTH, blank=True,
                             help_text="what the pages call it: an upload's original file name (display only)")

    class Meta:
        ordering = ["video_id"]

    def __str__(self) -> str:
        return self.video_id

    @property
    def captions(self) -> list[str]:
        return [line for line in self.sentences.splitlines() if line.strip()]


class UploadJob(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        CHECKING = "checking", "checking the file"
        KEYFRAMES = "keyframes", "extracting keyframes"
        INDEXING = "indexing", "encoding and adding to the store"
        DONE = "done", "searchable"
        FAILED = "failed", "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="upload_jobs")
    file_name = models.CharField(max_length=64, help_text="the stored file's generated name")
    title = models.CharField(max_length=TITLE_LENGTH, blank=True,
                             help_text="the file's name on the uploader's machine: shown, never used as a path")
    size = models.PositiveBigIntegerField()
    category = models.CharField(max_length=100, blank=True)
    sentences = models.TextField(blank=True, help_text="captions, one per line")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    video_id = models.CharField(max_length=128, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="times the background steps were started")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.file_name} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)
