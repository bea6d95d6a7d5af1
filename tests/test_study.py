"""study.py: prompts from the validation text only, and the whole study end to end on a tiny model."""
import csv

import pytest

import checkpoint
import study
from conftest import META, make_tiny_model

# A made-up scene in the 65 symbols of Tiny Shakespeare, repeated to 1,440 characters:
# the last 10% (144 characters) is its validation text, room for --quick's 32 + 40.
SCENE = ("FIRST PLAYER:\nWhat light is this that burns upon the hill?\n\n"
         "SECOND PLAYER:\nA candle, friend; 'tis late, and I am cold.\n\n")
TEXT = SCENE * 12


@pytest.fixture
def files(tmp_path):
    """A tiny checkpoint, the scene as input.txt, and the output paths, in tmp_path."""
    ckpt, data = tmp_path / "tiny.pt", tmp_path / "input.txt"
    checkpoint.save(str(ckpt), make_tiny_model(), META)
    data.write_text(TEXT)
    return {"ckpt": ckpt, "data": data, "csv": tmp_path / "out" / "study.csv", "plot": tmp_path / "out" / "study.png"}


def run(files, *flags):
    return study.main(["--ckpt", str(files["ckpt"]), "--data", str(files["data"]),
                       "--out_csv", str(files["csv"]), "--out_plot", str(files["plot"]), *flags])


def test_prompts_start_at_lines_of_the_validation_text():
    val = "tail\nONE:\nfirst\nTWO:\nsecond\n"  # lines start at 5, 10, 16 and 21; 28 characters
    # a span of 6 fits at 0..22; 3 evenly spaced positions i * 23 // 3 = 0, 7, 15 move on to 5, 10, 16
    starts = study.prompt_starts(val, 3, span=6)
    assert starts == [5, 10, 16]
    assert [val[s:s + 4] for s in starts] == ["ONE:", "firs", "TWO:"]


def test_prompts_that_cannot_reach_a_line_start_stay_where_they_are():
    # a span of 4 fits at 0..7; positions 0 and 4; the only line start, 9, leaves no room for 4
    assert study.prompt_starts("abcdefgh\nij", 2, span=4) == [0, 4]


def test_prompts_never_come_from_the_training_text(meta):
    text = "a" * 900 + "b" * 100  # training text "a" * 900, validation text "b" * 100
    prompts, humans, vocabulary = study.make_prompts(text, meta["stoi"], num_prompts=5, prompt_length=8, length=12)
    b = meta["stoi"]["b"]
    assert prompts.shape == (5, 8) and humans.shape == (5, 12)
    assert (prompts == b).all() and (humans == b).all()
    assert vocabulary == {"a" * 900}


def test_whole_words_leave_out_the_words_cut_at_either_end():
    assert study.whole_words("O Rom", "eo, Romeo! wherefore art th") == ["romeo", "wherefore", "art"]
    assert study.whole_words("O ", "Romeo, Romeo\n") == ["romeo", "romeo"]  # both whole: a space before, a newline after
    assert study.whole_words("O Rom", "eo") == []


def test_quick_study_end_to_end(files, capsys):
    assert run(files, "--quick") == 0
    out = capsys.readouterr().out
    names = [name for name, _ in study.STRATEGIES] + [study.HUMAN]
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(names)  # heading and one row each
    assert all(name in out for name in names)
    assert "took" in out
    with open(files["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [row["strategy"] for row in rows] == names
    for row in rows:
        assert 1 <= float(row["perplexity"]) and 0 <= float(row["repetition"]) <= 1
        assert all(0 <= float(row[f"distinct_{n}"]) <= 1 for n in (1, 2, 3))
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in files["csv"].parent.iterdir()) == ["study.csv", "study.png"]  # no .tmp left


def test_the_same_seed_gives_the_same_numbers(files, capsys):
    run(files, "--quick", "--num_prompts", "1")
    first = files["csv"].read_text()
    run(files, "--quick", "--num_prompts", "1")
    assert files["csv"].read_text() == first


def test_human_row_is_measured_on_the_validation_text(files):
    run(files, "--quick")
    with open(files["csv"]) as f:
        human = next(row for row in csv.DictReader(f) if row["strategy"] == study.HUMAN)
    assert float(human["real_words"]) == 1.0  # the scene repeats: every validation word is a training word


@pytest.mark.parametrize("flag, value, message", [
    ("--ckpt", "missing.pt", "error: no checkpoint at"),
    ("--data", "missing.txt", "error: --data: no data file at"),
])
def test_a_missing_file_is_one_line_on_stderr(files, capsys, flag, value, message):
    files[flag[2:]] = files["ckpt"].parent / value
    assert run(files, "--quick") == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(message) and captured.err.count("\n") == 1
    assert not files["csv"].exists() and not files["plot"].exists()


def test_a_text_too_short_for_the_prompts_is_one_line_on_stderr(files, capsys):
    assert run(files, "--length", "1000") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --data: the validation text has 144 characters") and err.count("\n") == 1


def test_bad_sizes_are_rejected(files, capsys):
    with pytest.raises(SystemExit) as exit:
        run(files, "--num_prompts", "0")
    assert exit.value.code == 2
    assert capsys.readouterr().err == "error: --num_prompts must be >= 1, got 0 (see --help)\n"


def test_csv_round_trip(tmp_path):
    keys = [k for key, _, _ in study.COLUMNS for k in (key, f"{key}_low", f"{key}_high")]
    rows = {"greedy": {key: 0.5 for key in keys}, study.HUMAN: {key: 1.25 for key in keys}}
    study.write_csv(rows, str(tmp_path / "study.csv"))
    assert study.read_csv(str(tmp_path / "study.csv")) == rows


def test_a_quick_run_writes_no_file_unless_told_where(files, monkeypatch, capsys):
    """--quick used to overwrite the committed docs/study.csv and study.png with a 2-prompt result."""
    committed = {"DEFAULT_CSV": files["csv"].parent / "committed.csv", "DEFAULT_PLOT": files["plot"].parent / "committed.png"}
    for name, path in committed.items():
        monkeypatch.setattr(study, name, str(path))
    assert study.main(["--ckpt", str(files["ckpt"]), "--data", str(files["data"]), "--quick"]) == 0
    assert "wrote no file" in capsys.readouterr().out
    assert not any(path.exists() for path in committed.values())


def test_importing_the_study_leaves_the_matplotlib_backend_alone():
    """A notebook that imports study.py must still show its figures inline: only main() picks a backend."""
    import subprocess
    import sys

    code = "import matplotlib; before = matplotlib.get_backend(); import study; print(before == matplotlib.get_backend())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"MPLBACKEND": "svg"},
                            cwd=study.HERE)
    assert result.stdout.strip() == "True", result.stderr


def test_bootstrap_interval_of_a_mean():
    """Ten prompts scoring 0..9: the mean is 4.5; its bootstrap interval lies around it, inside the
    data's range, and is about ±1.96 standard errors wide (sd 2.87 / sqrt(10) = 0.91: ±1.8)."""
    import torch

    values = torch.arange(10, dtype=torch.float64)
    low, high = study.bootstrap_interval(lambda rows: values[rows].mean(-1), 10)
    assert 0 < low < 4.5 < high < 9
    assert 2.4 < high - low < 4.8
    assert (low, high) == study.bootstrap_interval(lambda rows: values[rows].mean(-1), 10)  # the same seed
