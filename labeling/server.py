"""Run a local Label Studio server as a subprocess from its own virtual environment.

Label Studio's dependency pins clash with ours, so we never import it: we only get the path
to its ``label-studio`` executable. The process is started in its own session (process
group) and its pid/port/url are recorded in ``<data_dir>/sentiloop-server.json`` so that a
later, unrelated process (``sentiloop labelstudio down``) can find and stop it, and a second
``up`` reuses the running server instead of starting another one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from labeling.errors import LabelStudioStartError

__all__ = [
    "STATE_FILE",
    "LabelStudioServer",
    "clean_env",
    "copy_data_dir",
    "parse_port",
]

logger = logging.getLogger(__name__)

STATE_FILE = "sentiloop-server.json"
"""Name of the pid/port/url record inside the data dir (never copied by copy_data_dir)."""

DEFAULT_LOG_NAME = "label-studio.log"

_PORT_RE = re.compile(r"Starting development server at https?://[^\s/]+:(\d+)/?")

# Only these variables are taken from our environment: Label Studio's settings also read
# bare HOST, PORT, USERNAME, PASSWORD, DEBUG..., which must not leak in from the caller.
_INHERITED_VARS = ("PATH", "HOME", "LANG", "LC_ALL")


def clean_env(
    data_dir: Path,
    *,
    username: str,
    password: str,
    token: str,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Build the minimal environment for a headless Label Studio start.

    ``base`` defaults to ``os.environ``; only PATH/HOME/LANG/LC_ALL are taken from it.
    The user, password and token only take effect when the data dir is first migrated.
    """
    source = os.environ if base is None else base
    env = {key: source[key] for key in _INHERITED_VARS if key in source}
    env.setdefault("PATH", os.defpath)
    env.update(
        {
            "CI": "true",
            "PYTHONUNBUFFERED": "1",  # so the "Starting development server" line reaches the log
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "DJANGO_DB": "sqlite",
            "LABEL_STUDIO_USERNAME": username,
            "LABEL_STUDIO_PASSWORD": password,
            "LABEL_STUDIO_USER_TOKEN": token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "SSRF_PROTECTION_ENABLED": "false",
            # the embedded setup's ML backend (`sentiloop serve`) runs on this machine
            "ML_BLOCK_LOCAL_IP": "false",
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
        }
    )
    return env


def parse_port(log_text: str) -> int | None:
    """Return the port from Django's 'Starting development server at ...' line, if present.

    Label Studio silently moves to the next port when the requested one is busy, so the
    log is the only reliable source of the real port.
    """
    match = _PORT_RE.search(log_text)
    return int(match.group(1)) if match else None


def copy_data_dir(template: Path, dest: Path) -> None:
    """Copy an already-migrated data dir (3-5 s start instead of ~45 s of migrations).

    The pid record and logs are left behind: they describe the template's server.
    """
    shutil.copytree(
        template, dest, ignore=shutil.ignore_patterns(STATE_FILE, "*.log"), symlinks=True
    )


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live (non-zombie) process; reaps it if it is our own child."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _looks_like_label_studio(pid: int) -> bool:
    """Guard against pid reuse: only signal a process whose command line is label-studio."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (non-Linux): trust the record
    return b"label-studio" in cmdline or b"label_studio" in cmdline


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        response = httpx.get(f"{url}/health", timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


class LabelStudioServer:
    """A local Label Studio process bound to one data dir.

    All state needed to reuse or stop the server lives in the data dir's record file, so a
    fresh instance (e.g. in another CLI invocation) can stop a server it did not start.
    """

    def __init__(
        self,
        executable: Path,
        data_dir: Path,
        *,
        port: int = 8080,
        username: str,
        password: str,
        token: str,
        log_path: Path | None = None,
    ) -> None:
        self.executable = Path(executable)
        self.data_dir = Path(data_dir)
        self.port = port
        self.username = username
        self._password = password
        self._token = token
        self.log_path = Path(log_path) if log_path else self.data_dir / DEFAULT_LOG_NAME
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:  # never show password/token
        return f"LabelStudioServer(data_dir={self.data_dir!s}, url={self.url!r})"

    @property
    def state_path(self) -> Path:
        return self.data_dir / STATE_FILE

    def _read_state(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            logger.warning("Ignoring unreadable Label Studio state file %s", self.state_path)
            return None
        if not isinstance(state, dict) or not isinstance(state.get("pid"), int):
            return None
        return state

    @property
    def url(self) -> str | None:
        """Base URL of the recorded server, or None if none is recorded."""
        state = self._read_state()
        return str(state["url"]) if state else None

    def running(self) -> bool:
        """True if the recorded server process is alive and answers /health."""
        state = self._read_state()
        return bool(state and _pid_alive(state["pid"]) and _healthy(str(state["url"])))

    def start(self, timeout: float = 180) -> str:
        """Start the server (or reuse the recorded one) and return its base URL.

        Blocks until /health answers; a first start on an empty data dir takes ~45 s of
        migrations.
        """
        state = self._read_state()
        if state is not None:
            url = str(state["url"])
            if _pid_alive(state["pid"]) and _healthy(url):
                logger.info("Reusing Label Studio at %s (pid %s)", url, state["pid"])
                return url
            logger.info("Removing stale Label Studio record %s", self.state_path)
            self.state_path.unlink(missing_ok=True)

        if not self.executable.is_file() or not os.access(self.executable, os.X_OK):
            raise LabelStudioStartError(
                f"Label Studio executable not found at {self.executable} "
                "(SENTILOOP_LABEL_STUDIO_BIN); `make setup` creates it"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = clean_env(
            self.data_dir, username=self.username, password=self._password, token=self._token
        )
        cmd = [
            str(self.executable),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        with self.log_path.open("ab") as log:
            offset = log.tell()
            logger.info("Starting Label Studio on port %d (log: %s)", self.port, self.log_path)
            proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._proc = proc
        try:
            url = self._wait_healthy(proc, offset, timeout)
        except BaseException:
            self._kill_group(proc.pid, grace=5)
            self._reap()
            raise
        self.state_path.write_text(
            json.dumps({"pid": proc.pid, "port": int(url.rsplit(":", 1)[1]), "url": url})
        )
        logger.info("Label Studio is up at %s (pid %d)", url, proc.pid)
        return url

    def _new_log_text(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _log_tail(self, offset: int, lines: int = 20) -> str:
        tail = self._new_log_text(offset).splitlines()[-lines:]
        return "\n".join(tail)

    def _wait_healthy(self, proc: subprocess.Popen[bytes], offset: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        port: int | None = None
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                raise LabelStudioStartError(
                    f"Label Studio exited with code {code} during start-up; "
                    f"last lines of {self.log_path}:\n{self._log_tail(offset)}"
                )
            if port is None:
                port = parse_port(self._new_log_text(offset))
            if port is not None:
                url = f"http://127.0.0.1:{port}"
                if _healthy(url):
                    return url
            time.sleep(0.5)
        raise LabelStudioStartError(
            f"Label Studio did not become healthy within {timeout:.0f} s; "
            f"last lines of {self.log_path}:\n{self._log_tail(offset)}"
        )

    def _kill_group(self, pid: int, grace: float) -> None:
        """SIGTERM the process group (SIGINT is ignored when not on a TTY), then SIGKILL."""
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.2)
        if _pid_alive(pid):
            logger.warning("Label Studio (pid %d) ignored SIGTERM; sending SIGKILL", pid)
        with contextlib.suppress(ProcessLookupError):  # also clears straggler children
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.1)

    def stop(self, timeout: float = 20) -> bool:
        """Stop the recorded server; return False if there was nothing to stop.

        Works from any process: it uses the pid in the record file, not a Popen handle.
        """
        state = self._read_state()
        pid: int | None = state["pid"] if state else None
        if pid is None and self._proc is not None and self._proc.poll() is None:
            pid = self._proc.pid
        stopped = False
        if pid is not None and _pid_alive(pid):
            if _looks_like_label_studio(pid):
                logger.info("Stopping Label Studio (pid %d)", pid)
                self._kill_group(pid, grace=timeout)
                stopped = True
            else:
                logger.warning("pid %d is not Label Studio any more; not signalling it", pid)
        self.state_path.unlink(missing_ok=True)
        self._reap()
        return stopped

    def _reap(self) -> None:
        """Collect our own child's exit status so Popen does not warn about it later."""
        if self._proc is not None:
            try:
                self._proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                logger.warning("Label Studio (pid %d) still running after stop", self._proc.pid)
            self._proc = None
