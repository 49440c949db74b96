"""Transfer-set augmenters: new unlabelled examples for the teacher to label.

:class:`TangAugmenter` is the rule-based augmenter of Tang et al. 2019 (*Distilling Task-Specific
Knowledge from BERT into Simple Neural Networks*, §3.3). For each word
draw ``X ~ U[0, 1]``:

* ``X < p_mask`` → the word becomes ``[MASK]``;
* ``p_mask <= X < p_mask + p_pos`` → a random training-corpus word with the same part-of-speech tag
  (NLTK's averaged-perceptron tagger; the two operations never touch the same word);

then, with probability ``p_ng``, the example is replaced by one of its n-grams, ``n`` uniform in 1..5.
``n_iter`` samples are drawn per example and duplicates (and copies of the original) dropped. For
sentence pairs the augmenter cycles: first sentence only, second only, both.

Augmenters are deterministic for a given seed. Later chapters (TinyBERT, MATE-KD) add their own beside
this one with the same ``augment(data) -> TaskData`` shape.
"""
from __future__ import annotations

import os
import random
from collections import defaultdict
from dataclasses import dataclass

from .data import TaskData, synthetic_pos_tag_sents
from .errors import KDLibError

MASK = "[MASK]"
TAGGER = "averaged_perceptron_tagger_eng"
NLTK_ENV = "KDLIB_NLTK_DATA"


def pos_tagger():
    """``nltk.pos_tag_sents``, with the tagger data found locally (``KDLIB_NLTK_DATA``/``NLTK_DATA``) or,
    where a network exists, downloaded once with ``nltk.download``."""
    import nltk

    for env in (NLTK_ENV, "NLTK_DATA"):
        path = os.environ.get(env)
        if path and path not in nltk.data.path:
            nltk.data.path.insert(0, path)
    try:
        nltk.data.find(f"taggers/{TAGGER}")
    except LookupError:
        try:
            ok = nltk.download(TAGGER, quiet=True, raise_on_error=True)
        except Exception:  # no network, or the index is unreachable
            ok = False
        if not ok:
            raise KDLibError(f"NLTK tagger {TAGGER!r} not found and could not be downloaded; point "
                             f"{NLTK_ENV} (or NLTK_DATA) at an nltk_data folder that has taggers/{TAGGER}") from None
    return nltk.pos_tag_sents


def tagger_for(data: TaskData):
    """The tagger for ``data``: the synthetic grammar's own tags for the ``smoke`` profile's synthetic data
    (no download, no NLTK data needed), NLTK's tagger for real text."""
    return synthetic_pos_tag_sents if data.source == "synthetic" else pos_tagger()


@dataclass(frozen=True)
class TangAugmenter:
    p_mask: float = 0.1
    p_pos: float = 0.1
    p_ng: float = 0.25
    n_iter: int = 20
    max_ngram: int = 5
    seed: int = 0

    def __post_init__(self):
        for name in ("p_mask", "p_pos", "p_ng"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise KDLibError(f"{name} must be in [0, 1], got {value}")
        if self.p_mask + self.p_pos > 1:
            raise KDLibError(f"p_mask + p_pos must be at most 1, got {self.p_mask} + {self.p_pos} = "
                             f"{self.p_mask + self.p_pos:g}")
        if int(self.n_iter) != self.n_iter or self.n_iter < 1:
            raise KDLibError(f"n_iter must be an integer >= 1, got {self.n_iter}")
        if self.max_ngram < 1:
            raise KDLibError(f"max_ngram must be >= 1, got {self.max_ngram}")

    # -- the three operations -------------------------------------------------------------------------
    def perturb(self, words: list, tags: list, pools: dict, rng: random.Random) -> list:
        """Masking and POS-guided replacement, at most one of them per word."""
        out = []
        for word, tag in zip(words, tags):
            x = rng.random()
            if x < self.p_mask:
                out.append(MASK)
            elif x < self.p_mask + self.p_pos and pools.get(tag):
                out.append(rng.choice(pools[tag]))
            else:
                out.append(word)
        return out

    def ngram(self, words: list, rng: random.Random) -> list:
        """With probability p_ng, a random n-gram of the words (n uniform in 1..max_ngram)."""
        if not words or rng.random() >= self.p_ng:
            return words
        n = min(rng.randint(1, self.max_ngram), len(words))
        start = rng.randint(0, len(words) - n)
        return words[start:start + n]

    def sample(self, words: list, tags: list, pools: dict, rng: random.Random) -> list:
        return self.ngram(self.perturb(words, tags, pools, rng), rng)

    # -- whole data sets ------------------------------------------------------------------------------
    @staticmethod
    def tagged(data: TaskData, tagger=None):
        """Words and POS tags of every side of every example, and the tag → words pools (one entry per
        occurrence, so replacements follow corpus frequency)."""
        tagger = tagger or tagger_for(data)
        sides = [data.text_a] + ([data.text_b] if data.text_b is not None else [])
        words = [[t.split() for t in side] for side in sides]
        tags = [[[tag for _, tag in sent] for sent in tagger(side)] for side in words]
        pools = defaultdict(list)
        for side_w, side_t in zip(words, tags):
            for ws, ts in zip(side_w, side_t):
                for w, t in zip(ws, ts):
                    pools[t].append(w)
        return words, tags, pools

    def samples(self, i: int, words, tags, pools, rng: random.Random) -> list:
        """The new, distinct samples of example ``i``: a list of tuples, one string per side."""
        sides = len(words)
        seen = {tuple(" ".join(side[i]) for side in words)}
        out_all = []
        for it in range(self.n_iter):
            which = (0,) if sides == 1 else ((0,), (1,), (0, 1))[it % 3]  # pairs: first, second, both
            out = tuple(" ".join(self.sample(words[s][i], tags[s][i], pools, rng)) if s in which
                        else " ".join(words[s][i]) for s in range(sides))
            if out in seen or not all(out):
                continue
            seen.add(out)
            out_all.append(out)
        return out_all

    def augment(self, data: TaskData, tagger=None, progress: bool = False) -> TaskData:
        """The augmented transfer set (new examples only). Labels are copied from the source example for
        reference; distillation relabels every example with the teacher."""
        from tqdm import tqdm

        words, tags, pools = self.tagged(data, tagger)
        rng = random.Random(self.seed)
        new_a, new_b, labels = [], [] if data.text_b is not None else None, []
        for i in tqdm(range(len(data)), desc=f"augmentation of {data.task}", disable=not progress, mininterval=10):
            for out in self.samples(i, words, tags, pools, rng):
                new_a.append(out[0])
                if new_b is not None:
                    new_b.append(out[1])
                labels.append(data.labels[i])
        return TaskData(data.task, f"{data.split}+tang", new_a, new_b, labels, data.source)

    def examples(self, data: TaskData, indices, tagger=None) -> list:
        """``(original, samples)`` for a few examples, drawn as :meth:`augment` draws them (POS pools from the
        whole of ``data``), from a generator seeded by ``seed`` and the example's index."""
        words, tags, pools = self.tagged(data, tagger)
        return [(tuple(" ".join(side[i]) for side in words),
                 self.samples(i, words, tags, pools, random.Random(f"{self.seed}:{i}"))) for i in indices]


# ---------------------------------------------------------------------------------------------------
# TinyBERT (Jiao et al. 2020, Algorithm 1): each word, with probability p_t, becomes one of K candidates —
# a masked LM's predictions for a word that is one WordPiece, the nearest neighbours in a word-vector table
# for a word of several pieces. N_a samples per sentence.
# ---------------------------------------------------------------------------------------------------
class WordCandidates:
    """Replacement candidates for a word in its sentence, as TinyBERT's augmenter draws them.

    ``mlm_topk(words, i, k)`` returns a masked LM's ``k`` best whole words for position ``i`` (the word masked);
    multi-piece words get the ``k`` nearest whole-word tokens to the mean of their pieces' vectors in
    ``embeddings`` (vocabulary × width; the paper uses GloVe, kdlib the teacher's input-embedding table)."""

    def __init__(self, tokenizer, embeddings, mlm_topk=None):
        import torch

        self.tok, self.mlm_topk = tokenizer, mlm_topk
        vocab = tokenizer.get_vocab()
        words = sorted((i, w) for w, i in vocab.items() if w.isalpha() and not w.startswith("##"))
        self.word_ids = torch.tensor([i for i, _ in words])
        self.words = [w for _, w in words]
        table = embeddings.detach().float()
        self.table = table
        self.unit = torch.nn.functional.normalize(table[self.word_ids], dim=-1)

    def pieces(self, word: str) -> list:
        return self.tok.tokenize(word)

    def neighbours(self, word: str, k: int) -> list:
        import torch

        ids = self.tok.convert_tokens_to_ids(self.pieces(word))
        v = torch.nn.functional.normalize(self.table[ids].mean(0), dim=-1)
        sims = self.unit @ v
        best = sims.topk(min(k + 1, len(self.words))).indices.tolist()
        return [self.words[j] for j in best if self.words[j] != word.lower()][:k]

    def prefetch(self, items: list) -> None:
        """Ask the masked LM about the one-piece words of ``items`` (``(words, positions)``, several sentences) in
        one batch, before the augmenter asks about them one by one."""
        if self.mlm_topk is not None and hasattr(self.mlm_topk, "prefetch"):
            self.mlm_topk.prefetch([(words, [i for i in positions if len(self.pieces(words[i])) == 1])
                                    for words, positions in items])

    def __call__(self, words: list, i: int, k: int) -> list:
        if len(self.pieces(words[i])) == 1:
            if self.mlm_topk is None:
                return []
            return [w for w in self.mlm_topk(words, i, k + 1) if w != words[i].lower()][:k]
        return self.neighbours(words[i], k)


def word_candidates(model, tokenizer, max_length: int) -> WordCandidates:
    """TinyBERT's replacement candidates from a trained masked LM (:mod:`kdlib.mlm`): its best words for a
    one-piece word, the nearest neighbours in its input-embedding table for the others."""
    from .mlm import TopKWords

    return WordCandidates(tokenizer, model.get_input_embeddings().weight, TopKWords(model, tokenizer, max_length))


#: the words TinyBERT's augmenter never replaces, as its code lists them (NLTK's English stop words)
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him his
himself she she's her hers herself it it's its itself they them their theirs themselves this that that'll these
those am is are was were be been being have has had having do does did doing a an the and but if or because as
until while of at by for with about against between into through during before after above below to from up
down in out on off over under again further then once here there all any both each few more most other some
such no nor not only own same so than too very s t can will just don don't should should've now d ll m o re ve
y ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma
mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won won't
wouldn wouldn't 's 're""".split())


def content_word(word: str) -> bool:
    """Whether TinyBERT's augmenter may replace ``word``: letters only, and not a stop word (the paper's
    code; punctuation, numbers and "the" stay as they are)."""
    return word.isascii() and word.isalpha() and word.lower() not in STOP_WORDS


@dataclass(frozen=True)
class TinyBertAugmenter:
    p_t: float = 0.4
    k: int = 15
    n_aug: int = 20
    seed: int = 0
    #: replace only :func:`content_word` words, as the paper's code does (False: any word, as its text reads)
    content_words_only: bool = True

    def __post_init__(self):
        if not 0 <= self.p_t <= 1:
            raise KDLibError(f"p_t must be in [0, 1], got {self.p_t}")
        for name in ("k", "n_aug"):
            value, low = getattr(self, name), 1 if name == "k" else 0
            if int(value) != value or value < low:
                raise KDLibError(f"{name} must be an integer >= {low}, got {value}")

    def chosen(self, words: list, rng: random.Random) -> list:
        """The positions one sample replaces: each word it may replace, with probability ``p_t``."""
        return [i for i, w in enumerate(words)
                if (not self.content_words_only or content_word(w)) and rng.random() < self.p_t]

    def plans(self, words: list, rng: random.Random) -> list:
        """The positions of each of the ``n_aug`` samples of a sentence, drawn before any candidate is asked for."""
        return [self.chosen(words, rng) for _ in range(self.n_aug)]

    def sample(self, words: list, candidates, rng: random.Random, chosen: list | None = None) -> list:
        """One augmented sentence: each chosen word (:meth:`chosen`) replaced by one of its K candidates."""
        out = list(words)
        for i in self.chosen(words, rng) if chosen is None else chosen:
            options = candidates(words, i, self.k)
            if options:
                out[i] = rng.choice(options)
        return out

    def apply(self, words: list, plans: list, candidates, rng: random.Random) -> list:
        """The new, distinct sentences of ``plans`` (the original and repeats dropped)."""
        seen, out = {" ".join(words)}, []
        for plan in plans:
            s = " ".join(self.sample(words, candidates, rng, plan))
            if s not in seen:
                seen.add(s)
                out.append(s)
        return out

    def samples(self, words: list, candidates, rng: random.Random) -> list:
        """Up to ``n_aug`` new, distinct sentences of one sentence: its positions drawn first, their candidates
        fetched in one question (``candidates.prefetch``, where it has one), then the replacements."""
        plans = self.plans(words, rng)
        _prefetch(candidates, [(words, plans)])
        return self.apply(words, plans, candidates, rng)

    def examples(self, words: list, candidates, index: int) -> dict:
        """What the augmenter does to one sentence (``words``, example ``index`` of its data): the candidates of
        each word it may replace, and samples drawn as :meth:`augment` draws them, from a generator seeded by
        ``seed`` and the index."""
        positions = [i for i, w in enumerate(words) if not self.content_words_only or content_word(w)]
        _prefetch(candidates, [(words, [positions])])
        cands = {words[i]: candidates(words, i, self.k) for i in positions}
        rng = random.Random(f"{self.seed}:{index}")  # as samples() draws them, on the candidates fetched above
        return {"sentence": " ".join(words), "candidates": cands, "samples": self.apply(words, self.plans(words, rng),
                                                                                   candidates, rng)}

    def augment(self, data: TaskData, candidates, progress: bool = False, block: int = 64) -> TaskData:
        """The augmented transfer set (new examples only; labels copied for reference). A pair is augmented
        one side at a time, the other side kept as it is, as the paper's code does (which, unlike this, pairs
        the second side's samples with the *last* sample of the first). Examples go in blocks of ``block``: the
        positions of a block are drawn first and their candidates fetched in one question (one masked-LM
        batch for the block), then the replacements are drawn."""
        from tqdm import tqdm

        rng = random.Random(self.seed)
        new_a, new_b, labels = [], [] if data.text_b is not None else None, []
        bar = tqdm(total=len(data), desc=f"TinyBERT augmentation of {data.task}", disable=not progress, mininterval=10)
        for start in range(0, len(data), block):
            jobs = []  # (example, side, words, plans)
            for i in range(start, min(start + block, len(data))):
                sides = (data.text_a[i],) if data.text_b is None else (data.text_a[i], data.text_b[i])
                for which, text in enumerate(sides):
                    words = text.split()
                    jobs.append((i, which, words, self.plans(words, rng)))
            _prefetch(candidates, [(words, plans) for _, _, words, plans in jobs])
            for i, which, words, plans in jobs:
                for s in self.apply(words, plans, candidates, rng):
                    new_a.append(s if which == 0 else data.text_a[i])
                    if new_b is not None:
                        new_b.append(s if which == 1 else data.text_b[i])
                    labels.append(data.labels[i])
            bar.update(min(block, len(data) - start))
        bar.close()
        return TaskData(data.task, f"{data.split}+tinybert", new_a, new_b, labels, data.source)


def _prefetch(candidates, items: list) -> None:
    """Fetch the candidates of every planned position of ``items`` (``(words, plans)``) in one question, where
    ``candidates`` can be asked that way (``prefetch(items)`` of ``(words, positions)``)."""
    if hasattr(candidates, "prefetch"):
        candidates.prefetch([(words, sorted({i for plan in plans for i in plan})) for words, plans in items])
