"""What every service of the stack shares: folders, the shape's switches, process and polling helpers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
STACK_DIR = ROOT / "scripts" / "stack"
CACHE = ROOT / ".cache"
# A second, independent stack (e.g. for fault-injection tests) uses its own state folder and ports.
STATE = Path(os.environ.get("STACK_STATE_DIR", ROOT / ".stack")).resolve()
LOGS = STATE / "logs"
HOST = "127.0.0.1"
TLS_DIR = STATE / "tls"
# Servers that refuse root (initdb, postgres) or need no privilege (slapd) run as this user when we are root.
UNPRIVILEGED = ("nobody", "nogroup")


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


SECURE = env_flag("STACK_SECURE")


class StackError(Exception):
    """A stack step failed; the message says what and how to fix it."""


def log(message: str) -> None:
    print(f"[stack] {message}", file=sys.stderr, flush=True)


# Passwords of the stack, masked in every error this script prints (a failed command shows its args).
SECRETS: set[str] = set()


def redact(text: str) -> str:
    for secret in SECRETS:
        text = text.replace(secret, "***")
    return text


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a setup command; on failure raise with the tail of its output."""
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-20:]
        raise StackError(redact(f"command failed ({result.returncode}): {' '.join(cmd)}\n" + "\n".join(tail)))
    return result  # type: ignore[no-any-return]


def mvn_copy_dependencies(pom: Path, target: Path, what: str) -> Path:
    """Resolve a pom's runtime dependencies into `target` with Maven, once (a marker says it finished)."""
    marker = target / ".complete"
    if not marker.exists():
        log(f"resolving {what} and its dependencies with Maven")
        shutil.rmtree(target, ignore_errors=True)
        run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={target}",
                "-DincludeScope=runtime",
            ]
        )
        marker.touch()
    return target


def as_unprivileged(cmd: list[str]) -> list[str]:
    """As root, run `cmd` as an unprivileged user (setpriv, util-linux); otherwise as it is."""
    if os.geteuid() != 0:
        return cmd
    user, group = UNPRIVILEGED
    return ["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups", *cmd]


def unprivileged_home(path: Path) -> Path:
    """A folder the unprivileged user owns (when we are root)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(path, *UNPRIVILEGED)
    return path


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, proc: Service | None = None) -> None:
    """Poll `check` until it is true, the service died, or the deadline passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and not proc.alive():
            raise StackError(f"{proc.name} exited while starting; see {proc.log_file}\n{proc.log_tail()}")
        time.sleep(0.5)
    raise StackError(
        f"timed out after {timeout_s:.0f}s waiting for {what}" + (f"; see {proc.log_file}" if proc else "")
    )


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError):
        return False


def url_ok(url: str) -> bool:
    """`http_ok` that trusts the test CA for an https URL."""
    if not url.startswith("https:"):
        return http_ok(url)
    context = ssl.create_default_context(cafile=str(TLS_DIR / "ca.pem"))
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError):
        return False


def java_home_for_keycloak() -> str | None:
    """Keycloak 26.5 runs on Java 21+; prefer a newer JDK when the default is older."""
    explicit = os.environ.get("STACK_KEYCLOAK_JAVA_HOME")
    if explicit:
        return explicit
    candidates = sorted(Path("/usr/lib/jvm").glob("temurin-2[1-9]*")) + sorted(
        Path("/usr/lib/jvm").glob("java-2[1-9]*")
    )
    return str(candidates[-1]) if candidates else None


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of a live, non-zombie process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else fields[19]


@dataclass
class Service:
    name: str
    ports: tuple[int, ...]
    stop_signal: int = signal.SIGTERM

    @property
    def pid_file(self) -> Path:
        return STATE / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return LOGS / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def alive(self) -> bool:
        """True while the process `up` started still runs (a reused pid has another start time)."""
        try:
            pid_text, started = self.pid_file.read_text().split()
        except (OSError, ValueError):
            return False
        return process_start_time(int(pid_text)) == started

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_size(self) -> int:
        return self.log_file.stat().st_size if self.log_file.exists() else 0

    def check_ports_free(self) -> None:
        for port in self.ports:
            if port_open(port):
                raise StackError(
                    f"port {port} on {HOST} is already taken by another program, so {self.name} cannot start; "
                    f"stop that program or choose another port (see STACK_*_PORT in scripts/stack/stack.py)"
                )

    def spawn(self, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,  # its own process group, so `down` stops it and its children only
            )
        self.pid_file.write_text(f"{proc.pid} {process_start_time(proc.pid)}")

    def signal_stop(self) -> bool:
        """Ask the process to stop; False when it was not running."""
        pid = self.pid()
        if pid is None or not self.alive():
            self.pid_file.unlink(missing_ok=True)
            return False
        log(f"stopping {self.name} (pid {pid})")
        try:
            os.killpg(pid, self.stop_signal)
        except ProcessLookupError:
            pass
        return True

    def wait_stopped(self, deadline: float) -> None:
        pid = self.pid()
        while time.monotonic() < deadline and self.alive():
            time.sleep(0.3)
        if pid is not None and self.alive():
            log(f"{self.name} did not stop in time; killing it")
            os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def stop(self, timeout_s: float = 60) -> None:
        stop_together([self], timeout_s)


def stop_together(services: list[Service], timeout_s: float = 60) -> None:
    """Signal all, then wait for all: a Kafka broker shuts down cleanly only while a quorum of the others
    still runs, so brokers stopped one after another would leave the last waiting for its timeout."""
    stopping = [service for service in services if service.signal_stop()]
    deadline = time.monotonic() + timeout_s
    for service in stopping:
        service.wait_stopped(deadline)
