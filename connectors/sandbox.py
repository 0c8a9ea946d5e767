"""The command line and limits that contain a local MCP server: bubblewrap, by default.

A sandboxed server gets new user, PID, IPC, UTS and cgroup namespaces, and a
network namespace of its own (so no network) unless its config allows the
network. It sees /usr (and the /lib, /bin links into it), its runtime (the
installation its command resolves into), the paths its config names, all
read-only; a private /tmp, /proc and /dev; and one writable workspace, mounted
at ``/workspace``, kept per upstream and tenant. Its environment is what its
config passes and nothing of the hub's (``PATH``, ``HOME=/workspace`` and
``LANG`` aside). bubblewrap sets no-new-privileges; ``--die-with-parent`` ties
it to the hub, and the PID namespace takes every process inside down with it.
Resource limits (data size, CPU time, open files, processes) are set
before bubblewrap starts and hold for everything inside. A hub that runs as
root starts each sandbox as an unprivileged user of its own (root's process
count is not limited by the kernel), one per upstream and tenant.

An unsandboxed server (``"sandbox": false``) gets the same environment rule
with the hub's ``PATH`` and ``HOME``, and the parent-death signal; only its
process group can be killed for it.
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import signal
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from connectors.spec import SandboxSpec, StdioSpec

__all__ = ["DEFAULT", "DISCOVERY", "Launch", "SandboxError", "launch", "loosened", "redactor", "workspace_for"]

DEFAULT: Final = SandboxSpec()
DISCOVERY: Final = "\0discovery"
"""The key of the process the hub discovers an upstream's catalog from (no tenant's)."""
WORKSPACE: Final = "/workspace"
_SYSTEM_PATH: Final = "/usr/local/bin:/usr/bin:/bin"
_UID_BASE: Final = 200_000
_UID_SPAN: Final = 50_000
_PR_SET_PDEATHSIG: Final = 1
_ETC: Final = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives", "ssl", "ca-certificates")
_NETWORK_ETC: Final = ("resolv.conf", "hosts", "nsswitch.conf", "gai.conf", "host.conf")


class SandboxError(Exception):
    """The sandbox cannot be set up; the message says why."""


@dataclass(frozen=True)
class Launch:
    """How to start one process: its argv, environment, directory, and what runs in the child before exec."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    preexec: Callable[[], None]


def workspace_for(stdio: StdioSpec, upstream: str, key: str) -> Path:
    """The workspace of one upstream for one tenant (``key``: "" without tenants, or :data:`DISCOVERY`)."""
    folder = "_discovery" if key == DISCOVERY else _safe(key) if key else "_default"
    return Path(stdio.workspaces).absolute() / folder / _safe(upstream)


def _safe(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".")
    return cleaned or "_"


def loosened(stdio: StdioSpec) -> list[str]:
    """What an upstream's config loosens against the default sandbox, in words (empty when nothing)."""
    sandbox = stdio.sandbox
    if sandbox is None:
        return ["unsandboxed"]
    out = []
    if sandbox.network:
        out.append("network")
    out += [f"reads {path}" for path in sandbox.paths]
    for label, value, default in (
        ("memoryMb", sandbox.memory_mb, DEFAULT.memory_mb),
        ("cpuSeconds", sandbox.cpu_seconds, DEFAULT.cpu_seconds),
        ("openFiles", sandbox.open_files, DEFAULT.open_files),
        ("processes", sandbox.processes, DEFAULT.processes),
    ):
        if value > default:
            out.append(f"{label} {value}")
    return out


def _resolve(command: str, path: str) -> Path:
    found = shutil.which(command, path=path) if "/" not in command else command
    if found is None or not os.access(found, os.X_OK):
        raise SandboxError(f"command {command!r} not found on PATH {path}")
    return Path(found).absolute()


def _runtime_roots(executable: Path) -> list[Path]:
    """The installations a command needs: the directory above its bin/, as named and as resolved."""
    roots = []
    for candidate in (executable, executable.resolve()):
        root = candidate.parent.parent if candidate.parent.name == "bin" else candidate.parent
        if not str(root).startswith("/usr") and root != Path("/") and root not in roots:
            roots.append(root)
    return roots


def launch(stdio: StdioSpec, upstream: str, key: str) -> Launch:
    """How to start ``stdio`` for one tenant.

    Raises: SandboxError: bubblewrap is missing, the command is not found, or the workspace cannot be made.
    """
    workspace = workspace_for(stdio, upstream, key)
    try:
        workspace.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SandboxError(f"cannot make the workspace {workspace}: {exc.strerror}") from exc
    sandbox = stdio.sandbox
    path = stdio.env.get("PATH", os.environ.get("PATH", _SYSTEM_PATH) if sandbox is None else _SYSTEM_PATH)
    executable = _resolve(stdio.command, path if sandbox is None else f"{path}:{os.environ.get('PATH', '')}")
    if sandbox is None:
        env = {"PATH": path, "HOME": os.environ.get("HOME", str(workspace)), **stdio.env}
        argv = [str(executable), *stdio.args]
        return Launch(argv, env, stdio.cwd or str(workspace), _unsandboxed)
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxError("bubblewrap (bwrap) is not installed; install Debian's bubblewrap, or set sandbox: false")
    inner_path = ":".join(dict.fromkeys([str(executable.parent), *path.split(":")]))
    env = {"PATH": inner_path, "HOME": WORKSPACE, "LANG": "C.UTF-8", **stdio.env}
    argv = [bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not sandbox.network:
        argv.append("--unshare-net")
    uid = None
    if os.geteuid() == 0:
        # As root: bubblewrap mounts as root, and the program runs as a user of its own with no
        # capabilities (setpriv), whose process count the kernel limits as it never does root's.
        uid = _UID_BASE + zlib.crc32(f"{upstream}\0{key}".encode()) % _UID_SPAN
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise SandboxError("setpriv (util-linux) is not installed; the hub runs as root and needs it")
        os.chown(workspace, uid, uid)
        command = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs"]
        command += ["--inh-caps=-all", "--bounding-set=-all", "--", str(executable), *stdio.args]
    else:
        argv.append("--unshare-user")
        command = [str(executable), *stdio.args]
    argv += ["--die-with-parent", "--new-session", "--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
    for link in ("bin", "sbin", "lib", "lib32", "lib64"):
        host = Path("/") / link
        if host.is_symlink():
            argv += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            argv += ["--ro-bind", str(host), str(host)]
    argv += ["--perms", "0755", "--dir", "/etc"]  # made by bubblewrap, it would be root's alone
    for name in _ETC + (_NETWORK_ETC if sandbox.network else ()):
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    # /tmp is memory: it is bounded by the memory limit too.
    tmp_size = str(sandbox.memory_mb * 1024 * 1024)
    argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "01777", "--size", tmp_size, "--tmpfs", "/tmp"]
    # After /tmp: a runtime or path under /tmp is bound on top of the private one.
    argv += _read_only([*_runtime_roots(executable), *(Path(p).absolute() for p in sandbox.paths)])
    argv += ["--bind", str(workspace), WORKSPACE]
    argv += ["--chdir", stdio.cwd or WORKSPACE, "--clearenv"]
    for name, value in env.items():
        argv += ["--setenv", name, value]
    return Launch([*argv, "--", *command], env, None, _limited(sandbox, own_user=uid is not None))


def _read_only(roots: list[Path]) -> list[str]:
    """Read-only binds of ``roots`` at their own paths (one inside another is bound once), their parent
    directories made first, open to all (bubblewrap would make them root's alone)."""
    chosen: list[Path] = []
    for root in sorted(set(roots), key=lambda p: len(p.parts)):
        if not any(root.is_relative_to(outer) for outer in chosen):
            chosen.append(root)
    out: list[str] = []
    made: set[Path] = {Path("/tmp"), Path("/proc"), Path("/dev")}  # mounted already
    for root in sorted(chosen):
        for parent in reversed(root.parents):
            if parent != Path("/") and parent not in made and not parent.is_relative_to("/usr"):
                made.add(parent)
                out += ["--perms", "0755", "--dir", str(parent)]
        out += ["--ro-bind", str(root), str(root)]
    return out


def _limited(sandbox: SandboxSpec, *, own_user: bool) -> Callable[[], None]:
    # The kernel counts processes per user: a sandbox that shares the hub's user gets its limit on top
    # of what that user runs already.
    processes = sandbox.processes if own_user else sandbox.processes + _processes_of(os.getuid())
    limits = (
        (resource.RLIMIT_DATA, sandbox.memory_mb * 1024 * 1024),
        (resource.RLIMIT_CPU, sandbox.cpu_seconds),
        (resource.RLIMIT_NOFILE, sandbox.open_files),
        (resource.RLIMIT_NPROC, processes),
        (resource.RLIMIT_CORE, 0),
    )

    def preexec() -> None:  # in the child, between fork and exec
        for which, value in limits:
            _, hard = resource.getrlimit(which)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(which, (value, value))
        _die_with_parent()

    return preexec


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                count += entry.stat().st_uid == uid
            except OSError:
                continue
    return count


def _unsandboxed() -> None:
    _die_with_parent()


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


_SECRET_NAMES: Final = ("TOKEN", "SECRET", "KEY", "PASS", "AUTH", "CRED", "COOKIE", "SESSION", "PRIVATE")


def redactor(env: Mapping[str, str]) -> Callable[[str], str]:
    """Replaces, in a line, the value (4 characters or more) of every config-given variable whose name
    says it is a secret (``*TOKEN*``, ``*KEY*``, ``*PASS*``...) with ``***``."""
    secret = [value for name, value in env.items() if any(word in name.upper() for word in _SECRET_NAMES)]
    values = sorted({value for value in secret if len(value) >= 4}, key=len, reverse=True)

    def redact(line: str) -> str:
        for value in values:
            line = line.replace(value, "***")
        return line

    return redact
