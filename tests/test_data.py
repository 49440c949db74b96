import os

import pytest

from kdlib import KDLibError
from kdlib.data import TASKS, bucketed_batches, get_task, load_task, synthetic_task


def test_sst2_with_quote_at_start(glue_folder):
    d = load_task("sst2", "train", glue_folder)
    assert len(d) == 4 and d.text_b is None
    assert d.text_a[1] == '" quoted start without an end '  # quoting off: the row is not merged
    assert d.labels == [0, 1, 1, 0]


def test_env_variable_points_to_folder(glue_folder, monkeypatch):
    monkeypatch.setenv("KDLIB_GLUE_DIR", str(glue_folder))
    assert load_task("SST-2", "dev").labels == [1, 0]


def test_cola_has_no_header_and_no_final_newline(glue_folder):
    d = load_task("cola", "train", glue_folder)
    assert d.text_a == ["Our friends won't buy this analysis.", "One more pseudo generalization."]
    assert d.labels == [1, 0]


def test_mrpc_header_bom(glue_folder):
    d = load_task("mrpc", "train", glue_folder)
    assert d.text_b == ["He agreed .", "A dog ."] and d.labels == [1, 0]


def test_rte_string_labels_and_pairs(glue_folder):
    d = load_task("rte", "train", glue_folder)
    assert d.text_a[0] == '"Quoted premise.' and d.labels == [0, 1]


def test_stsb_regression(glue_folder):
    d = load_task("stsb", "train", glue_folder)
    assert d.labels == [4.2] and get_task("stsb").is_regression and get_task("stsb").num_labels == 1


def test_unknown_task():
    with pytest.raises(KDLibError, match=r"unknown task 'sst3'; valid choices: sst2, cola"):
        load_task("sst3", "train")


def test_unknown_split(glue_folder):
    with pytest.raises(KDLibError, match=r"unknown split 'test2'; valid choices: train, dev"):
        load_task("sst2", "test2", glue_folder)


def test_missing_split_names_the_files(glue_folder):
    with pytest.raises(KDLibError, match=r"has no dev.tsv for split 'dev' of task 'cola'; files there: train.tsv"):
        load_task("cola", "dev", glue_folder)


def test_missing_folder(tmp_path):
    with pytest.raises(KDLibError, match="does not exist"):
        load_task("sst2", "train", tmp_path / "nope")


def test_columns_that_do_not_match(glue_folder):
    (glue_folder / "QNLI").mkdir()
    (glue_folder / "QNLI" / "train.tsv").write_text("index\tsentence\tlabel\n0\ta\tentailment\n")
    with pytest.raises(KDLibError, match=r"do not match task 'qnli': it needs \['question', 'sentence', 'label'\]"):
        load_task("qnli", "train", glue_folder)


def test_bad_label_value(glue_folder):
    (glue_folder / "SST-2" / "train.tsv").write_text("sentence\tlabel\nok\t7\n")
    with pytest.raises(KDLibError, match=r"label '7' .* valid labels: 0, 1"):
        load_task("sst2", "train", glue_folder)


def test_subset_is_deterministic_and_ordered():
    d = synthetic_task("sst2", "train", 200, seed=0)
    a, b, c = d.subset(50, seed=1), d.subset(50, seed=1), d.subset(50, seed=2)
    assert a.text_a == b.text_a and a.text_a != c.text_a and len(a) == 50
    positions = [d.text_a.index(t) for t in a.text_a]
    assert positions == sorted(positions)
    assert d.subset(None) is d and d.subset(10_000) is d


def test_synthetic_is_deterministic_and_shaped():
    a, b = synthetic_task("mrpc", "train", 30, 0), synthetic_task("mrpc", "train", 30, 0)
    assert a.text_a == b.text_a and a.text_b == b.text_b and a.labels == b.labels
    assert synthetic_task("stsb", "dev", 5).labels[0] in (0.0, 5.0)
    assert set(synthetic_task("sst2", "train", 100).labels) == {0, 1}


def test_bucketed_batches_cover_everything_once():
    lengths = [(i * 37) % 50 for i in range(1000)]
    batches = bucketed_batches(lengths, 32, seed=0)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 5  # batches hold sentences of similar length
    assert batches == bucketed_batches(lengths, 32, seed=0) != bucketed_batches(lengths, 32, seed=1)


def test_every_task_has_a_metric():
    for spec in TASKS.values():
        assert spec.metrics and (spec.folder or spec.unlabelled)


needs_glue = pytest.mark.skipif(not os.environ.get("KDLIB_GLUE_DIR"), reason="KDLIB_GLUE_DIR not set")


@pytest.mark.glue
@needs_glue
@pytest.mark.parametrize("task,split,rows", [("sst2", "train", 67349), ("sst2", "dev", 872), ("cola", "train", 8551),
                                             ("cola", "dev", 1043), ("mrpc", "train", 3668), ("rte", "train", 2490),
                                             ("rte", "dev", 277), ("stsb", "dev", 1500), ("qnli", "dev", 5463),
                                             ("wnli", "train", 635)])
def test_real_glue_row_counts(task, split, rows):
    d = load_task(task, split)
    assert len(d) == rows


@pytest.mark.glue
@needs_glue
def test_real_glue_first_rows():
    assert load_task("sst2", "train").text_a[0] == "hide new secretions from the parental units "
    assert load_task("rte", "train").text_a[0] == "No Weapons of Mass Destruction Found in Iraq Yet."
    with pytest.raises(KDLibError, match="no train.tsv"):
        load_task("qnli", "train")


@pytest.mark.parametrize("content,msg", [
    ("", r"has no examples \(empty\)"),
    ("sentence\tlabel\n", r"has no examples \(only a header\)"),
    ("sentence\tlabel\na fine film \t1\nno label here\n", r"line 3 has 1 columns; task 'sst2' needs at least 2"),
])
def test_bad_tsv_files_are_one_line(tmp_path, content, msg):
    from kdlib.data import load_task

    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_text(content, encoding="utf-8")
    with pytest.raises(KDLibError, match=msg):
        load_task("sst2", "train", tmp_path)


def test_a_file_that_is_not_utf8_or_a_glue_dir_that_is_a_file(tmp_path, monkeypatch):
    from kdlib.data import load_task

    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_bytes(b"sentence\tlabel\ncaf\xe9 \t1\n")
    with pytest.raises(KDLibError, match=r"is not UTF-8 text \(byte 18\)"):
        load_task("sst2", "train", tmp_path)
    monkeypatch.setenv("KDLIB_GLUE_DIR", str(tmp_path / "SST-2" / "train.tsv"))
    with pytest.raises(KDLibError, match=r"\(from KDLIB_GLUE_DIR\) is a file, not a folder"):
        load_task("sst2", "train")


def test_unlabelled_text_is_every_training_sentence_once(glue_folder):
    from kdlib.data import unlabelled_text

    got = unlabelled_text(data_dir=glue_folder)
    assert got["tasks"] == ["sst2", "cola", "mrpc", "rte", "stsb"]
    assert "hide new secretions" in got["sentences"] and "He agreed ." in got["sentences"]  # both pair sides
    assert len(got["sentences"]) == len(set(got["sentences"])) and got["words"] == sum(len(s.split()) for s in got["sentences"])
    assert "it 's a charming journey ." not in got["sentences"]  # no dev sentence
    assert unlabelled_text(["sst2"], glue_folder)["tasks"] == ["sst2"]
    with pytest.raises(KDLibError, match="no task's train.tsv under"):
        unlabelled_text(["qnli"], glue_folder)


def test_the_text_task_is_label_free_with_held_out_dev_sentences(glue_folder):
    from kdlib.data import unlabelled_text

    (glue_folder / "SST-2" / "dev.tsv").write_text("sentence\tlabel\nit 's a charming journey . \t1\n"
                                                   "a gorgeous film \t1\nunflinchingly bleak \t0\n")
    train, dev = load_task("text", "train", glue_folder), load_task("text", "dev", glue_folder)
    assert train.text_b is None and set(train.labels) == {0} and len(train) == 16
    assert dev.text_a == ["it 's a charming journey .", "unflinchingly bleak"]  # "a gorgeous film" is a train sentence
    assert get_task("text").unlabelled and not get_task("sst2").unlabelled
    smoke = synthetic_task("text", "train", 5)
    assert smoke.text_b is None and smoke.labels == [0] * 5 and smoke.text_a == synthetic_task("text", "train", 5).text_a


@pytest.mark.glue
@needs_glue
def test_unlabelled_text_of_the_shared_glue_copy():
    from kdlib.data import unlabelled_text

    got = unlabelled_text()
    assert len(got["sentences"]) > 80_000 and got["words"] > 1_000_000
