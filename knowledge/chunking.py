"""Split document text into overlapping chunks measured in the *student's* tokens.

    chunks = chunk_text(text, lambda s: len(tok.encode(s)), chunk_tokens=160, overlap=32)

Chunk size is counted with the tokenizer of the model that reads the chunks, so retrieved context
fits its prompt budget. Separators are Markdown-aware (headings, code fences, rules, paragraphs,
lines, words), which also suits plain text.
"""

from __future__ import annotations

from collections.abc import Callable

from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

from knowledge.errors import ConfigError


def count_words(text: str) -> int:
    """Default token counter: whitespace-separated words."""
    return len(text.split())


def chunk_text(
    text: str, count_tokens: Callable[[str], int], chunk_tokens: int, overlap: int
) -> list[str]:
    """Chunks of at most ~`chunk_tokens` tokens, neighbours sharing ~`overlap` tokens.

    Pieces too long for one chunk are split at ever finer separators, down to characters.
    Blank input gives [].
    """
    if chunk_tokens <= 0:
        raise ConfigError(f"chunk_tokens must be positive, got {chunk_tokens}")
    if not 0 <= overlap < chunk_tokens:
        raise ConfigError(f"chunk_overlap must be in [0, {chunk_tokens}), got {overlap}")
    if not text.strip():
        return []
    splitter = RecursiveCharacterTextSplitter.from_language(
        Language.MARKDOWN,
        chunk_size=chunk_tokens,
        chunk_overlap=overlap,
        length_function=count_tokens,
    )
    return [chunk for chunk in splitter.split_text(text) if chunk.strip()]
