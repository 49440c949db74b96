"""The second-version core: one seed fixes a run across processes, teacher sources agree, a step owns its
modules and players, runs start from runs, two processes share a store safely, bad records and folders
are refused in one line."""
import json
import os
import subprocess
import sys

import pytest
import torch

import kdlib.runner as rn
from kdlib import KDLibError
from kdlib.config import BiLSTM, Experiment, FreshBert, FromRun, LayerCopy, Pretrained
from kdlib.runner import run
from kdlib.store import stored_path

from .conftest import ROOT

BASE = dict(chapter="test", profile="smoke", task="sst2", data="synthetic", train_size=48, dev_size=16, epochs=1,
            lr=1e-3, batch_size=16, max_length=20, seed=0)
MODELS = {"layer copy": LayerCopy("minilm-l6", (0,)), "fresh": FreshBert("minilm-l6", 1, 32, 2),
          "bilstm": BiLSTM("minilm-l6", 8, 8, "random"), "teacher fine-tune": Pretrained("minilm-l6")}


def exp(**kw):
    return Experiment(**{"method": "finetune", "model": MODELS["fresh"], **BASE, **kw})


def text_run(kind: str):
    """TinyBERT's label-free runs on the ``text`` task: kdlib's masked LM, and general distillation."""
    from kdlib.config import MaskedLM

    base = {**BASE, "task": "text", "evals_per_epoch": 0, "keep": "last"}
    if kind == "masked LM":
        return Experiment(**{**base, "method": "mlm", "model": MaskedLM("minilm-l6", 1), "evals_per_epoch": 1,
                             "keep": "best"})
    return Experiment(**{**base, "method": "tinybert", "model": FreshBert("minilm-l6", 1, 24, 12),
                         "teacher": Pretrained("minilm-l6"), "hparams": {"stage": "intermediate"}})


def mate_run():
    """MATE-KD: a generator (kdlib's masked LM, a run of its own) and the student, trained in turns."""
    from tests.test_mate import SMOKE, mlm, teacher

    hp = {"generator": mlm(train_size=32), "generator_steps": 1, "student_steps": 1, "generator_lr": 1e-3}
    return Experiment(chapter="test", task="sst2", method="mate", model=LayerCopy("minilm-l6", (0,)),
                      teacher=teacher().replace(train_size=32), hparams=hp, epochs=1, lr=1e-3,
                      **{**SMOKE, "train_size": 32})


def rewrites_run():
    """KD on the training set and the masked LM's rewrites, which carry no label (chapter 6's baseline)."""
    from kdlib.config import TinyBertAugment
    from tests.test_mate import SMOKE, mlm, teacher

    aug = TinyBertAugment(mlm(train_size=32), p_t=0.4, k=3, n_aug=2, labels="none")
    return Experiment(chapter="test", task="sst2", method="kd", model=LayerCopy("minilm-l6", (0,)),
                      teacher=teacher().replace(train_size=32), augment=aug, epochs=1, lr=1e-3,
                      **{**SMOKE, "train_size": 32})


RUNS = {**{k: (lambda m=m: exp(model=m)) for k, m in MODELS.items()},
        **{k: (lambda k=k: text_run(k)) for k in ("masked LM", "general distillation")}, "MATE-KD": mate_run,
        "KD on unlabelled rewrites": rewrites_run}


def _strip(rec):
    return {k: rec[k] for k in ("hash", "history", "dev_logits", "best")}


SCRIPT = """
import json, random, sys, torch
torch.manual_seed(int(sys.argv[2])); torch.randn(int(sys.argv[2]) + 3); random.random()
sys.path.insert(0, {root!r})
from tests.test_core import RUNS
from kdlib.runner import run
rec = run(RUNS[sys.argv[1]]())
print(json.dumps({{k: rec.get(k) for k in ("hash", "history", "losses", "dev_logits", "best", "examples")}}))
"""


@pytest.mark.parametrize("kind", list(RUNS))
def test_the_seed_fixes_a_run_across_processes(kind, tmp_path):
    """Two fresh processes with different prior RNG states, own stores: identical records."""
    out = []
    for i, prior in enumerate((1, 7)):
        env = {**os.environ, "KDLIB_RESULTS_DIR": str(tmp_path / f"r{i}"), "KDLIB_CACHE_DIR": str(tmp_path / f"c{i}")}
        proc = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(ROOT)), kind, str(prior)],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert out[0] == out[1]


def test_the_seed_fixes_a_run_within_a_process(store):
    first = _strip(run(exp(model=MODELS["layer copy"])))
    torch.manual_seed(123)
    torch.randn(50)
    again = _strip(run(exp(model=MODELS["layer copy"]), force=True))
    assert first == again


def test_teacher_sources_give_the_same_loss(store):
    """A loss reading the teacher's logits and [CLS] states gets the same value cached or live."""
    from kdlib.data import encode, synthetic_task
    from kdlib.methods import make_objective
    from kdlib.models import load_tokenizer
    from kdlib.teachers import CachedTeacher, LiveTeacher
    from kdlib.train import make_loader

    teacher = exp(chapter="teachers", keep_model=True, model=FreshBert("minilm-l6", 3, 32, 2))
    run(teacher)
    objective = make_objective("pkd", {"beta": 100.0, "mapping": "last"})
    tok = load_tokenizer("minilm-l6")
    enc = encode(tok, synthetic_task("sst2", "train", 48), 20)
    data = synthetic_task("sst2", "train", 48)
    s = exp(method="pkd", teacher=teacher, hparams={"beta": 100.0, "mapping": "last"},
            model=FreshBert("minilm-l6", 2, 32, 2))
    source, _ = rn.teacher_source(s, objective, data, None)
    student = rn.build_model(s, 2, tok)
    live = LiveTeacher(rn.teacher_model(teacher), ("cls", "logits"))
    batch = next(iter(make_loader(enc, 8, False)))
    idx = batch.pop("idx")
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    out = student(**inputs, output_hidden_states=True)
    a, b = dict(batch), dict(batch)
    source.fill(a, idx, "cpu")
    assert isinstance(source.cached, CachedTeacher) and source.live is None
    live.fill(b, idx, "cpu")
    assert objective.loss(out, a).item() == pytest.approx(objective.loss(out, b).item(), rel=2e-3)


def test_attention_scores_are_the_pre_softmax_of_the_attention(store):
    from kdlib.models import load_classifier, load_tokenizer
    from kdlib.teachers import forward_quantities

    model = load_classifier("minilm-l6", 2, attentions=True).eval()
    tok = load_tokenizer("minilm-l6")
    enc = tok(["a small test sentence", "another one"], padding=True, return_tensors="pt")
    with torch.no_grad():
        got = forward_quantities(model, dict(enc), ("attention_scores", "hidden", "embeddings"))
        probs = model(**enc, output_attentions=True).attentions
    scores = got["attention_scores"]  # (batch, layers, heads, T, T)
    assert scores.shape[1:3] == (6, 12) and got["hidden"].shape[1] == 7
    mask = (1 - enc["attention_mask"][:, None, None, :].float()) * -1e9
    for k in range(6):
        assert torch.allclose(torch.softmax(scores[:, k] + mask, -1), probs[k], atol=1e-5)


def _dies_in_epoch_2(cls):
    """``cls``, killed (as by Ctrl-C) when its second epoch starts."""

    class Dies(cls):
        def on_epoch_start(self, epoch, epochs):
            if epoch == 1:
                raise KeyboardInterrupt

    return Dies


def _projection_objective():
    """An objective with a trainable projection (TinyBERT's W_h shape): its parameters must be trained,
    saved with the state and restored on resume."""
    from torch import nn

    from kdlib.methods import FineTune

    class WithProjection(FineTune):
        teacher_quantities = ("cls",)
        student_kwargs = {"output_hidden_states": True}

        def build_modules(self, student, teacher_config=None):
            return {"proj": nn.Linear(student.config.hidden_size, teacher_config.hidden_size)}

        def loss(self, out, batch):
            h = self.modules["proj"](out.hidden_states[-1][:, 0])
            return super().loss(out, batch) + torch.nn.functional.mse_loss(h, batch["teacher_cls"][:, -1])

    return WithProjection


def test_a_trainable_projection_is_trained_and_resumed(store, monkeypatch):
    import kdlib.methods as m

    monkeypatch.setitem(m.METHODS, "proj_test", _projection_objective())
    teacher = exp(chapter="teachers", keep_model=True)
    s = exp(method="proj_test", teacher=teacher, epochs=2, evals_per_epoch=1, model=FreshBert("minilm-l6", 1, 16, 2))
    whole = run(s)
    assert whole["trainable_modules"] == {"proj": 16 * 32 + 32}  # student width 16 -> teacher width 32
    # killed in epoch 2, started again: the same record
    cls = m.METHODS["proj_test"]
    monkeypatch.setitem(m.METHODS, "proj_test", _dies_in_epoch_2(cls))
    with pytest.raises(KeyboardInterrupt):
        run(s, force=True)
    state = store / "cache" / "runs" / s.hash / "state"
    saved = list(state.glob("epoch-0/*"))
    assert saved and any("model_1" in p.name for p in saved)  # the projection's weights are in the state
    monkeypatch.setitem(m.METHODS, "proj_test", cls)
    resumed = run(s, force=True)
    assert _strip(resumed) == _strip(whole)


def _two_player_objective():
    from torch import nn

    from kdlib import losses
    from kdlib.methods import HintonKD
    from kdlib.steps import OptimArgs, Player, TrainingStep

    class Adversary(HintonKD):
        """A generator perturbs the student's input embeddings to *ascend* the KD divergence; the student
        descends it (MATE-KD's shape: players alternate, each with its optimiser and clipping)."""

        def build_modules(self, student, teacher_config=None):
            return {"generator": nn.Linear(student.config.hidden_size, student.config.hidden_size)}

        def make_step(self, student, args):
            objective = self

            class Step(TrainingStep):
                def step(self, batch, accelerator):
                    inputs = {k: batch[k] for k in ("token_type_ids", "attention_mask")}
                    emb = self.student.get_input_embeddings()(batch["input_ids"])
                    gen = self.modules["generator"]
                    # the generator's turn: ascend the divergence (maximize=True in its optimiser)
                    out = self.student(inputs_embeds=emb.detach() + 0.1 * torch.tanh(gen(emb.detach())), **inputs)
                    g_loss = losses.kd_kl(out.logits, batch["teacher_logits"], objective.T)
                    self.update(self.players[1], g_loss, accelerator)
                    # the student's turn: descend on clean and perturbed inputs
                    with torch.no_grad():
                        noise = 0.1 * torch.tanh(gen(emb.detach()))
                    out = self.student(inputs_embeds=self.student.get_input_embeddings()(batch["input_ids"]) + noise,
                                       **inputs)
                    s_loss = objective.loss(out, batch)
                    self.update(self.players[0], s_loss, accelerator)
                    return {"student": s_loss.item(), "generator": g_loss.item()}

            modules = {"student": student, "generator": self.modules["generator"]}
            players = [Player("student", ["student"], args),
                       Player("generator", ["generator"], OptimArgs(lr=1e-3, max_grad_norm=0.5, maximize=True))]
            return Step(self, modules, players)

    return Adversary


def test_a_two_player_objective_trains_and_resumes(store, monkeypatch):
    import kdlib.methods as m

    cls = _two_player_objective()
    monkeypatch.setitem(m.METHODS, "adv_test", cls)
    teacher = exp(chapter="teachers", keep_model=True)
    s = exp(method="adv_test", teacher=teacher, hparams={"T": 2.0}, epochs=2)
    whole = run(s)
    assert whole["losses"] and set(whole["losses"][0]) == {"step", "student", "generator"}
    monkeypatch.setitem(m.METHODS, "adv_test", _dies_in_epoch_2(cls))
    with pytest.raises(KeyboardInterrupt):
        run(s, force=True)
    monkeypatch.setitem(m.METHODS, "adv_test", cls)
    assert _strip(run(s, force=True)) == _strip(whole)


def test_a_run_starts_from_another_runs_weights(store):
    first = exp(method="finetune", model=FreshBert("minilm-l6", 1, 32, 2), keep="last", label="stage 1")
    second = exp(model=FromRun(first), task="stsb", lr=5e-4, label="stage 2")
    rec = run(second)
    assert rec["config"]["model"]["kind"] == "from_run" and rec["config"]["model"]["run"]["label"] == "stage 1"
    assert rec["config"]["model"]["run"]["hash"] == first.hash  # the second record names the first run
    assert second.hash != exp(model=FromRun(first.replace(seed=1)), task="stsb").hash  # nested in the hash
    assert stored_path(first) is not None and (store / "cache" / "models" / first.hash / "kdlib.json").is_file()
    # the second stage's encoder starts from the first's trained weights, its new head under its own seed
    from safetensors.torch import load_file

    w1 = load_file(str(store / "cache" / "models" / first.hash / "model.safetensors"))
    start = rn.build_model(second, 1)
    assert torch.equal(start.state_dict()["bert.encoder.layer.0.output.dense.weight"],
                       w1["bert.encoder.layer.0.output.dense.weight"])
    assert start.state_dict()["classifier.weight"].shape == (1, 32)


def test_recompute_remakes_a_shared_teacher_once(store, monkeypatch):
    teacher = exp(chapter="teachers", keep_model=True)
    students = [exp(method="kd", teacher=teacher, seed=s) for s in (0, 1, 2)]
    rn.run_all(students)
    made = []
    real = rn._make
    monkeypatch.setattr(rn, "_make", lambda e, *a, **k: made.append(e.hash) or real(e, *a, **k))
    monkeypatch.setenv("KDLIB_RECOMPUTE", "1")
    monkeypatch.setattr(rn, "_recomputed", set())
    rn.run_all(students)
    assert made.count(teacher.hash) == 1 and sorted(made) == sorted([teacher.hash] + [e.hash for e in students])


def test_two_processes_at_once_share_the_store(tmp_path):
    """Both exit 0, write identical records, and the shared teacher is trained once."""
    script = ("import sys; sys.path.insert(0, %r)\n"
              "import kdlib.runner as rn\nfrom tests.test_core import exp\n"
              "real = rn._make\n"
              "rn._make = lambda e, *a, **k: print('MADE', e.hash, flush=True) or real(e, *a, **k)\n"
              "t = exp(chapter='teachers', keep_model=True)\n"
              "rn.run(exp(method='kd', teacher=t, hparams={'T': 2.0}))\n") % str(ROOT)
    env = {**os.environ, "KDLIB_RESULTS_DIR": str(tmp_path / "r"), "KDLIB_CACHE_DIR": str(tmp_path / "c"),
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    records = sorted((tmp_path / "r").glob("smoke/*/*.json"))
    assert len(records) == 2  # one teacher, one student
    made = [line.split()[1] for o, _ in outs for line in o.splitlines() if line.startswith("MADE")]
    teacher = exp(chapter="teachers", keep_model=True)
    assert made.count(teacher.hash) == 1 and len(made) == 2  # the teacher and the student, each made once


def test_a_corrupt_record_is_one_line_and_results_goes_on(store, capsys):
    from kdlib.cli import main

    rec = run(exp())
    path = stored_path(exp())
    good = store / "results" / "smoke" / "test" / "good.json"
    good.write_text(json.dumps(rec))
    path.write_text("{not json")
    with pytest.raises(KDLibError, match=r"not a valid record \(not JSON.*delete it, or run again with --force"):
        run(exp())
    assert main(["results", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "bad record:" in out and str(path) in out and "accuracy" in out
    path.write_text(json.dumps({"hash": "x", "config": {}}))
    with pytest.raises(KDLibError, match="fields missing: best, history, dev_logits"):
        run(exp())


def test_an_unwritable_results_folder_is_refused_before_training(store, monkeypatch):
    blocker = store / "file"
    blocker.write_text("x")
    monkeypatch.setenv("KDLIB_RESULTS_DIR", str(blocker / "results"))
    monkeypatch.setattr(rn, "_make", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(KDLibError, match=r"the results folder .* cannot be written .*KDLIB_RESULTS_DIR"):
        run(exp())


@pytest.mark.parametrize("make,msg", [
    (lambda: LayerCopy("minilm-l6", (0, "a")), r"layer index 'a' is not an integer"),
    (lambda: LayerCopy("minilm-l6", (0, 1.5)), r"layer index 1.5 is not an integer"),
    (lambda: FreshBert("minilm-l6", 2, 30, 4), r"hidden size 30 is not divisible by 4 heads"),
    (lambda: exp(keep="first"), r"unknown keep 'first'; valid choices: best, last"),
    (lambda: exp(evals_per_epoch=0), r"keep='best' needs dev evaluations"),
    (lambda: exp(method="kd", teacher=exp(), hparams={"T": float("inf")}), r"temperature T must be a finite"),
])
def test_bad_configs_are_one_line(make, msg):
    with pytest.raises(KDLibError, match=msg):
        make()


@pytest.mark.slow
def test_two_cpu_processes_write_one_valid_record(tmp_path):
    """Under several processes (torchrun, gloo on CPU) everything predict returns is gathered: one record,
    with a dev output and a [CLS] summary for every dev example."""
    import shutil

    torchrun = shutil.which("torchrun") or str(ROOT / ".venv" / "bin" / "torchrun")
    if not os.path.exists(torchrun):
        pytest.skip("torchrun not found")
    script = tmp_path / "two.py"
    script.write_text("import sys; sys.path.insert(0, %r)\n"
                      "from tests.test_core import exp\nfrom kdlib.config import FreshBert\nfrom kdlib.runner import run\n"
                      "t = exp(chapter='teachers', keep_model=True, dev_size=17, model=FreshBert('minilm-l6', 2, 32, 2))\n"
                      "run(exp(method='pkd', teacher=t, hparams={'beta': 10.0}, dev_size=17, "
                      "model=FreshBert('minilm-l6', 2, 32, 2)))\n" % str(ROOT))
    env = {**os.environ, "KDLIB_RESULTS_DIR": str(tmp_path / "r"), "KDLIB_CACHE_DIR": str(tmp_path / "c"),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29533", str(script)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "r").glob("smoke/test/*.json")]
    assert len(records) == 1
    rec = records[0]
    assert rec["n_dev"] == 17 and len(rec["dev_logits"]) == 17 and rec["summary"]["cls_cosine"]
