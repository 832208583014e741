"""Fine-tune one tier on the train split, with early stopping on validation NDCG@10.

Checkpoints are cached under ``$TIERSCALE_CACHE/checkpoints/<tier>-<settings hash>.pt`` and
reused by the evaluation, the benchmark and the server; ``--force`` retrains. A run is
reproducible from its seed on the same hardware and library versions (CPU kernels are
deterministic here; CUDA ones may differ in the last bits).
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .data import Interactions, Split, cache_dir, leave_last_out, load_movielens
from .encoder import item_text_embeddings, load_pretrained_bert
from .model import SequentialRecommender, left_pad
from .ranking_metrics import evaluate_scorer
from .tiers import EncoderConfig

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


@dataclass
class Dataset:
    """MovieLens-100K, its split and the item text embeddings: everything training reads."""

    data: Interactions
    split: Split
    item_text: torch.Tensor  # (n_items + 1, 384); row 0 is padding


def load_dataset(movielens: str | None = None) -> Dataset:
    data = load_movielens(movielens)
    split = leave_last_out(data)
    vectors = item_text_embeddings([item.text() for item in data.items])
    item_text = torch.zeros(data.n_items + 1, vectors.shape[1])
    item_text[1:] = torch.as_tensor(vectors)
    return Dataset(data=data, split=split, item_text=item_text)


def pick_device(requested: str | None = None) -> torch.device:
    """Return ``requested`` if given, else CUDA when available, else the CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def checkpoint_path(config: EncoderConfig) -> Path:
    return cache_dir() / "checkpoints" / f"{config.name}-{config.fingerprint()}.pt"


def build_model(config: EncoderConfig, item_text: torch.Tensor) -> SequentialRecommender:
    bert = load_pretrained_bert()
    return SequentialRecommender(
        bert, item_text, n_layers=config.n_layers, max_len=config.max_len, dropout=config.dropout
    )


def sample_windows(split: Split, max_len: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one window of up to ``max_len`` (input, next-item target) pairs per user.

    The window ends at a uniformly drawn point of the user's train sequence, at or after the
    point where a full window fits. One epoch costs one window per user (943 on MovieLens-100K),
    and over the epochs every part of a long history is trained on. Both tensors
    are left-padded with 0, which the loss ignores.
    """
    inputs, targets = [], []
    for sequence in split.train:
        first_end = min(len(sequence), max_len + 1)
        end = first_end + int(torch.randint(len(sequence) - first_end + 1, (1,), generator=generator))
        piece = sequence[end - first_end:end]
        inputs.append(piece[:-1])
        targets.append(piece[1:])
    return left_pad(inputs, max_len), left_pad(targets, max_len)


def model_scorer(model: SequentialRecommender, device: torch.device):
    """Return ``score(histories) -> (B, n_items + 1)`` for :func:`evaluate_scorer`."""

    @torch.inference_mode()
    def score(histories: list) -> torch.Tensor:
        items = model.item_vectors()
        batch = left_pad(histories, model.max_len, device)
        return model.user_vectors(batch, items) @ items.T

    return score


def train_encoder(config: EncoderConfig, dataset: Dataset, device: torch.device, progress: bool = True) -> dict:
    """Train one tier and return its checkpoint dict (state, settings, validation history)."""
    _seed_everything(config.seed)
    model = build_model(config, dataset.item_text).to(device)
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(dataset.split.train) / config.batch_size)
    total_steps = steps_per_epoch * config.max_epochs

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = max(1, int(config.warmup_frac * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * max(0.0, 1 - step / total_steps)
    )

    history, best, best_state, stale = [], -1.0, None, 0
    started = time.monotonic()
    bar = tqdm(total=total_steps, desc=f"train {config.name}", unit="step", disable=not progress)
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        inputs, targets = sample_windows(dataset.split, config.max_len, generator)
        order = torch.randperm(len(inputs), generator=generator)
        loss_sum = 0.0
        for step in range(steps_per_epoch):
            index = order[step * config.batch_size:(step + 1) * config.batch_size]
            loss = _next_item_loss(model, inputs[index].to(device), targets[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss)
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss_sum / (step + 1):.3f}", best_ndcg=f"{max(best, 0):.4f}")

        model.eval()
        valid = evaluate_scorer(model_scorer(model, device), dataset.split, "valid")
        history.append({"epoch": epoch, "loss": round(loss_sum / steps_per_epoch, 4), **valid,
                        "elapsed_s": round(time.monotonic() - started, 1)})
        log.info("encoder %s epoch %d: loss %.3f, valid %s", config.name, epoch, loss_sum / steps_per_epoch, valid)

        if valid["ndcg@10"] > best:
            best, stale = valid["ndcg@10"], 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                bar.total = bar.n
                break
    bar.close()

    best_epoch = max(history, key=lambda h: h["ndcg@10"])
    return {
        "format": CHECKPOINT_FORMAT,
        "config": asdict(config),
        "state_dict": best_state,
        "history": history,
        "best": best_epoch,
        "train_seconds": round(time.monotonic() - started, 1),
        "device": str(device),
        "torch": torch.__version__,
    }


def load_or_train(
    config: EncoderConfig,
    dataset: Dataset,
    device: torch.device,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Return the cached checkpoint of ``config``, training and caching it on a miss."""
    path = checkpoint_path(config)
    if path.exists() and not force:
        log.info("encoder %s: using cached checkpoint %s", config.name, path)
        return torch.load(path, map_location="cpu", weights_only=False)

    checkpoint = train_encoder(config, dataset, device, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(path)
    log.info("encoder %s: trained in %.0f s, saved %s", config.name, checkpoint["train_seconds"], path)
    return checkpoint


def model_from_checkpoint(checkpoint: dict, item_text: torch.Tensor) -> SequentialRecommender:
    config = EncoderConfig(**checkpoint["config"])
    model = build_model(config, item_text)
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    return model


def _next_item_loss(model: SequentialRecommender, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    items = model.item_vectors()
    hidden = model.encode(inputs, items)
    keep = targets > 0
    logits = hidden[keep] @ items.T
    logits[:, 0] = -torch.inf
    return torch.nn.functional.cross_entropy(logits, targets[keep])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
