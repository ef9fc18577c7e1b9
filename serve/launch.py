"""Start `python -m serve ...` as a child process and stop it, for tests and benchmarks.

    with ServerProcess(["engine=unified", "model=tiny_llama"]) as server:
        httpx.get(server.url + "/health")

Binds 127.0.0.1 on a free port (serve.port=0) and waits, bounded, for the server's
`serving ... on http://...` line. Leaving the block (also on an exception or Ctrl-C) sends
SIGINT, then SIGTERM, then SIGKILL, each after a bounded wait: the server aborts its
requests and reaps its worker processes itself on the first.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

_READY = re.compile(r"serving .* on (http://\S+)")


class ServerProcess:
    def __init__(self, overrides: list[str], *, start_timeout_s: float = 180.0, stop_timeout_s: float = 60.0,
                 log_path: str | Path | None = None, env: dict[str, str] | None = None) -> None:
        self.overrides, self.start_timeout_s, self.stop_timeout_s = overrides, start_timeout_s, stop_timeout_s
        self.log_path, self.env = log_path, env
        self.url = ""
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []  # everything the server printed

    def __enter__(self) -> "ServerProcess":
        cmd = [sys.executable, "-m", "serve", "serve.host=127.0.0.1", "serve.port=0", "hydra.run.dir=.",
               "hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled",
               *self.overrides]
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        ready = threading.Event()
        threading.Thread(target=self._read, args=(ready,), daemon=True).start()
        try:
            if not ready.wait(self.start_timeout_s) or not self.url:
                raise RuntimeError(f"the server did not start within {self.start_timeout_s:.0f} s "
                                   f"(exit code {self.proc.poll()}):\n" + "".join(self.lines[-30:]))
        except BaseException:
            self.stop()
            raise
        return self

    def _read(self, ready: threading.Event) -> None:
        log = open(self.log_path, "w") if self.log_path else None
        try:
            for line in self.proc.stdout:
                self.lines.append(line)
                if log:
                    log.write(line)
                    log.flush()
                m = _READY.search(line)
                if m and not self.url:
                    self.url = m.group(1)
                    ready.set()
        finally:
            ready.set()
            if log:
                log.close()

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> int | None:
        """SIGINT, then SIGTERM, then SIGKILL (the whole process group), each with a bounded wait."""
        if self.proc is None:
            return None
        for sig, wait_s in ((signal.SIGINT, self.stop_timeout_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig) if sig == signal.SIGKILL else self.proc.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                continue
        return self.proc.poll()

    def output(self) -> str:
        return "".join(self.lines)


def wait_until(predicate, timeout_s: float, interval_s: float = 0.2) -> bool:
    """Poll `predicate` until it is true or `timeout_s` passed (bounded waits in tests)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())
