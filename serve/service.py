"""EngineService: one engine (any design, any executor) and its wall-clock loop, running
in a thread beside the server's asyncio loop.

The engine is the same as in a benchmark run (harness.build.build_engine): its loop wakes
on worker processes finishing steps, and here also on a pipe the HTTP side writes to when
it has a command (a new request, an abort, stop). Only the engine thread touches the engine;
the HTTP side talks to it through commands and receives, per request, events on an asyncio
queue: accepted or rejected, new token ids, the finish reason. After every loop event the
engine thread pushes the new tokens of every live request, refreshes the gauges of
/metrics, observes the steps that ended, and drops what a long-running server must not keep
(step records, transfer records): its memory stays flat under any number of requests.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import queue
import threading
from multiprocessing import Pipe
from typing import Any

from engines.engine import Engine
from engines.request import Request, Status
from engines.wallclock import WallClockLoop
from harness.build import build_engine
from harness.config import RunConfig
from serve.metrics import ServeMetrics

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Event:
    """What a request's consumer receives: kind is accepted | tokens | rejected | error."""

    kind: str
    token_ids: list[int] = dataclasses.field(default_factory=list)
    finish_reason: str | None = None  # with the last tokens: length | stop | abort
    message: str = ""                 # rejected / error: why


class Stream:
    """One request's channel: created on the asyncio side, fed by the engine thread."""

    def __init__(self, prompt_ids: list[int], max_tokens: int, temperature: float, ignore_eos: bool) -> None:
        self.prompt_ids, self.max_tokens = prompt_ids, max_tokens
        self.temperature, self.ignore_eos = temperature, ignore_eos
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self._aloop = asyncio.get_running_loop()
        self.request: Request | None = None  # engine thread only
        self.num_sent = 0                    # engine thread only
        self.finished = False

    def push(self, event: Event) -> None:
        """Thread-safe: hand `event` to the consumer's loop."""
        deliver(self._aloop, [(self, event)])


def deliver(aloop: asyncio.AbstractEventLoop, events: list[tuple[Stream, Event]]) -> None:
    """Hand events to their streams with ONE wake-up of the consumer's loop (a wake-up is a
    write to its self-pipe and a loop iteration: once per engine event, not per stream)."""
    def put() -> None:
        for stream, event in events:
            stream.events.put_nowait(event)
    try:
        aloop.call_soon_threadsafe(put)
    except RuntimeError:  # the consumer's loop is closed (server shutting down)
        pass


class Overloaded(Exception):
    """More unfinished requests than the server's limit (HTTP 503)."""


class EngineService:
    def __init__(self, cfg: RunConfig, *, max_pending_requests: int, metrics: ServeMetrics) -> None:
        cfg.validate()
        self.cfg = cfg
        self.loop = WallClockLoop()
        self.engine: Engine = build_engine(cfg, self.loop)
        self.metrics = metrics
        self.max_pending_requests = max_pending_requests
        self.error: str | None = None        # set when the engine failed: the server is unhealthy
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake_recv, self._wake_send = Pipe(duplex=False)
        self._lock = threading.Lock()
        self._pending = 0                    # submitted, not yet finished (both threads; under _lock)
        self._live: dict[int, Stream] = {}   # engine thread only
        self._ids = itertools.count()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        metrics.observe_engine(self.engine)  # /metrics has every pool and gauge before the first request

    # ----- the HTTP side (any thread) -------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.engine.vocab_size

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    def start(self) -> None:
        self._thread.start()

    def submit(self, stream: Stream) -> None:
        """Queue a request; Overloaded when max_pending_requests are unfinished."""
        if self.error is not None:
            raise RuntimeError(self.error)
        with self._lock:
            if self._pending >= self.max_pending_requests:
                raise Overloaded(f"{self._pending} requests are unfinished (the server's limit, "
                                 f"serve.max_pending_requests={self.max_pending_requests}); retry later")
            self._pending += 1
        self._command("submit", stream)

    def abort(self, stream: Stream) -> None:
        """The client went away: stop computing its request and free its KV blocks."""
        if not stream.finished:
            self._command("abort", stream)

    def close(self, timeout_s: float = 30.0) -> None:
        """Abort what is running, let the steps in flight end, stop the worker processes."""
        if self._thread.is_alive():
            self._command("stop", None)
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("the engine thread did not stop within %.0f s; stopping its workers", timeout_s)
        self.engine.close()
        self._wake_send.close()

    def _command(self, name: str, arg: Any) -> None:
        self._commands.put((name, arg))
        try:
            self._wake_send.send_bytes(b"!")
        except OSError:  # closed: the service is stopping
            pass

    # ----- the engine thread ------------------------------------------------------------------
    def _run(self) -> None:
        self.loop.when_ready(self._wake_recv, self._on_wake)
        try:
            self.loop.run(on_event=self._after_event)
        except BaseException as err:  # a worker died: every live request ends with the error
            self.error = f"the engine failed: {type(err).__name__}: {err}"
            log.error("%s", self.error)
            for stream in list(self._live.values()):
                self.metrics.requests.labels("error").inc()
                self._end(stream, Event("error", message=self.error))

    def _on_wake(self) -> None:
        while self._wake_recv.poll():
            self._wake_recv.recv_bytes()
        while True:
            try:
                name, arg = self._commands.get_nowait()
            except queue.Empty:
                break
            getattr(self, f"_do_{name}")(arg)
        if not self._stopping:
            self.loop.when_ready(self._wake_recv, self._on_wake)

    def _do_submit(self, stream: Stream) -> None:
        if self._stopping:
            self.metrics.requests.labels("error").inc()
            self._end(stream, Event("error", message="the server is shutting down"))
            return
        req = Request(id=next(self._ids), arrival_s=self.loop.now_s, prompt_len=len(stream.prompt_ids),
                      output_len=stream.max_tokens, token_ids=list(stream.prompt_ids), source="http",
                      temperature=stream.temperature)
        if not stream.ignore_eos:
            req.stop_token_ids = frozenset(getattr(self.engine, "eos_token_ids", ()))
        stream.request = req
        self._live[req.id] = stream
        self.metrics.prompt_tokens.inc(req.prompt_len)
        self.engine.submit(req)
        if req.status is Status.REJECTED:
            self._end(stream, Event("rejected", message=req.reject_reason))
            self.metrics.requests.labels("rejected").inc()
        else:
            stream.push(Event("accepted"))

    def _do_abort(self, stream: Stream) -> None:
        req = stream.request
        if req is not None and req.id in self._live:
            self.engine.abort(req)

    def _do_stop(self, _: Any) -> None:
        self._stopping = True
        for stream in list(self._live.values()):
            self._do_abort(stream)

    def _after_event(self) -> None:
        """New tokens to their streams; finished requests out; gauges and step times."""
        out: list[tuple[Stream, Event]] = []
        for rid, stream in list(self._live.items()):
            req = stream.request
            done = req.status is Status.FINISHED
            n = req.num_output_tokens
            if n > stream.num_sent or done:
                new = req.token_ids[req.prompt_len + stream.num_sent:req.prompt_len + n]
                self.metrics.generation_tokens.inc(n - stream.num_sent)
                stream.num_sent = n
                if done:
                    self.metrics.requests.labels(req.finish_reason or "length").inc()
                    self._end(stream, Event("tokens", new, finish_reason=req.finish_reason or "length"), out)
                else:
                    out.append((stream, Event("tokens", new)))
        if out:
            deliver(out[0][0]._aloop, out)  # every stream is consumed on the server's one loop
        self.metrics.observe_engine(self.engine)
        self.metrics.pending.set(self._pending)

    def _end(self, stream: Stream, event: Event, batch: list | None = None) -> None:
        stream.finished = True
        if batch is None:
            stream.push(event)
        else:
            batch.append((stream, event))
        if stream.request is not None:
            self._live.pop(stream.request.id, None)
        with self._lock:
            self._pending -= 1
