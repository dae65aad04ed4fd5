"""Benchmark data on demand: fetch the files a task needs from their original sources, check them, cache them.

Every file a task reads (``Task.data_files``, relative to a *data root* such as ``truthfulqa/mc_task.json``) has
an entry in :mod:`.data_sources`: its public source (a GitHub repository at a fixed commit), its sha256 and, where
the file is not a verbatim copy, the transform that makes it (unzip a member, read a pickle, keep some fields).

- :func:`pull` fetches a task's files, a data folder's, or all of them (``"all"``) into a data root (default:
  the cache, ``<cache>/data/<folder>/<file>`` with ``<cache>`` = ``$CONTRASTIVE_DECODING_CACHE`` or
  ``~/.cache/contrastive-decoding``). Each file is downloaded to a temporary file in its own folder, checked,
  and only then moved into place (``os.replace``), so a bad checksum or a cut download leaves nothing
  half-written. Files already present with the right checksum are skipped: re-running resumes.
- :func:`ensure_task_data` is what ``bench run`` calls: it returns the data root to read, i.e. ``data_dir`` if
  given, else ``$CONTRASTIVE_DECODING_DATA_DIR`` (both offline: nothing is downloaded, a missing file is an
  error), else the cache, pulling the task's missing files on first use.
- Some data has no checkable public source (the COCO val2014 images of full POPE, FACTOR news / wiki,
  StrategyQA): those are "bring your own" entries, and the error says where to put them.

Mirror (``mirror=`` / ``--mirror URL`` / ``$CONTRASTIVE_DECODING_DATA_MIRROR``): a copy of a data root served
at a URL, so ``<mirror>/<folder>/<file>`` (e.g. ``<mirror>/truthfulqa/mc_task.json``) replaces each file's
source URL. Files from a mirror are taken as they are (no transform) and checked against the same sha256. Any
folder filled by ``pull`` works as one: ``python -m http.server -d DIR``, a ``file://`` URL or a plain path.
"""

from __future__ import annotations

import http.client
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlparse
from urllib.request import Request, urlopen

from .._files import sha256_file
from .data_sources import BRING_YOUR_OWN, FILES, FOLDERS, FOLDERS_BY_NAME, BringYourOwn, DataFile, DataFolder
from .data_transforms import _CHUNK, TRANSFORMS

if TYPE_CHECKING:
    from .tasks.base import Task

__all__ = [
    "CLI_NAME",
    "DATA_DIR_ENV",
    "MIRROR_ENV",
    "BringYourOwnError",
    "ChecksumError",
    "DataError",
    "DownloadError",
    "FolderStatus",
    "MissingDataError",
    "OfflineError",
    "PullResult",
    "Selection",
    "data_cache_dir",
    "bring_your_own_message",
    "ensure_task_data",
    "folder_status",
    "format_size",
    "pull",
    "resolve_mirror",
    "select",
    "task_selection",
    "tasks_by_folder",
]

DATA_DIR_ENV = "CONTRASTIVE_DECODING_DATA_DIR"
MIRROR_ENV = "CONTRASTIVE_DECODING_DATA_MIRROR"
CLI_NAME = "contrastive-decoding"
TIMEOUT_S = 60.0

Progress = Callable[[str], None]


class DataError(RuntimeError):
    """Benchmark data could not be provided; the message says which file, from where, and what to do."""


class OfflineError(DataError):
    """A source (or mirror) could not be reached at all: connection refused, DNS failure, no route."""


class DownloadError(DataError):
    """A download failed: an HTTP error, or the connection broke before the whole file arrived."""


class ChecksumError(DataError):
    """A downloaded (or transformed) file's sha256 is not the one in the data table."""


class MissingDataError(DataError, FileNotFoundError):
    """A file a task needs is not in the data root it reads (and is not downloaded there)."""


class BringYourOwnError(MissingDataError):
    """A file or folder with no checkable public source is missing: the user has to put it in place."""


def _print_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def data_cache_dir() -> Path:
    """Where pulled data lives: ``<cache>/data`` with ``<cache>`` the package cache (``models.cache_dir()``)."""
    from ..models import cache_dir

    return cache_dir() / "data"


# --------------------------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class Selection:
    """What a name stands for: the files to fetch (each file's transform inputs first), what the user must
    bring, and (for a task) the data files no table entry knows."""

    name: str
    kind: str  # "task", "folder" or "all"
    files: tuple[DataFile, ...]
    bring_your_own: tuple[BringYourOwn, ...] = ()
    unknown: tuple[str, ...] = ()


def _closure(paths: Iterable[str], *, mirror: bool) -> tuple[list[DataFile], list[BringYourOwn], list[str]]:
    """The table entries behind ``paths``, with their transform inputs (not from a mirror) and their ``needs``."""
    files: list[DataFile] = []
    byo: list[BringYourOwn] = []
    unknown: list[str] = []
    seen: set[str] = set()

    def visit(path: str) -> None:
        if path in seen:
            return
        seen.add(path)
        if path in FILES:
            entry = FILES[path]
            if not mirror:
                for input_path in entry.inputs:
                    visit(input_path)
            files.append(entry)
            for needed in entry.needs:
                visit(needed)
        elif path in BRING_YOUR_OWN:
            byo.append(BRING_YOUR_OWN[path])
        else:
            unknown.append(path)

    for path in paths:
        visit(path)
    return files, byo, unknown


def task_selection(task: Task, *, mirror: bool = False) -> Selection:
    """The files behind ``task.data_files`` (an instance: MemoTrap's subtasks change them)."""
    files, byo, unknown = _closure(task.data_files, mirror=mirror)
    return Selection(task.name, "task", tuple(files), tuple(byo), tuple(unknown))


def _folder_selection(folders: Sequence[DataFolder], name: str, kind: str, *, mirror: bool) -> Selection:
    paths = [entry.path for folder in folders for entry in folder.files]
    paths += [entry.path for folder in folders for entry in folder.bring_your_own]
    files, byo, _ = _closure(paths, mirror=mirror)
    return Selection(name, kind, tuple(files), tuple(byo))


def select(name: str, *, mirror: bool = False) -> Selection:
    """``"all"``, a data folder (``truthfulqa``) or a task (``truthfulqa-mc``); ValueError with a did-you-mean."""
    if name == "all":
        return _folder_selection(FOLDERS, name, "all", mirror=mirror)
    if name in FOLDERS_BY_NAME:
        return _folder_selection([FOLDERS_BY_NAME[name]], name, "folder", mirror=mirror)
    from .tasks import TASKS  # imported only here: the task modules pull in the metrics' dependencies

    if name in TASKS:
        return task_selection(TASKS[name](), mirror=mirror)
    import difflib

    known = ["all", *FOLDERS_BY_NAME, *TASKS]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"Unknown data name {name!r}.{hint} Give a task ({', '.join(sorted(TASKS))}), a data folder "
        f"({', '.join(FOLDERS_BY_NAME)}) or 'all'."
    )


def tasks_by_folder() -> dict[str, list[str]]:
    """Folder name -> the tasks that read something in it (directly, as a transform input or a needed file)."""
    from .tasks import TASKS

    users: dict[str, set[str]] = {folder.name: set() for folder in FOLDERS}
    for name, task_class in TASKS.items():
        files, byo, _ = _closure(task_class.data_files, mirror=False)
        for path in [entry.path for entry in files] + [entry.path for entry in byo]:
            folder = path.split("/", 1)[0]
            if folder in users:
                users[folder].add(name)
    return {folder: sorted(names) for folder, names in users.items()}


# --------------------------------------------------------------------------------------------- pulling


@dataclass
class PullResult:
    """What a pull did: the data root, the files downloaded, those already in place, what the user must bring."""

    root: Path
    kind: str = "task"  # what the name was: "task", "folder" or "all"
    downloaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    missing: list[BringYourOwn] = field(default_factory=list)


def format_size(n: int) -> str:
    """``3.6 kB``, ``10.4 MB``: decimal units, as ``data list`` prints sizes."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def resolve_mirror(mirror: str | os.PathLike[str] | None) -> str | None:
    """``mirror``, else ``$CONTRASTIVE_DECODING_DATA_MIRROR``, as a URL (a plain path becomes ``file://``)."""
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV) or None
    if mirror is None:
        return None
    text = os.fspath(mirror)
    scheme = urlparse(text).scheme
    if len(scheme) <= 1:  # a path (or a Windows drive letter)
        text = Path(text).expanduser().resolve().as_uri()
    elif scheme not in ("http", "https", "file"):
        raise DataError(f"Mirror {text!r}: give an http://, https:// or file:// URL, or a path.")
    return text.rstrip("/")


def _mirror_url(mirror: str, path: str) -> str:
    return f"{mirror}/{quote(path)}"


def _origin(entry: DataFile, mirror: str | None) -> str:
    if mirror is not None:
        return f"from {_mirror_url(mirror, entry.path)}"
    if entry.source is None:
        return f"generated from {', '.join(entry.inputs)}"
    origin = f"from github.com/{entry.source.short}:{entry.source.path}"
    if entry.transform is not None:
        origin += f" ({entry.note})" if entry.note else f" ({entry.transform})"
    return origin


def _offline_hint() -> str:
    return (
        f"If this machine is offline, copy a data folder onto it (fill one elsewhere with `{CLI_NAME} data pull "
        f"all --data-dir DIR`) and pass --data-dir DIR to `bench run` or set {DATA_DIR_ENV}=DIR; or serve a "
        f"copy and pass --mirror URL (or set {MIRROR_ENV})."
    )


class _Session:
    """One pull: downloads with clear errors, temporary files always cleaned up, shared sources fetched once."""

    def __init__(self, root: Path, mirror: str | None, say: Progress, retry: str, timeout: float) -> None:
        self.root = root
        self.mirror = mirror
        self.say = say
        self.retry = retry
        self.timeout = timeout
        self._sources: dict[str, Path] = {}  # source URL -> downloaded temp file (chair.pkl makes two files)

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        for path in self._sources.values():
            path.unlink(missing_ok=True)
        self._sources.clear()

    def _retry_hint(self) -> str:
        return f"Re-run `{CLI_NAME} data pull {self.retry}` to try again (files already complete are kept)."

    def download(self, url: str, dest: Path, label: str) -> None:
        """``url`` into ``dest`` (a temp file); DownloadError / OfflineError naming ``label`` and ``url``."""
        request = Request(url, headers={"User-Agent": f"{CLI_NAME} (benchmark data)"})
        try:
            response = urlopen(request, timeout=self.timeout)
        except HTTPError as error:
            raise DownloadError(
                f"Could not download {label}: {url} answered HTTP {error.code} {error.reason}. "
                + (
                    "The mirror must serve a data root as <mirror>/<folder>/<file>. "
                    if self.mirror is not None
                    else ""
                )
                + self._retry_hint()
            ) from None
        except URLError as error:
            reason = error.reason
            if isinstance(reason, FileNotFoundError):
                raise DownloadError(f"Could not download {label}: {url} does not exist.") from None
            raise OfflineError(
                f"Could not download {label}: {url} is unreachable ({reason}). {_offline_hint()}"
            ) from None
        except (TimeoutError, ConnectionError, http.client.HTTPException) as error:
            raise OfflineError(
                f"Could not download {label}: {url} is unreachable ({error!r}). {_offline_hint()}"
            ) from None
        with response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            received = 0
            try:
                with dest.open("wb") as out:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        received += len(chunk)
            except (http.client.HTTPException, OSError) as error:
                raise DownloadError(
                    f"The download of {label} from {url} was interrupted after {received} bytes ({error!r}); "
                    f"nothing was saved. {self._retry_hint()}"
                ) from None
        if expected is not None and received < expected:
            raise DownloadError(
                f"The download of {label} from {url} was interrupted: the connection closed after {received} of "
                f"{expected} bytes; nothing was saved. {self._retry_hint()}"
            )

    def source_file(self, url: str, folder: Path, label: str) -> Path:
        if url not in self._sources:
            temp = _temp_file(folder, Path(urlparse(url).path).name)
            try:
                self.download(url, temp, label)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            self._sources[url] = temp
        return self._sources[url]

    def fetch(self, entry: DataFile, *, force: bool) -> bool:
        """Put ``entry`` in place under the root unless it is there and verified; True if it was fetched."""
        dest = self.root / entry.path
        if dest.is_file() and not force:
            if sha256_file(dest) == entry.sha256:
                return False
            self.say(
                f"{entry.path}: the file in {dest.parent} does not match its checksum; fetching it again"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        transform = None if self.mirror is not None else entry.transform
        if self.mirror is not None:
            url: str | None = _mirror_url(self.mirror, entry.path)
        else:
            url = entry.source.url if entry.source is not None else None
        temp = _temp_file(dest.parent, dest.name)
        try:
            if transform is None:
                assert url is not None, entry.path
                self.download(url, temp, entry.path)
            else:
                source = self.source_file(url, dest.parent, entry.path) if url is not None else None
                try:
                    TRANSFORMS[transform](source, temp, entry, self.root)
                except DataError:
                    raise
                except Exception as error:  # a malformed source: say which file and what went wrong
                    raise DataError(
                        f"Could not make {entry.path} from {url or ', '.join(entry.inputs)} "
                        f"({entry.note or transform}): {error!r}. {self._retry_hint()}"
                    ) from error
            actual = sha256_file(temp)
            if actual != entry.sha256:
                got = temp.stat().st_size
                raise ChecksumError(
                    f"Checksum mismatch for {entry.path} from {url or 'its inputs'}: expected sha256 "
                    f"{entry.sha256} ({entry.size} bytes), got {actual} ({got} bytes); the file was not saved. "
                    f"{self._retry_hint()} If it fails again the source has changed: report it, or check a copy "
                    f"yourself and put it at {dest} (or use --data-dir)."
                )
            os.replace(temp, dest)
        finally:
            temp.unlink(missing_ok=True)
        self.say(f"fetched {entry.path} ({format_size(entry.size)}) {_origin(entry, self.mirror)}")
        return True


def _temp_file(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    handle, path = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    os.close(handle)
    umask = os.umask(0)  # mkstemp makes the file private; the data file should be as readable as any other
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    return Path(path)


def _byo_present(entry: BringYourOwn, root: Path) -> bool:
    path = root / entry.path
    if entry.is_folder:
        return path.is_dir() and any(path.iterdir())
    return path.is_file()


def bring_your_own_message(missing: Sequence[BringYourOwn], root: Path, who: str) -> str:
    """What the user must put where (``who`` is e.g. "Task 'pope-random'"), and the --data-dir way out."""
    lines = [f"{who} needs data that is not downloaded by this package (bring your own):"]
    for entry in missing:
        lines.append(f"  - {entry.what}: put it at {root / entry.path} (from {entry.how})")
    lines.append(f"Or pass --data-dir DIR (or set {DATA_DIR_ENV}) to a data folder that has it.")
    return "\n".join(lines)


def _pull_selection(
    selection: Selection,
    root: Path,
    *,
    mirror: str | None,
    force: bool,
    progress: Progress | None,
    timeout: float,
) -> PullResult:
    say = progress or (lambda _message: None)
    result = PullResult(root=root, kind=selection.kind)
    root.mkdir(parents=True, exist_ok=True)
    with _Session(root, mirror, say, selection.name, timeout) as session:
        for entry in selection.files:
            (result.downloaded if session.fetch(entry, force=force) else result.present).append(entry.path)
    result.missing = [entry for entry in selection.bring_your_own if not _byo_present(entry, root)]
    return result


def pull(
    name: str,
    *,
    root: Path | str | None = None,
    mirror: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: Progress | None = None,
    timeout: float = TIMEOUT_S,
) -> PullResult:
    """Fetch every file of ``name`` (a task, a data folder or ``"all"``) into ``root`` (default: the cache).

    Files already in ``root`` with the right sha256 are kept (``force`` fetches them again). What the user
    must bring is returned in ``PullResult.missing``, not raised. Raises ValueError for an unknown name,
    OfflineError / DownloadError / ChecksumError when a file cannot be fetched (nothing half-written is left).
    """
    url = resolve_mirror(mirror)
    selection = select(name, mirror=url is not None)
    target = Path(root).expanduser() if root is not None else data_cache_dir()
    return _pull_selection(selection, target, mirror=url, force=force, progress=progress, timeout=timeout)


def ensure_task_data(
    task: Task | str,
    data_dir: Path | str | None = None,
    mirror: str | os.PathLike[str] | None = None,
    progress: Progress | None = _print_stderr,
    *,
    timeout: float = TIMEOUT_S,
) -> Path:
    """The data root ``task`` should read, with its files in place.

    ``data_dir`` if given, else ``$CONTRASTIVE_DECODING_DATA_DIR``: used as is (nothing is downloaded; a
    missing data file raises MissingDataError saying how to get it). Otherwise the cache
    (:func:`data_cache_dir`): the task's missing files are pulled from their sources (or ``mirror`` /
    ``$CONTRASTIVE_DECODING_DATA_MIRROR``) and ``progress`` is told where each came from; files the user must
    bring (COCO images for POPE, FACTOR news) raise BringYourOwnError naming where to put them.
    """
    if isinstance(task, str):
        from .tasks import get_task

        task = get_task(task)
    where = "--data-dir"
    if data_dir is None and os.environ.get(DATA_DIR_ENV):
        data_dir, where = os.environ[DATA_DIR_ENV], f"${DATA_DIR_ENV}"
    if data_dir is not None:
        return _check_data_dir(task, Path(data_dir).expanduser(), where)

    say = progress or (lambda _message: None)
    url = resolve_mirror(mirror)
    selection = task_selection(task, mirror=url is not None)
    root = data_cache_dir()
    if selection.unknown:
        raise MissingDataError(
            f"Task {task.name!r} reads {', '.join(selection.unknown)}, which no data source entry covers, so it "
            f"cannot be downloaded: pass --data-dir DIR (or set {DATA_DIR_ENV}) to a folder that has it."
        )
    result = _pull_selection(selection, root, mirror=url, force=False, progress=say, timeout=timeout)
    if result.downloaded:
        say(f"task {task.name!r}: data cached in {root}")
    if result.missing:
        raise BringYourOwnError(bring_your_own_message(result.missing, root, f"Task {task.name!r}"))
    return root


def _check_data_dir(task: Task, data_dir: Path, where: str) -> Path:
    if not data_dir.is_dir():
        raise MissingDataError(f"Data directory {data_dir} ({where}) does not exist.")
    missing = [relative for relative in task.data_files if not (data_dir / relative).is_file()]
    if not missing:
        return data_dir
    lines = [
        f"Task {task.name!r} needs files that are not in {data_dir} ({where}; nothing is downloaded there):"
    ]
    for relative in missing:
        if relative in BRING_YOUR_OWN:
            entry = BRING_YOUR_OWN[relative]
            lines.append(f"  - {data_dir / relative}: {entry.what}; bring your own, from {entry.how}")
        elif relative in FILES:
            lines.append(f"  - {data_dir / relative}: {_origin(FILES[relative], None)}")
        else:
            lines.append(f"  - {data_dir / relative}: no known source")
    if any(relative in FILES for relative in missing):
        lines.append(
            f"`{CLI_NAME} data pull {task.name} --data-dir {data_dir}` downloads them there; or run without "
            f"--data-dir (and {DATA_DIR_ENV} unset) to use the cache, filled on first use."
        )
    raise MissingDataError("\n".join(lines))


# --------------------------------------------------------------------------------------------- status


@dataclass(frozen=True)
class FolderStatus:
    """A folder of the table as ``data list`` shows it, against one data root (sizes checked, not hashes)."""

    folder: DataFolder
    tasks: tuple[str, ...]
    size: int
    files_present: int
    bring_your_own_present: tuple[bool, ...]

    @property
    def sources(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for entry in self.folder.files:
            seen[entry.source.short if entry.source is not None else "generated"] = None
        return tuple(seen)

    @property
    def cached(self) -> str:
        total = len(self.folder.files)
        if not total:
            return "-"
        if self.files_present == total:
            return f"yes ({total}/{total} files)"
        if self.files_present == 0:
            return "no"
        return f"partly ({self.files_present}/{total} files)"


def folder_status(root: Path | str | None = None) -> list[FolderStatus]:
    """Every folder of the table, with its tasks and how much of it is in ``root`` (default: the cache)."""
    base = Path(root).expanduser() if root is not None else data_cache_dir()
    users = tasks_by_folder()
    statuses = []
    for folder in FOLDERS:
        present = sum(
            (base / entry.path).is_file() and (base / entry.path).stat().st_size == entry.size
            for entry in folder.files
        )
        statuses.append(
            FolderStatus(
                folder=folder,
                tasks=tuple(users.get(folder.name, ())),
                size=sum(entry.size for entry in folder.files),
                files_present=present,
                bring_your_own_present=tuple(_byo_present(entry, base) for entry in folder.bring_your_own),
            )
        )
    return statuses
