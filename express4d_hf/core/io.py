"""Atomic file output: the one place in the package that writes through a temporary path and renames.

Every writer of the package goes through these functions, so a crash, a full disk or ``kill -9`` never
leaves a half-written file or folder where a finished one is expected: readers see the old version or
the new one, nothing in between.

>>> import tempfile, json
>>> folder = Path(tempfile.mkdtemp())
>>> atomic_write_json(folder / "a.json", {"x": 1})
>>> json.loads((folder / "a.json").read_text())
{'x': 1}
>>> with atomic_path(folder / "b.bin") as tmp:
...     _ = tmp.write_bytes(b"ok")
>>> (folder / "b.bin").read_bytes(), sorted(p.name for p in folder.iterdir())
(b'ok', ['a.json', 'b.bin'])
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for any writer (``save_file``, ``savefig``, ...); on success it is
    renamed onto ``path`` with the usual permissions, on failure removed. The suffix is kept (writers that pick a
    format from it still work)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the permissions of a plain open()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` through a temporary file, then rename."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> None:
    """Write ``data`` as JSON (non-JSON values through ``str``) with a final newline, atomically."""
    atomic_write_text(path, json.dumps(data, indent=indent, default=str) + "\n")


def replace_folder(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Rename the finished folder ``tmp`` to ``out``; an existing ``out`` is moved aside first, restored if the
    rename fails, and deleted after, so ``out`` is never half-written."""
    tmp, out = Path(tmp), Path(out)
    old = None
    if out.exists() or out.is_symlink():
        old = out.with_name(f".{out.name}.replaced-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


@contextmanager
def atomic_folder(out: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``out``; when the block succeeds it becomes ``out`` (replacing an
    existing one when ``replace``, else refusing with ``FileExistsError``); when it fails it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; a published folder is readable like any other
    try:
        yield tmp
        if out.exists() and not replace:
            raise FileExistsError(f"{out} exists; choose another output or allow replacing it")
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def files_into(dest: str | os.PathLike, last: str | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside ``dest``; when the block succeeds, each entry written there is moved into
    ``dest`` by rename (replacing what ``dest`` had under that name; other files of ``dest`` are kept), the entry
    named ``last`` after all others: a loader that looks for it (``model_index.json``, ``config.json``) never finds
    it beside missing or half-written parts."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        yield tmp
        for entry in sorted(tmp.iterdir(), key=lambda e: (e.name == last, e.name)):
            target = dest / entry.name
            if target.is_dir() and not target.is_symlink():
                replace_folder(entry, target)
            else:
                os.replace(entry, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class NotUTF8Error(ValueError):
    """Bytes that are not UTF-8 text. ``line`` is 1-based (LF, CR and CRLF all end a line), ``line_start`` the
    offset where that line begins, ``offset`` the offset of the bad byte ``byte``."""

    def __init__(self, line: int, line_start: int, offset: int, byte: int):
        self.line, self.line_start, self.offset, self.byte = line, line_start, offset, byte
        super().__init__(f"line {line}, byte {offset - line_start + 1}: 0x{byte:02x} is not UTF-8")


def decode_utf8(data: bytes) -> str:
    """``data`` as UTF-8 text, a leading byte-order mark dropped; :class:`NotUTF8Error` says where it is not."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        prefix = data[: err.start]
        line_start = max(prefix.rfind(b"\n"), prefix.rfind(b"\r")) + 1
        line = prefix.count(b"\n") + prefix.count(b"\r") - prefix.count(b"\r\n") + 1
        raise NotUTF8Error(line, line_start, err.start, data[err.start]) from None
