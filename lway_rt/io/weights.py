"""Load and save SR weights: ``.pth`` (Real-ESRGAN/BasicSR checkpoints) and ``.safetensors``.

Saving is atomic (temporary file, then rename) and refuses NaN/inf tensors, so a crash or a
diverged run can never leave a broken file where a good one was.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import tempfile
import threading
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from lway_rt.errors import DamagedFileError, ModelError, OutputError, WriteFailed, listing

__all__ = ["load_state_file", "save_safetensors", "atomic_write_bytes", "atomic_path", "state_dict_sha256",
           "ensure_writable_dir", "write_probe", "safetensors_bytes", "case_insensitive", "exclusive_run", "refuse_if_busy", "sweep_stale_temps",
           "sweep_stale_temp_dirs"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode_for(dest: Path) -> int:
    """The permissions a new file written over ``dest`` gets: those of the regular file there, else those a plain
    ``open()`` gives (0666 less the umask): a temporary file made by ``mkstemp`` is private (0600) until then."""
    try:
        old = os.stat(dest)
    except OSError:
        old = None
    return _mode_replacing(old)


def _mode_replacing(old: os.stat_result | None) -> int:
    """``file_mode_for`` of a destination whose ``os.stat`` is ``old`` (None: nothing there)."""
    return stat.S_IMODE(old.st_mode) & 0o777 if old is not None and stat.S_ISREG(old.st_mode) else 0o666 & ~_umask()


STALE_TEMP_S = 24 * 3600.0  # a temporary file untouched this long belongs to a write that was killed
_stale_by_folder: dict[Path, list[Path]] = {}  # hidden temporary files found stale, listed once per folder a process


NAME_MAX = 255  # bytes in one file name (ext4, XFS, btrfs, APFS, NTFS's 255 UTF-16 units)
_TEMP_EXTRA = 48  # what a temporary file's name adds to its file's: ".", ".lw<8>p<pid>.", mkstemp's 8, ".onnx.tmp"


def temp_stem(name: str) -> str:
    """``name`` as it stands in its temporary files' names: itself, or where that would make a name longer than a
    file name may be (an output whose own name is legal, 220-255 bytes), its start and a hash of the whole."""
    raw = os.fsencode(name)
    if len(raw) + _TEMP_EXTRA <= NAME_MAX:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:12]
    return _cut_utf8(raw, NAME_MAX - _TEMP_EXTRA - len(digest) - 1) + "~" + digest


def _cut_utf8(raw: bytes, n: int) -> str:
    """The first ``n`` bytes of a file name, not cutting a UTF-8 character in two (a name of ``n`` bytes or fewer is
    whole: its last character, ending in a continuation byte, had been dropped as if cut)."""
    if len(raw) <= n:
        return os.fsdecode(raw)
    cut = raw[:n]
    if raw[n] & 0xC0 == 0x80:  # the cut falls inside a character: drop the part of it before the cut
        while cut and (cut[-1] & 0xC0) == 0x80:
            cut = cut[:-1]
        if cut and cut[-1] >= 0xC0:  # its lead byte
            cut = cut[:-1]
    return os.fsdecode(cut)


def temp_prefix(name: str) -> str:
    """The prefix of a hidden temporary file for ``name``: ``.NAME.lw<host>p<pid>.``, so that a later run can tell
    a temporary file whose writer (a process on this machine) is gone, killed with ``kill -9``, from one being
    written now (``sweep_stale_temps``). A long NAME is shortened (``temp_stem``)."""
    return f".{temp_stem(name)}.lw{_host_tag()}p{os.getpid()}."


_TEMP_NAME = re.compile(r"\.(.+)\.lw[0-9a-f]{8}p\d+\.[^.]*\.(?:onnx\.)?tmp")


def temp_target(name: str) -> str | None:
    """The name (``temp_stem``'s) of the file whose temporary file ``name`` is, as ``temp_prefix`` names them; None
    for any other name (a hidden file of the user's that merely ends in ``.tmp``)."""
    m = _TEMP_NAME.fullmatch(name)
    return None if m is None else m.group(1)


def is_temp_name(name: str, of: str) -> bool:
    """Whether ``name`` is a temporary file of the file named ``of``, as ``temp_prefix`` names them."""
    return temp_target(name) == temp_stem(of)


def _host_tag() -> str:
    """This machine's, and this process ID namespace's, tag in temporary files' names: two containers may share a
    host name and a folder, and a process ID alive in one is no process in the other (a live temporary file of one
    had been swept by the other as its writer's, gone). The kernel's boot ID tells machines apart that share a host
    name (cluster nodes with a folder of their own, each with the same first namespace's number)."""
    import hashlib
    import socket

    try:
        space = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:  # (no /proc: the host name alone)
        space = ""
    return hashlib.sha256(f"{socket.gethostname()}\0{space}\0{_boot_id()}".encode()).hexdigest()[:8]


def _boot_id() -> str:
    """The running kernel's boot ID (Linux: new at each boot, one per machine); '' where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _writer_gone(name: str) -> bool:
    """Whether a temporary file named by ``temp_prefix`` was left by a process of this machine that no longer runs
    (one of another machine, on a shared folder, cannot be told: it waits for ``STALE_TEMP_S``)."""
    import re

    m = re.search(r"\.lw([0-9a-f]{8})p(\d+)\.[^.]*\.(?:onnx\.)?tmp$", name)
    if m is None or m.group(1) != _host_tag() or int(m.group(2)) == os.getpid():
        return False
    try:
        os.kill(int(m.group(2)), 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's live process
        return False
    return False


def sweep_stale_temps(folder: Path, prefix: str, suffix: str) -> None:
    """Remove ``prefix*suffix`` temporary files in ``folder`` whose writer is gone: one on this machine that no
    longer runs (``temp_prefix`` names it), or any untouched for ``STALE_TEMP_S`` (a day). A process killed in the
    middle of a write (``kill -9``, a power cut) leaves its hidden temporary file behind, tens of MB each, and nothing
    else would ever remove it. No write here holds one for more than minutes (the longest, an export's temporary ONNX
    file while its parity is checked). The folder is listed once a process (a batch writing thousands of images into
    it would otherwise list it for each); each write then removes the stale files of its own name."""
    import time

    key = Path(folder).resolve()
    if key not in _stale_by_folder:
        cutoff, found = time.time() - STALE_TEMP_S, []
        try:
            for f in key.iterdir():
                try:
                    # only the names temp_prefix gives (a hidden .tmp file of the user's is theirs, however old)
                    if _TEMP_NAME.fullmatch(f.name) and f.is_file() \
                            and (f.stat().st_mtime < cutoff or _writer_gone(f.name)):
                        found.append(f)
                except OSError:
                    pass
        except OSError:
            pass
        _stale_by_folder[key] = found
    stale = _stale_by_folder[key]
    for f in [f for f in stale if f.name.startswith(prefix) and f.name.endswith(suffix)]:
        stale.remove(f)
        try:
            f.unlink()
        except OSError:
            pass


_temp_dirs_swept = False


def sweep_stale_temp_dirs(prefix: str = "lwayrt-") -> None:
    """Remove this user's ``prefix*`` folders in the system's temporary folder untouched for ``STALE_TEMP_S``: the
    working folders (ONNX exports for parity checks and benchmarks, tens of MB) of runs killed with ``kill -9``, which
    nothing else would remove. Once a process."""
    import shutil
    import time

    global _temp_dirs_swept
    if _temp_dirs_swept:
        return
    _temp_dirs_swept = True
    cutoff = time.time() - STALE_TEMP_S
    try:
        entries = list(Path(tempfile.gettempdir()).iterdir())
    except OSError:
        return
    for d in entries:
        try:
            st = d.lstat()
            if d.name.startswith(prefix) and d.is_dir() and not d.is_symlink() and st.st_uid == os.getuid() \
                    and st.st_mtime < cutoff:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


_WRITE_FAILURES = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO, errno.EROFS}


def save_torch(obj, dest: Path) -> None:
    """``torch.save`` to ``dest`` atomically. torch's writer reports a full disk or a file-size limit as a
    RuntimeError ("unexpected pos ..."); it is said as the OutputError of any other failed write."""
    with atomic_path(dest) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:
            if "unexpected pos" not in str(exc) and "write" not in str(exc).lower():
                raise
            raise OSError(errno.EIO, "the write stopped part-way (a full disk or a file-size limit?)") from None


def file_id(path: Path) -> tuple[int, int] | None:
    """Which file ``path`` is now (device, inode), or ``None`` if there is none: one written atomically over it is
    another (``atomic_path``), so a stop just after the rename can tell the new checkpoint from the one before."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def sync_file(path: str | Path) -> None:
    """Wait until ``path``'s bytes are on the disk (before a rename names it: a power cut then leaves it whole)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_folder(folder: str | Path) -> None:
    """Wait until ``folder``'s list of names is on the disk (after a rename in it: a power cut then cannot bring the
    replaced file back). A file system that cannot sync a folder (some network and FUSE mounts) is let be."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_path(dest: Path, exclusive: bool = False, through_links: bool = True, folder: str = "output folder"):
    """Context manager: yields a temporary path beside ``dest``; renames it over ``dest`` on success. A ``dest`` that
    is a symbolic link is written through (the file it names is replaced; the link stays), or with ``through_links``
    False replaced by the new file (files the project keeps in a folder of its own, whose links name files that are
    not its own: the model store's entries, an export's manifest and engine); one that is a device, pipe or socket is
    refused. ``exclusive``: ``dest`` is made only if no file has that name by the moment it would take it (a hard
    link, which fails where one exists: ``FileExistsError``, the temporary file removed); the check and the write are
    one step, so of two commands writing one new name at once, one is refused. ``folder``: what a failure advises
    choosing another of (the model store's entries: LWAYRT_HOME, which no command takes as an output folder)."""
    @contextlib.contextmanager
    def _cm():
        dest_p = Path(dest)
        size = len(os.fsencode(dest_p.name))
        if size > NAME_MAX:  # said as such: "cannot write to FOLDER: File name too long" sent the user to another folder
            raise OutputError(f"cannot write {dest_p}: its name is {size} bytes, more than the {NAME_MAX} a file name "
                              "may have; give it a shorter name")
        try:
            if dest_p.exists() and not dest_p.is_file() and not dest_p.is_dir():  # a folder: os.replace says so below
                raise OutputError(f"cannot write {dest_p}: it is not a regular file (a device, pipe or socket, such "
                                  "as /dev/stdout); name a file")
            if through_links and dest_p.is_symlink():  # written through, as open() writes: the link stays and its
                # file gets the content
                try:
                    dest_p = Path(os.path.realpath(dest_p, strict=True))
                except FileNotFoundError:  # a link to a file not made yet: open() would make it (not its folders)
                    dest_p = Path(os.path.realpath(dest_p))
                    if not dest_p.parent.is_dir():
                        raise OutputError(f"cannot write {dest}: it is a link to {dest_p}, whose folder does not "
                                          "exist; make the folder, or name another file") from None
        except OSError as exc:  # a link that loops (ELOOP), a path too long, a folder that cannot be searched
            raise OutputError(f"cannot write {dest}: {exc.strerror or exc}; name another file") from None
        try:
            dest_p.parent.mkdir(parents=True, exist_ok=True)
            sweep_stale_temps(dest_p.parent, f".{temp_stem(dest_p.name)}.", ".tmp")
            fd, tmp = tempfile.mkstemp(prefix=temp_prefix(dest_p.name), suffix=".tmp", dir=os_folder(dest_p.parent))
            os.close(fd)
        except OSError as exc:
            raise OutputError(f"cannot write to {dest_p.parent}: {exc.strerror}; choose another {folder}") from exc
        try:
            yield Path(tmp)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            if exc.errno in _WRITE_FAILURES:  # a full disk, a quota or a file-size limit: a line, not a traceback
                raise WriteFailed(dest_p, exc.strerror, folder) from None
            raise
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        try:
            # mkstemp makes the file private (0600): give it the permissions of the file it replaces (a private 0600
            # output stays private; its group too, where this user may), else those a plain open() would
            try:
                old = os.stat(dest_p, follow_symlinks=through_links)  # (a link replaced: a new file's permissions)
            except OSError:
                old = None
            replacing = old is not None and stat.S_ISREG(old.st_mode)
            if replacing:
                with contextlib.suppress(OSError):  # (before the mode: a chown clears set-group-ID bits)
                    os.chown(tmp, -1, old.st_gid)
            os.chmod(tmp, _mode_replacing(old))
            if replacing:  # on the disk before its name is: a power cut after the rename leaves the new file whole,
                sync_file(tmp)  # not an empty one where a whole one was (a new name replaces nothing: no wait then)
            if exclusive:
                _link_new(Path(tmp), dest_p)
            else:
                os.replace(tmp, dest_p)
            if replacing:  # the rename itself on the disk too (the old file must not come back after a power cut)
                sync_folder(dest_p.parent)
        except FileExistsError:  # (exclusive: made meanwhile)
            Path(tmp).unlink(missing_ok=True)
            raise
        except OSError as exc:  # the target cannot be replaced (a folder there, an immutable file): the old one stays
            Path(tmp).unlink(missing_ok=True)
            raise OutputError(f"cannot replace {dest_p}: {exc.strerror or exc}; choose another output folder") from exc

    return _cm()


def _link_new(tmp: Path, dest: Path) -> None:
    """``tmp`` given the new name ``dest``, or ``FileExistsError`` where ``dest`` exists: a hard link (then ``tmp``
    goes); where the file system has none, ``dest`` is claimed by an exclusive create and ``tmp`` renamed over it."""
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # (FileExistsError where it exists)
        try:  # (an empty file has the name for this moment)
            os.replace(tmp, dest)
        except BaseException:
            dest.unlink(missing_ok=True)  # the name claimed goes with the write: no empty file left to block it
            raise
        return
    tmp.unlink(missing_ok=True)


def ensure_writable_dir(folder: Path, option: str) -> None:
    """``folder`` exists (made if missing) and takes a new file, or a one-line ``OutputError`` naming ``option``.

    Checked by writing (and removing) a probe file, not with ``os.access``: a root user passes ``os.access`` on a
    read-only mount or an immutable folder, and would learn it only when the first output failed.
    """
    folder = Path(folder)
    _refuse_a_dangling_link(folder, option)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {folder}: {exc.strerror or exc}; choose another {option}") from None
    try:
        write_probe(folder)
    except OSError as exc:
        raise OutputError(f"cannot write to {folder}: {exc.strerror or exc}; choose another {option}") from None


# warnings.catch_warnings saves and puts back the process's one list of filters: two threads inside such blocks at
# once could put back each other's, leaving our "ignore" filters behind for good (Upscalers made in threads)
WARNING_FILTERS = threading.RLock()


def torch_load_tensors(path: Path | str):
    """``torch.load`` of a user's file with ``weights_only=True`` (tensors and plain containers, no code run), on
    the CPU. A TorchScript archive (a whole scripted module) is a one-line ``ModelError`` naming it, without torch's
    warning about it; other failures propagate for the caller to name."""
    try:
        with WARNING_FILTERS, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*looks like a TorchScript archive", category=UserWarning)
            warnings.filterwarnings("ignore", message=r"Detected pickle protocol", category=UserWarning)
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except RuntimeError as exc:
        if "TorchScript" not in str(exc):
            raise
    raise ModelError(f"{path} is a TorchScript module (torch.jit.save), not a state dict: save its weights with "
                     "torch.save(torch.jit.load(FILE).state_dict(), 'weights.pth')")


def check_dir_can_be_written(folder: Path, option: str) -> None:
    """Like ``ensure_writable_dir`` but makes nothing: a missing ``folder`` is judged by the nearest folder above it
    that exists (it must take a new file), for a command that writes only at its end and should leave no empty
    folder behind when it fails before then. The caller makes ``folder`` when it writes."""
    folder = Path(folder)
    _refuse_a_dangling_link(folder, option)
    above = folder
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise OutputError(f"cannot create output folder {folder}: {above} is not a folder; choose another {option}")
    try:
        write_probe(above)
    except OSError as exc:
        what = "write to" if above == folder else f"create output folder {folder} in"
        raise OutputError(f"cannot {what} {above}: {exc.strerror or exc}; choose another {option}") from None


def _refuse_a_dangling_link(folder: Path, option: str) -> None:
    """A ``folder`` that is a link to nothing cannot be made (``mkdir`` says only "File exists"): say where it leads."""
    if folder.is_symlink() and not folder.exists():
        raise OutputError(f"cannot create output folder {folder}: it is a link to {os.readlink(folder)}, which does not "
                          f"exist; make that folder, or choose another {option}")


def os_folder(folder) -> str:
    """``folder`` as the OS takes it, for ``tempfile.mkstemp(dir=...)``, which reads a path lexically: its temporary
    file in ``LINK/../out`` (LINK a link to a/b) went to ./out, not to a/out where the folder is made and the file
    replaced."""
    return os.path.realpath(folder)


def write_probe(folder: Path) -> None:
    """Make and remove a file in ``folder`` (an existing one), or raise the ``OSError`` that says why it takes none.
    The probe is named as a temporary file (``temp_prefix``): one a kill left is removed by the next probe there."""
    fd, probe = tempfile.mkstemp(prefix=temp_prefix("write-probe"), suffix=".tmp", dir=os_folder(folder))
    os.close(fd)
    os.unlink(probe)
    sweep_stale_probes(folder)


def sweep_stale_probes(folder: Path) -> None:
    """Remove the probe files (``write_probe``, ``case_insensitive``) in ``folder`` whose process is gone (a kill
    while it probed: an empty hidden file, left for good)."""
    for what in ("write-probe", "case-probe"):
        sweep_stale_temps(folder, f".{what}.", ".tmp")


def case_insensitive(folder: Path) -> bool:
    """Whether ``folder`` (an existing, writable folder) is on a file system that takes ``Photo.png`` and
    ``photo.png`` for one file (macOS's APFS and Windows' NTFS by default): found by making a probe file and looking
    for it under its name in the other case. False where that cannot be told (the probe cannot be written)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=temp_prefix("case-probe"), suffix=".tmp", dir=os_folder(folder))
    except OSError:
        return False
    os.close(fd)
    try:
        other = os.path.join(os.path.dirname(probe), os.path.basename(probe).swapcase())
        return os.path.exists(other) and os.path.samefile(probe, other)
    finally:
        try:
            os.unlink(probe)
        except OSError:
            pass


def check_file_destination(path: Path, option: str) -> None:
    """Refuse at once, not after minutes of work, a file destination whose folder cannot exist because a file of that
    name stands on its way (``--json notes.txt/report.json``)."""
    p = Path(path).expanduser()
    for parent in p.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise OutputError(f"{option} {p}: {parent} is a file, not a folder; choose another {option}")
            return


_HELD: dict[tuple[str, int], int] = {}  # (target, thread) holding an exclusive_run lock in this process: its fd


def exclusive_run(target: Path, option: str, shown: Path | None = None):
    """Context manager: an exclusive lock on ``target`` (a folder, or a lock file made if missing and removed on
    release) for as long as it is open, so that two runs never write into one output at once (each would report
    success over a mix of both). A second run gets a one-line ``OutputError``; the lock goes with the process, so a
    killed run leaves none behind (a killed run's lock file is taken over by the next). Where the system has no
    ``flock`` (Windows), nothing is locked. Re-entrant within a thread: a command that takes the lock early (before
    it loads anything) calls code that takes it again; another thread of the same process is refused like another
    process. It yields a function that raises ``OutputError`` when ``target`` is no longer the file locked (the
    folder was deleted, and perhaps made again by another run that locked the new one): a run calls it before it
    writes what it must not write beside another run's. ``shown``: the output a lock file stands for, as the refusal
    names it (by default the lock file's name without its dot and ``.lock``)."""
    import contextlib

    @contextlib.contextmanager
    def _cm():
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield lambda: None
            return
        path = Path(target)
        key = (str(path.resolve()), threading.get_ident())

        def still_held(fd: int) -> Callable[[], None]:
            def check() -> None:
                if not _same_file(fd, path):
                    raise OutputError(f"{path} was deleted or replaced while this run wrote to it (another run may be "
                                      f"writing there now): this run stops without writing its results; run it again")
            return check

        if key in _HELD:  # this thread holds it already
            yield still_held(_HELD[key])
            return
        folder = path.is_dir()
        while True:
            try:
                fd = os.open(path, os.O_RDONLY) if folder else os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
            except OSError as exc:  # a lock file in a folder that takes none (read-only, /proc)
                raise OutputError(f"cannot write to {path if folder else path.parent}: {exc.strerror or exc}; choose "
                                  f"another {option}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                named = shown or (path if folder else path.with_name(path.name.removeprefix(".").removesuffix(".lock")))
                raise OutputError(f"another run is writing to {named} right now: wait for it to finish, or choose "
                                  f"another {option}") from None
            if folder or _same_file(fd, path):
                break
            os.close(fd)  # the lock file was removed by the run that held it: lock the one now at the path
        _HELD[key] = fd
        try:
            yield still_held(fd)
        finally:
            _HELD.pop(key, None)
            if not folder:
                with contextlib.suppress(OSError):
                    path.unlink()  # while still locked: a run that opened it meanwhile sees it gone and retries
            os.close(fd)

    return _cm()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def refuse_if_busy(target: Path, option: str) -> None:
    """The one-line refusal of :func:`exclusive_run`, at once, when another run holds ``target`` now: a run checks this
    before it spends seconds loading models and reading images, and takes the lock itself once it is accepted."""
    if Path(target).exists():
        with exclusive_run(target, option):
            pass


def finite(value):
    """``value`` with every NaN or infinite float (in dicts, lists and tuples, at any depth) replaced by None: what
    strict JSON (``allow_nan=False``) takes, an undefined number written as null."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def atomic_write_json(dest: Path, obj, indent: int = 2) -> None:
    """``obj`` written atomically as strict JSON (what JSON.parse and other strict readers take): NaN and infinite
    numbers as null, numpy scalars as numbers, paths as strings."""
    import numpy as np

    def plain(o):
        if isinstance(o, (np.floating, np.integer, np.bool_)):
            return o.item()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"{type(o).__name__} is not JSON")

    data = json.loads(json.dumps(obj, default=plain))
    atomic_write_bytes(Path(dest), (json.dumps(finite(data), indent=indent, allow_nan=False) + "\n").encode())


def atomic_write_bytes(dest: Path, data: bytes, through_links: bool = True) -> None:
    """``data`` written atomically to ``dest`` (``atomic_path``, ``through_links`` as its)."""
    with atomic_path(dest, through_links=through_links) as tmp:
        tmp.write_bytes(data)


def state_dict_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """A content hash of a state dict, independent of file format and key order."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def _sorted_metadata(blob: bytes) -> bytes:
    """A safetensors file's bytes with its ``__metadata__`` keys in sorted order. The library writes them in a
    hash map's order, which changes from save to save, so the same weights and metadata gave files of other bytes
    (and other checksums) each time; tensor entries and data are left exactly as written."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])  # entries keep their order; the metadata's keys are sorted in place
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the format pads its header to 8 bytes with spaces
    return len(text).to_bytes(8, "little") + text + blob[8 + n:]


def safetensors_bytes(state: Mapping[str, torch.Tensor], metadata: Mapping[str, object] | None = None) -> bytes:
    """Weights as safetensors bytes (metadata values not strings are JSON); the same tensors and metadata always give
    the same bytes. ModelError on a NaN/inf weight: such weights never reach a file."""
    from safetensors.torch import save

    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelError(f"refusing to save weights with NaN/inf values ({listing(bad, 1)})")
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    tensors, seen = {}, set()
    for k, v in state.items():  # a tensor sharing its storage with one before it (tied weights, as torch.save keeps
        v = v.detach().cpu().contiguous()  # them) is copied: safetensors refuses shared storage with a RuntimeError
        tensors[k] = v.clone() if v.numel() and v.untyped_storage().data_ptr() in seen else v
        seen.add(v.untyped_storage().data_ptr())
    return _sorted_metadata(save(tensors, metadata=meta))


def save_safetensors(dest: Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, object] | None = None,
                     exclusive: bool = False, through_links: bool = True, folder: str = "output folder") -> None:
    """Write weights atomically as safetensors (``safetensors_bytes``); ``exclusive``: only as a new file
    (``atomic_path``: ``FileExistsError`` where one has that name by then); ``through_links`` and ``folder`` as
    ``atomic_path``'s."""
    blob = safetensors_bytes(state, metadata)
    with atomic_path(dest, exclusive, through_links, folder) as tmp:
        tmp.write_bytes(blob)


def header_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file read from its header alone, at its start: what a file cut short
    at its end still says of itself ({} where the header cannot be read)."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            meta = json.loads(f.read(n)).get("__metadata__", {}) if 0 < n <= 100_000_000 else {}
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in meta.items() if isinstance(v, str)} if isinstance(meta, dict) else {}


def _sniff(path: Path) -> str | None:
    """What a weights file's first bytes say it is, whatever its name: "safetensors" (an 8-byte header length,
    then the JSON header), "torch" (torch.save's zip, or a legacy pickle), or None."""
    with open(path, "rb") as f:
        head = f.read(10)
    if len(head) == 10 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 0:  # whole or cut short
        return "safetensors"
    # a pickle starts with PROTO (0x80) and its version; a safetensors header length's low byte may be 0x80 too (a
    # cut stage-1 checkpoint was called "a PyTorch checkpoint named .safetensors")
    if head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        return "torch"
    return None


def _check_torch_archive(path: Path) -> None:
    """A zip archive given as a checkpoint: refused unless it is torch.save's (a ``data.pkl`` in it), or if one of its
    entries fails its CRC-32 (torch.load does not check them: weights damaged inside the file loaded as if sound)."""
    import zipfile

    if not zipfile.is_zipfile(path):  # (a torch zip cut short has lost its directory: torch.load says so)
        return
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in archive.namelist()):
                raise ModelError(f"{path} is not a PyTorch checkpoint (a zip archive, but not torch.save's: it holds "
                                 "no data.pkl): pass the model's weights, a .pth or .safetensors file")
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DamagedFileError(f"{path} is a damaged PyTorch checkpoint ({exc}): re-download or re-export it") from None
    if bad is not None:
        raise DamagedFileError(f"{path} is a damaged PyTorch checkpoint ({bad} in it fails its checksum): re-download or "
                               "re-export it")


def load_state_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return (tensors, metadata) from a ``.safetensors`` or ``.pth``/``.pt``/``.ckpt`` file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    if path.stat().st_size == 0:
        raise DamagedFileError(f"model file {path} is empty (0 bytes): re-download or re-export it")
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".pth", ".pt", ".ckpt", ".bin", ".onnx"):  # named otherwise (x.pth.tar, a
        # checkpoint as many training scripts name theirs): read by what its first bytes say it is (57D-2)
        suffix = {"torch": ".pth", "safetensors": ".safetensors"}.get(_sniff(path) or "", suffix)
    if suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            if _sniff(path) == "torch":
                raise ModelError(f"{path} is a PyTorch checkpoint named .safetensors: rename it to .pth") from None
            raise DamagedFileError(f"{path} is not a readable safetensors file ({exc}); re-download or re-export it") from exc
        return tensors, meta
    if suffix in (".pth", ".pt", ".ckpt", ".bin"):
        _check_torch_archive(path)
        try:
            obj = torch_load_tensors(path)
        except ModelError:  # a TorchScript module, named
            raise
        except Exception as exc:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
            if found:  # intact, but pickled objects beside the tensors (a garbled pickle fails on an operand instead)
                raise ModelError(f"{path} holds pickled Python objects besides tensors ({found.group(1)}: a whole model, "
                                 "numpy values), "
                                 "which are not loaded since unpickling can run code: re-save only the weights, e.g. "
                                 "torch.save(model.state_dict(), 'weights.pth'), or pass a .safetensors file") from None
            if _sniff(path) == "safetensors":
                raise ModelError(f"{path} is a safetensors file named {path.suffix}: rename it to .safetensors") from None
            with open(path, "rb") as f:
                head = f.read(2)
            if head[:1] == b"\x80" and head != b"\x80\x02":  # a pickle, of another protocol than torch.save's (2)
                raise ModelError(f"{path} is not a PyTorch checkpoint (a Python pickle, but not torch.save's): pass "
                                 "the model's weights, a .pth or .safetensors file") from None
            if _sniff(path) is None:  # text, an image: said as such, not "(KeyError)"
                raise ModelError(f"{path} is not a PyTorch checkpoint (neither torch.save's zip nor its pickle): pass "
                                 "the model's weights, a .pth or .safetensors file") from None
            said = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))  # the cause, not torch's advice around it
            reason = (said.group(1) if said else str(exc).split(". ")[0]).strip().rstrip(".") or type(exc).__name__
            raise ModelError(f"{path} is a PyTorch checkpoint that cannot be read, cut short or damaged ({reason}): "
                             "re-download or re-export it") from exc
        if isinstance(obj, dict) and {"fingerprint", "model", "opt", "st"} <= set(obj):  # lway_rt.adapt's checkpoint
            raise ModelError(f"{path} is the checkpoint of an unfinished lwayrt adapt run (mid-run weights, without its "
                             "strength, EMA or detail cap): finish the run with the same adapt command and --resume, then "
                             "pass its adapted.safetensors")
        from lway_rt.archs.registry import unwrap_state_dict

        try:
            return unwrap_state_dict(obj), {}
        except ModelError as exc:
            raise ModelError(f"{path}: {exc}") from None
    if suffix == ".onnx":  # an export: upscale runs it, the other commands need the weights it came from
        raise ModelError(f"{path} is an exported ONNX file, which 'lwayrt upscale -m' and 'lwayrt serve-bench -m' run: "
                         "here pass the weights it was exported from (.safetensors or .pth)")
    if path.name == "groups.json":  # (58C-7: the grouping of a per-group adaptation, given for its folder)
        raise ModelError(f"{path} is the grouping of a per-group adaptation, not a model: 'lwayrt upscale -m' and "
                         f"lway_rt.api.Upscaler take its folder ({path.parent}); elsewhere pass one group's model, "
                         f"e.g. {path.parent / 'group-1' / 'adapted.safetensors'}")  # (58H-6)
    raise ModelError(f"{path}: unknown weight format {suffix!r}; use .pth or .safetensors (upscale and serve-bench "
                     "also run an exported .onnx)")
