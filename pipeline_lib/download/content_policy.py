"""Which files the pipeline accepts: the extension of the destination file and the content type the
source serves must both be allowed and agree (download.content_types in config).

A generic type (application/octet-stream and friends) or a missing Content-Type never
contradicts an allowed extension: many stores serve a .docx that way. A file without an
extension is accepted when its content type is one of the allowed specific types.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from pipeline_lib.config import GENERIC_CONTENT_TYPES, DownloadSettings
from pipeline_lib.errors import PipelineError


class ContentRefused(PipelineError, ValueError):
    """The extension or content type is not allowed; the message says which and what is allowed."""


@dataclass(frozen=True)
class ContentPolicy:
    content_types: dict[str, tuple[str, ...]]
    generic_types: frozenset[str] = frozenset(GENERIC_CONTENT_TYPES)

    @classmethod
    def from_settings(cls, settings: DownloadSettings) -> ContentPolicy:
        return cls(dict(settings.content_types))

    def extension(self, file_name: str) -> str:
        suffix = PurePosixPath(file_name).suffix.lower()
        # A "suffix" longer than 10 characters is part of the name, not an extension.
        return suffix if 1 < len(suffix) <= 11 else ""

    def check_extension(self, file_name: str) -> None:
        """Before any request: the extension (if any) must be listed."""
        ext = self.extension(file_name)
        if ext and ext not in self.content_types:
            raise ContentRefused(
                f"extension {ext} is not allowed (download.content_types lists {', '.join(sorted(self.content_types))})"
            )

    def check_content_type(self, file_name: str, content_type: str | None) -> None:
        """After the response headers: the served type must fit the extension."""
        media = (content_type or "").split(";")[0].strip().lower()
        ext = self.extension(file_name)
        if not media or media in self.generic_types:
            if ext:
                return
            raise ContentRefused(
                f"no extension and a generic content type {media or '(none)'}: cannot tell the file type"
            )
        if ext:
            allowed = self.content_types.get(ext, ())
            if media not in allowed:
                raise ContentRefused(
                    f"served as {media}, which contradicts extension {ext} "
                    f"(download.content_types allows {', '.join(allowed)} or a generic type)"
                )
            return
        if not any(media in types for types in self.content_types.values()):
            raise ContentRefused(f"content type {media} is not allowed for a file without extension")
