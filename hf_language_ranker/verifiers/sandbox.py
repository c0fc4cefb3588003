"""The process sandbox: run untrusted Python programs in a contained subprocess.

Containment on Linux, when the caller is root: the program runs as a fresh unprivileged uid (never
shared with another process, so it cannot signal the caller, touch root-owned files, or outlive the
run), in its own network namespace, session and process group, with CPU, memory, process-count and
file-size limits, an empty working directory, a minimal environment and bounded output capture.
Without root the uid switch is impossible: limits, the process group, the minimal environment and
(where user namespaces are allowed) the network namespace still apply.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import random
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

try:  # POSIX only: run_in_sandbox refuses to run elsewhere, but importing must still work
    import grp
    import pwd
    import resource
except ImportError:  # pragma: no cover - Windows
    grp = pwd = resource = None  # type: ignore[assignment]

__all__ = ["SandboxResult", "run_in_sandbox", "sandbox_processes"]


@dataclass
class SandboxResult:
    """Outcome of one sandboxed run. ``passed`` is True iff the program exited 0 within its limits."""

    passed: bool
    returncode: int | None
    timed_out: bool
    stdout: str
    stderr: str
    reason: str
    sandbox_uid: int | None = None  # the throwaway uid the program ran as (None: not switched)

    @classmethod
    def not_started(cls, reason: str, sandbox_uid: int | None = None) -> SandboxResult:
        """The result of a run the sandbox could not set up: nothing ran, ``reason`` says why."""
        return cls(False, None, False, "", "", reason, sandbox_uid)


# ----------------------------------------------------------------------------------------------
# Sandbox internals
# ----------------------------------------------------------------------------------------------

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_ENV_PATH = "/usr/local/bin:/usr/bin:/bin"
_MAX_OPEN_FILES = 256
# Throwaway ids are drawn from this range (outside any normal user or subuid allocation).
_ID_RANGE = (1_500_000_000, 2_000_000_000)
_WORLD_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
_SYSTEM_PYTHONS = ("/usr/local/bin/python3", "/usr/bin/python3", "/bin/python3")
_usable_interpreters: dict[str, bool] = {}
_warned_interpreters: set[str] = set()
logger = logging.getLogger(__name__)

# Runs first inside the sandbox: blocks IPv4/IPv6 sockets at the Python level (a second layer on
# top of the network namespace), then executes the program file as __main__ with exact line numbers.
_BOOTSTRAP = """\
def _hflr_run():
    import socket, sys
    def _guard(method):
        def guarded(self, *args, **kwargs):
            if self.family in (socket.AF_INET, socket.AF_INET6):
                raise PermissionError(13, "network access is disabled in the sandbox")
            return method(self, *args, **kwargs)
        return guarded
    for name in ("connect", "connect_ex", "bind", "sendto", "sendmsg"):
        setattr(socket.socket, name, _guard(getattr(socket.socket, name)))
    import __main__
    path = sys.argv[1]
    sys.argv = sys.argv[1:]
    with open(path, encoding="utf-8") as f:
        code = compile(f.read(), path, "exec")
    del __main__.__dict__["_hflr_run"]
    __main__.__dict__["__file__"] = path
    exec(code, __main__.__dict__)
_hflr_run()
"""


def _load_unshare() -> Callable[[int], int] | None:
    """libc ``unshare`` (resolved in the parent: the child must not dlopen after fork)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.unshare
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_UNSHARE = _load_unshare()


def _mapped_ranges(path: str) -> list[tuple[int, int]]:
    """Id ranges usable in this user namespace, as (first, last)."""
    try:
        with open(path) as f:
            rows = [line.split() for line in f]
        return [(int(r[0]), int(r[0]) + int(r[2]) - 1) for r in rows if len(r) == 3]
    except (OSError, ValueError):
        return [(0, 4294967294)]


def _ids_in_use() -> set[int]:
    """Uids of live processes (real, effective, saved and filesystem uids)."""
    used: set[int] = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            used.update(_process_uids(int(pid)) or ())
    return used


def _process_uids(pid: int) -> tuple[int, ...] | None:
    """The uids of a live (non-zombie) process, or None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    uids: tuple[int, ...] = ()
    for line in text.splitlines():
        if line.startswith("State:") and line.split()[1] in ("Z", "X"):
            return None
        if line.startswith("Uid:"):
            uids = tuple(int(x) for x in line.split()[1:])
    return uids


def sandbox_processes(uid: int) -> list[int]:
    """Pids of live processes running as ``uid`` (used to check that nothing outlived a run)."""
    if not os.path.isdir("/proc"):
        return []
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and uid in (_process_uids(int(p)) or ())]


def _allocate_ids() -> tuple[int, int] | None:
    """A uid/gid pair used by no account and no process, so the sandbox shares nothing."""
    taken_uids = {p.pw_uid for p in pwd.getpwall()} | _ids_in_use()
    taken_gids = {g.gr_gid for g in grp.getgrall()}
    uid_ranges, gid_ranges = _mapped_ranges("/proc/self/uid_map"), _mapped_ranges("/proc/self/gid_map")

    def candidates(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        preferred = [(max(a, _ID_RANGE[0]), min(b, _ID_RANGE[1])) for a, b in ranges]
        preferred = [(a, b) for a, b in preferred if a <= b]
        if preferred:
            return preferred
        fallback = [(max(a, 10_000), min(b, 4294967294)) for a, b in ranges]
        return [(a, b) for a, b in fallback if a <= b]

    uid_pool, gid_pool = candidates(uid_ranges), candidates(gid_ranges)
    rng = random.SystemRandom()
    for _ in range(200):
        if not uid_pool or not gid_pool:
            break
        a, b = rng.choice(uid_pool)
        uid = rng.randint(a, b)
        if uid in taken_uids or uid in (65534, 65535):
            continue
        in_gid_map = any(ga <= uid <= gb for ga, gb in gid_pool)
        gid = uid if in_gid_map and uid not in taken_gids else rng.randint(*rng.choice(gid_pool))
        if gid in taken_gids:
            continue
        return uid, gid
    return None  # never fall back to a shared uid such as nobody: we kill everything the uid runs


def _tmp_root() -> str:
    """A temp directory every user can traverse (the sandbox uid must reach its working dir)."""
    for candidate in (tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"):
        path = os.path.realpath(candidate)
        if not os.path.isdir(path):
            continue
        parts, ok = path, True
        while True:
            try:
                if not os.stat(parts).st_mode & stat.S_IXOTH:
                    ok = False
                    break
            except OSError:
                ok = False
                break
            if parts == os.path.dirname(parts):
                break
            parts = os.path.dirname(parts)
        if ok:
            return path
    raise RuntimeError("No world-traversable temp directory found: set TMPDIR to a directory such as /tmp.")


def _run_as(python: str, uid: int, gid: int, code: str, timeout: float) -> int:
    """Exit status of a trusted one-line ``code`` run by ``python`` as ``uid``/``gid`` (no I/O, minimal env)."""
    return subprocess.run(
        [python, "-I", "-S", "-c", code],
        user=uid,
        group=gid,
        extra_groups=[],
        env={"PATH": _ENV_PATH, "LANG": "C.UTF-8"},
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    ).returncode


def _interpreter_usable(python: str, uid: int, gid: int) -> bool:
    """Whether ``python`` can start as ``uid`` (e.g. a Python under /root (mode 0700) cannot)."""
    if python not in _usable_interpreters:
        try:
            _usable_interpreters[python] = _run_as(python, uid, gid, "pass", timeout=60) == 0
        except (OSError, subprocess.SubprocessError):
            _usable_interpreters[python] = False
    return _usable_interpreters[python]


def _pick_interpreter(python: str | None, uid: int | None, gid: int | None) -> str | None:
    if python is not None:
        return python
    if uid is None or gid is None:
        return sys.executable
    for candidate in (sys.executable, *_SYSTEM_PYTHONS):
        if candidate and os.path.exists(candidate) and _interpreter_usable(candidate, uid, gid):
            if candidate != sys.executable and candidate not in _warned_interpreters:
                _warned_interpreters.add(candidate)
                logger.warning(
                    "Sandboxed code runs with %s: the unprivileged sandbox user cannot execute %s (is it "
                    "under a 0700 directory such as /root?). Pass python=... to choose the interpreter.",
                    candidate,
                    sys.executable,
                )
            return candidate
    return None


def _limits(cpu_seconds: int, memory_mb: int, max_processes: int, max_file_mb: int) -> list[tuple[int, int, int]]:
    """(resource, soft, hard) triples, never above the caller's own hard limits."""
    wanted: list[tuple[int, int, int]] = [
        (resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1),
        (resource.RLIMIT_AS, memory_mb * 2**20, memory_mb * 2**20),
        (resource.RLIMIT_FSIZE, max_file_mb * 2**20, max_file_mb * 2**20),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_NOFILE, _MAX_OPEN_FILES, _MAX_OPEN_FILES),
    ]
    if hasattr(resource, "RLIMIT_NPROC"):
        wanted.append((resource.RLIMIT_NPROC, max_processes, max_processes))
    capped = []
    for res, soft, hard in wanted:
        current_hard = resource.getrlimit(res)[1]
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
            soft = min(soft, hard)
        capped.append((res, soft, hard))
    return capped


def _make_preexec(limits: list[tuple[int, int, int]], uid: int | None, gid: int | None) -> Callable[[], None]:
    """Runs in the forked child before exec: namespaces, limits, then the privilege drop."""
    unshare = _UNSHARE
    real_uid, real_gid = os.getuid(), os.getgid()

    def preexec() -> None:
        if unshare is not None:
            if uid is not None:  # root: a private network namespace with only a downed loopback
                unshare(_CLONE_NEWNET)
            elif unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0:  # unprivileged: needs a user namespace
                for path, text in (
                    ("/proc/self/setgroups", "deny"),
                    ("/proc/self/uid_map", f"{real_uid} {real_uid} 1"),
                    ("/proc/self/gid_map", f"{real_gid} {real_gid} 1"),
                ):
                    with contextlib.suppress(OSError), open(path, "w") as f:
                        f.write(text)
        for res, soft, hard in limits:
            resource.setrlimit(res, (soft, hard))
        if uid is not None and gid is not None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)

    return preexec


def _kill_uid(uid: int, gid: int, python: str) -> None:
    """SIGKILL every process of the throwaway uid: kill(-1) from that uid is atomic w.r.t. fork."""
    for _ in range(5):
        if not sandbox_processes(uid):
            return
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            _run_as(python, uid, gid, "import os, signal; os.kill(-1, signal.SIGKILL)", timeout=30)
        for pid in sandbox_processes(uid):  # belt and braces, e.g. if the killer could not start
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def _remove_files_of(uid: int, dirs: tuple[str, ...]) -> None:
    """Delete what the throwaway uid left in shared world-writable directories (e.g. /tmp)."""
    for directory in dict.fromkeys(dirs):
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    _rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            except OSError:
                continue


def _kill_all(proc: subprocess.Popen[bytes], uid: int | None, gid: int | None, python: str) -> None:
    if proc.returncode is None:  # not reaped yet, so its pid (= process group id) cannot be reused
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)  # the whole process group (start_new_session)
        with contextlib.suppress(OSError):
            proc.kill()
    if uid is not None and gid is not None:
        _kill_uid(uid, gid, python)  # anything that left the group with setsid()


def _has_exited(proc: subprocess.Popen[bytes]) -> bool:
    """Exit check that leaves the zombie unreaped, so its pid (and process group id) stay reserved
    until the group has been killed."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except (AttributeError, ChildProcessError, OSError):
        return proc.poll() is not None


def _read_bounded(
    proc: subprocess.Popen[bytes],
    timeout: float,
    limit: int,
    on_exit: Callable[[], None],
) -> tuple[bytes, bytes, bool, int]:
    """Drain stdout/stderr, keeping at most ``limit`` bytes of each, until EOF or ``timeout``.

    Returns (stdout, stderr, timed_out, total_bytes_seen).
    """
    assert proc.stdout is not None and proc.stderr is not None
    buffers = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    seen = 0
    selector = selectors.DefaultSelector()
    for fd in buffers:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    exited_at: float | None = None
    timed_out = False
    try:
        while True:
            now = time.monotonic()
            if exited_at is None and _has_exited(proc):
                exited_at = now
                on_exit()  # kill leftovers that may still hold the pipes open
            if exited_at is not None and (not selector.get_map() or now - exited_at > 2.0):
                break
            if exited_at is None and now >= deadline:
                timed_out = True
                break
            wait = 0.05 if exited_at is not None else max(min(0.05, deadline - now), 0.0)
            if not selector.get_map():  # output closed but the program still runs: poll its exit
                time.sleep(min(wait, 0.01))
                continue
            for key, _ in selector.select(wait):
                try:
                    chunk = os.read(key.fd, 1 << 16)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                seen += len(chunk)
                buf = buffers[key.fd]
                room = limit - len(buf)
                if room > 0:
                    buf += chunk[:room]
    finally:
        selector.close()
    return bytes(buffers[proc.stdout.fileno()]), bytes(buffers[proc.stderr.fileno()]), timed_out, seen


def _describe(returncode: int | None, timed_out: bool, timeout: float, stderr: str) -> str:
    if timed_out:
        return f"timed out after {timeout:g}s of wall-clock time"
    if returncode == 0:
        return "exited with code 0"
    if returncode is not None and returncode < 0:
        sig = -returncode
        names = {
            signal.SIGXCPU: "CPU time limit exceeded (SIGXCPU)",
            signal.SIGXFSZ: "file size limit exceeded (SIGXFSZ)",
            signal.SIGKILL: "killed by SIGKILL (CPU time limit or killed)",
        }
        try:
            default = f"killed by signal {signal.Signals(sig).name}"
        except ValueError:
            default = f"killed by signal {sig}"
        return names.get(sig, default)
    last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "")
    return f"exited with code {returncode}" + (f": {last.strip()[:200]}" if last else "")


def _rmtree(path: str) -> None:
    def retry(func: Callable[..., Any], target: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), 0o700)
            func(target)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)


def run_in_sandbox(
    program: str,
    *,
    timeout: float = 10.0,
    cpu_seconds: int = 10,
    memory_mb: int = 1024,
    max_processes: int = 64,
    max_file_mb: int = 16,
    max_output_bytes: int = 65536,
    python: str | None = None,
) -> SandboxResult:
    """Run untrusted Python ``program`` with ``python -I`` in a contained subprocess.

    Limits: ``timeout`` wall-clock seconds, ``cpu_seconds`` of CPU, ``memory_mb`` of address
    space, ``max_processes`` processes, ``max_file_mb`` per written file, and ``max_output_bytes``
    kept of each of stdout and stderr (the rest is read and dropped). ``python`` overrides the
    interpreter (default: this one, or a system python3 if the sandbox uid cannot run this one).
    Never raises for anything the program does; setup problems are reported in ``reason``.
    """
    if os.name != "posix":
        raise RuntimeError("run_in_sandbox needs a POSIX system (Linux); it cannot contain code on Windows.")
    uid: int | None = None
    gid: int | None = None
    if hasattr(os, "setuid") and os.geteuid() == 0:
        ids = _allocate_ids()
        if ids is None:
            return SandboxResult.not_started(
                "no unused uid/gid is available for the sandbox (see /proc/self/uid_map); run with a wider "
                "uid range or as a non-root user."
            )
        uid, gid = ids
    interpreter = _pick_interpreter(python, uid, gid)
    if interpreter is None:
        return SandboxResult.not_started(
            f"no Python interpreter can run as the unprivileged sandbox user: {sys.executable} is not "
            "executable by other users (e.g. it lives under /root, mode 0700). Install a system python3, "
            "make the interpreter world-readable, or pass python='/path/to/python'.",
            uid,
        )
    base = tempfile.mkdtemp(prefix="hflr-sandbox-", dir=_tmp_root())
    try:
        os.chmod(base, 0o711)  # root-owned: the sandbox may pass through, not list or write
        program_path = os.path.join(base, "program.py")
        with open(program_path, "w", encoding="utf-8", errors="replace") as f:
            f.write(program)
        os.chmod(program_path, 0o644)
        workdir = os.path.join(base, "work")
        os.mkdir(workdir, 0o700)
        if uid is not None and gid is not None:
            os.chown(workdir, uid, gid)
        env = {"PATH": _ENV_PATH, "LANG": "C.UTF-8", "HOME": workdir}
        preexec = _make_preexec(_limits(cpu_seconds, memory_mb, max_processes, max_file_mb), uid, gid)
        try:
            proc = subprocess.Popen(
                [interpreter, "-I", "-c", _BOOTSTRAP, program_path],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                preexec_fn=preexec,  # limits, namespaces and the privilege drop
                close_fds=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return SandboxResult.not_started(f"sandbox could not start {interpreter}: {exc}", uid)
        try:
            out, err, timed_out, seen = _read_bounded(
                proc, timeout, max_output_bytes, lambda: _kill_all(proc, uid, gid, interpreter)
            )
        finally:
            _kill_all(proc, uid, gid, interpreter)
            for stream in (proc.stdout, proc.stderr):
                with contextlib.suppress(OSError):
                    stream.close()  # type: ignore[union-attr]
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        returncode = proc.returncode
        stdout = out.decode("utf-8", errors="replace")
        stderr = err.decode("utf-8", errors="replace")
        reason = _describe(returncode, timed_out, timeout, stderr)
        if seen > len(out) + len(err):
            reason += f" (output truncated to {max_output_bytes} bytes per stream)"
        passed = returncode == 0 and not timed_out
        return SandboxResult(passed, returncode, timed_out, stdout, stderr, reason, uid)
    finally:
        _rmtree(base)
        if uid is not None:
            _remove_files_of(uid, (os.path.dirname(base), *_WORLD_WRITABLE_DIRS))
