"""A sequential recommender built from the first L layers of the pretrained BERT.

Each item enters as one vector: the projection of its pretrained text embedding (title, year,
genres) plus a learned item-id embedding. A user's recent items, with the pretrained position
embeddings and embedding LayerNorm, run through the first L pretrained transformer layers
under a causal mask; the hidden state at each position scores every item by dot product with
the same item vectors (tied input/output embeddings), trained with next-item cross-entropy.

Fine-tuning BERT on the text of a user's history is too slow on a CPU; this design keeps the
pretrained text understanding (item vectors) and the pretrained layers, and trains in minutes.
At serving time the item vectors are computed once when a tier loads.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .encoder import HIDDEN_SIZE, PRETRAINED_LAYERS


class SequentialRecommender(nn.Module):
    def __init__(
        self,
        bert,
        item_text: torch.Tensor,
        n_layers: int,
        max_len: int,
        dropout: float,
        id_init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if not 1 <= n_layers <= PRETRAINED_LAYERS:
            raise ValueError(f"invalid n_layers {n_layers}: the pretrained model has 1..{PRETRAINED_LAYERS}")
        if item_text.shape[1] != HIDDEN_SIZE:
            raise ValueError(f"item_text has width {item_text.shape[1]}, expected {HIDDEN_SIZE}")

        self.n_layers = n_layers
        self.max_len = max_len
        n_rows = item_text.shape[0]  # n_items + 1; row 0 is padding

        # Frozen text embeddings; row 0 stays zero for padding.
        self.register_buffer("item_text", item_text.float().clone(), persistent=False)
        self.text_proj = nn.Linear(HIDDEN_SIZE, HIDDEN_SIZE)
        self.item_id = nn.Embedding(n_rows, HIDDEN_SIZE, padding_idx=0)
        nn.init.normal_(self.item_id.weight, std=id_init_std)
        with torch.no_grad():
            self.item_id.weight[0].zero_()

        embeddings = bert.embeddings
        self.position = nn.Embedding(max_len, HIDDEN_SIZE)
        with torch.no_grad():
            self.position.weight.copy_(embeddings.position_embeddings.weight[:max_len])
        self.norm = copy.deepcopy(embeddings.LayerNorm)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(copy.deepcopy(bert.encoder.layer[i]) for i in range(n_layers))
        for layer in self.layers:
            for module in layer.modules():
                if isinstance(module, nn.Dropout):
                    module.p = dropout

    def item_vectors(self) -> torch.Tensor:
        """Return the item vectors, shape ``(n_items + 1, 384)``; row 0 is padding."""
        return self.text_proj(self.item_text) + self.item_id.weight

    def encode(self, sequences: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Run left-padded item sequences ``(B, T)`` through the layers; return hidden ``(B, T, 384)``."""
        if items is None:
            items = self.item_vectors()
        mask = sequences > 0
        positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
        hidden = items[sequences] + self.position(positions)
        hidden = self.dropout(self.norm(hidden))

        length = sequences.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=sequences.device).tril()
        allowed = causal.unsqueeze(0) & mask.unsqueeze(1)            # (B, query, key)
        # A query at a padding position would see no key at all; let it see itself so softmax
        # stays finite. Those positions are never read.
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=sequences.device).unsqueeze(0)
        additive = torch.zeros(allowed.shape, dtype=hidden.dtype, device=hidden.device)
        additive = additive.masked_fill(~allowed, torch.finfo(hidden.dtype).min).unsqueeze(1)

        for layer in self.layers:
            out = layer(hidden, attention_mask=additive)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def user_vectors(self, sequences: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Return the hidden state at the last (right-aligned) position, shape ``(B, 384)``."""
        return self.encode(sequences, items)[:, -1, :]


def left_pad(histories: list, max_len: int, device=None) -> torch.Tensor:
    """Keep each history's last ``max_len`` item indices and left-pad with 0 into one tensor."""
    width = max(1, min(max_len, max((len(h) for h in histories), default=1)))
    out = torch.zeros(len(histories), width, dtype=torch.long)
    for row, history in enumerate(histories):
        tail = list(history[-width:])
        if tail:
            out[row, width - len(tail):] = torch.as_tensor(tail, dtype=torch.long)
    return out.to(device) if device is not None else out
