import os
import random
import re
from collections import Counter

import pytest

from kdlib import KDLibError
from kdlib.augment import MASK, TangAugmenter, pos_tagger
from kdlib.data import TaskData, synthetic_task

WORDS = [f"w{i}" for i in range(20)]
TAGS = ["X"] * 20
POOLS = {"X": ["REPL"]}


def fake_tagger(sents):
    return [[(w, "X") for w in s] for s in sents]


def rates(aug, n=2000):
    rng = random.Random(0)
    c = Counter()
    for _ in range(n):
        c.update("mask" if w == MASK else "pos" if w == "REPL" else "keep"
                 for w in aug.perturb(WORDS, TAGS, POOLS, rng))
    total = sum(c.values())
    return {k: v / total for k, v in c.items()}


@pytest.mark.parametrize("p_mask,p_pos", [(0.1, 0.1), (0.3, 0.05), (0.0, 0.5)])
def test_operation_probabilities_are_honoured(p_mask, p_pos):
    r = rates(TangAugmenter(p_mask=p_mask, p_pos=p_pos))
    assert abs(r.get("mask", 0) - p_mask) < 0.01 and abs(r.get("pos", 0) - p_pos) < 0.01


def test_mask_and_pos_never_on_the_same_word():
    # with p_mask + p_pos = 1 every word is either masked or replaced, never both, never kept
    r = rates(TangAugmenter(p_mask=0.4, p_pos=0.6), n=500)
    assert set(r) == {"mask", "pos"} and abs(r["mask"] - 0.4) < 0.02


def test_ngram_probability_and_length():
    aug = TangAugmenter(p_ng=0.25)
    rng = random.Random(1)
    lengths = [len(aug.ngram(WORDS, rng)) for _ in range(4000)]
    cut = [n for n in lengths if n != len(WORDS)]
    assert abs(len(cut) / len(lengths) - 0.25) < 0.02
    assert set(cut) == {1, 2, 3, 4, 5}
    sample = aug.ngram(WORDS, random.Random(3))
    text = " ".join(WORDS)
    assert " ".join(sample) in text  # a contiguous n-gram


def test_deterministic_under_a_seed_and_drops_duplicates():
    data = TaskData("sst2", "train", ["a b c d e f", "g h i j"], None, [1, 0])
    a = TangAugmenter(n_iter=10, seed=7).augment(data, fake_tagger)
    b = TangAugmenter(n_iter=10, seed=7).augment(data, fake_tagger)
    c = TangAugmenter(n_iter=10, seed=8).augment(data, fake_tagger)
    assert a.text_a == b.text_a and a.text_a != c.text_a
    assert len(set(a.text_a)) == len(a.text_a) <= 20
    assert not set(a.text_a) & set(data.text_a)


def test_pairs_cycle_first_second_both():
    data = TaskData("mrpc", "train", ["the first sentence is here"], ["and the second one there"], [1])
    aug = TangAugmenter(p_mask=0.5, p_pos=0.0, p_ng=0.0, n_iter=3, seed=0)
    out = aug.augment(data, fake_tagger)
    assert len(out) == 3
    assert out.text_b[0] == data.text_b[0] and out.text_a[0] != data.text_a[0]  # first only
    assert out.text_a[1] == data.text_a[0] and out.text_b[1] != data.text_b[0]  # second only
    assert out.text_a[2] != data.text_a[0] and out.text_b[2] != data.text_b[0]  # both


@pytest.mark.parametrize("kw,msg", [
    (dict(p_mask=1.2), r"p_mask must be in \[0, 1\], got 1.2"),
    (dict(p_pos=-0.1), r"p_pos must be in \[0, 1\], got -0.1"),
    (dict(p_mask=0.6, p_pos=0.5), r"p_mask \+ p_pos must be at most 1, got 0.6 \+ 0.5 = 1.1"),
    (dict(n_iter=0), r"n_iter must be an integer >= 1, got 0"),
])
def test_bad_parameters(kw, msg):
    with pytest.raises(KDLibError, match=msg):
        TangAugmenter(**kw)


def test_missing_tagger_without_network(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    monkeypatch.delenv("NLTK_DATA", raising=False)
    monkeypatch.delenv("KDLIB_NLTK_DATA", raising=False)
    with pytest.raises(KDLibError, match=r"NLTK tagger 'averaged_perceptron_tagger_eng' not found and could not be downloaded"):
        pos_tagger()


NLTK_DIR = os.environ.get("KDLIB_NLTK_DATA") or os.environ.get("NLTK_DATA")


@pytest.mark.glue
@pytest.mark.skipif(not NLTK_DIR, reason="no local nltk_data (KDLIB_NLTK_DATA)")
def test_real_tagger_replaces_with_same_tag():
    tag = pos_tagger()
    data = TaskData("sst2", "train", ["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate clichés ."],
                    None, [1, 0])
    out = TangAugmenter(p_mask=0.0, p_pos=1.0, p_ng=0.0, n_iter=5, seed=0).augment(data, tag)
    assert len(out) > 0
    for sent in out.text_a:
        assert len(sent.split()) in (7, 8)  # word for word replacement keeps the length


def test_examples_are_new_distinct_and_deterministic():
    data = synthetic_task("mrpc", "train", 30)
    aug = TangAugmenter(0.3, 0.3, 0.5, n_iter=4, seed=2)
    first = aug.examples(data, [0, 7], tagger=fake_tagger)
    assert first == aug.examples(data, [0, 7], tagger=fake_tagger)
    for i, (original, samples) in zip([0, 7], first):
        assert original == (data.text_a[i], data.text_b[i])
        assert samples and len(set(samples)) == len(samples) and original not in samples


def test_smoke_data_is_tagged_by_its_own_grammar(monkeypatch):
    """The synthetic (smoke) data needs no NLTK tagger: its words' tags come from the grammar that wrote them."""
    from kdlib import augment
    from kdlib.data import SYNTHETIC_TAGS, synthetic_task

    def no_tagger():
        raise AssertionError("the smoke profile must not load NLTK's tagger")

    monkeypatch.setattr(augment, "pos_tagger", no_tagger)
    data = synthetic_task("sst2", "train", 20)
    words, tags, pools = augment.TangAugmenter(n_iter=2).tagged(data)
    assert all(t == SYNTHETIC_TAGS[w] for ws, ts in zip(words[0], tags[0]) for w, t in zip(ws, ts))
    assert {"JJ", "NN", "DT"} <= set(pools)
    extra = augment.TangAugmenter(n_iter=2, seed=1).augment(data)
    assert len(extra) > 0


# --- TinyBERT's augmenter ---------------------------------------------------------------------------
def _fake_candidates(words, i, k):
    return [f"{words[i]}{j}" for j in range(k)]


def test_tinybert_augmenter_is_deterministic_and_keeps_the_length():
    from kdlib.augment import TinyBertAugmenter
    from kdlib.data import synthetic_task

    data = synthetic_task("sst2", "train", 12)
    a = TinyBertAugmenter(p_t=0.4, k=3, n_aug=4, seed=7).augment(data, _fake_candidates)
    b = TinyBertAugmenter(p_t=0.4, k=3, n_aug=4, seed=7).augment(data, _fake_candidates)
    assert a.text_a == b.text_a and 0 < len(a) <= 4 * len(data)
    assert TinyBertAugmenter(p_t=0.4, k=3, n_aug=4, seed=8).augment(data, _fake_candidates).text_a != a.text_a
    aug = TinyBertAugmenter(p_t=0.4, k=3, n_aug=4, seed=7)
    for text in data.text_a:  # one word in, one word out: the length never changes
        assert all(len(s.split()) == len(text.split()) for s in aug.samples(text.split(), _fake_candidates, random.Random(1)))
    assert TinyBertAugmenter(p_t=0.0, n_aug=3).augment(data, _fake_candidates).text_a == []  # nothing new
    every = TinyBertAugmenter(p_t=1.0, k=2, n_aug=1, seed=0).samples(["cat", "dog"], _fake_candidates, random.Random(0))
    assert len(every) == 1 and all(w[:-1] in ("cat", "dog") and w[-1] in "01" for w in every[0].split())


def test_tinybert_augmenter_replaces_content_words_only_as_the_papers_code():
    """Stop words, punctuation and numbers stay (the paper's code); ``content_words_only=False`` replaces any word."""
    from kdlib.augment import TinyBertAugmenter, content_word

    assert [content_word(w) for w in ["film", "Film", "the", "isn't", ",", "1990", "n't", "café"]] == \
        [True, True, False, False, False, False, False, False]
    words = "the film , made in 1990 , is not good".split()
    kept = {0, 2, 4, 5, 6, 7, 8}  # the , in 1990 , is not
    for seed in range(5):
        out = TinyBertAugmenter(p_t=1.0, k=2, n_aug=1).samples(words, _fake_candidates, random.Random(seed))[0].split()
        assert all(out[i] == words[i] for i in kept) and all(out[i] != words[i] for i in set(range(len(words))) - kept)
    every = TinyBertAugmenter(p_t=1.0, k=2, n_aug=1, content_words_only=False).samples(words, _fake_candidates,
                                                                                          random.Random(0))[0].split()
    assert all(a != b for a, b in zip(every, words))


@pytest.mark.parametrize("kwargs, message", [
    ({"p_t": 1.5}, "p_t must be in [0, 1], got 1.5"),
    ({"n_aug": -1}, "n_aug must be an integer >= 0, got -1"),
    ({"k": 0}, "k must be an integer >= 1, got 0"),
])
def test_tinybert_augmenter_bad_input(kwargs, message):
    from kdlib.augment import TinyBertAugmenter

    with pytest.raises(KDLibError, match=re.escape(message)):
        TinyBertAugmenter(**kwargs)


def test_word_candidates_from_the_mlm_or_the_embedding_table():
    """A one-piece word asks the masked LM; a word of several pieces gets its nearest whole words."""
    import torch

    from kdlib.augment import WordCandidates
    from kdlib.models import load_tokenizer

    tok = load_tokenizer("minilm-l6")
    torch.manual_seed(0)
    table = torch.randn(tok.vocab_size, 16)
    asked = []

    def mlm(words, i, k):
        asked.append(words[i])
        return ["movie", words[i], "story"][:k]

    cands = WordCandidates(tok, table, mlm)
    assert cands(["the", "film", "works"], 1, 2) == ["movie", "story"] and asked == ["film"]
    multi = "unflinchingly"
    assert len(tok.tokenize(multi)) > 1
    near = cands([multi], 0, 5)
    assert len(near) == 5 and all(w.isalpha() and w != multi for w in near) and asked == ["film"]
    assert near == cands.neighbours(multi, 5)


def test_tinybert_augments_a_pair_one_side_at_a_time():
    from kdlib.augment import TinyBertAugmenter
    from kdlib.data import synthetic_task

    data = synthetic_task("mrpc", "train", 6)
    out = TinyBertAugmenter(p_t=0.5, k=3, n_aug=2, seed=0).augment(data, _fake_candidates)
    assert len(out.text_a) == len(out.text_b) == len(out.labels) > 0
    for a, b, y in zip(out.text_a, out.text_b, out.labels):
        i = next(j for j in range(len(data)) if a == data.text_a[j] or b == data.text_b[j])
        assert (a == data.text_a[i]) != (b == data.text_b[i]) and y == data.labels[i]  # exactly one side changed


def test_tinybert_augmenter_asks_about_a_sentence_once():
    """The positions of all N_a samples are drawn first and fetched in one question: every replaced position
    was fetched, and nothing else was."""
    from kdlib.augment import TinyBertAugmenter

    class Fetching:
        def __init__(self):
            self.batches = []

        def prefetch(self, items):
            self.batches.append([i for _, positions in items for i in positions])

        def __call__(self, words, i, k):
            return _fake_candidates(words, i, k)

    words = "good film with a bad plot and fine actors".split()
    cands = Fetching()
    out = TinyBertAugmenter(p_t=0.3, k=2, n_aug=4).samples(words, cands, random.Random(3))
    changed = {i for s in out for i, (a, b) in enumerate(zip(s.split(), words)) if a != b}
    assert len(cands.batches) == 1 and changed and changed <= set(cands.batches[0])
    assert set(cands.batches[0]) <= {0, 1, 4, 5, 7, 8}  # content words only


def test_tinybert_augmentation_fetches_a_block_at_a_time():
    from kdlib.augment import TinyBertAugmenter
    from kdlib.data import synthetic_task

    calls = []

    class Fetching:
        def prefetch(self, items):
            calls.append(len(items))

        def __call__(self, words, i, k):
            return _fake_candidates(words, i, k)

    data = synthetic_task("mrpc", "train", 12)
    out = TinyBertAugmenter(p_t=0.4, k=2, n_aug=2).augment(data, Fetching(), block=5)
    assert calls == [10, 10, 4] and len(out) > 0  # 5 + 5 + 2 pairs, two sides each
    again = TinyBertAugmenter(p_t=0.4, k=2, n_aug=2).augment(data, _fake_candidates, block=5)
    assert (again.text_a, again.text_b) == (out.text_a, out.text_b)  # fetching changes no draw
