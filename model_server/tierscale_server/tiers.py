"""The model-size tiers and their training settings.

A tier is one point on the quality/cost frontier. The values here were chosen by measurement
(validation NDCG@10 against batch-1 latency on a 2-core CPU); ``docs/model-server.md`` has the
table and the runs behind it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class TierConfig:
    name: str
    n_layers: int            # first n pretrained BERT layers
    max_len: int             # items of history the encoder reads
    learning_rate: float
    dropout: float
    weight_decay: float = 0.01
    batch_size: int = 64
    max_epochs: int = 20
    patience: int = 3        # epochs without a better validation NDCG@10 before stopping
    warmup_frac: float = 0.05
    seed: int = 0

    def fingerprint(self) -> str:
        """Return a short hash of every setting; checkpoints are cached under it."""
        blob = json.dumps(asdict(self), sort_keys=True).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:12]

    def with_overrides(self, **overrides) -> "TierConfig":
        known = set(asdict(self))
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown tier setting(s) {unknown}; known: {sorted(known)}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


TIERS: dict[str, TierConfig] = {
    "small": TierConfig(name="small", n_layers=2, max_len=20, learning_rate=5e-4, dropout=0.2, max_epochs=20),
    "medium": TierConfig(name="medium", n_layers=4, max_len=50, learning_rate=3e-4, dropout=0.2, max_epochs=20),
    "large": TierConfig(name="large", n_layers=6, max_len=50, learning_rate=2e-4, dropout=0.2, max_epochs=20),
}

TIER_NAMES = tuple(TIERS)


def tier_config(name: str) -> TierConfig:
    try:
        return TIERS[name]
    except KeyError:
        raise ValueError(f"unknown tier {name!r}; choose one of {', '.join(TIER_NAMES)}") from None
