"""A tier's encoders scored together: the mean over encoders of log-softmax over all items.

Used by the server, the offline evaluation and the benchmark, so all three score identically.
"""

from __future__ import annotations

import torch

from .model import SequentialRecommender, left_pad
from .tiers import Tier, encoder_config
from .train import Dataset, checkpoint_path, load_or_train, model_from_checkpoint


class CheckpointMissing(RuntimeError):
    pass


class Ensemble:
    def __init__(self, models: list[SequentialRecommender], device: torch.device) -> None:
        self.device = device
        self.models = [model.to(device).eval() for model in models]
        with torch.inference_mode():
            # Item vectors are fixed after training: computed once here, not per request.
            self.items = [model.item_vectors().contiguous() for model in self.models]

    @property
    def n_layers(self) -> int:
        return sum(model.n_layers for model in self.models)

    @torch.inference_mode()
    def user_vectors(self, histories: list) -> torch.Tensor:
        """Encode histories (lists of item indices); return ``(B, n_encoders, 384)``."""
        vectors = []
        for model, items in zip(self.models, self.items):
            batch = left_pad(histories, model.max_len, self.device)
            vectors.append(model.user_vectors(batch, items))
        return torch.stack(vectors, dim=1)

    @torch.inference_mode()
    def scores(self, users: torch.Tensor) -> torch.Tensor:
        """Score all items for ``(B, n_encoders, 384)`` user vectors; column 0 (padding) is -inf."""
        total = None
        for m, items in enumerate(self.items):
            logits = users[:, m, :] @ items.T
            logits[:, 0] = -torch.inf
            log_probs = torch.log_softmax(logits, dim=1)
            total = log_probs if total is None else total + log_probs
        return total / len(self.items)

    def score_histories(self, histories: list) -> torch.Tensor:
        return self.scores(self.user_vectors(histories))


def load_ensemble(tier: Tier, dataset: Dataset, device: torch.device, train_if_missing: bool = True,
                  progress: bool = False) -> tuple[Ensemble, list[dict]]:
    """Load (or train, if allowed) every encoder of ``tier``; return the ensemble and checkpoints."""
    checkpoints = []
    for name in tier.encoders:
        config = encoder_config(name)
        if not train_if_missing and not checkpoint_path(config).exists():
            raise CheckpointMissing(
                f"no checkpoint for encoder {name} of tier {tier.name} at {checkpoint_path(config)}; run "
                f"`python -m tierscale_server train --tier {tier.name}` or start with --train-if-missing"
            )
        checkpoints.append(load_or_train(config, dataset, device, progress=progress))
    models = [model_from_checkpoint(c, dataset.item_text) for c in checkpoints]
    return Ensemble(models, device), checkpoints
