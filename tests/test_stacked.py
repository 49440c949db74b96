"""Seeds trained as one stacked model (kdlib.stacked): each seed as it would be alone (dropout off: equal to
float rounding), its own clipping, its own record; a stack reproducible across processes; what cannot be
stacked says why in one line."""
import json
import subprocess
import sys

import pytest
import torch

from kdlib import KDLibError
from kdlib.config import BiLSTM, Experiment, LayerCopy
from kdlib.methods import make_objective
from kdlib.runner import _prepare, build_model, optim_args, run, train_args
from kdlib.stacked import clip_per_seed, train_stacked, unstackable
from kdlib.train import train

from .conftest import ROOT

# 70 examples in batches of 16: each seed's short batch (6) falls at its own step, so steps mix batch sizes
BASE = dict(chapter="test", profile="smoke", task="sst2", data="synthetic", train_size=70, dev_size=16, epochs=2,
            lr=1e-3, batch_size=16, max_length=20)
SEEDS = [0, 1, 2]
TEACHER = Experiment(method="finetune", model=LayerCopy("minilm-l6", (0, 1)), seed=0, keep_model=True, **BASE)


def kd(seed, **kw):
    return Experiment(method="kd", model=LayerCopy("minilm-l6", (0,)), teacher=TEACHER, seed=seed,
                      hparams={"T": 2.0, "alpha": 0.5}, **{**BASE, **kw})


def _no_dropout(model):
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


def test_stacked_seeds_equal_lone_runs_without_dropout(store):
    """Initial weights, data order (batch sizes mixed within a step), clipping, AdamW, evaluations and the best
    state of every seed: the stack gives each seed's lone run to float rounding (tolerance 1e-5 on losses, 1e-4
    on dev logits) when no dropout mask is drawn."""
    exps = [kd(s) for s in SEEDS]
    p = _prepare(exps[0], False)
    alone = []
    for e in exps:
        step = make_objective("kd", e.hp).make_step(_no_dropout(build_model(e, 2, p.tok)), optim_args(e))
        alone.append(train(step, p.train_enc, p.dev_enc, "sst2", train_args(e), teacher=p.source, progress=False))
    models = [_no_dropout(build_model(e, 2, p.tok)) for e in exps]
    stacked = train_stacked(p.objective, models, SEEDS, p.train_enc, p.dev_enc, "sst2", train_args(exps[0]),
                            optim_args(exps[0]), teacher=p.source, progress=False)
    assert len({round(r.history[-1]["train_loss"], 4) for r in alone}) == 3  # three different runs
    for a, b in zip(alone, stacked):
        assert [h["step"] for h in a.history] == [h["step"] for h in b.history]
        assert [h["train_loss"] for h in a.history] == pytest.approx([h["train_loss"] for h in b.history], abs=1e-5)
        assert [x["loss"] for x in a.losses] == pytest.approx([x["loss"] for x in b.losses], abs=1e-5)
        assert a.best["step"] == b.best["step"] and a.best["accuracy"] == b.best["accuracy"]
        assert torch.allclose(a.best_dev_logits, b.best_dev_logits, atol=1e-4)


def test_clipping_is_per_seed():
    """Each seed's gradients scaled as torch.nn.utils.clip_grad_norm_ scales them alone."""
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, 4, 5, generator=g) * torch.tensor([0.01, 1.0, 10.0]).view(3, 1, 1),
             torch.randn(3, 7, generator=g)]
    want = []
    for s in range(3):
        own = [torch.nn.Parameter(torch.zeros_like(x[s])) for x in grads]
        for p, x in zip(own, grads):
            p.grad = x[s].clone()
        torch.nn.utils.clip_grad_norm_(own, 1.0)
        want.append([p.grad for p in own])
    clip_per_seed(grads, 1.0)
    for s in range(3):
        for got, w in zip(grads, want[s]):
            assert torch.allclose(got[s], w, atol=1e-6)
    assert torch.allclose(grads[0][0], want[0][0]) and want[0][0].abs().sum() > 0  # the small seed unclipped


def test_a_stack_stores_one_record_per_seed(store):
    recs = [run(kd(s, stack=(0, 1, 2))) for s in SEEDS]
    assert [r["config"]["seed"] for r in recs] == SEEDS
    assert all(r["stacked"]["seeds"] == SEEDS for r in recs)
    assert len({json.dumps(r["dev_logits"]) for r in recs}) == 3
    assert kd(0, stack=(0, 1, 2)).hash != kd(0).hash  # its dropout is not the lone run's
    assert "stack" not in kd(0).hash_dict() and "stack" not in kd(0).to_dict()  # lone runs' hashes as before


SCRIPT = """
import json, sys, torch
torch.manual_seed(int(sys.argv[1])); torch.randn(int(sys.argv[1]) + 3)
sys.path.insert(0, {root!r})
from tests.test_stacked import kd
from kdlib.runner import run
rec = run(kd(1, stack=(0, 1)))
print(json.dumps({{k: rec[k] for k in ("hash", "history", "losses", "dev_logits", "best")}}))
"""


def test_a_stack_is_reproducible_across_processes(tmp_path):
    """Dropout on: two fresh processes, with different prior random states, give the same record."""
    out = []
    for i, prior in enumerate((1, 5)):
        env = {"KDLIB_RESULTS_DIR": str(tmp_path / f"r{i}"), "KDLIB_CACHE_DIR": str(tmp_path / f"c{i}"),
               "KDLIB_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(ROOT)), str(prior)], env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert out[0] == out[1]


def _bert():
    from kdlib.models import fresh_student

    return fresh_student(100, 2, 1, 32, 2, 64, seed=0)


def _bilstm():
    from kdlib.bilstm import BiLSTMClassifier

    return BiLSTMClassifier(100, 2, embed_dim=8, hidden=8, fc=8)


@pytest.mark.parametrize("method,hp,net,why", [
    ("finetune", {}, _bilstm, r"the student \(BiLSTMClassifier\) is not a BERT-style transformer"),
    ("tinybert", {"stage": "intermediate"}, _bert, r"method TinyBERT runs a step or a forward pass of its own"),
])
def test_what_cannot_be_stacked_says_why(method, hp, net, why):
    assert unstackable(make_objective("kd", {"T": 2.0, "alpha": 0.5}), _bert()) is None
    objective, model = make_objective(method, hp), net()
    with pytest.raises(KDLibError, match="these runs cannot be stacked: " + why):
        train_stacked(objective, [model, model], [0, 1], None, None, "sst2", train_args(kd(0)), optim_args(kd(0)))


@pytest.mark.parametrize("stack", [(1, 2), (0,), (0, 0, 1), (0, "1")])
def test_a_bad_stack_is_one_line(stack):
    with pytest.raises(KDLibError, match=r"stack must be two or more distinct integer seeds including this run's "
                                         r"seed 0; got"):
        kd(0, stack=stack)


def test_a_stack_runs_under_bf16_autocast(store, monkeypatch):
    """The GPU's path (bf16 autocast), checked on the CPU: the stack trains and its losses are finite."""
    monkeypatch.setenv("KDLIB_MIXED_PRECISION", "bf16")
    rec = run(kd(0, stack=(0, 1), epochs=1))
    assert rec["history"] and all(x["loss"] == x["loss"] and abs(x["loss"]) < 10 for x in rec["losses"])
