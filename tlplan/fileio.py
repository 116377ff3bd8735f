"""Files in and out. Out: nothing the user had is lost (a temp file in the same folder, then a
rename; through a symlink to its target; straight into a device or pipe, never over it). In: a
size limit, UTF-8 or a one-line error, YAML with few aliases (an alias bomb is refused)."""

from __future__ import annotations

import fcntl
import os
import re
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import yaml

from .errors import BadInputError

#: bytes of the text files tlplan reads (plans, settings, configs, CSVs): far above any real one
TEXT_LIMIT = 16 * 1024 * 1024
#: YAML aliases in one document: tlplan's own files have none; a few in a hand-written file are fine
ALIAS_LIMIT = 64
#: values in a YAML document with its aliases expanded (a large plan has a few thousand)
NODE_LIMIT = 200_000


def read_text(path: str | Path, what: str, limit: int = TEXT_LIMIT) -> str:
    """The text of ``path`` (UTF-8, a BOM allowed); a one-line BadInputError naming ``what`` and
    the file for anything else: missing, a folder, larger than ``limit``, not UTF-8."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # before opening: opening a FIFO would wait for a writer
        if stat.S_ISDIR(mode):
            raise BadInputError(f"{what} {path} is a folder; give a file")
        if not stat.S_ISREG(mode):
            raise BadInputError(f"{what} {path} is not a regular file")
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise BadInputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise BadInputError(f"{what} {path} is larger than {limit // (1024 * 1024)} MB; that is not a {what}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{what} {path} is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})") from None


class _FewAliasesLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a document with more than ``ALIAS_LIMIT`` aliases: a few
    kilobytes of nested aliases (a "billion laughs") expand to more than any walk can finish."""

    aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > ALIAS_LIMIT:
                raise yaml.YAMLError(f"more than {ALIAS_LIMIT} aliases")
        return super().compose_node(parent, index)


def load_yaml(text: str, where: str) -> Any:
    """Safe YAML (no Python objects), at most ``ALIAS_LIMIT`` aliases; errors name ``where`` and the line."""
    loader = None
    try:
        loader = _FewAliasesLoader(text)  # reads the stream's first characters: may raise too
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = str(exc) if str(exc).startswith("more than") else "not valid YAML"
        raise BadInputError(f"{where}: {problem}{at}; fix or regenerate it") from None
    except RecursionError:
        raise BadInputError(f"{where}: nested too deeply to be a tlplan file") from None
    except ValueError as exc:  # a value YAML cannot build: a 5000-digit number, a 13th month
        raise BadInputError(f"{where}: a value it cannot read ({str(exc).splitlines()[0][:80]}); fix the file") from None
    finally:
        if loader is not None:
            loader.dispose()
    if _expanded_size(data, NODE_LIMIT) > NODE_LIMIT:  # aliases of aliases: small text, huge document
        raise BadInputError(f"{where}: more than {NODE_LIMIT:,} values once its aliases are expanded; not a tlplan file")
    return data


def _expanded_size(data: Any, limit: int) -> int:
    """Values in ``data`` counted as a walk meets them (shared ones each time), up to ``limit`` + 1."""
    count, stack = 0, [data]
    while stack and count <= limit:
        value = stack.pop()
        count += 1
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder and a rename."""
    write_atomic_bytes(path, text.encode("utf-8"))


def write_atomic_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename."""
    write_atomic_with(path, lambda f: f.write(data))


def write_atomic_with(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Let ``write`` fill a temp file in the same folder (streamed: ``np.savez``, ``torch.save``),
    then rename it over ``path``: a crash leaves the previous file whole.

    A symlink is written through (its target is replaced, the link stays); a device, pipe or socket
    (``-o /dev/stdout``) is written into directly, never replaced. Temp files left by a killed
    write of the same file are removed first."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # through symlinks: what the name finally is
    except FileNotFoundError:
        mode = None  # a new file (or a dangling link's target)
    except OSError as exc:  # a symlink loop, a path through a file
        raise BadInputError(f"cannot write {path}: {exc.strerror or exc}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise BadInputError(f"cannot write {path}: it is a directory; give a file name")
    if mode is not None and not stat.S_ISREG(mode):  # a device or a pipe (-o /dev/stdout): the stream is the destination
        try:
            with open(path, "wb") as f:  # the name as given: /dev/stdout appends where the shell redirected it
                write(f)
        except OSError as exc:
            raise BadInputError(f"cannot write {path}: {exc.strerror or exc}") from None
        return
    if path.is_symlink():  # written through: the link's target is replaced, the link stays
        path = Path(os.path.realpath(path))
    parent = path.parent if str(path.parent) else Path(".")
    _remove_stale_temps(parent, path.name)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise BadInputError(f"cannot write {path}: {exc.strerror or exc}; check that the folder exists and is writable") from None
    try:
        os.chmod(tmp, _mode_for(path))  # mkstemp makes it private: keep the mode a plain write would give
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _mode_for(path: Path) -> int:
    """The replaced file's permissions, or a new file's (0666 less the umask)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextmanager
def exclusive(lock_path: Path, busy: str, *, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (made if missing) for the block; another holder is a
    one-line BadInputError saying ``busy``. With ``remove``, the lock file goes when the block ends."""
    try:
        lock = open(lock_path, "w")
    except OSError as exc:
        raise BadInputError(f"cannot write {lock_path}: {exc.strerror or exc}") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise BadInputError(busy) from None
        try:
            yield
        finally:
            if remove:
                Path(lock_path).unlink(missing_ok=True)  # while still held: a later run makes its own
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remove_stale_temps(parent: Path, name: str) -> None:
    """Temp files of ``name`` whose writing process is gone (killed mid-write)."""
    pattern = re.compile(re.escape(f".{name}.") + r"(\d+)\.[^.]+\.tmp$")
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        match = pattern.match(entry.name)
        if match and not _alive(int(match.group(1))):
            try:
                entry.unlink()
            except OSError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True
