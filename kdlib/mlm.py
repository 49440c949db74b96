"""Masked language modelling: BERT's masking, and a masked LM's best words for a position.

kdlib's masked LM is ``minilm-l6`` with a masked-LM head fitted on the GLUE text (the ``text`` task;
``minilm-l6`` ships without a trained head), as a run of the ``mlm`` method on a
:class:`~kdlib.config.MaskedLM` model. Two later chapters use it:

* TinyBERT's augmenter (Jiao et al. 2020) replaces a one-piece word by one of the masked LM's ``K`` best
  words for its position (:func:`topk_words`);
* MATE-KD's generator (Rashid et al. 2021) is this masked LM, trained further to make the teacher and the
  student disagree.

BERT's masking (Devlin et al. 2019): choose each non-special token with probability ``p``; of the chosen,
80% become ``[MASK]``, 10% a random token, 10% stay as they are; the loss is the cross-entropy of the
original token at the chosen positions only. Evaluation masks every chosen token (no random or kept ones)
and scores the share of chosen tokens predicted exactly: the *masked-token accuracy*.
"""
from __future__ import annotations

import torch

from .errors import KDLibError


def choose(input_ids: torch.Tensor, maskable: torch.Tensor, p: float, generator=None) -> torch.Tensor:
    """A boolean tensor of the positions to predict: each ``maskable`` token with probability ``p``, and at
    least one per row that has any maskable token (a short sentence still teaches something)."""
    u = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    u = u.masked_fill(~maskable, 2.0)
    chosen = u < p
    first = u.argmin(-1, keepdim=True)  # each row's most likely position, maskable if any is
    forced = torch.zeros_like(chosen).scatter_(-1, first, True) & maskable
    return chosen | (forced & ~chosen.any(-1, keepdim=True))


def mask_tokens(input_ids: torch.Tensor, maskable: torch.Tensor, mask_id: int, vocab_size: int, p: float = 0.15,
                generator=None, replace: bool = True) -> tuple:
    """``(masked input ids, chosen positions)``: BERT's 80/10/10 rule when ``replace``, else every chosen
    token becomes ``mask_id`` (evaluation)."""
    chosen = choose(input_ids, maskable, p, generator)
    masked = input_ids.clone()
    if not replace:
        return masked.masked_fill(chosen, mask_id), chosen
    r = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, device=input_ids.device)
    masked = torch.where(chosen & (r < 0.8), torch.full_like(masked, mask_id), masked)
    masked = torch.where(chosen & (r >= 0.8) & (r < 0.9), random_ids, masked)
    return masked, chosen


def maskable(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids) -> torch.Tensor:
    """Real tokens that are not special ones ([CLS], [SEP], [PAD]...)."""
    special = torch.zeros_like(input_ids, dtype=torch.bool)
    for i in special_ids:
        special |= input_ids == i
    return attention_mask.bool() & ~special


def masked_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, chosen: torch.Tensor,
                  token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The vocabulary logits at the ``chosen`` positions only (rows in row-major order of ``chosen``): the
    encoder runs on every token, the output layer (vocabulary × width) only where it is read. A model that
    ``accelerate`` wrapped for several processes runs whole, so that its gradients are synchronised."""
    if hasattr(model, "module"):  # DistributedDataParallel: its own forward, whole
        return model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits[chosen]
    hidden = model.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
    return model.cls(hidden[chosen])


class TopKWords:
    """``(words, i, k) -> [k words]``: a masked LM's best whole words for position ``i`` of a sentence (the word
    there masked), as TinyBERT's augmenter asks for them. :meth:`prefetch` asks about positions of several
    sentences in batches (one row per position, the output layer read at the masked position only) and keeps
    those answers until the next prefetch; a position not fetched is asked about on its own."""

    def __init__(self, model, tokenizer, max_length: int = 128, k_max: int = 32, batch_rows: int = 256):
        self.model, self.tok, self.max_length, self.k_max = model.eval(), tokenizer, max_length, k_max
        self.batch_rows = batch_rows
        vocab = tokenizer.get_vocab()
        whole = torch.zeros(len(tokenizer), dtype=torch.bool)
        whole[[i for w, i in vocab.items() if w.isalpha() and not w.startswith("##")]] = True
        self.whole, self._answers = whole, {}

    def prefetch(self, items: list) -> None:
        """Answer every ``(words, positions)`` of ``items`` now, in batches of ``batch_rows`` rows; earlier
        answers are dropped (the augmenter works through its data block by block)."""
        rows = [(" ".join(words), words, i) for words, positions in items for i in positions]
        self._answers = {}
        for b in range(0, len(rows), self.batch_rows):
            chunk = rows[b:b + self.batch_rows]
            for (key, _, i), best in zip(chunk, self._ask([(words, i) for _, words, i in chunk])):
                self._answers[(key, i)] = best

    @torch.no_grad()
    def _ask(self, rows: list) -> list:
        """The ``k_max`` best whole words for each ``(words, position)`` of ``rows``, in one forward pass."""
        if not rows:
            return []
        texts = [" ".join(list(words[:i]) + [self.tok.mask_token] + list(words[i + 1:])) for words, i in rows]
        enc = self.tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length)
        at = enc["input_ids"] == self.tok.mask_token_id
        first = at & (at.cumsum(-1) == 1)  # one position per row (a row whose mask fell beyond max_length: none)
        logits = masked_logits(self.model, enc["input_ids"], enc["attention_mask"], first,
                               enc.get("token_type_ids")).float()
        logits = logits.masked_fill(~self.whole[: logits.size(-1)], float("-inf"))
        best = iter(logits.topk(self.k_max, dim=-1).indices.tolist())
        return [self.tok.convert_ids_to_tokens(next(best)) if first[r].any() else [] for r in range(len(rows))]

    def __call__(self, words: list, i: int, k: int) -> list:
        if k > self.k_max:
            raise KDLibError(f"k = {k} is more than the {self.k_max} words kept per position; valid choices: "
                             f"1..{self.k_max}")
        key = (" ".join(words), i)
        if key not in self._answers:
            self._answers[key] = self._ask([(words, i)])[0]
        return self._answers[key][:k]


def gumbel_rewrite(generator_logits: torch.Tensor, chosen: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """MATE-KD's rewritten tokens as one-hots (rows: the chosen positions, row-major): a straight-through
    Gumbel-softmax sample of the generator's logits at each chosen position (Jang et al. 2017), hard in the
    forward pass (exactly one token), soft in the backward pass, so gradients reach the generator through any
    model that reads the one-hots. ``generator_logits`` holds one row per chosen position."""
    if not tau > 0:
        raise KDLibError(f"the Gumbel-softmax temperature tau must be > 0, got {tau}")
    if generator_logits.size(0) != int(chosen.sum()):
        raise KDLibError(f"{generator_logits.size(0)} rows of generator logits for {int(chosen.sum())} chosen positions")
    return torch.nn.functional.gumbel_softmax(generator_logits.float(), tau=tau, hard=True)


def embed_rewritten(embeddings: torch.nn.Embedding, input_ids: torch.Tensor, chosen: torch.Tensor,
                    one_hots: torch.Tensor) -> torch.Tensor:
    """A model's input embeddings of a rewritten batch: the table's rows for the tokens kept, and
    one-hot × table at the chosen positions (the product carries the generator's gradient)."""
    if one_hots.size(-1) != embeddings.num_embeddings:
        raise KDLibError(f"the generator's vocabulary has {one_hots.size(-1)} tokens and this model's "
                         f"{embeddings.num_embeddings}; the generator, the teacher and the student must share one")
    out = embeddings(input_ids)
    mixed = one_hots.to(embeddings.weight.dtype) @ embeddings.weight  # bf16 under autocast, as a GPU runs it
    return out.masked_scatter(chosen.unsqueeze(-1), mixed.to(out.dtype))
