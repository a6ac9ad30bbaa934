"""The document record shared by readers, stores and the searcher."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """One document as read from the user's corpus.

    `encoding_text` is what the document encoder sees (BEIR convention: title, a space, text);
    a document's content is its title plus its text, so a title alone is content and
    `is_empty` holds only when both are empty.
    `content_hash` changes exactly when anything stored for the document changes, which is
    what incremental indexing compares.
    """

    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def encoding_text(self) -> str:
        return f"{self.title} {self.text}".strip() if self.title else self.text

    @property
    def is_empty(self) -> bool:
        """Neither title nor text: nothing to encode or match (readers skip or refuse it)."""
        return not self.encoding_text.strip()

    @property
    def content_hash(self) -> str:
        payload = json.dumps(
            [self.title, self.text, self.metadata], sort_keys=True, ensure_ascii=False
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Query:
    id: str
    text: str
