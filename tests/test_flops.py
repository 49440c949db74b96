"""Counting a run's work (kdlib.flops) and the gpu profile's estimate made from it (kdlib.dryrun.estimate)."""
import os

import pytest
import torch

from kdlib import flops


@pytest.fixture
def counting_on(monkeypatch):
    monkeypatch.setenv(flops.ENV, "1")


def test_a_linear_layers_step_is_counted_to_the_flop(counting_on):
    layer = torch.nn.Linear(8, 4, bias=False)
    x = torch.randn(3, 8, requires_grad=True)
    with flops.run_tally() as tally:
        with flops.counting("train", tokens=3):
            layer(x).sum().backward()
    # forward 2·3·8·4; backward twice that (the input's gradient and the weight's)
    assert tally["train"]["flops"] == 192 + 384
    assert tally["train"]["tokens"] == 3 and tally["train"]["calls"] == 1 and tally["train"]["ops"] > 3


def test_an_lstm_layer_is_counted_although_pytorch_does_not_count_it(counting_on):
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(5, 3, batch_first=True)
    x = torch.randn(2, 4, 5)
    with flops.run_tally() as tally:
        with flops.counting("eval", tokens=8):
            lstm(x)
    assert tally["eval"]["flops"] == 2 * 8 * (12 * 5 + 12 * 3)  # 8 tokens, a 4H × (I + H) product each


def test_nothing_is_counted_when_off_or_outside_a_run(monkeypatch):
    monkeypatch.delenv(flops.ENV, raising=False)
    with flops.run_tally() as tally:
        with flops.counting("train", 1):
            torch.ones(2, 2) @ torch.ones(2, 2)
    assert tally == {}
    monkeypatch.setenv(flops.ENV, "1")
    with flops.counting("train", 1):  # no run being made: a no-op, not an error
        torch.ones(2, 2) @ torch.ones(2, 2)


def test_a_run_made_inside_another_keeps_its_own_tally(counting_on):
    a = torch.ones(4, 4)
    with flops.run_tally() as outer:
        with flops.counting("train", 4):
            a @ a
        with flops.run_tally() as inner:
            with flops.counting("train", 4):
                a @ a
                a @ a
    assert outer["train"]["flops"] == 128 and inner["train"]["flops"] == 256


def test_an_estimate_covers_every_run_once_and_applies_its_assumptions(store, monkeypatch):
    """The smoke plan's teacher and students (synthetic data): one row per run of the plan and of the runs it
    depends on, the hours as the stated assumptions make them, and a KD run paying once for its teacher's
    forward over the training set (more FLOPs than the same student on labels)."""
    from kdlib.chapters import chapter_plan
    from kdlib.dryrun import H100_BF16_FLOPS, SECONDS_PER_OP, UTILISATION, estimate

    monkeypatch.delenv("KDLIB_MIXED_PRECISION", raising=False)
    full = chapter_plan("hinton", "smoke")
    kd = next(r for r in full if full[r][0].method == "kd")
    labels = next(r for r in full if full[r][0].method == "finetune" and full[r][0].teacher is None
                  and full[r][0].model == full[kd][0].model)
    plan = {labels: full[labels][:1], kd: full[kd][:2]}
    rows = estimate(plan, steps=2)
    assert len(rows) == 4 and len({r["hash"] for r in rows}) == 4  # the teacher, once
    for r in rows:
        assert r["flops"] > 0 and r["ops"] > 0 and 0 < r["seconds_fast"] < r["seconds_slow"]
        slow = max(r["flops"] / (H100_BF16_FLOPS * UTILISATION[1]), r["ops"] * SECONDS_PER_OP[1])
        assert r["seconds_slow"] == pytest.approx(slow, rel=1e-3)
    got = {r["hash"]: r for r in rows}
    first, second = (got[e.hash] for e in plan[kd])
    alone = got[plan[labels][0].hash]
    assert first["flops"] > alone["flops"]  # the first KD run makes the teacher's cache
    assert second["flops"] < first["flops"]  # the second reads it


def test_a_step_of_a_bert_student_costs_six_flops_per_weight_and_token(counting_on):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                     intermediate_size=256, vocab_size=100))
    ids = torch.randint(1, 100, (4, 16))
    with flops.run_tally() as tally:
        with flops.counting("train", ids.numel()):
            model(input_ids=ids, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    encoder = sum(p.numel() for n, p in model.named_parameters() if ".layer." in n and p.dim() == 2)
    per_token = tally["train"]["flops"] / tally["train"]["tokens"]
    # the encoder's matrix products (6 per weight and token) plus attention's scores and sums (small at 16 tokens)
    assert 6 * encoder <= per_token <= 1.2 * 6 * encoder


def test_bad_estimate_input_gets_one_line(capsys):
    from kdlib.cli import main

    assert main(["estimate", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'nope'" in err and "hinton" in err
    assert main(["estimate", "hinton", "--teacher", "bert-large"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'bert-large'" in err and "bert-base-uncased" in err


@pytest.mark.glue
@pytest.mark.skipif(not os.environ.get("KDLIB_GLUE_DIR"), reason="no local GLUE copy (KDLIB_GLUE_DIR)")
def test_the_committed_gpu_estimate_is_made_again_to_the_flop(store, monkeypatch):
    """Chapter 1's rows of the book's stored estimate (the gpu profile as planned here) come out again, every
    FLOP and operator call, from a fresh counted dry run in another store."""
    import json

    from kdlib.chapters.cost import KIND, gpu_estimate

    from .conftest import ROOT

    monkeypatch.delenv("KDLIB_MIXED_PRECISION", raising=False)
    committed = [json.loads(p.read_text()) for p in (ROOT / "results" / "gpu" / "cost" / "measurements").glob(
        f"{KIND}-*.json")]
    book = next(r for r in committed if r["config"]["teacher"] == "minilm-l6")
    again = gpu_estimate(["hinton"], teacher="minilm-l6", steps=book["config"]["steps"])
    assert again["config"]["chapters"]["hinton"] == book["config"]["chapters"]["hinton"]  # the same plan
    mine = [r for r in book["rows"] if r["chapter"] == "hinton"]
    assert again["rows"] == mine
