"""Uploaded files held in memory, never written to a temporary file.

Django streams a file larger than FILE_UPLOAD_MAX_MEMORY_SIZE to a temporary file
(`tmp*.upload.jpg`). Such a copy holds the photo as it was sent, EXIF and GPS
included, and a killed process leaves it behind in the temp folder. This handler
keeps every upload in memory instead, but never more than SKINCARE_MAX_UPLOAD_SIZE
(+1 byte) per request: bytes past that are counted, not kept, so that the upload
form still says how large the file was ("The file is 50.0 MB; the limit is 10.0 MB")
and refuses it before anything is decoded.
"""

from __future__ import annotations

import io

from django.conf import settings
from django.core.files.uploadedfile import InMemoryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler


class TruncatedUploadedFile(InMemoryUploadedFile):
    """An upload larger than the limit: `size` is what was sent, the content only its
    first bytes. `truncated` says so; the upload form refuses it by its size."""

    truncated = True


class BoundedMemoryUploadHandler(FileUploadHandler):
    def __init__(self, request=None):
        super().__init__(request)
        self.kept_in_request = 0

    @property
    def limit(self) -> int:
        return settings.SKINCARE_MAX_UPLOAD_SIZE + 1

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.file = io.BytesIO()
        self.received = 0

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        room = self.limit - self.kept_in_request
        if room > 0:
            kept = raw_data[:room]
            self.file.write(kept)
            self.kept_in_request += len(kept)
        return None  # the last handler: nothing is passed on

    def file_complete(self, file_size):
        self.file.seek(0)
        kept = self.file.getbuffer().nbytes
        cls = TruncatedUploadedFile if kept < self.received else InMemoryUploadedFile
        return cls(
            file=self.file,
            field_name=self.field_name,
            name=self.file_name,
            content_type=self.content_type,
            size=self.received,
            charset=self.charset,
            content_type_extra=self.content_type_extra,
        )
