"""Keep knowledge bases in step with folders: files added, edited or deleted there are ingested
or forgotten as it happens.

    python -m server.knowledge_base.folder_sync                 # every KB in FOLDER_SYNC
    python -m server.knowledge_base.folder_sync -n samples      # samples follows its content/
    python -m server.knowledge_base.folder_sync -n docs=/srv/handbook

A knowledge base follows its own ``content/`` folder (files dropped there by hand, a sync client,
a script), or any other folder, whose files are then uploaded into ``content/``. ``startup.py``
runs this process when FOLDER_SYNC names knowledge bases.

It is a client of the API server, over HTTP like every other process: the API server stays the
only writer of knowledge bases, so its caches, locks and API keys apply as to any upload, and
the API server may run on another machine as long as this one sees the folder.

Changes are read with ``watchfiles`` (inotify and its peers). Changes within
FOLDER_SYNC_BATCH_MS of each other form one batch, ingested in one request. A file is read only
once its size and modification time have stayed the same for FOLDER_SYNC_SETTLE_SECONDS, so a
file still being copied or saved is not ingested half-written. At start, files the knowledge base
does not have, or has in another version, are ingested, and (for content/) files gone from the
folder are forgotten.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import httpx
import watchfiles

from configs import get_settings
from server.knowledge_base import paths

logger = logging.getLogger("chatkb.folder_sync")

# Partial downloads and editor swap files; paths.is_ignored covers hidden, temp* and ~$ names.
_PARTIAL_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".tmp", ".swp", ".swx", "~")


@dataclass
class FollowedFolder:
    kb_name: str
    folder: Path
    is_content: bool  # the KB's own content/: files are ingested where they are, not uploaded

    def name_of(self, path: Path) -> str | None:
        """The file's name in the knowledge base (relative POSIX path), or None when it is not one of ours."""
        try:
            relative = PurePosixPath(path.relative_to(self.folder).as_posix())
        except ValueError:
            return None
        if paths.is_ignored(relative) or relative.name.endswith(_PARTIAL_SUFFIXES):
            return None
        return str(relative)

    def files(self) -> dict[str, Path]:
        found = {}
        for path in sorted(self.folder.rglob("*")):
            name = self.name_of(path)
            if name and path.is_file():
                found[name] = path
        return found


@dataclass
class Pending:
    """Names that changed and wait until their file has settled."""

    names: dict[str, float] = field(default_factory=dict)  # name -> when it last changed (monotonic)

    def touch(self, name: str) -> None:
        self.names[name] = time.monotonic()


class SyncClient:
    """The three API calls folder sync needs."""

    def __init__(self, api_url: str, api_key: str | None, timeout: float):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=api_url.rstrip("/"), headers=headers, timeout=timeout)

    def ensure_kb(self, kb_name: str) -> None:
        """Create the knowledge base when it does not exist yet (with the server's defaults)."""
        response = self.http.get("/knowledge_base/list_knowledge_bases")
        if kb_name not in (_data(response) or []):
            _data(self.http.post("/knowledge_base/create_knowledge_base", json={"knowledge_base_name": kb_name}))
            logger.info("created the knowledge base %s", kb_name)

    def file_details(self, kb_name: str) -> dict[str, dict]:
        response = self.http.get("/knowledge_base/list_file_details", params={"knowledge_base_name": kb_name})
        return {row["file_name"]: row for row in _data(response) or []}

    def ingest_in_place(self, kb_name: str, names: list[str]) -> dict:
        body = {"knowledge_base_name": kb_name, "file_names": names}
        return _failed(self.http.post("/knowledge_base/update_docs", json=body))

    def upload(self, kb_name: str, files: dict[str, Path]) -> dict:
        uploads = [("files", (name, path.read_bytes())) for name, path in files.items()]
        form = {"knowledge_base_name": kb_name, "override": "true"}
        return _failed(self.http.post("/knowledge_base/upload_docs", data=form, files=uploads))

    def forget(self, kb_name: str, names: list[str], delete_content: bool) -> dict:
        body = {"knowledge_base_name": kb_name, "file_names": names, "delete_content": delete_content}
        return _failed(self.http.post("/knowledge_base/delete_docs", json=body))


class ApiFailure(RuntimeError):
    pass


def _data(response: httpx.Response):
    try:
        body = response.json()
    except ValueError:
        raise ApiFailure(f"HTTP {response.status_code}: {response.text[:200]}")
    if not isinstance(body, dict) or body.get("code") != 200:
        raise ApiFailure(f"HTTP {response.status_code}: {body}")
    return body.get("data")


def _failed(response: httpx.Response) -> dict:
    data = _data(response)
    return (data or {}).get("failed_files") or {} if isinstance(data, dict) else {}


class FolderSync:
    def __init__(self, client: SyncClient, followed: list[FollowedFolder], settle_seconds: float, batch_ms: int):
        self.client = client
        self.followed = followed
        self.settle_seconds = settle_seconds
        self.batch_ms = batch_ms
        self.pending = {f.kb_name: Pending() for f in followed}
        self.stopped = threading.Event()

    # ---- start: catch up with what changed while nobody watched ---------------------------------

    def catch_up(self) -> None:
        for followed in self.followed:
            known = self.client.file_details(followed.kb_name)
            on_disk = followed.files()
            for name, path in on_disk.items():
                if _differs(known.get(name), path, followed.is_content):
                    self.pending[followed.kb_name].touch(name)
            if followed.is_content:
                gone = [
                    n
                    for n, row in known.items()
                    if n not in on_disk and row.get("in_db") and not row.get("custom_docs")
                ]
                for name in gone:
                    self.pending[followed.kb_name].touch(name)
            # Files found at start have had time to settle: check them now, not a settle period later.
            for name in self.pending[followed.kb_name].names:
                self.pending[followed.kb_name].names[name] = 0.0
        self.flush()

    # ---- watching ---------------------------------------------------------------------------------

    def run(self) -> None:
        """Watch until stop() is called; each wake-up (a batch of changes or a timeout) flushes settled files."""
        folders = [str(f.folder) for f in self.followed]
        for f in self.followed:
            logger.info("%s follows %s", f.kb_name, f.folder)
        for changes in watchfiles.watch(
            *folders,
            watch_filter=None,
            step=self.batch_ms,
            debounce=max(self.batch_ms * 4, 1000),
            rust_timeout=max(int(self.settle_seconds * 500), 200),
            yield_on_timeout=True,
            stop_event=self.stopped,
            raise_interrupt=False,
        ):
            self.note(Path(path) for _, path in changes)
            self.flush()

    def stop(self) -> None:
        self.stopped.set()

    def note(self, changed: Iterable[Path]) -> None:
        for path in changed:
            # A new folder's files may be written before the watcher watches it: look inside.
            inside = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
            for followed in self.followed:
                for file in inside:
                    name = followed.name_of(file)
                    if name is not None:
                        self.pending[followed.kb_name].touch(name)

    def flush(self) -> None:
        """Send every settled change, one request per kind and knowledge base."""
        for followed in self.followed:
            pending = self.pending[followed.kb_name]
            ready_files: dict[str, Path] = {}
            deleted: list[str] = []
            for name, changed_at in list(pending.names.items()):
                path = followed.folder / name
                if not path.exists():
                    deleted.append(name)
                    del pending.names[name]
                elif self._settled(path, changed_at):
                    ready_files[name] = path
                    del pending.names[name]
            try:
                self._send(followed, ready_files, deleted)
            except (httpx.HTTPError, ApiFailure, OSError) as exc:
                # The API server is down or restarting: keep the changes and try again at the next wake-up.
                logger.warning(
                    "%s: could not sync %d changes (%s); retrying",
                    followed.kb_name,
                    len(ready_files) + len(deleted),
                    exc,
                )
                for name in [*ready_files, *deleted]:
                    pending.names.setdefault(name, 0.0)
                time.sleep(1.0)

    def _settled(self, path: Path, changed_at: float) -> bool:
        """Unchanged for settle_seconds, judged by both the last event and the file's own mtime."""
        now = time.monotonic()
        if now - changed_at < self.settle_seconds:
            return False
        try:
            stat = path.stat()
        except OSError:
            return False
        return time.time() - stat.st_mtime >= self.settle_seconds

    def _send(self, followed: FollowedFolder, files: dict[str, Path], deleted: list[str]) -> None:
        kb = followed.kb_name
        if files:
            if followed.is_content:
                failed = self.client.ingest_in_place(kb, sorted(files))
            else:
                failed = self.client.upload(kb, files)
            logger.info("%s: ingested %d files (%s)", kb, len(files) - len(failed), ", ".join(sorted(files)))
            for name, reason in failed.items():
                logger.warning("%s: %s failed: %s", kb, name, reason)
        if deleted:
            # Following another folder, the copy in content/ goes too; content/'s own file is already gone.
            failed = self.client.forget(kb, sorted(deleted), delete_content=not followed.is_content)
            forgotten = [n for n in deleted if n not in failed]
            if forgotten:
                logger.info("%s: forgot %d deleted files (%s)", kb, len(forgotten), ", ".join(forgotten))


def _differs(record: dict | None, path: Path, is_content: bool) -> bool:
    """Whether the knowledge base lacks this file or holds another version of it."""
    if record is None or not record.get("in_db"):
        return True
    stat = path.stat()
    if record.get("file_size") != stat.st_size:
        return True
    mtime = float(record.get("file_mtime") or 0.0)
    # content/'s files are ingested where they are: the record has their mtime. An uploaded copy was
    # written after its source, so a source edited since is newer than the copy.
    return abs(mtime - stat.st_mtime) > 1e-3 if is_content else stat.st_mtime > mtime


# ---- command line ---------------------------------------------------------------------------------


def followed_folders(specs: list[str] | None, settings) -> list[FollowedFolder]:
    """KB[=FOLDER] arguments, or FOLDER_SYNC from settings; an empty folder means the KB's content/."""
    pairs = [(s.split("=", 1) + [""])[:2] for s in specs] if specs else list(settings.FOLDER_SYNC.items())
    followed = []
    for kb_name, folder in pairs:
        content = paths.content_path(kb_name)
        target = Path(folder).expanduser().resolve() if folder else content
        if not target.is_dir():
            if target == content:
                target.mkdir(parents=True, exist_ok=True)
            else:
                raise SystemExit(f"error: the folder {target} that {kb_name} should follow does not exist")
        followed.append(FollowedFolder(kb_name, target, is_content=target.resolve() == content.resolve()))
    return followed


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(description="Keep knowledge bases in step with folders (see the module doc).")
    parser.add_argument(
        "-n",
        "--kb",
        nargs="+",
        metavar="KB[=FOLDER]",
        help="knowledge bases to keep in sync, each with the folder it follows (default: its content/); "
        "default: FOLDER_SYNC from settings",
    )
    parser.add_argument("--api", default=settings.API_SERVER.url, help="the API server (default: API_SERVER)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns what was synced
    followed = followed_folders(args.kb, settings)
    if not followed:
        raise SystemExit("error: no knowledge base to sync: name them with -n or in FOLDER_SYNC")
    client = SyncClient(args.api, settings.API_KEYS[0] if settings.API_KEYS else None, settings.HTTPX_DEFAULT_TIMEOUT)
    sync = FolderSync(client, followed, settings.FOLDER_SYNC_SETTLE_SECONDS, settings.FOLDER_SYNC_BATCH_MS)
    _wait_for_api(client, followed, sync)
    sync.catch_up()
    sync.run()


def _wait_for_api(client: SyncClient, followed: list[FollowedFolder], sync: FolderSync) -> None:
    """Wait for the API server (it may still be starting), and create knowledge bases not there yet."""
    for f in followed:
        while not sync.stopped.is_set():
            try:
                client.ensure_kb(f.kb_name)
                break
            except httpx.HTTPError as exc:
                logger.info("waiting for the API server (%s)", exc)
                time.sleep(1.0)
            except ApiFailure as exc:
                raise SystemExit(f"error: knowledge base {f.kb_name}: {exc}")


if __name__ == "__main__":
    main()
