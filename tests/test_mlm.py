"""kdlib's masked LM: BERT's masking, the masked-LM objective on the label-free ``text`` task, its weights
as a run that later runs start from, and its best words for a position (TinyBERT's augmenter)."""
import math

import pytest
import torch

from kdlib.config import Experiment, FreshBert, MaskedLM
from kdlib.errors import KDLibError
from kdlib.methods import MaskedLanguageModel, make_objective
from kdlib.mlm import choose, mask_tokens, maskable

CLS, SEP, PAD, MASK = 101, 102, 0, 103


def batch():
    ids = torch.tensor([[CLS, 2000, 2001, 2002, SEP, PAD], [CLS, 2003, SEP, PAD, PAD, PAD]])
    return ids, (ids != PAD).long()


def test_masking_never_touches_special_tokens_and_chooses_one_per_row_at_least():
    ids, att = batch()
    ok = maskable(ids, att, (CLS, SEP, PAD))
    assert ok.tolist() == [[False, True, True, True, False, False], [False, True, False, False, False, False]]
    for seed in range(20):
        chosen = choose(ids, ok, 0.15, torch.Generator().manual_seed(seed))
        assert not (chosen & ~ok).any() and chosen.any(-1).all()
    masked, chosen = mask_tokens(ids, ok, MASK, 30522, 0.15, torch.Generator().manual_seed(0), replace=False)
    assert (masked[chosen] == MASK).all() and (masked[~chosen] == ids[~chosen]).all()


def test_bert_80_10_10_rule_and_determinism():
    ids = torch.full((200, 100), 2000)
    ok = torch.ones_like(ids, dtype=torch.bool)
    masked, chosen = mask_tokens(ids, ok, MASK, 30522, 0.15, torch.Generator().manual_seed(1))
    again, chosen2 = mask_tokens(ids, ok, MASK, 30522, 0.15, torch.Generator().manual_seed(1))
    assert torch.equal(masked, again) and torch.equal(chosen, chosen2)
    n = int(chosen.sum())
    assert abs(n / ids.numel() - 0.15) < 0.01
    as_mask = int((masked[chosen] == MASK).sum()) / n
    kept = int((masked[chosen] == 2000).sum()) / n
    assert abs(as_mask - 0.8) < 0.03 and abs(kept - 0.1) < 0.03  # the rest: random tokens
    assert (masked[~chosen] == 2000).all()


def test_masked_lm_loss_golden_value():
    from types import SimpleNamespace

    out = SimpleNamespace(logits=torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), targets=torch.tensor([0, 2]))
    want = (math.log(math.exp(2) + 2) - 2 + math.log(math.e + 2)) / 2
    assert MaskedLanguageModel().loss(out, {}).item() == pytest.approx(want, abs=1e-6)  # 0.8955...
    assert want == pytest.approx(0.895495, abs=1e-6)


def test_bad_masked_lm_settings_are_one_line():
    with pytest.raises(KDLibError, match="p must be > 0"):
        make_objective("mlm", {"p": 0})
    with pytest.raises(KDLibError, match="p must be in"):
        make_objective("mlm", {"p": 1.5})
    with pytest.raises(KDLibError, match="tune_layers must be an integer >= 0, got -1"):
        MaskedLM("minilm-l6", -1)
    with pytest.raises(KDLibError, match=r"task 'text' has no labels, and method 'finetune' needs them; valid "
                                         r"choices on it: mlm"):
        Experiment(chapter="x", profile="smoke", task="text", method="finetune", model=MaskedLM("minilm-l6"))
    with pytest.raises(KDLibError, match="has no dev score on task 'text'; set evals_per_epoch=0"):
        teacher = Experiment(chapter="t", profile="smoke", task="sst2", method="finetune",
                             model=FreshBert("minilm-l6", 1, 32, 2))
        Experiment(chapter="x", profile="smoke", task="text", method="tinybert", teacher=teacher,
                   model=FreshBert("minilm-l6", 1, 32, 2), evals_per_epoch=1)


def test_tune_layers_out_of_range():
    from kdlib.models import masked_lm

    with pytest.raises(KDLibError, match=r"tune_layers 7 is out of range; valid choices: 0..6"):
        masked_lm("minilm-l6", 7)
    m = masked_lm("minilm-l6", 1)
    trained = {n.split(".")[0] + "." + n.split(".")[3] if n.startswith("bert.encoder") else n.split(".")[0]
               for n, p in m.named_parameters() if p.requires_grad}
    assert trained == {"cls", "bert.5"}  # the head and the top layer; the embedding table stays frozen
    assert m.cls.predictions.decoder.weight is m.bert.embeddings.word_embeddings.weight


def test_a_masked_lm_run_on_the_smoke_text_task(store):
    from kdlib.mlm import TopKWords
    from kdlib.models import load_tokenizer
    from kdlib.runner import load_run_weights, run

    e = Experiment(chapter="mlm", profile="smoke", task="text", method="mlm", model=MaskedLM("minilm-l6"),
                   data="synthetic", train_size=128, dev_size=32, epochs=1, lr=1e-3, batch_size=32, max_length=32,
                   evals_per_epoch=2, keep_model=True)
    rec = run(e)
    assert [set(h) >= {"masked_accuracy", "masked_loss"} for h in rec["history"]] == [True, True]
    assert rec["best"]["masked_accuracy"] == max(h["masked_accuracy"] for h in rec["history"])
    assert rec["n_dev"] == 32 and rec["dev_logits"] == []
    model = load_run_weights(e)  # the kept weights, tied output layer included
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    tok = load_tokenizer("minilm-l6")
    words = TopKWords(model, tok)("the film is very good".split(), 4, 5)
    assert len(words) == 5 and all(w.isalpha() for w in words)
    # the batched answer is what one whole forward pass of the masked sentence gives
    with torch.no_grad():
        enc = tok("the film is very [MASK]", return_tensors="pt")
        logits = model(**enc).logits[0, enc["input_ids"][0].tolist().index(tok.mask_token_id)]
    ranked = [w for w in tok.convert_ids_to_tokens(logits.argsort(descending=True)[:200].tolist())
              if w.isalpha() and not w.startswith("##")]
    assert words == ranked[:5]
    # positions fetched together answer as asked one by one; only what was asked is computed
    sentence = "the film is very good".split()
    other = "a dull story".split()
    batched = TopKWords(model, tok, batch_rows=2)
    batched.prefetch([(sentence, [1, 4]), (other, [1])])
    key = " ".join(sentence)
    assert set(batched._answers) == {(key, 1), (key, 4), ("a dull story", 1)} and batched(sentence, 4, 5) == words
    alone = TopKWords(model, tok)
    assert alone(sentence, 1, 5) == batched(sentence, 1, 5) and set(alone._answers) == {(key, 1)}
    assert alone(other, 1, 5) == batched(other, 1, 5)


def test_every_seed_draws_its_own_fresh_student(store):
    from kdlib.runner import build_model

    def first_weight(seed):
        e = Experiment(chapter="x", profile="smoke", task="sst2", method="finetune",
                       model=FreshBert("minilm-l6", 1, 32, 2), data="synthetic", train_size=8, dev_size=8, seed=seed)
        return build_model(e, 2).bert.encoder.layer[0].attention.self.query.weight

    assert torch.equal(first_weight(0), first_weight(0))
    assert not torch.equal(first_weight(0), first_weight(1))


def test_gumbel_rewrite_one_hots_and_the_gradient_reaches_the_generator():
    from kdlib.mlm import embed_rewritten, gumbel_rewrite

    torch.manual_seed(0)
    ids, att = batch()
    chosen = torch.zeros_like(ids, dtype=torch.bool)
    chosen[0, 2] = chosen[1, 1] = True
    table = torch.nn.Embedding(30522, 8)
    logits = torch.randn(2, 30522, requires_grad=True)
    one_hots = gumbel_rewrite(logits, chosen)
    assert torch.equal(one_hots.sum(-1), torch.ones(2)) and set(one_hots.detach().unique().tolist()) == {0.0, 1.0}
    emb = embed_rewritten(table, ids, chosen, one_hots)
    new = one_hots.argmax(-1)
    assert torch.allclose(emb[0, 2], table.weight[new[0]]) and torch.allclose(emb[1, 1], table.weight[new[1]])
    assert torch.equal(emb[~chosen], table(ids)[~chosen])  # the tokens kept are looked up as usual
    emb.pow(2).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0  # straight-through: a gradient to the generator
    with pytest.raises(KDLibError, match="the generator's vocabulary has 30522 tokens and this model's 100"):
        embed_rewritten(torch.nn.Embedding(100, 8), ids.clamp(max=99), chosen, one_hots)
    with pytest.raises(KDLibError, match="tau must be > 0, got 0"):
        gumbel_rewrite(logits, chosen, tau=0)
