"""Reading official metadata files exactly as distributed: CSV/TSV records and JSON lines
with their line numbers, text that is not UTF-8 kept visible, and caption templates.

Files are decoded as UTF-8 (a BOM is accepted) with undecodable bytes kept as
surrogates, so one bad row can be rejected (``undecodable``) while the rest of the
corpus goes on; a header that is not UTF-8 is an error.
"""

from __future__ import annotations

import csv
import io
import json
import re
import string
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from musicsae_kedro.errors import MusicSAEError

_SURROGATE = re.compile("[\udc80-\udcff]")
_MAX_FIELD = 16 * 1024 * 1024


@dataclass(frozen=True)
class Record:
    """One record of a metadata file."""

    line: int
    """Line of the file where the record starts (1-based, as an editor shows it)."""
    fields: list[str]


def read_text(path: Path, where: str) -> str:
    """The file as text; missing files raise ``MusicSAEError`` naming the file."""
    if not path.is_file():
        raise MusicSAEError(
            path,
            f"the {where} file does not exist",
            "download the corpus metadata and keep its official layout (see docs/corpora.md)",
        )
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    return raw.decode("utf-8", "surrogateescape")


def undecodable(value: str) -> str | None:
    """A description of the first byte that is not UTF-8 in ``value``, or ``None``."""
    hit = _SURROGATE.search(value)
    if hit is None:
        return None
    return f"byte 0x{ord(hit.group()) - 0xDC00:02X} is not UTF-8 text"


def check_header(path: Path, header: Sequence[str]) -> None:
    for cell in header:
        problem = undecodable(cell)
        if problem:
            raise MusicSAEError(path, f"the header: {problem}", "save the file as UTF-8")


def read_delimited(path: Path, delimiter: str, where: str) -> Iterator[Record]:
    """Records of a CSV (``,``) or TSV (``\\t``) file, header included, with line numbers.

    Quoted fields may span lines; a malformed file (e.g. an unclosed quote) raises
    ``MusicSAEError`` naming the line.
    """
    text = read_text(path, where)
    # Free-text fields (FMA's artist bios) can outgrow the csv module's 128 KiB default.
    csv.field_size_limit(max(csv.field_size_limit(), _MAX_FIELD))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    start = 1
    try:
        for fields in reader:
            yield Record(start, fields)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise MusicSAEError(
            path, f"malformed near line {reader.line_num} ({exc})", "fix or re-download the file"
        ) from exc


def read_json_lines(path: Path, where: str) -> Iterator[tuple[int, Any | None, str | None]]:
    """``(line, object, problem)`` per non-blank line of a JSON-lines file; a file that is
    one JSON array is read element by element (all reported at line 1)."""
    text = read_text(path, where)
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MusicSAEError(path, f"not valid JSON ({exc})", "re-download the file") from exc
        if not isinstance(items, list):
            raise MusicSAEError(path, "the JSON is not a list of rows", "re-download the file")
        for item in items:
            yield 1, item, None
        return
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        problem = undecodable(line)
        if problem:
            yield number, None, problem
            continue
        try:
            yield number, json.loads(line), None
        except json.JSONDecodeError as exc:
            yield number, None, f"not valid JSON ({exc.msg} at column {exc.colno})"


def tag_fields(tags: Sequence[str]) -> dict[str, str]:
    """``("genre:Rock", "genre:Punk", "live")`` -> ``{"genre": "Rock, Punk", "tags": "live"}``."""
    fields: dict[str, list[str]] = defaultdict(list)
    for tag in tags:
        category, sep, value = tag.partition(":")
        if sep:
            fields[category.strip()].append(value.strip())
        else:
            fields["tags"].append(tag.strip())
    return {k: ", ".join(v) for k, v in fields.items()}


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


def render_caption(template: str, tags: Sequence[str]) -> str | None:
    """Fill ``template`` from the tags; empty fields and their separators disappear
    (``"{genre} music, {instrument}"`` without instruments is ``"Rock music"``).
    ``None`` when nothing but the template's fixed words would remain."""
    fields = tag_fields(tags)
    text = string.Formatter().vformat(template, (), _Blank(fields))
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s*,(\s*,)+", ",", text)  # separators left by empty fields
    text = text.strip(" ,;")
    return text if text and any(fields.get(f) for f in template_fields(template)) else None


def template_fields(template: str) -> list[str]:
    """The field names a ``str.format`` template uses."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as exc:
        raise MusicSAEError(
            "corpus option 'caption_template'", f"{template!r} is malformed ({exc})", "fix it"
        ) from exc
