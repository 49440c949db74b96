"""The gpu profile checked without a GPU (kdlib.dryrun): one run per code path of a gpu plan, a few steps each,
on synthetic data, under bf16 autocast, with a stand-in of the teacher's shape where its weights cannot be
fetched, into a throw-away store."""
import os

import pytest

from kdlib.errors import KDLibError

TINY = {"bert-base-uncased": dict(hidden_size=32, num_hidden_layers=12, num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=512, vocab_size=30522)}


@pytest.fixture
def gpu_bert(monkeypatch):
    """The gpu profile as a machine with the hub would plan it (a BERT-base teacher, 6-layer students)."""
    monkeypatch.setenv("KDLIB_GPU_TEACHER", "bert-base-uncased")


def test_one_run_per_code_path_with_the_plans_own_settings(gpu_bert):
    from kdlib.chapters import chapter_plan
    from kdlib.dryrun import distinct_runs, path_of, shrink

    plan = chapter_plan("annealing", "gpu")
    runs = distinct_runs(plan)
    total = {e.hash for exps in plan.values() for e in exps}
    assert len({path_of(e) for _, e in runs}) == len(runs) < len(total)
    assert {e.task for _, e in runs} >= {"sst2", "stsb", "mrpc"}  # single sentences, scores, pairs
    row, chain = next((r, e) for r, e in runs if e.method == "finetune" and e.model.kind == "from_run")
    small = shrink(chain, 3, {"bert-base-uncased": "/tmp/standin"})
    assert (small.data, small.train_size, small.epochs) == ("synthetic", 3 * chain.batch_size, 1)
    assert (small.batch_size, small.max_length, small.lr) == (chain.batch_size, chain.max_length, chain.lr)
    stage1 = small.model.run  # the run it starts from is shrunk too, its method's settings kept
    assert stage1.data == "synthetic" and stage1.hp == chain.model.run.hp and stage1.method == "annealing"
    assert stage1.model.checkpoint == "/tmp/standin" and stage1.teacher.model.checkpoint == "/tmp/standin"
    capped = shrink(chain, 3, {}, batch=4)  # fewer examples per step, everywhere down the chain; the rest as planned
    assert chain.batch_size > 4 and (capped.batch_size, capped.train_size, capped.max_length) == (4, 12, chain.max_length)
    assert capped.model.run.batch_size == 4 and capped.model.run.teacher.batch_size == 4
    assert shrink(chain, 3, {}, batch=10_000).batch_size == chain.batch_size  # a cap, never a larger batch


def test_a_dry_run_trains_every_path_with_a_standin_and_keeps_nothing(gpu_bert, store, monkeypatch):
    from kdlib import dryrun
    from kdlib.chapters import chapter_plan
    from kdlib.store import results_dir

    monkeypatch.setattr(dryrun, "SHAPES", TINY)  # the stand-in's shape, small for the test
    monkeypatch.delenv("KDLIB_MIXED_PRECISION", raising=False)
    plan = chapter_plan("hinton", "gpu")
    plan = {r: plan[r] for r in ("teacher", "student, KD T=2 α=0.5")}
    seen = []
    from kdlib import train as train_mod

    original = train_mod.mixed_precision

    def probe():  # what training asks for: the autocast path is taken on this CPU
        seen.append(original())
        return seen[-1]

    monkeypatch.setattr(train_mod, "mixed_precision", probe)
    rows = dryrun.dry_run(plan, steps=1, batch=2)
    assert [r["row"] for r in rows] == list(plan) and all(r["steps"] == 1 and r["batch"] == 2 for r in rows)
    assert rows[0]["standin"] == ["bert-base-uncased"] and set(seen) == {"bf16"}
    assert not results_dir().exists() or not any(results_dir().rglob("*.json"))  # nothing kept
    assert "KDLIB_MIXED_PRECISION" not in os.environ  # the environment is restored


def test_bad_dry_run_input_is_one_line(gpu_bert, monkeypatch, capsys):
    from kdlib import dryrun
    from kdlib.cli import main
    from kdlib.train import mixed_precision

    with pytest.raises(KDLibError, match="steps must be an integer >= 1, got 0"):
        dryrun.dry_run({"x": []}, steps=0)
    with pytest.raises(KDLibError, match="the plan has no runs to check"):
        dryrun.dry_run({}, steps=1)
    with pytest.raises(KDLibError, match=r"batch must be an integer >= 1 or None \(each run's own\), got 0"):
        dryrun.dry_run({"x": []}, steps=1, batch=0)
    with pytest.raises(KDLibError, match="a counted dry run takes each run's own batch size"):
        dryrun.dry_run({"x": []}, steps=1, batch=4, count=True)
    assert main(["experiment", "hinton", "--profile", "gpu", "--batch", "4"]) == 2
    assert "--batch 4 is for a --dry-run only" in capsys.readouterr().err
    assert main(["experiment", "hinton", "--profile", "gpu", "--dry-run", "--force"]) == 2
    assert "--dry-run stores no result; it takes neither --force nor --shard" in capsys.readouterr().err
    with pytest.raises(KDLibError, match="no stand-in shape for checkpoint 'roberta-large'; valid choices: bert-base"):
        dryrun.standin("roberta-large", None)
    monkeypatch.setenv("KDLIB_MIXED_PRECISION", "fp8")
    with pytest.raises(KDLibError, match="unknown KDLIB_MIXED_PRECISION 'fp8'; valid choices: no, bf16"):
        mixed_precision()


def test_the_gpu_plans_fit_a_six_layer_teacher_where_no_hub_answers(monkeypatch):
    """Without the hub the gpu profile's teacher is minilm-l6: TinyBERT's student must then have a depth that
    divides 6 (its uniform map), as its cpu student does (found by the dry run in CI)."""
    from kdlib.chapters import chapter_plan, tinybert
    from kdlib.profiles import get_profile

    monkeypatch.setenv("KDLIB_GPU_TEACHER", "minilm-l6")
    s = tinybert.setting(get_profile("gpu"))
    assert 6 % s.layers == 0 and s.n_aug == 20 and s.stage_epochs["sst2"] == (10, 3)
    assert chapter_plan("tinybert", "gpu")
    monkeypatch.setenv("KDLIB_GPU_TEACHER", "bert-base-uncased")
    assert tinybert.setting(get_profile("gpu")).layers == 4  # TinyBERT4 under BERT-base
