"""A generated corpus of bad inputs, run in-process against `nas.cli.main`: every case must exit 2 with one line on
stderr, no traceback, nothing written (in the case's folder or the working folder), within a bounded time.

Categories: numeric options out of range or not numbers (every numeric option of every command), latency budgets,
run folders and output files that nas must not write into, YAML files nas cannot read (every file role), and
settings files whose values have the wrong type or range, and archs and spaces within every bound that no
device of today could hold (the refusal names what they need).
"""

import signal
import time

import pytest
import yaml

from nas.cli import main
from tests.conftest import TINY_SPACE

SECONDS_PER_CASE = 20
BAD_INTEGERS = ["-1", "0", "-99999999999", "1e999", "abc", "", "1.5", "nan", "inf", "99999999999999999999", "0x10",
                "--"]
BAD_NUMBERS = ["-1", "abc", "", "nan", "inf", "-inf", "1e999", "1e308"]
FROM_ZERO = [v for v in BAD_INTEGERS if v != "0"]  # for options where 0 is valid (--seed, --data-workers)

# (command words, the options that make the command otherwise valid, {numeric option: bad values})
TINY = str(TINY_SPACE)
ARCH = "ARCH"  # replaced by an arch file of the tiny space in the case's folder
COMMANDS = [
    (["search"], ["--space", TINY, "--latency-budget", "1s"],
     {**{o: BAD_INTEGERS for o in ("--threads", "--trials", "--max-params", "--max-macs", "--epochs", "--workers",
                                   "--limit-train")}, "--seed": FROM_ZERO, "--data-workers": FROM_ZERO + ["65"],
      "--adapt-steps": FROM_ZERO + ["10001"], "--rescore-top": FROM_ZERO + ["101"],
      "--rescore-steps": BAD_INTEGERS + ["10001"]}),
    (["retrain", ARCH], [],
     {**{o: BAD_INTEGERS for o in ("--top", "--epochs", "--batch-size", "--threads", "--limit-train")},
      "--seed": FROM_ZERO, "--data-workers": FROM_ZERO,
      "--lr": BAD_NUMBERS + ["0", "11"], "--distill": BAD_NUMBERS + ["1.5"]}),
    (["export", "model.pt"], [], {"--atol": BAD_NUMBERS + ["1001"]}),
    (["describe", ARCH], [], {"--resolution": BAD_INTEGERS + ["100000", "4"]}),
    (["measure", ARCH], [], {o: BAD_INTEGERS for o in ("--threads", "--batch", "--runs")}),
    (["latency", "fit"], ["--space", TINY],
     {**{o: BAD_INTEGERS for o in ("--threads", "--samples", "--rounds")}, "--seed": FROM_ZERO,
      "--holdout": BAD_NUMBERS + ["0", "1", "0.99"]}),
    (["supernet", "train"], ["--space", TINY],
     {**{o: BAD_INTEGERS for o in ("--epochs", "--batch-size", "--checkpoint-every", "--limit-train")},
      "--seed": FROM_ZERO, "--data-workers": FROM_ZERO}),
    (["supernet", "rank"], ["--space", TINY, "--supernet", "s.pt"],
     {**{o: BAD_INTEGERS for o in ("--subnets", "--epochs", "--limit-train")}, "--seed": FROM_ZERO,
      "--data-workers": FROM_ZERO, "--adapt-steps": FROM_ZERO + ["10001"]}),
    (["dashboard", "."], [], {"--port": BAD_INTEGERS + ["65536", "70000"]}),
]

BAD_BUDGETS = ["0ms", "-5ms", "5", "ms", "5 parsecs", "1e999ms", "inf ms", "nan ms", "61s", "1e9us", "", "5ms5ms"]

# file contents no nas YAML reader accepts
BAD_YAML = {
    "utf16": "space: x\n".encode("utf-16"), "binary": bytes(range(256)) * 4, "nul": b"a: \x00\n",
    "latin1": "name: caf\xe9\n".encode("latin-1"), "deep": b"[" * 5000, "tab_indent": b"a:\n\tb: 1\n",
    "unclosed": b"a: [1, 2\n", "huge": b"#" * 1_000_001, "list": b"- 1\n- 2\n", "scalar": b"42\n",
    "empty": b"", "python_tag": b"!!python/object/apply:os.system ['true']\n",
}
# the options that make each file role's command otherwise valid, the file standing at FILE
FILE_ROLES = {
    "space": ["describe", "ARCH", "--space", "FILE"],
    "search_space": ["search", "--space", "FILE", "--latency-budget", "1s"],
    "arch": ["describe", "FILE"],
    "best": ["retrain", "FILE"],
    "recipe": ["retrain", "ARCH", "--recipe", "FILE"],
    "config": ["search", "--config", "FILE"],
    "train_space": ["supernet", "train", "--space", "FILE"],
    "train_recipe": ["supernet", "train", "--space", TINY, "--recipe", "FILE"],
}
# supernet recipe values of the wrong type or range
BAD_TRAIN_RECIPES = ["lr: .nan\n", "lr: 0\n", "lr: 11\n", "random_subnets: 65\n", "random_subnets: -1\n",
                     "sandwich: all\n", "distill: mse\n", "epochs: 0\n", "batch_size: 1\n", "batch_size: 65537\n",
                     "label_smoothing: 1.0\n", "weight_decay: -1\n", "warmup_epochs: 10001\n", "seed: -1\n",
                     "momentum: 0.9\n", "lr: fast\n", "epochs: 2.5\n", "checkpoint_every: 0\n"]
# config.yaml values of the wrong type or range (a search reads them past the command line's checks)
BAD_CONFIG_VALUES = {"trials": ["abc", None, -1, 0, 1.5, True, [1], 10**9], "epochs": [None, "x", 0],
                     "threads": ["2", 0, 5000], "device": [5, ["cpu"]], "seed": [-1, "s"], "workers": [0, "many"],
                     "max_params": ["x", 0], "limit_train": [-5, "all"], "sampler": [3, "bogus"],
                     "latency_budget": [5, "inf ms", None], "space": [7, None], "adapt_steps": [-1, 10_001, "x", None],
                     "rescore_top": [-1, 101, "x", None], "rescore_steps": [0, 10_001, "x", None]}

# values past the upper bounds of a space (and of an arch), which would otherwise reach the allocator or hang
SPACE_EDITS = {
    "resolution": lambda d, v: d.update(resolution=[v]), "num_classes": lambda d, v: d.update(num_classes=v),
    "in_channels": lambda d, v: d.update(in_channels=v), "global_tokens": lambda d, v: d.update(global_tokens=[v]),
    "width": lambda d, v: d["stages"][0].update(width=[v]), "depth": lambda d, v: d["stages"][0].update(depth=[v]),
    "stride": lambda d, v: d["stages"][0].update(stride=v), "head_width": lambda d, v: d["head"].update(width=[v]),
    "expansion": lambda d, v: d["stages"][0]["families"]["ghost"].update(expansion=[v]),
    "heads": lambda d, v: d["stages"][0]["families"]["fwa"].update(heads=[v]),
    "mlp_ratio": lambda d, v: d["stages"][0]["families"]["fwa"].update(mlp_ratio=[v]),
}
HUGE = [123_456, 10**6, 10**7, 10**9, 10**12, float("inf"), float("nan")]
ARCH_EDITS = {
    "resolution": lambda d, v: d.update(resolution=v), "num_classes": lambda d, v: d.update(num_classes=v),
    "width": lambda d, v: d["stages"][0].update(width=v), "depth": lambda d, v: d["stages"][0].update(depth=v),
    "global_tokens": lambda d, v: d.update(global_tokens=v), "stem_width": lambda d, v: d["stem"].update(width=v),
}



def _giant(document: dict) -> None:
    """Within every bound, but far past any machine's memory: 64 blocks 8192 wide at 4096x4096."""
    document.update(resolution=4096)
    document["stages"][0].update(width=8192, depth=64)


def _wide_mhsa(document: dict) -> None:
    """805 M parameters (3.2 GiB of weights, past an ONNX file's 2 GiB) that a machine can hold to run."""
    document["stages"] = [{"family": "mhsa", "depth": 1, "width": 8192, "stride": 1,
                           "knobs": {"heads": 8, "mlp_ratio": 4}}]


def _giant_space(document: dict) -> None:
    document.update(resolution=[4096])
    document["stages"][0].update(width=[8192], depth=[64])


MEMORY_CASES = {  # (argv, an edit of the tiny space's smallest member (ARCH_EDIT) or of the tiny space (FILE))
    "describe-giant": (["describe", "FILE"], _giant), "measure-giant": (["measure", "FILE"], _giant),
    "measure-batch": (["measure", "FILE", "--batch", "4096"], lambda d: d.update(resolution=4096)),
    "measure-onnx": (["measure", "FILE", "--runtime", "onnxruntime"], _wide_mhsa),
    "retrain-giant": (["retrain", "FILE"], _giant),
    "retrain-batch": (["retrain", "FILE", "--batch-size", "65536"], lambda d: d.update(resolution=4096)),
    "retrain-onnx": (["retrain", "FILE", "--batch-size", "2"], _wide_mhsa),
    "train-space-giant": (["supernet", "train", "--space", "FILE"], _giant_space),
    "train-batch": (["supernet", "train", "--space", "FILE", "--batch-size", "65536"],
                    lambda d: d.update(resolution=[4096])),
    "search-space-giant": (["search", "--space", "FILE", "--latency-budget", "1s"], _giant_space),
    "fit-space-giant": (["latency", "fit", "--space", "FILE"], _giant_space),
}


def _cases() -> list[tuple[str, list[str], dict[str, bytes]]]:
    """(id, argv, files to write in the case's folder) for every case."""
    cases = []
    for words, valid, options in COMMANDS:
        for option, values in options.items():
            for value in values:
                cases.append((f"{'-'.join(words[:2])}{option}={value!r}", [*words, *valid, option, value], {}))
    for budget in BAD_BUDGETS:
        cases.append((f"budget={budget!r}", ["search", "--space", TINY, "--latency-budget", budget], {}))
    for role, argv in FILE_ROLES.items():
        for kind, content in BAD_YAML.items():
            if role in ("recipe", "config", "train_recipe") and kind == "empty":
                continue  # an empty recipe is no overrides, an empty config no settings: both valid
            cases.append((f"{role}-file={kind}", argv, {"FILE": content}))
    for text in BAD_TRAIN_RECIPES:
        cases.append((f"train-recipe={text.strip()!r}", FILE_ROLES["train_recipe"], {"FILE": text.encode()}))
    for name, values in BAD_CONFIG_VALUES.items():
        for value in values:
            config = {"space": TINY, "latency_budget": "1s", name: value}
            cases.append((f"config-{name}={value!r}", ["search", "--config", "FILE"],
                          {"FILE": yaml.safe_dump(config).encode()}))
    for key, edit in SPACE_EDITS.items():
        for value in HUGE:
            document = yaml.safe_load(TINY_SPACE.read_text())
            edit(document, value)
            content = yaml.safe_dump(document).encode()
            cases.append((f"space-{key}={value}", ["describe", "ARCH", "--space", "FILE"], {"FILE": content}))
            cases.append((f"train-space-{key}={value}", ["supernet", "train", "--space", "FILE"], {"FILE": content}))
    for key, edit in ARCH_EDITS.items():
        for value in HUGE:
            cases.append((f"arch-{key}={value}", ["describe", "FILE"], {"ARCH_EDIT": (edit, value)}))
            cases.append((f"measure-arch-{key}={value}", ["measure", "FILE"], {"ARCH_EDIT": (edit, value)}))
    for name, (argv, change) in MEMORY_CASES.items():
        if argv[0] in ("search", "latency", "supernet"):
            document = yaml.safe_load(TINY_SPACE.read_text())
            change(document)
            cases.append((f"memory-{name}", argv, {"FILE": yaml.safe_dump(document).encode()}))
        else:
            cases.append((f"memory-{name}", argv, {"ARCH_EDIT": (lambda d, _, change=change: change(d), None)}))
    for kind in ("file", "foreign", "missing-parent", "nul", "dev-null"):
        for argv in (["supernet", "train", "--space", TINY, "--run-dir", "RUN"],
                     ["retrain", "ARCH", "--run-dir", "RUN"],
                     ["search", "--space", TINY, "--latency-budget", "1s", "--run-dir", "RUN"],
                     ["supernet", "rank", "--space", TINY, "--supernet", "s.pt", "--run-dir", "RUN"]):
            cases.append((f"run-dir-{kind}-{argv[0]}", argv, {"RUN": kind.encode()}))
    for kind in ("missing-parent", "folder", "nul"):
        cases.append((f"export-out-{kind}", ["export", "model.pt", "--out", "RUN"], {"RUN": kind.encode()}))
        cases.append((f"fit-out-{kind}", ["latency", "fit", "--space", TINY, "--out", "RUN"], {"RUN": kind.encode()}))
    return cases


CASES = _cases()


def test_the_corpus_is_large():
    assert len(CASES) >= 500


def _snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.is_file() and p.stat().st_size) for p in folder.rglob("*"))


def _argv(tmp_path, argv, files, tiny_space):
    arch = tmp_path / "arch.yaml"
    arch.write_text(yaml.safe_dump(tiny_space.smallest().to_dict()))
    (tmp_path / "s.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    run = {"file": tmp_path / "a-file", "foreign": tmp_path / "foreign", "missing-parent": tmp_path / "no" / "run",
           "nul": "bad\0name", "dev-null": "/dev/null", "folder": tmp_path}
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "mine.txt").write_text("the user's")
    if "FILE" in files:
        (tmp_path / "file.yaml").write_bytes(files["FILE"])
    if "ARCH_EDIT" in files:  # the tiny space's smallest member with one value changed
        edit, value = files["ARCH_EDIT"]
        document = tiny_space.smallest().to_dict()
        edit(document, value)
        (tmp_path / "file.yaml").write_text(yaml.safe_dump(document))
    out = []
    for word in argv:
        word = {"ARCH": str(arch), "FILE": str(tmp_path / "file.yaml")}.get(word, word)
        if word == "RUN":
            word = str(run[files["RUN"].decode()])
        out.append(word)
    return out


def _alarm(signum, frame):
    raise TimeoutError(f"a bad input ran over {SECONDS_PER_CASE} s")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_line_and_writes_nothing(case, tmp_path, monkeypatch, capsys, tiny_space):
    _, argv, files = case
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # runs/ would appear here
    argv = _argv(work, argv, files, tiny_space)
    before = _snapshot(tmp_path)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SECONDS_PER_CASE)
    began = time.perf_counter()
    try:
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, (code, err[-500:])
    assert len(lines) == 1 and "Traceback" not in err, err[-1000:]
    assert _snapshot(tmp_path) == before
    assert time.perf_counter() - began < SECONDS_PER_CASE
    if case[0].startswith("memory-"):  # refused for its size, saying how much it needs
        assert "needs about" in err or "ONNX file holds at most 2 GiB" in err, err
