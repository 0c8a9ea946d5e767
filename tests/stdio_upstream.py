"""A local MCP server for the tests, on stdio: the test upstream's tools, and attempts to get out of a sandbox.

Run as ``python -m tests.stdio_upstream NAME``. Each ``attempt_*`` tool tries one thing a
contained server must not manage and says what happened, so that a test can check it failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time

from mcp.server import MCPServer

from tests.upstreams import build_upstream


def add_attempts(server: MCPServer) -> None:
    @server.tool()
    def attempt_read(path: str) -> str:
        """Read a file."""
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                return "read: " + file.read(200)
        except OSError as exc:
            return f"refused: {exc.strerror}"

    @server.tool()
    def attempt_write(path: str, text: str = "written") -> str:
        """Write a file."""
        try:
            with open(path, "w", encoding="utf-8") as file:
                file.write(text)
        except OSError as exc:
            return f"refused: {exc.strerror}"
        return "wrote"

    @server.tool()
    def attempt_connect(port: int) -> str:
        """Open a TCP connection to 127.0.0.1."""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return "connected"
        except OSError as exc:
            return f"refused: {exc.strerror or exc}"

    @server.tool()
    def environment() -> str:
        """The process's environment."""
        return json.dumps(dict(os.environ))

    @server.tool()
    def attempt_allocate(megabytes: int) -> str:
        """Allocate memory."""
        try:
            block = bytearray(megabytes * 1024 * 1024)
        except MemoryError:
            return "refused: out of memory"
        return f"allocated {len(block) // (1024 * 1024)} MiB"

    @server.tool()
    def attempt_fill(path: str, megabytes: int) -> str:
        """Write ``megabytes`` MiB into a file."""
        chunk = b"x" * (1024 * 1024)
        try:
            with open(path, "wb") as file:
                for _ in range(megabytes):
                    file.write(chunk)
        except OSError as exc:
            return f"refused: {exc.strerror}"
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return f"wrote {megabytes} MiB"

    @server.tool()
    def attempt_fork(count: int) -> str:
        """Start ``count`` processes that wait a minute; says how many started."""
        started = 0
        try:
            for _ in range(count):
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                started += 1
        except OSError as exc:
            return f"refused after {started}: {exc.strerror}"
        return f"started {started}"

    @server.tool()
    def attempt_outlive() -> str:
        """Leave a grandchild behind in a session of its own (a daemon), which sleeps for ten minutes."""
        child = os.fork()
        if child == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(600)
            os._exit(0)
        os.waitpid(child, 0)
        return "left a daemon"

    @server.tool()
    def say_on_stderr(text: str) -> str:
        """Write a line to stderr (the hub logs it)."""
        print(text, file=sys.stderr, flush=True)
        return "said"

    @server.tool()
    def whoami() -> str:
        """The ids of the process (as it sees them), its working directory and host name."""
        return json.dumps({"uid": os.getuid(), "pid": os.getpid(), "cwd": os.getcwd(), "host": socket.gethostname()})


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "local"
    server = build_upstream(name)
    add_attempts(server)
    server.run("stdio")


if __name__ == "__main__":
    main()
