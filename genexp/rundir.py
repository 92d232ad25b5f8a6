"""One owner per run dir: a process claims the dir before it writes anything there, and a second one is
refused in one line.

The claim is ``<run dir>/.genexp.lock``, flock'ed for as long as the job runs, with the holder's pid,
host and start time inside for the message a second process gets. The kernel drops a flock when its
process dies, however it dies, so a crashed run never leaves the dir locked. Where the file system has
no flock, the file's existence is the claim (O_EXCL) and a file whose process is gone is taken over.

Hydra would write ``.hydra/`` into the run dir before the job starts, i.e. before any claim (and before
a resume is checked): genexp.cli turns that off and the job writes the same three files here, atomically,
once it owns the dir (``train`` only once a resume has been checked, so a failed resume changes nothing).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import time
from pathlib import Path

from genexp.errors import UserError
from genexp.files import atomic_write_text

LOCK_NAME = ".genexp.lock"
# genexp.cli appends this to every Hydra command line; the job writes .hydra/ itself (see above).
NO_HYDRA_SUBDIR = "hydra.output_subdir=null"
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class RunDirInUse(UserError):
    """Another live process owns the run dir."""


class Claim:
    """A held run dir: released (the lock file removed) when the job ends."""

    def __init__(self, run_dir: Path, fd: int | None, flocked: bool):
        self.run_dir, self.path, self.fd, self.flocked = run_dir, run_dir / LOCK_NAME, fd, flocked
        self.pending: dict[str, str] = {}  # .hydra/ files to write once the job may change the dir

    def write_hydra_files(self) -> None:
        """.hydra/config.yaml, hydra.yaml, overrides.yaml, as Hydra would have written them."""
        files, self.pending = self.pending, {}
        for rel, text in files.items():
            try:
                atomic_write_text(self.run_dir / rel, text)
            except OSError as exc:
                raise UserError(f"cannot write {self.run_dir / rel} ({exc.strerror or exc}): free space in or "
                                "fix the permissions of the run dir; the files there are as they were") from None

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            # Removed while still locked: a process that opened it meanwhile finds on locking that its
            # file is no longer the one at the path, and starts over (see _flock).
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


_current: Claim | None = None


def current() -> Claim | None:
    return _current


def write_hydra_files() -> None:
    """The job is about to change its run dir (a resume has been checked): write .hydra/ now."""
    if _current is not None:
        _current.write_hydra_files()


@contextlib.contextmanager
def owned(run_dir: Path, task_cfg=None, enabled: bool = True):
    """Hold ``run_dir`` for the body. ``task_cfg``: the job's config, whose .hydra/ files are kept
    ready (as they are now: the job may change its config object later) for write_hydra_files."""
    global _current
    if not enabled:  # a data-parallel rank other than 0: rank 0 owns the dir
        yield None
        return
    held = claim(Path(run_dir))
    previous, _current = _current, held
    try:
        held.pending = hydra_files(task_cfg) if task_cfg is not None else {}
        yield held
    finally:
        _current = previous
        held.release()
        try:
            run_dir.rmdir()  # only if empty: a job refused before it wrote anything leaves no trace
        except OSError:
            pass


def claim(run_dir: Path) -> Claim:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    for _ in range(20):  # each retry means the holder released the dir right then
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise UserError(f"cannot create {path} ({exc.strerror or exc}): give a writable hydra.run.dir") from None
        try:
            held = _flock(fd, path)
        except OSError as exc:
            os.close(fd)
            if exc.errno in _NO_FLOCK:
                return _exclusive(run_dir, path)
            raise
        if held:
            _write_holder(fd)
            return Claim(run_dir, fd, True)
    raise RunDirInUse(f"run dir {run_dir} is being claimed and released over and over by other processes: "
                      "give each job its own hydra.run.dir")


def _flock(fd: int, path: Path) -> bool:
    """True: locked, and ``fd`` is the file at ``path``. False: the file was replaced, try again.
    RunDirInUse: another process holds it."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        for _ in range(40):  # locked but not yet signed: the holder is between flock and _write_holder
            if holder.get("pid"):
                break
            time.sleep(0.05)
            holder = _read_holder(fd)
        os.close(fd)
        raise in_use(path.parent, holder) from None
    try:
        same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
    return same


def _exclusive(run_dir: Path, path: Path) -> Claim:
    """No flock here: creating the file is the claim; a file left by a process that is gone is stale."""
    for _ in range(3):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            holder = _read_holder_at(path)
            if holder.get("host") == socket.gethostname() and not _alive(holder.get("pid")):
                path.unlink(missing_ok=True)  # its process has ended without releasing it
                continue
            raise in_use(run_dir, holder, stale_hint=True) from None
        _write_holder(fd)
        return Claim(run_dir, fd, False)
    raise RunDirInUse(f"run dir {run_dir}: could not claim {path}: give each job its own hydra.run.dir")


def in_use(run_dir: Path, holder: dict, stale_hint: bool = False) -> RunDirInUse:
    since = holder.get("since")
    when = f" (since {since})" if since else ""
    who = (f"pid {holder['pid']} on host {holder.get('host', '?')}{when}" if holder.get("pid")
           else "another process (starting up)")
    hint = f"; if that process is gone, delete {run_dir / LOCK_NAME}" if stale_hint else ""
    return RunDirInUse(f"run dir {run_dir} is in use by {who}: wait for it to end, or give this job another "
                       f"hydra.run.dir{hint}")


def _write_holder(fd: int) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    data = (json.dumps(info) + "\n").encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError:
        pass  # a full disk: the lock holds all the same; a refused process just cannot say whose it is


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _read_holder_at(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def hydra_files(task_cfg) -> dict[str, str]:
    """What Hydra writes into <run dir>/<hydra.output_subdir>/ (none when the user set it to null)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return {}
    # {"hydra": ...}, what Hydra saves; a plain copy, as Hydra's own is read-only. Read unresolved: an
    # override may hold an interpolation of the job's config (model.num_classes=${data.num_classes}),
    # which has nothing to resolve against here.
    plain = OmegaConf.to_container(HydraConfig.instance().cfg, resolve=False)
    given = list(plain["hydra"]["overrides"]["hydra"])
    places = [i for i, o in enumerate(given) if o.startswith("hydra.output_subdir=")]
    if not places or given[places[-1]] != NO_HYDRA_SUBDIR:
        return {}  # not started by genexp.cli (a test, an API call): Hydra wrote .hydra/ itself
    del given[places[-1]]  # genexp.cli's own, always the last; before it, the user's choice if any
    subdir = given[places[-2]].split("=", 1)[1].strip("'\"") if len(places) > 1 else ".hydra"
    if subdir in ("null", "None", ""):
        return {}
    plain["hydra"]["output_subdir"] = subdir
    plain["hydra"]["overrides"]["hydra"] = given
    return {f"{subdir}/config.yaml": OmegaConf.to_yaml(task_cfg),
            f"{subdir}/hydra.yaml": OmegaConf.to_yaml(OmegaConf.create(plain)),
            f"{subdir}/overrides.yaml": OmegaConf.to_yaml(OmegaConf.create(list(plain["hydra"]["overrides"]["task"])))}
