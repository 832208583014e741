"""Server settings, validated once at start-up with messages that name the setting and value."""

from __future__ import annotations

from dataclasses import dataclass

from .tiers import TIER_NAMES


@dataclass(frozen=True)
class ServerConfig:
    tier: str = "small"
    model_name: str = "movielens-bert"
    host: str = "127.0.0.1"
    port: int = 8080
    management_port: int = 8081
    metrics_port: int = 8082
    workers: int = 1
    max_batch_size: int = 16
    max_batch_delay_ms: float = 5.0
    max_body_bytes: int = 65536
    swap_probability: float = 0.1
    user_cache_size: int = 4096
    device: str | None = None
    torch_threads: int = 1       # intra-op threads per process; 0 keeps torch's default
    train_if_missing: bool = False
    seed: int = 0
    movielens: str | None = None
    request_log_size: int = 100_000  # requests kept for /feedback; older ones are forgotten

    def __post_init__(self) -> None:
        problems = []
        if self.tier not in TIER_NAMES:
            problems.append(f"tier {self.tier!r} is unknown (choose {', '.join(TIER_NAMES)})")
        if not self.model_name or "/" in self.model_name:
            problems.append(f"model_name {self.model_name!r} must be non-empty and contain no '/'")
        for name in ("port", "management_port", "metrics_port"):
            value = getattr(self, name)
            if not 1 <= value <= 65535:
                problems.append(f"{name} {value} is outside 1..65535")
        if not 0 <= self.workers <= 64:
            problems.append(f"workers {self.workers} is outside 0..64")
        if not 1 <= self.max_batch_size <= 1024:
            problems.append(f"max_batch_size {self.max_batch_size} is outside 1..1024")
        if not 0 <= self.max_batch_delay_ms <= 1000:
            problems.append(f"max_batch_delay_ms {self.max_batch_delay_ms} is outside 0..1000")
        if self.max_body_bytes < 64:
            problems.append(f"max_body_bytes {self.max_body_bytes} is below 64")
        if not 0.0 <= self.swap_probability <= 1.0:
            problems.append(f"swap_probability {self.swap_probability} is outside 0..1")
        if self.torch_threads < 0:
            problems.append(f"torch_threads {self.torch_threads} is negative")
        if self.user_cache_size < 0:
            problems.append(f"user_cache_size {self.user_cache_size} is negative")
        if self.request_log_size < 1:
            problems.append(f"request_log_size {self.request_log_size} is below 1")
        if problems:
            raise ValueError("invalid server settings: " + "; ".join(problems))

    @classmethod
    def from_args(cls, args) -> "ServerConfig":
        return cls(
            tier=args.tier, model_name=args.model_name, host=args.host, port=args.port,
            management_port=args.management_port, metrics_port=args.metrics_port, workers=args.workers,
            max_batch_size=args.max_batch_size, max_batch_delay_ms=args.max_batch_delay_ms,
            max_body_bytes=args.max_body_bytes, swap_probability=args.swap_probability,
            user_cache_size=args.user_cache_size, device=args.device, torch_threads=args.torch_threads,
            train_if_missing=args.train_if_missing,
            seed=args.seed, movielens=args.movielens,
        )
