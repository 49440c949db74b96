"""The BiLSTM student of Tang et al. 2019 (*Distilling Task-Specific Knowledge from BERT into Simple Neural Networks*, §3).

Single sentences: word embeddings → one-layer BiLSTM → the final forward and backward states,
concatenated → ReLU fully connected layer → logits. Sentence pairs: the same BiLSTM encodes both
sentences (siamese, shared weights) into ``h1`` and ``h2``; ``[h1, h2, h1 ⊙ h2, |h1 − h2|]`` goes to the
ReLU layer. No attention, no layer norm.

The student reads the same batches as a BERT (``input_ids``, ``attention_mask``, ``token_type_ids``): for a
pair, the tokens of segment 0 are the first sentence and those of segment 1 the second. Padding never
reaches the LSTM (packed sequences), so a sentence's logits do not depend on its batch.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from transformers.modeling_outputs import SequenceClassifierOutput

from .errors import KDLibError


class BiLSTMClassifier(nn.Module):
    def __init__(self, vocab_size: int, num_labels: int, embed_dim: int = 300, hidden: int = 150, fc: int = 200,
                 pair: bool = False, padding_idx: int = 0, embeddings: torch.Tensor | None = None):
        super().__init__()
        self.pair, self.num_labels = pair, num_labels
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        if embeddings is not None:
            if tuple(embeddings.shape) != (vocab_size, embed_dim):
                raise KDLibError(f"embedding table of shape {tuple(embeddings.shape)} does not fit "
                                 f"vocabulary {vocab_size} x dimension {embed_dim}")
            self.embed.weight.data.copy_(embeddings)
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True, bidirectional=True)
        features = 2 * hidden * (4 if pair else 1)
        self.fc = nn.Linear(features, fc)
        self.out = nn.Linear(fc, num_labels)

    def encode(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Concatenated final forward and backward LSTM states, shape (batch, 2·hidden). The LSTM runs in fp32
        under autocast too: oneDNN's bf16 LSTM fails on a CPU without AVX-512 whenever a batch's lengths are
        all equal (found by CI's gpu dry run), and the BiLSTM is small."""
        packed = pack_padded_sequence(self.embed(ids).float(), lengths.clamp(min=1).cpu(), batch_first=True,
                                      enforce_sorted=False)
        with torch.autocast(device_type=ids.device.type, enabled=False):
            _, (h, _) = self.lstm(packed)
        return torch.cat([h[0], h[1]], dim=-1)

    @staticmethod
    def segment(ids: torch.Tensor, keep: torch.Tensor):
        """Move the tokens where ``keep`` is true to the front of each row; return (ids, lengths)."""
        order = torch.sort((~keep).int(), dim=1, stable=True).indices
        return ids.gather(1, order), keep.sum(1)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **unused) -> SequenceClassifierOutput:
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        has_b = bool(((types == 1) & mask).any())
        if has_b and not self.pair:
            raise KDLibError("a sentence-pair batch was given to the single-sentence BiLSTM; "
                             "build it with pair=True for pair tasks")
        a_ids, a_len = self.segment(input_ids, mask & (types == 0))
        h1 = self.encode(a_ids, a_len)
        if self.pair:
            b_ids, b_len = self.segment(input_ids, mask & (types == 1))
            h2 = self.encode(b_ids, b_len)
            features = torch.cat([h1, h2, h1 * h2, (h1 - h2).abs()], dim=-1)
        else:
            features = h1
        return SequenceClassifierOutput(logits=self.out(torch.relu(self.fc(features))))
