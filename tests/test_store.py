import json

import pytest

import kdlib.runner as ex
from kdlib import KDLibError
from kdlib.config import BiLSTM, Experiment, FreshBert, TangAugment
from kdlib.runner import run
from kdlib.store import atomic_write_text, record_path

TINY = FreshBert("minilm-l6", 1, 32, 2)


def tiny(**kw):
    base = dict(chapter="test", profile="smoke", task="sst2", method="finetune", model=TINY, data="synthetic",
                train_size=64, dev_size=32, epochs=1, lr=1e-3, batch_size=16, max_length=24, seed=0)
    base.update(kw)
    return Experiment(**base)


def _boom(*a, **k):
    raise AssertionError("training should not have run")


def test_record_is_written_with_provenance(store):
    rec = run(tiny(label="tiny"))
    path = record_path(tiny())
    assert path == store / "results" / "smoke" / "test" / f"{tiny().hash}.json"
    on_disk = json.loads(path.read_text())
    assert on_disk == rec
    for key in ("config", "hash", "best", "history", "dev_logits", "wall_time_s", "hardware", "kdlib_version",
                "git_commit", "n_train", "n_dev", "created"):
        assert key in rec
    assert rec["n_train"] == 64 and len(rec["dev_logits"]) == 32 and 0 <= rec["best"]["accuracy"] <= 100
    assert rec["config"]["seed"] == 0 and rec["label"] == "tiny"


def test_cache_hit_loads_without_training(store, monkeypatch):
    first = run(tiny())
    monkeypatch.setattr(ex, "train", _boom)
    assert run(tiny()) == first


def test_force_and_recompute_train_again(store, monkeypatch):
    run(tiny())
    calls = []
    real = ex.train
    monkeypatch.setattr(ex, "train", lambda *a, **k: calls.append(1) or real(*a, **k))
    run(tiny(), force=True)
    monkeypatch.setenv("KDLIB_RECOMPUTE", "1")
    run(tiny())
    assert len(calls) == 2


def test_no_partial_file_after_an_exception(store, monkeypatch):
    monkeypatch.setattr(ex, "train", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError, match="killed"):
        run(tiny())
    folder = store / "results" / "smoke" / "test"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    target.write_text("old")
    import kdlib.store as st

    monkeypatch.setattr(st.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_hash_ignores_labels_and_chapter_but_not_settings():
    assert tiny().hash == tiny(label="x", chapter="other").hash
    assert tiny().hash != tiny(lr=2e-3).hash != tiny(seed=1).hash
    t = tiny()
    assert tiny(method="kd", teacher=t, hparams={"T": 2.0, "alpha": 0.5}).hash != \
        tiny(method="kd", teacher=t.replace(epochs=2), hparams={"T": 2.0, "alpha": 0.5}).hash


def test_kd_uses_cached_teacher_outputs(store, monkeypatch):
    teacher = tiny(chapter="teachers", keep_model=True, lr=3e-3, epochs=2)
    kd = tiny(method="kd", teacher=teacher, hparams={"T": 2.0, "alpha": 0.5})
    rec = run(kd)
    assert rec["teacher"]["hash"] == teacher.hash and rec["teacher"]["agreement"] is not None
    assert (store / "cache" / "models" / teacher.hash / "config.json").is_file()
    assert (store / "cache" / "models" / teacher.hash / "weights.sha256").is_file()
    assert len(list((store / "cache" / "teacher_outputs").glob("*.pt"))) == 1
    teacher_runs = []
    monkeypatch.setattr(ex, "teacher_model", lambda *a, **k: teacher_runs.append(1))
    run(kd.replace(seed=1))  # same teacher, same data: cached outputs, no teacher forward
    assert teacher_runs == []


@pytest.mark.parametrize("kw,msg", [
    (dict(method="distil"), r"unknown method 'distil'; valid choices: finetune, label_smoothing, kd"),
    (dict(method="kd", hparams={"T": 2.0}), r"method 'kd' needs a teacher experiment"),
    (dict(hparams={"T": 2.0}), r"unknown hyper-parameter 'T' for method 'finetune'; valid choices: none"),
    (dict(method="label_smoothing", hparams={"eps": 0.1}), r"valid choices: epsilon"),
    (dict(task="mnli2"), r"unknown task 'mnli2'"),
    (dict(data="hub"), r"unknown data source 'hub'; valid choices: glue, synthetic"),
])
def test_bad_experiment_configs(kw, msg):
    with pytest.raises(KDLibError, match=msg):
        tiny(**kw)


def test_bad_kd_hyper_parameters():
    t = tiny()
    with pytest.raises(KDLibError, match="temperature T must be a finite number > 0, got 0"):
        tiny(method="kd", teacher=t, hparams={"T": 0, "alpha": 0.5})
    with pytest.raises(KDLibError, match=r"alpha must be in \[0, 1\], got 1.2"):
        tiny(method="kd", teacher=t, hparams={"T": 2, "alpha": 1.2})


def test_hashes_are_stable():
    """Stored records are found by hash: a change here orphans every committed record (bump config.SCHEMA
    when a config's meaning changes, and re-make the records)."""
    from kdlib.chapters import chapter_plan

    assert tiny().hash == "c24dc8edc4a94037"
    assert chapter_plan("hinton", "cpu")["teacher"][0].hash == "5044d948a6c2c158"


def test_tagged_model_kinds_hash_apart():
    from kdlib.config import LayerCopy, Pretrained

    kinds = [Pretrained("minilm-l6"), LayerCopy("minilm-l6", (0, 1)), FreshBert("minilm-l6", 2, 32, 2),
             FreshBert("minilm-l6", 2, 32, 2, intermediate=64), BiLSTM("minilm-l6", 8, 8, "random")]
    assert len({tiny(model=m).hash for m in kinds}) == len(kinds)
    assert tiny(model=kinds[1]).to_dict()["model"] == {"kind": "layer_copy", "checkpoint": "minilm-l6",
                                                      "layers": [0, 1]}


def test_bilstm_student_on_an_augmented_transfer_set(store):
    """On the synthetic data the augmenter needs no NLTK tagger (the grammar gives the tags)."""
    teacher = tiny(chapter="teachers", keep_model=True, lr=3e-3, epochs=2)
    bilstm = BiLSTM("minilm-l6", 16, 24, "random")
    exp = tiny(method="logit_mse", teacher=teacher, hparams={"alpha": 1.0}, model=bilstm, optimizer="adadelta",
               lr=1.0, augment=TangAugment(0.1, 0.1, 0.25, 3))
    rec = run(exp)
    assert rec["n_train"] > 64 * 2  # originals plus their augmentations, all labelled by the teacher
    # the originals' teacher outputs are cached apart from the augmented ones and shared with plain runs
    outputs = sorted((store / "cache" / "teacher_outputs").glob("*.pt"))
    assert len(outputs) == 2
    plain = exp.replace(augment=None)
    run(plain)
    assert sorted((store / "cache" / "teacher_outputs").glob("*.pt")) == outputs
    assert rec["student_params"] - 30522 * 300 < 1e5 and 0 <= rec["best"]["accuracy"] <= 100
    assert len(list((store / "cache" / "augmented").glob("*.json"))) == 1
    with pytest.raises(KDLibError, match="unknown optimizer 'sgd'; valid choices: adamw, adadelta"):
        exp.replace(optimizer="sgd")
    with pytest.raises(KDLibError, match=r"p_mask \+ p_pos must be at most 1"):
        exp.replace(augment=TangAugment(0.6, 0.6, 0.25, 3))


def test_a_transfer_set_made_again_keeps_its_stored_record_if_it_is_the_same(store):
    """A fresh machine makes the augmented transfer set again (the cache is not committed): its stored
    measurement (wall time, machine, commit) stays byte for byte when the new set has the same digest, and is
    replaced when it differs."""
    import shutil

    exp = tiny(augment=TangAugment(0.1, 0.1, 0.25, 3))
    data = ex.split_data(exp, "train")
    first = ex.augmented(exp, data)
    [path] = (store / "results").rglob("augmentation-*.json")
    text = path.read_text()
    rec = json.loads(text)
    assert rec["n_new"] == len(first) > 0 and len(rec["sha256"]) == 64
    shutil.rmtree(store / "cache" / "augmented")
    again = ex.augmented(exp, data)
    assert again == first and path.read_text() == text
    atomic_write_text(path, json.dumps({**rec, "sha256": "0" * 64, "wall_time_s": -1.0}))
    shutil.rmtree(store / "cache" / "augmented")
    ex.augmented(exp, data)
    assert json.loads(path.read_text())["sha256"] == rec["sha256"] and json.loads(path.read_text())["wall_time_s"] >= 0


def test_stored_teacher_record_loads_without_its_weights(store, monkeypatch):
    """A fresh clone has the records but no cached weights: showing a teacher's record must not retrain it."""
    import shutil

    teacher = tiny(chapter="teachers", keep_model=True)
    first = run(teacher)
    shutil.rmtree(store / "cache" / "models")
    monkeypatch.setattr(ex, "train", _boom)
    assert run(teacher) == first


def test_weights_made_again_keep_the_stored_record_they_reproduce(store, capsys):
    """A fresh machine has the records but no weights: a run that needs a teacher's weights trains the teacher
    again, and when the re-made teacher reproduces its stored record (history, best, dev outputs) the record
    stays byte for byte as stored, so a page that shows its wall time or commit does not change."""
    import shutil

    teacher = tiny(chapter="teachers", keep_model=True)
    run(teacher)
    path = record_path(teacher)
    stored = json.loads(path.read_text())
    stored["wall_time_s"], stored["created"] = 12345.0, "2000-01-01T00:00:00+00:00"  # as another machine wrote it
    atomic_write_text(path, json.dumps(stored, indent=1) + "\n")
    before = path.read_text()
    shutil.rmtree(store / "cache" / "models")
    ex.trained_weights(teacher)
    assert path.read_text() == before
    assert (store / "cache" / "models").is_dir()
    assert "reproduces its stored record" in capsys.readouterr().out

    # another CPU's rounding (a unit in the 4th decimal of a logit and a metric) still reproduces it
    stored = json.loads(before)
    stored["dev_logits"][0][0] += 1e-4
    stored["best"]["accuracy"] += 1e-4
    atomic_write_text(path, json.dumps(stored, indent=1) + "\n")
    nudged = path.read_text()
    shutil.rmtree(store / "cache" / "models")
    ex.trained_weights(teacher)
    assert path.read_text() == nudged
    assert "equal to within 0.0005" in capsys.readouterr().out

    # a stored record that the re-made run does not reproduce is replaced, with a warning naming what differs
    stored["best"]["accuracy"] = -1.0
    atomic_write_text(path, json.dumps(stored, indent=1) + "\n")
    shutil.rmtree(store / "cache" / "models")
    ex.trained_weights(teacher)
    assert json.loads(path.read_text())["best"]["accuracy"] >= 0
    assert "differs from its stored record in best" in capsys.readouterr().out


@pytest.mark.parametrize("emb,trainable,dim", [("static", False, 384), ("tuned", True, 384), ("random", True, 300)])
def test_bilstm_embedding_choices(emb, trainable, dim):
    from kdlib.models import load_tokenizer
    from kdlib.steps import OptimArgs, make_optimizer

    exp = tiny(model=BiLSTM("minilm-l6", 8, 8, emb), optimizer="adadelta", lr=1.0)
    model = ex.build_model(exp, 2, load_tokenizer("minilm-l6"))
    assert model.embed.weight.requires_grad is trainable and model.embed.weight.size(1) == dim
    opt = make_optimizer(model.named_parameters(), OptimArgs(optimizer="adadelta"))
    optimised = {id(p) for g in opt.param_groups for p in g["params"]}
    assert (id(model.embed.weight) in optimised) is trainable
    if emb != "random":  # starts from the teacher's own word-embedding table
        from kdlib.models import load_classifier

        table = load_classifier("minilm-l6", 2).get_input_embeddings().weight
        assert model.embed.weight.detach().equal(table.detach())


def test_bad_bilstm_embeddings():
    with pytest.raises(KDLibError, match="unknown BiLSTM embeddings 'word2vec'; valid choices: static, tuned, random"):
        tiny(model=BiLSTM("minilm-l6", 8, 8, "word2vec"))


@pytest.mark.parametrize("method,hparams", [("pkd", {"beta": 10.0, "mapping": "last"}), ("alp", {"lam": 1.0})])
def test_intermediate_layer_methods_cache_teacher_cls_states(store, method, hparams):
    import torch

    teacher = tiny(chapter="teachers", keep_model=True, model=FreshBert("minilm-l6", 4, 32, 2), lr=3e-3)
    student = tiny(method=method, teacher=teacher, hparams=hparams, model=FreshBert("minilm-l6", 2, 32, 2))
    rec = run(student)
    assert 0 <= rec["best"]["accuracy"] <= 100
    shapes = sorted(tuple(torch.load(f)["cls"].shape) for f in (store / "cache" / "teacher_outputs").glob("*.pt"))
    n_dev = rec["n_dev"]
    assert shapes == sorted([(64, 5, 32), (n_dev, 5, 32)])  # train and dev: embeddings + 4 layers
    # the dev-set summary: every student layer (2) against every teacher layer (4)
    assert len(rec["summary"]["cls_cosine"]) == 2 and len(rec["summary"]["cls_cosine"][0]) == 4
    if method == "alp":
        assert all(abs(sum(row) - 1) < 1e-3 for row in rec["summary"]["alp_weights"])
        assert rec["teacher_floats_per_example"] == 2 + 4 * 32  # logits + every teacher layer
    else:
        assert rec["summary"]["pairs"] == [[1, 3]]  # last: student layer 1 -> teacher layer 3 of 4
        assert rec["teacher_floats_per_example"] == 2 + 1 * 32  # logits + one mapped layer


def test_measurement_is_stored_once_and_reloaded(store):
    from kdlib.store import measurement

    calls = []

    def compute():
        calls.append(1)
        return {"rows": [{"x": 1.5}]}

    assert measurement("probe", "smoke", "test", {"n": 3}, compute, stored_only=True) is None
    first = measurement("probe", "smoke", "test", {"n": 3}, compute)
    again = measurement("probe", "smoke", "test", {"n": 3}, compute)
    assert first == again and len(calls) == 1 and first["rows"] == [{"x": 1.5}]
    assert first["config"] == {"kind": "probe", "profile": "smoke", "n": 3} and first["git_commit"]
    path = store / "results" / "smoke" / "test" / "measurements" / f"probe-{first['hash']}.json"
    assert path.is_file()
    measurement("probe", "smoke", "test", {"n": 3}, compute, force=True)
    assert len(calls) == 2
    measurement("probe", "smoke", "test", {"n": 4}, compute)  # another config: another record
    assert len(list(path.parent.glob("probe-*.json"))) == 2


def test_pkd_on_a_regression_task_end_to_end(store):
    teacher = tiny(task="stsb", chapter="teachers", keep_model=True, model=FreshBert("minilm-l6", 4, 32, 2),
                   lr=3e-3)
    student = tiny(task="stsb", method="pkd", teacher=teacher, hparams={"beta": 100.0, "mapping": "skip"},
                   model=FreshBert("minilm-l6", 2, 32, 2))
    rec = run(student)
    assert set(rec["best"]) >= {"pearson", "spearman"} and all(len(row) == 1 for row in rec["dev_logits"])
    assert rec["teacher_floats_per_example"] == 1 + 32  # one scalar output + one mapped layer
    assert rec["teacher"]["agreement"] is None  # agreement is for classes, not scores


def test_reproduced_means_equal_to_within_a_rounding_unit():
    from kdlib.runner import _close

    assert _close({"a": [1.0, 2.0], "step": 5}, {"a": [1.0004, 2.0], "step": 5})
    assert not _close({"a": [1.0, 2.0]}, {"a": [1.001, 2.0]})  # beyond 5e-4
    assert not _close({"step": 5}, {"step": 6})
    assert not _close({"a": [1.0]}, {"a": [1.0, 2.0]})  # a different length
    assert not _close({"a": 1.0}, {"b": 1.0})  # different keys
    assert not _close("x", "y") and _close(None, None)
    assert not _close(True, 1.0)  # a flag is not a number


def test_records_name_the_cpu_kernels_they_ran_on():
    import torch

    from kdlib.store import hardware

    assert hardware()["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_records_name_the_cpu_maker_and_model(monkeypatch, tmp_path):
    """Two makers' CPUs with the same vector kernels can round a run differently (the BLAS library's code path
    differs), so a record says whose CPU made it, read from /proc/cpuinfo; nothing where that file is missing."""
    from pathlib import Path

    from kdlib import store

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2\n\n"
                    "processor\t: 1\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n")
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: real(info if str(self) == "/proc/cpuinfo" else self,
                                                                        *a, **k))
    store.cpu_model.cache_clear()
    try:
        assert store.cpu_model() == {"cpu_vendor": "AuthenticAMD", "cpu_model": "AMD EPYC 9R14"}
        assert {k: store.hardware()[k] for k in ("cpu_vendor", "cpu_model")} == store.cpu_model()
        info.unlink()
        store.cpu_model.cache_clear()
        assert store.cpu_model() == {} and "cpu_vendor" not in store.hardware()
    finally:
        store.cpu_model.cache_clear()
