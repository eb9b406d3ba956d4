"""Checks on the caller's arguments, made before any request is sent.

Every error says what was wrong, where (the item's index) and what is allowed.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypeAlias

# Infinity's own limits (infinity_emb 0.0.78): items in one request and characters in a string.
MAX_ITEMS_PER_REQUEST = 2048
MAX_MEDIA_ITEMS_PER_REQUEST = 32
MAX_TEXT_CHARS = 122_880

EncodingFormat: TypeAlias = Literal["float", "base64"]
ENCODING_FORMATS: tuple[str, ...] = ("float", "base64")

#: What ``embed_images`` / ``embed_audio`` accept: a URL, a data URI, a local path, raw bytes
#: or a binary file object (``io.BytesIO``).
MediaInput: TypeAlias = str | os.PathLike[str] | bytes | bytearray | io.IOBase

# Leading bytes of the formats the server can decode, to refuse a wrong file before sending it.
_IMAGE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)
_AUDIO_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"fLaC", "audio/flac"),
    (b"OggS", "audio/ogg"),
    (b"ID3", "audio/mpeg"),
    (b"\xff\xfb", "audio/mpeg"),
    (b"\xff\xf3", "audio/mpeg"),
    (b"\xff\xf2", "audio/mpeg"),
)


def check_texts(texts: object, what: str = "texts") -> list[str]:
    """A list of strings within Infinity's length limit, or a TypeError/ValueError."""
    if isinstance(texts, str | bytes) or not isinstance(texts, Sequence):
        raise TypeError(f"{what} must be a list of strings, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        check_text(text, i, what)
    return list(texts)


def check_text(text: object, index: int, what: str = "texts") -> str:
    """One string within Infinity's length limit; ``index`` is its position, for the message."""
    if not isinstance(text, str):
        raise TypeError(f"{what}[{index}] must be a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(
            f"{what}[{index}] has {len(text):,} characters; Infinity accepts at most "
            f"{MAX_TEXT_CHARS:,} per string. Split the text into smaller chunks."
        )
    return text


def check_query(query: object) -> str:
    if not isinstance(query, str):
        raise TypeError(f"query must be a string, got {type(query).__name__}")
    if len(query) > MAX_TEXT_CHARS:
        raise ValueError(
            f"query has {len(query):,} characters; Infinity accepts at most {MAX_TEXT_CHARS:,}."
        )
    return query


def check_optional_positive_int(value: object, name: str) -> int | None:
    return None if value is None else check_positive_int(value, name)


def check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {value}")
    return value


def check_batch_size(value: object, name: str, limit: int) -> int:
    size = check_positive_int(value, name)
    if size > limit:
        raise ValueError(f"{name} must be between 1 and {limit} (the server's limit), got {size}")
    return size


def check_encoding_format(value: object) -> EncodingFormat:
    if value == "float":
        return "float"
    if value == "base64":
        return "base64"
    raise ValueError(f"encoding_format must be one of {ENCODING_FORMATS}, got {value!r}")


def to_media_uri(item: object, index: int, modality: Literal["image", "audio"]) -> str:
    """Turn one image/audio input into what the server accepts: a URL or a data URI."""
    where = f"{modality}s[{index}]"
    if isinstance(item, str) and item.startswith(("http://", "https://")):
        return item
    if isinstance(item, str) and item.startswith("data:"):
        if ";base64," not in item:
            raise ValueError(f"{where} is a data URI without ';base64,' data")
        return item
    if isinstance(item, bytes | bytearray):
        return _data_uri(bytes(item), where, modality)
    if isinstance(item, io.IOBase):
        # A BytesIO is read without moving its position: the caller's stream stays usable.
        data = item.getvalue() if isinstance(item, io.BytesIO) else item.read()
        if not isinstance(data, bytes):
            raise TypeError(f"{where} must be a binary file object (opened with 'rb')")
        return _data_uri(data, where, modality)
    if isinstance(item, str | os.PathLike):
        path = Path(item)
        if not path.is_file():
            raise ValueError(
                f"{where} is neither an http(s) URL, a data URI nor an existing file: {str(item)!r}"
            )
        return _data_uri(path.read_bytes(), where, modality)
    raise TypeError(
        f"{where} must be a URL, a data URI, a path, bytes or a binary file object, "
        f"got {type(item).__name__}"
    )


def _data_uri(data: bytes, where: str, modality: Literal["image", "audio"]) -> str:
    # The type is read from the bytes, not the file name: a mislabelled file fails here,
    # with its index, rather than as a decoding error inside the server.
    if not data:
        raise ValueError(f"{where} is empty")
    mime = _sniff(data, modality)
    if mime is None:
        kinds = (
            "PNG, JPEG, GIF, BMP, TIFF, WebP" if modality == "image" else "WAV, FLAC, OGG, MP3, M4A"
        )
        raise ValueError(f"{where} is not a recognised {modality} file (expected {kinds})")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _sniff(data: bytes, modality: Literal["image", "audio"]) -> str | None:
    if modality == "image":
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return "image/webp"
        signatures = _IMAGE_SIGNATURES
    else:
        if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
            return "audio/wav"
        if data[4:8] == b"ftyp":
            return "audio/mp4"
        signatures = _AUDIO_SIGNATURES
    for prefix, mime in signatures:
        if data.startswith(prefix):
            return mime
    return None
