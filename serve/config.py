"""The server's options (`serve.*`, conf/serve.yaml) beside the run's engine, executor and model."""
from __future__ import annotations

from dataclasses import dataclass, field

from engines.errors import ConfigError, check_int
from harness.config import RunConfig

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"          # loopback unless told otherwise
    port: int = 8000                 # 0: any free port (printed when the server is up)
    model_name: str | None = None    # the name clients send as `model`; None: model.name
    max_body_bytes: int = 4 << 20    # a request body over this: 413
    max_prompt_tokens: int = 32768   # a longer prompt: 400 (the model's context also bounds it)
    max_tokens: int = 8192           # a larger max_tokens: 400
    # Requests accepted and not finished; one more gets 503 rather than an unbounded queue.
    max_pending_requests: int = 256
    shutdown_timeout_s: float = 30.0  # on stop: how long the steps in flight may take to end

    def validate(self) -> None:
        check_int("serve.port", self.port, 0)
        if self.port > 65535:
            raise ConfigError("serve.port", "a TCP port (0-65535; 0 = any free one)", self.port)
        for name in ("max_body_bytes", "max_prompt_tokens", "max_tokens", "max_pending_requests"):
            check_int(f"serve.{name}", getattr(self, name), 1)
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError("serve.host", "an address to bind (127.0.0.1 for loopback)", self.host)


@dataclass
class ServeRunConfig(RunConfig):
    serve: ServeConfig = field(default_factory=ServeConfig)

    def validate(self) -> None:
        super().validate()
        self.serve.validate()
        if self.executor.name == "sim":
            raise ConfigError("executor", "torch (a server computes real tokens; executor=sim has none)",
                              self.executor.name)
