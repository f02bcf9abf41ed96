"""Chinese title enhancement: mark chunks that look like titles and tell the chunks after
a title which title they belong to, so retrieval sees the section a passage is about."""

from __future__ import annotations

import re

from langchain_core.documents import Document

TITLE_CATEGORY = "cn_Title"
_ENDS_WITH_PUNCTUATION = re.compile(r"[，。,.;；:：!！?？、]$")


def looks_like_title(text: str, max_length: int = 20) -> bool:
    text = text.strip()
    if not text or len(text) > max_length or "\n" in text:
        return False
    if _ENDS_WITH_PUNCTUATION.search(text):
        return False
    if text.replace(" ", "").isnumeric():
        return False
    letters = sum(ch.isalpha() for ch in text)
    if letters / len(text) < 0.5:
        return False
    # Numbered headings ("1.2 安装", "第3章") carry a digit near the start.
    return any(ch.isdigit() for ch in text[:5])


def zh_title_enhance(docs: list[Document]) -> list[Document]:
    title = None
    for doc in docs:
        if looks_like_title(doc.page_content):
            doc.metadata["category"] = TITLE_CATEGORY
            title = doc.page_content.strip()
        elif title:
            doc.page_content = f"下文与({title})有关。{doc.page_content}"
    return docs
