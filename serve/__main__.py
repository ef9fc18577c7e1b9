"""Serve a reference engine over HTTP (OpenAI-compatible):

    python -m serve engine=unified|unified_chunked|disagg|semipd executor=torch model=small_llama \
        [serve.port=8000] [serve.host=127.0.0.1] [serve.max_pending_requests=256]

Prints `serving <model> (<engine>) on http://HOST:PORT` once the engine's workers are up
(serve.port=0 takes a free port and prints it). Ctrl-C or SIGTERM stops it: requests in
flight are aborted, the worker processes stopped and reaped.
"""
from __future__ import annotations

import logging
import signal
import socket
import sys

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from engines.errors import WorkerError
from harness.errors import USER_ERRORS, config_conversion_error
from serve.config import LOOPBACK, ServeRunConfig

ConfigStore.instance().store(name="serve_schema", node=ServeRunConfig)
log = logging.getLogger("serve")
SWITCH_INTERVAL_S = 0.0002


class _Stop(Exception):
    """SIGINT or SIGTERM: stop serving, clean up, exit 0."""


def _on_signal(signum, _frame) -> None:
    raise _Stop(signal.Signals(signum).name)


def serve(cfg: ServeRunConfig) -> None:
    import uvicorn

    from serve.app import create_app
    from serve.metrics import ServeMetrics
    from serve.service import EngineService
    from serve.text import checkpoint_tokenizer

    cfg.validate()
    opts = cfg.serve
    # The engine thread and the HTTP thread share the GIL: at CPython's default 5 ms switch
    # interval, a step's end waits up to 5 ms for the HTTP thread to yield it; the engine
    # thread's waits are short and latency-critical (benchmarks/serve_overhead.py).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    if opts.host not in LOOPBACK:
        log.warning("serve.host=%s: the server is reachable from other machines (no authentication)", opts.host)
    sock = socket.socket(socket.AF_INET6 if ":" in opts.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((opts.host, opts.port))
        sock.listen(2048)  # connections wait in the backlog from now on, until uvicorn accepts them
    except OSError as err:
        sock.close()
        raise OSError(f"serve.host/serve.port: cannot bind {opts.host}:{opts.port}: {err.strerror}") from None
    # Uvicorn shuts down gracefully on these, then re-raises them into these handlers.
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    service = None
    try:
        service = EngineService(cfg, max_pending_requests=opts.max_pending_requests, metrics=ServeMetrics())
        service.start()
        name = opts.model_name or cfg.model.name
        app = create_app(service, checkpoint_tokenizer(cfg.model.checkpoint), opts, name)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
        host, port = sock.getsockname()[:2]
        print(f"serving {name} ({cfg.engine.label}) on http://{host}:{port}", flush=True)
        server.run(sockets=[sock])
    except _Stop as stop:
        print(f"stopping ({stop})", flush=True)
    finally:
        if service is not None:
            service.close(opts.shutdown_timeout_s)
        sock.close()


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
def main(dcfg: DictConfig) -> None:
    try:
        try:
            cfg = OmegaConf.to_object(dcfg)
        except OmegaConfBaseException as err:
            raise config_conversion_error(err) from None
        serve(cfg)
    except (*USER_ERRORS, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except WorkerError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
