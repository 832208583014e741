"""The model-size tiers, the fine-tuned encoders they are made of, and their training settings.

An encoder is one fine-tuned model: the first ``n_layers`` pretrained BERT layers over the last
``max_len`` items of a user's history. A tier is an ensemble of encoders whose scores are
averaged (as log-probabilities over all items). The tiers nest, so each costs more per request
than the one below it: ``small`` runs one 2-layer encoder (2 layer passes per request),
``medium`` two (4), ``large`` three (6), the same layer budget as 2-, 4- and 6-layer models.

Why ensembles of 2-layer encoders and not depth: on MovieLens-100K a 4-layer encoder tracked
the 2-layer one epoch for epoch at about twice the training cost. On a shared 2-core CPU the
deeper encoders could not be trained to convergence in the time available. Averaging
independently seeded encoders raised validation and test NDCG@10 with each member.
``docs/model-server.md`` has the measurements.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class EncoderConfig:
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
        """Return a short hash of every training setting (not the name); checkpoints are cached under it."""
        settings = asdict(self)
        settings.pop("name")
        blob = json.dumps(settings, sort_keys=True).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:12]

    def with_overrides(self, **overrides) -> "EncoderConfig":
        known = set(asdict(self))
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown encoder setting(s) {unknown}; known: {sorted(known)}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class Tier:
    name: str
    encoders: tuple[str, ...]  # names in ENCODERS, averaged at scoring time

    @property
    def layer_passes(self) -> int:
        """Transformer layers run per request: the cost axis of the frontier."""
        return sum(ENCODERS[name].n_layers for name in self.encoders)


ENCODERS: dict[str, EncoderConfig] = {
    # Three 2-layer encoders that differ only in their seed (initialisation, windows, dropout).
    "bert-l2": EncoderConfig(name="bert-l2", n_layers=2, max_len=20, learning_rate=5e-4, dropout=0.2),
    "bert-l2-s1": EncoderConfig(name="bert-l2-s1", n_layers=2, max_len=20, learning_rate=5e-4, dropout=0.2, seed=1),
    "bert-l2-s2": EncoderConfig(name="bert-l2-s2", n_layers=2, max_len=20, learning_rate=5e-4, dropout=0.2, seed=2),
    # Deeper single encoders, kept to measure the depth axis (not part of any tier).
    "bert-l4": EncoderConfig(name="bert-l4", n_layers=4, max_len=20, learning_rate=3e-4, dropout=0.2),
    "bert-l6": EncoderConfig(name="bert-l6", n_layers=6, max_len=20, learning_rate=2e-4, dropout=0.2),
}

TIERS: dict[str, Tier] = {
    "small": Tier("small", ("bert-l2",)),
    "medium": Tier("medium", ("bert-l2", "bert-l2-s1")),
    "large": Tier("large", ("bert-l2", "bert-l2-s1", "bert-l2-s2")),
}

TIER_NAMES = tuple(TIERS)
ENCODER_NAMES = tuple(ENCODERS)


def tier_config(name: str) -> Tier:
    try:
        return TIERS[name]
    except KeyError:
        raise ValueError(f"unknown tier {name!r}; choose one of {', '.join(TIER_NAMES)}") from None


def encoder_config(name: str) -> EncoderConfig:
    try:
        return ENCODERS[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODER_NAMES)}") from None
