"""Where a knowledge base and its files live, and the checks that keep every path inside.

Every name a client sends (knowledge base, file, temp id) goes through here before it
touches the filesystem. A refused name raises UnsafeName, which the API answers with 403.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path, PurePosixPath

from configs import get_settings

MAX_KB_NAME_LENGTH = 50
MAX_FILE_NAME_LENGTH = 255
# Files that rebuilds skip, as Chatchat did (editor backups, temp files, hidden files).
IGNORED_PREFIXES = ("temp", "tmp", ".", "~$")
_KB_NAME_FORBIDDEN = re.compile(r'[\\/:*?"<>|%\x00-\x1f\x7f]')


class UnsafeName(ValueError):
    """A name that would reach outside the data root or is not a valid name at all."""


def kb_root() -> Path:
    return get_settings().KB_ROOT_PATH


def validate_kb_name(name: str) -> str:
    """Return the name if it is a plain folder name; raise UnsafeName otherwise."""
    if not isinstance(name, str):
        raise UnsafeName("knowledge base name must be a string")
    stripped = name.strip()
    if stripped in ("", ".", "..") or stripped.startswith("."):
        raise UnsafeName(f"invalid knowledge base name {name!r}")
    if len(stripped) > MAX_KB_NAME_LENGTH:
        raise UnsafeName(f"knowledge base name longer than {MAX_KB_NAME_LENGTH} characters")
    if _KB_NAME_FORBIDDEN.search(name) or stripped != name:
        raise UnsafeName(f"invalid knowledge base name {name!r}: no path separators, wildcards or control characters")
    _ensure_inside(kb_root() / name, kb_root())
    return name


def kb_path(kb_name: str) -> Path:
    return kb_root() / validate_kb_name(kb_name)


def kb_lock_path(kb_name: str) -> Path:
    """The lock file of a knowledge base's writes. It lives outside the knowledge base's folder, which
    delete_kb removes while holding it; the dot keeps the folder out of the list of knowledge bases."""
    return kb_root() / ".locks" / f"{validate_kb_name(kb_name)}.lock"


def content_path(kb_name: str) -> Path:
    return kb_path(kb_name) / "content"


def vector_store_path(kb_name: str, embed_model: str) -> Path:
    return kb_path(kb_name) / "vector_store" / validate_model_dir_name(embed_model)


def validate_model_dir_name(name: str) -> str:
    if not name or name in (".", "..") or _KB_NAME_FORBIDDEN.search(name.replace("/", "")) or "/" in name:
        raise UnsafeName(f"invalid embedding model name {name!r}")
    return name


def validate_file_name(file_name: str) -> str:
    """A relative POSIX path below content/: sub-folders allowed, no '..', no absolute path."""
    if not isinstance(file_name, str) or not file_name:
        raise UnsafeName("file name must be a non-empty string")
    if len(file_name) > MAX_FILE_NAME_LENGTH:
        raise UnsafeName(f"file name longer than {MAX_FILE_NAME_LENGTH} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in file_name):
        raise UnsafeName("file name contains control characters")
    if "\\" in file_name or file_name.startswith("/") or re.match(r"^[A-Za-z]:", file_name):
        raise UnsafeName(f"file name {file_name!r} must be a relative path with '/' separators")
    parts = PurePosixPath(file_name).parts
    if any(part in ("..", ".") for part in parts) or file_name.endswith("/"):
        raise UnsafeName(f"file name {file_name!r} may not contain '.' or '..' segments")
    return str(PurePosixPath(*parts))


def file_path(kb_name: str, file_name: str) -> Path:
    """The path of a file of a knowledge base, guaranteed (symlinks resolved) to be inside its content/."""
    base = content_path(kb_name)
    path = base / validate_file_name(file_name)
    _ensure_inside(path, base)
    return path


def _ensure_inside(path: Path, base: Path) -> None:
    resolved_base = base.resolve()
    resolved = path.resolve()
    if resolved != resolved_base and not resolved.is_relative_to(resolved_base):
        raise UnsafeName(f"{path.name!r} resolves outside {resolved_base}")


def is_ignored(relative: PurePosixPath) -> bool:
    return any(part.startswith(IGNORED_PREFIXES) for part in relative.parts)


def list_content_files(kb_name: str) -> list[str]:
    """Relative POSIX names of the files under content/, skipping temp and hidden files.

    Symbolic links are followed only when their target stays inside content/."""
    base = content_path(kb_name)
    if not base.is_dir():
        return []
    resolved_base = base.resolve()
    names = []
    for path in sorted(base.rglob("*")):
        relative = PurePosixPath(path.relative_to(base).as_posix())
        if is_ignored(relative) or not path.is_file():
            continue
        if not path.resolve().is_relative_to(resolved_base):
            continue
        names.append(str(relative))
    return names


def list_kb_folders() -> list[str]:
    root = kb_root()
    if not root.is_dir():
        return []
    names = []
    for path in sorted(root.iterdir()):
        if not path.is_dir():
            continue
        try:
            validate_kb_name(path.name)
        except UnsafeName:
            continue
        names.append(path.name)
    return names


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a file, None when it is missing: tells a file replaced under the same name
    (deleted and made again) from the one a process opened."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino
