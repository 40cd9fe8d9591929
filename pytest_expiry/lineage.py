"""Where processes come from: the session's tag, and the order pids are handed out in.

**The tag.** ``PYTEST_EXPIRY_SESSION`` marks every process the session starts.

The variable's value is a comma-separated list of session tokens, outermost session first (a
pytest run inside a test of another adds its own). Every process a test starts inherits it,
whatever becomes of its parent: a daemon that escaped by a double fork or ``setsid`` is
reparented to init, but it still carries the tag, so it can be found without adopting it
(no child subreaper: its ``getppid()`` stays what it would be without the plugin).

What can be seen from outside is the environment a process was *exec'd* with
(``/proc/<pid>/environ``). A process that was forked but never exec'd shows the block its
image started with, which predates :func:`join`; such a fork of this process is recognised
instead by its image: the same argument and environment addresses as ours (address-space
randomisation makes them unique to one exec). Where randomisation is off, that recognition is
off too. A process started with an environment of its own (``env={...}``) is not tagged.

**The order.** The kernel hands out pids in increasing order (wrapping around at
``pid_max``), threads included, so the processes created between two moments are among the
pids allocated in between: :class:`~pytest_expiry.lastpid.LastPid` reads the last one
allocated, :func:`window` lists the pids after one mark up to another, :func:`live_parent`
says which are processes.

Linux only (``/proc``); elsewhere :func:`carries` is always False.
"""

from __future__ import annotations

import os
import time

__all__ = [
    "VARIABLE",
    "boot_ticks",
    "carries",
    "is_fork_of_this_process",
    "join",
    "leave",
    "listed",
    "live_parent",
    "new_token",
    "position",
    "read_proc",
    "started_after",
    "tokens",
    "window",
]

VARIABLE = "PYTEST_EXPIRY_SESSION"
_ADDR_NO_RANDOMIZE = 0x0040000
_EXEC_RETRIES = 25  # x 2 ms: how long an exec may hide a process's environment
_PF_KTHREAD = 0x00200000  # in the flags of /proc/PID/stat
_PROBE_LIMIT = 4096  # above this many new pids, list /proc instead of probing each
_WRAP = 1 << 22  # PID_MAX_LIMIT: positions after a wrap-around sort after those before
_previous: dict[str, str | None] = {}  # token -> the variable's value before it joined
_image: dict[int, tuple[bytes, ...] | None] = {}  # our pid -> our image's addresses


def new_token() -> str:
    """A token unique to one session: this pid and 48 random bits."""
    return f"{os.getpid()}-{os.urandom(6).hex()}"  # secrets.token_hex's way, without its imports


def join(token: str) -> None:
    """Append ``token`` to the variable in ``os.environ`` (creating it), so that every
    process started from now on carries it. Joining twice is joining once."""
    if token in _previous:
        return
    previous = os.environ.get(VARIABLE)
    _previous[token] = previous
    os.environ[VARIABLE] = f"{previous},{token}" if previous else token


def leave(token: str) -> None:
    """Put the variable back exactly as it was before ``join(token)``: its previous value,
    or no variable at all. A token that did not join changes nothing."""
    if token not in _previous:
        return
    previous = _previous.pop(token)
    if previous is None:
        os.environ.pop(VARIABLE, None)
    else:
        os.environ[VARIABLE] = previous


def read_proc(path: str) -> bytes | None:
    """The whole of a small file (of ``/proc``), or None if it cannot be read. The descriptor
    is opened and closed here; none is kept."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def tokens(pid: int) -> list[str] | None:
    """The session tokens in the environment ``pid`` was exec'd with (empty if it has
    none), or None when that cannot be read (gone, another user's, not Linux). A process of
    ours in the middle of an ``exec`` hides its environment for a moment (it reads as empty,
    or cannot be opened): it is read again, for up to 50 ms while the process lives."""
    environ = read_proc(f"/proc/{pid}/environ")
    for _ in range(_EXEC_RETRIES):
        if environ or not _ours_and_alive(pid):
            break
        time.sleep(0.002)
        environ = read_proc(f"/proc/{pid}/environ")
    if environ is None:
        return None
    prefix = VARIABLE.encode() + b"="
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace").split(",")
    return []


def _ours_and_alive(pid: int) -> bool:
    """A live process of this user's, not a kernel thread (root's too, and its environment
    always reads as empty: new ones appear in a busy machine's pid window)."""
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.getuid():
            return False
    except OSError:
        return False
    fields = (read_proc(f"/proc/{pid}/stat") or b")").rpartition(b")")[2].split()
    if len(fields) < 7 or fields[0] in (b"Z", b"X"):
        return False
    return not int(fields[6]) & _PF_KTHREAD


def _addresses(pid: int | str) -> tuple[bytes, ...] | None:
    """Where the image of ``pid`` keeps its arguments and environment (``stat`` fields 48 to
    51), or None if unknown."""
    stat = read_proc(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return tuple(fields[45:49]) if len(fields) >= 49 else None


def _randomised() -> bool:
    setting = read_proc("/proc/sys/kernel/randomize_va_space")
    personality = read_proc("/proc/self/personality")
    if not setting or not personality or setting.strip() == b"0":
        return False
    try:
        return not int(personality, 16) & _ADDR_NO_RANDOMIZE
    except ValueError:
        return False


def _own_image() -> tuple[bytes, ...] | None:
    pid = os.getpid()
    if pid not in _image:
        _image[pid] = _addresses("self") if _randomised() else None
    return _image[pid]


def is_fork_of_this_process(pid: int) -> bool:
    """Whether ``pid`` runs this process's image without having exec'd since: a fork of it
    (or of a fork of it). Always False where address-space randomisation is off."""
    own = _own_image()
    return own is not None and pid != os.getpid() and _addresses(pid) == own


def carries(pid: int, token: str) -> bool:
    """Whether process ``pid`` inherited this session's tag ``token``: its environment lists
    it, or it is a fork of this process that never exec'd (its ``os.environ`` has the tag,
    but ``/proc`` cannot show it). Meaningful for a process started after ``join(token)``;
    False for a process that is gone or cannot be read."""
    found = tokens(pid)
    if found is None:
        return False
    return token in found or is_fork_of_this_process(pid)


def position(pid: int, start: int) -> int:
    """How far after the mark ``start`` pid ``pid`` was allocated (0 for ``start`` itself;
    one wrap-around allowed)."""
    return pid - start if pid >= start else pid - start + _WRAP


def window(start: int, end: int) -> list[int]:
    """The pids allocated after ``start`` up to ``end`` that may be processes."""
    if end == start:
        return []
    if start < end <= start + _PROBE_LIMIT:
        return list(range(start + 1, end + 1))
    pids = listed()
    if start < end:
        return [pid for pid in pids if start < pid <= end]
    return [pid for pid in pids if pid > start or pid <= end]


def listed() -> list[int]:
    """Every process's pid (``/proc`` lists no threads)."""
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def live_parent(pid: int) -> int | None:
    """The parent of ``pid`` if it is a live process: not gone, not a zombie, not a thread
    (whose id is a pid too: its ``Tgid`` is another)."""
    status = read_proc(f"/proc/{pid}/status")
    if not status:
        return None
    fields: dict[bytes, bytes] = {}
    for line in status.split(b"\n", 12)[:12]:
        key, _, value = line.partition(b":")
        fields[key] = value.strip()
    if fields.get(b"Tgid") != str(pid).encode() or fields.get(b"State", b"Z")[:1] in b"ZX":
        return None
    try:
        return int(fields[b"PPid"])
    except (KeyError, ValueError):
        return None


def started_after(pid: int, ticks: int) -> int | None:
    """The parent of ``pid`` if it is a live process started after ``ticks`` (clock ticks
    since boot, as in ``/proc/<pid>/stat``)."""
    stat = read_proc(f"/proc/{pid}/stat")
    fields = stat[stat.rfind(b")") + 2 :].split() if stat else []
    if len(fields) < 20 or fields[0] in (b"Z", b"X") or int(fields[19]) <= ticks:
        return None
    return int(fields[1])


def boot_ticks() -> int:
    """Now, in the unit and from the origin of a process's start time in ``/proc``."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))
