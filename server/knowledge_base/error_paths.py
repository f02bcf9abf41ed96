"""Error texts for API clients name files relative to the knowledge base, never by absolute server path.

Libraries put the path they were given into their exceptions (python-docx: ``Package not found at
'/srv/.../content/a.docx'``; OSError: ``[Errno 21] Is a directory: '/srv/...'``). Those texts reach
clients through failed_files, the file table's error column and rebuild progress, and would tell them
where the server keeps its data. ``relative_paths`` rewrites them where errors become messages.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path, PurePosixPath

# A path ends where the next character cannot continue a file name (a quote, a space, the end).
_PATH_END = r"(?![\w.\-])"


def relative_paths(text: str, file_path: str | os.PathLike | None = None, file_name: str | None = None) -> str:
    """``text`` with ``file_path`` shown as ``file_name``, and paths below the file's folder, the
    knowledge-base root or the temp folders shown relative to that folder."""
    for pattern, shown in _replacements(file_path, file_name):
        text = pattern.sub(lambda _match, shown=shown: shown, text)
    return text


def _replacements(file_path, file_name) -> list[tuple[re.Pattern, str]]:
    named: dict[str, str] = {}  # absolute spelling -> what the client sees instead
    folders: list[Path] = []
    if file_path and file_name:
        for spelling in _spellings(file_path):
            named[spelling] = file_name
        folders.append(_folder_of(Path(file_path), file_name))
    folders += _server_folders()
    for folder in folders:
        for spelling in _spellings(folder):
            # Below the KB root "/srv/kb/kb2/content/b.md" becomes "kb2/content/b.md", below content/ "b.md".
            named.setdefault(spelling + os.sep, "")
            named.setdefault(spelling, folder.name or spelling)
    # Longest first, so a file's own path wins over its folder, and a folder over the folders above it.
    ordered = sorted(named.items(), key=lambda item: len(item[0]), reverse=True)
    return [(_pattern(spelling), shown) for spelling, shown in ordered]


def _pattern(spelling: str) -> re.Pattern:
    if spelling.endswith(os.sep):
        return re.compile(re.escape(spelling))
    return re.compile(re.escape(spelling) + _PATH_END)


def _folder_of(path: Path, file_name: str) -> Path:
    """The folder ``file_name`` is relative to (content/ for a knowledge-base file, 'sub/a.md' included)."""
    parts = PurePosixPath(file_name).parts
    if parts and path.parts[-len(parts) :] == parts:
        return path.parents[len(parts) - 1]
    return path.parent


def _server_folders() -> list[Path]:
    from configs import get_settings  # imported here: spawned parse workers need it only on a failure

    settings = get_settings()
    return [Path(settings.KB_ROOT_PATH), Path(settings.BASE_TEMP_DIR), Path(tempfile.gettempdir())]


def _spellings(path: str | os.PathLike) -> set[str]:
    """The absolute ways a path can appear in a message: as given and with links resolved."""
    given = os.fspath(path)
    spellings = {os.path.abspath(given), os.path.realpath(given)}
    return {s for s in spellings if s != os.sep}
