"""An independent corpus of bad inputs for the `nas` command line.

Every case is a command line that a careless user (or a fuzzer) could type, with files it writes first into the
test's own folder: options out of range or of the wrong type, latency budgets, run folders and output files nas
cannot use, YAML files (spaces, archs, best.yaml, recipes, search configs) that are not UTF-8, malformed, nested
past reason, huge, of the wrong shape or holding wrong, absurd or non-finite values, `.npz` files and image folders
that hold no usable data, and checkpoints that are garbage or of another kind.

Each case runs in this process through `nas.cli.main` and must end with exit status 2, exactly one line on stderr
and no traceback, write nothing (every path under the test's folder is compared before and after, and the case
runs from a fresh empty folder so that a default `runs/` would show up), and finish within a bounded time.
"""

from __future__ import annotations

import argparse
import copy
import functools
import gzip
import io
import os
import pickle
import random
import signal
import stat
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml

os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "tests" / "tiny_space.yaml")
LIGHTVIT_T = str(ROOT / "search_spaces" / "reference" / "lightvit_t.yaml")
CASE_SECONDS = 10  # a refusal takes well under a second; a case still running after this is a failure
SLOW_SECONDS = 30  # cases whose refusal measures the space's smallest member on the CPU first
HAS_CUDA = torch.cuda.is_available()
NAN, INF = float("nan"), float("inf")
DELETE = object()  # a mutation that removes the key
TOO_LONG = "x" * 5000  # one path component longer than any file system allows


# ---- the files a case writes before it runs ---------------------------------------------------------------------
@dataclass
class Assets:
    """What the cases copy into their folders: a valid arch, a valid retrained-model checkpoint, a valid (untrained)
    supernet checkpoint of the tiny space, and the documents the bad ones are made from."""

    space_doc: dict
    space_hash: str
    arch_doc: dict
    arch_id: str
    largest_arch_doc: dict
    model_bytes: bytes
    supernet_bytes: bytes
    largest_state: dict
    png: bytes


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Assets:
    from nas.runs import save_checkpoint
    from nas.space import load_space
    from nas.weight_sharing import SpaceSupernet
    from supernet.network import build

    folder = tmp_path_factory.mktemp("bad-input-assets")
    space = load_space(TINY)
    arch, largest = space.smallest(), space.largest()
    torch.manual_seed(0)
    save_checkpoint(
        folder / "model.pt",
        {
            "format": "nas-model",
            "version": 3,
            "arch": arch.to_dict(),
            "arch_id": arch.arch_id,
            "epoch": 1,
            "crop_pct": 1.0,
            "model": build(arch).state_dict(),
        },
    )
    save_checkpoint(
        folder / "supernet.pt",
        {
            "format": "nas-supernet",
            "version": 2,
            "space": space.to_dict(),
            "space_hash": space.space_hash,
            "epoch": 1,
            "step": 0,
            "config": {},
            "history": [],
            "model": SpaceSupernet(space).state_dict(),
        },
    )
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (32, 32), 128).save(buffer, format="PNG")
    return Assets(
        yaml.safe_load(Path(TINY).read_text()),
        space.space_hash,
        arch.to_dict(),
        arch.arch_id,
        largest.to_dict(),
        (folder / "model.pt").read_bytes(),
        (folder / "supernet.pt").read_bytes(),
        build(largest).state_dict(),
        buffer.getvalue(),
    )


class W:
    """A case's workspace: the folder its input files go in, and helpers that write them (paths returned as text)."""

    def __init__(self, folder: Path, assets: Assets) -> None:
        self.d, self.a = folder, assets

    def path(self, name: str) -> str:
        return str(self.d / name)

    def write(self, name: str, data: bytes | str) -> str:
        path = self.d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    def yaml(self, name: str, document: Any) -> str:
        return self.write(name, yaml.safe_dump(document, sort_keys=False))

    def folder(self, name: str, files: dict[str, bytes | str] | None = None) -> str:
        (self.d / name).mkdir(parents=True, exist_ok=True)
        for relative, data in (files or {}).items():
            self.write(f"{name}/{relative}", data)
        return str(self.d / name)

    def symlink(self, name: str, target: str) -> str:
        os.symlink(target, self.d / name)
        return str(self.d / name)

    def loop(self, name: str) -> str:
        """A symlink to itself (every access fails with ELOOP)."""
        return self.symlink(name, name)

    def fifo(self, name: str) -> str:
        os.mkfifo(self.d / name)
        return str(self.d / name)

    def torch_file(self, name: str, payload: Any, layout: bool = True) -> str:
        """`payload` saved with torch.save (dicts get the current weight layout unless `layout` is False)."""
        if layout and isinstance(payload, dict) and "weight_layout" not in payload:
            payload = {**payload, "weight_layout": 2}
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return self.write(name, buffer.getvalue())

    def npz(self, name: str, **arrays: np.ndarray) -> str:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return self.write(name, buffer.getvalue())

    @functools.cached_property
    def arch(self) -> str:
        return self.yaml("arch.yaml", self.a.arch_doc)

    @functools.cached_property
    def model(self) -> str:
        return self.write("model.pt", self.a.model_bytes)

    @functools.cached_property
    def supernet(self) -> str:
        return self.write("supernet.pt", self.a.supernet_bytes)


# ---- the cases ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[W], list[str]]
    seconds: int = CASE_SECONDS


CASES: list[Case] = []


def add(group: str, name: str, build: Callable[[W], list[str]], seconds: int = CASE_SECONDS) -> None:
    case_id = f"{group}--{name}"
    assert case_id not in {c.id for c in CASES}, case_id
    CASES.append(Case(case_id, build, seconds))


def mutate(document: Any, path: str, value: Any) -> Any:
    """A deep copy of `document` with the key at dotted `path` (list indices as numbers) set to `value` (or
    removed: DELETE)."""
    document = copy.deepcopy(document)
    keys = path.split(".")
    target = document
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    last: Any = int(keys[-1]) if isinstance(target, list) else keys[-1]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return document


def with_raw(document: dict, path: str, raw: str) -> str:
    """`document` as YAML text with the value at `path` replaced by the raw YAML `raw` (anchors, aliases)."""
    text = yaml.safe_dump(mutate(document, path, "__RAW_VALUE__"), sort_keys=False)
    assert text.count("__RAW_VALUE__") == 1
    return text.replace("__RAW_VALUE__", raw)


def laughs(levels: int, fanout: int = 10) -> str:
    """A flow-style 'billion laughs' value: `fanout` ** `levels` leaves from a few hundred bytes of aliases."""
    text = f"&l1 [{', '.join(['0'] * fanout)}]"
    for level in range(2, levels + 1):
        text = f"&l{level} [{text}, {', '.join([f'*l{level - 1}'] * (fanout - 1))}]"
    return text


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


# A PNG whose header claims 100,000 x 100,000 pixels (Pillow's decompression-bomb limit is far below)
BOMB_PNG = (
    b"\x89PNG\r\n\x1a\n"
    + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0))
    + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    + png_chunk(b"IEND", b"")
)
RANDOM_BYTES = random.Random(0).randbytes(4096)
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(56) + RANDOM_BYTES[:512]


# -- command lines that are fine apart from what a case changes
def search(w: W, *extra: str) -> list[str]:
    return ["search", "--space", TINY, "--latency-budget", "5ms", *extra]


def search_ckpt(w: W, *extra: str) -> list[str]:
    """A search that would not train a supernet (it is given one)."""
    return search(w, "--supernet", w.supernet, *extra)


def retrain(w: W, *extra: str) -> list[str]:
    return ["retrain", w.arch, *extra]


def export(w: W, *extra: str) -> list[str]:
    return ["export", w.model, *extra]


def describe(w: W, *extra: str) -> list[str]:
    return ["describe", w.arch, *extra]


def measure(w: W, *extra: str) -> list[str]:
    return ["measure", w.arch, *extra]


def dashboard(w: W, *extra: str) -> list[str]:
    return ["dashboard", w.path("no-such-run"), *extra]


def fit(w: W, *extra: str) -> list[str]:
    return ["latency", "fit", "--space", TINY, *extra]


def train_options(w: W, *extra: str) -> list[str]:
    return ["supernet", "train", "--space", TINY, *extra]


def train(w: W, *extra: str) -> list[str]:
    """A supernet training that would be short (one epoch), were its input not bad."""
    return train_options(w, "--epochs", "1", *extra)


def rank(w: W, *extra: str) -> list[str]:
    return ["supernet", "rank", "--space", TINY, "--supernet", w.supernet, *extra]


COMMANDS: dict[str, Callable[..., list[str]]] = {
    "search": search,
    "retrain": retrain,
    "export": export,
    "describe": describe,
    "measure": measure,
    "dashboard": dashboard,
    "latency-fit": fit,
    "supernet-train": train_options,
    "supernet-rank": rank,
}


# ---- 1. options: out of range, wrong type, non-finite, absurd ----------------------------------------------------
def bad_integers(low: int, high: int) -> dict[str, str]:
    return {
        "below-min": str(low - 1),
        "above-max": str(high + 1),
        "absurd": str(10**40),
        "word": "plenty",
        "decimal": f"{max(low, 1)}.5",
        "nan": "nan",
        "empty": "",
        "inf": "inf",
    }


def bad_numbers(low: float, high: float, below: str, above: str) -> dict[str, str]:
    return {
        "below-min": below,
        "above-max": above,
        "nan": "nan",
        "NaN": "NaN",
        "inf": "inf",
        "infinity": "Infinity",
        "overflow": "1e400",
        "word": "tiny",
        "empty": "",
        "comma-decimal": "0,5",
    }


INTEGER_OPTIONS = {
    "search": {
        "--threads": (1, 1024),
        "--trials": (1, 100_000),
        "--max-params": (1, 10**12),
        "--max-macs": (1, 10**15),
        "--epochs": (1, 10_000),
        "--workers": (1, 1024),
        "--seed": (0, 2**32 - 1),
        "--limit-train": (1, 10**9),
        "--data-workers": (0, 64),
    },
    "retrain": {
        "--top": (1, 1000),
        "--epochs": (1, 10_000),
        "--batch-size": (2, 65_536),
        "--threads": (1, 1024),
        "--seed": (0, 2**32 - 1),
        "--limit-train": (1, 10**9),
        "--data-workers": (0, 64),
    },
    "describe": {"--resolution": (8, 4096)},
    "measure": {"--threads": (1, 1024), "--batch": (1, 4096), "--runs": (5, 100_000)},
    "dashboard": {"--port": (1, 65_535)},
    "latency-fit": {
        "--threads": (1, 1024),
        "--samples": (10, 100_000),
        "--rounds": (2, 1000),
        "--seed": (0, 2**32 - 1),
    },
    "supernet-train": {
        "--epochs": (1, 10_000),
        "--batch-size": (2, 65_536),
        "--checkpoint-every": (1, 10**9),
        "--seed": (0, 2**32 - 1),
        "--limit-train": (1, 10**9),
        "--data-workers": (0, 64),
    },
    "supernet-rank": {
        "--subnets": (3, 10_000),
        "--epochs": (1, 10_000),
        "--seed": (0, 2**32 - 1),
        "--limit-train": (1, 10**9),
        "--data-workers": (0, 64),
    },
}
NUMBER_OPTIONS = {
    "retrain": {"--lr": ("0", "10.5"), "--distill": ("-0.1", "1.5")},
    "export": {"--atol": ("-1e-9", "1e6")},
    "latency-fit": {"--holdout": ("0.01", "0.95")},
}

for command, options in INTEGER_OPTIONS.items():
    for option, (low, high) in options.items():
        for label, value in bad_integers(low, high).items():
            add(
                "option",
                f"{command}{option}-{label}",
                lambda w, c=command, o=option, v=value: COMMANDS[c](w) + [f"{o}={v}"],
            )
for command, options in NUMBER_OPTIONS.items():
    for option, (below, above) in options.items():
        for label, value in bad_numbers(0, 0, below, above).items():
            add(
                "option",
                f"{command}{option}-{label}",
                lambda w, c=command, o=option, v=value: COMMANDS[c](w) + [f"{o}={v}"],
            )
add("option", "retrain--lr-negative", lambda w: retrain(w, "--lr=-0.003"))
add("option", "export--atol-negative-inf", lambda w: export(w, "--atol=-inf"))
add("option", "latency-fit--holdout-zero", lambda w: fit(w, "--holdout=0"))
add("option", "latency-fit--holdout-one", lambda w: fit(w, "--holdout=1"))

for value in ("pretrained", "random", "", "supernet,scratch"):
    add("option", f"retrain--init-{value or 'empty'}", lambda w, v=value: retrain(w, f"--init={v}"))
for value in ("mse", "labels", "", "kl,alpha"):
    add("option", f"supernet-train--distill-{value or 'empty'}", lambda w, v=value: train_options(w, f"--distill={v}"))

# devices: checked against this machine (no such accelerator, malformed names)
BAD_DEVICES = [
    "gpu",
    "cuda:",
    "cuda:-1",
    "cuda:4096",
    "cuda:0:1",
    "tpu",
    "mps",
    "cpu,cuda",
    "",
    "auto",
    "cpu:x",
    "cuda:1e3",
]
if not HAS_CUDA:
    BAD_DEVICES += ["cuda", "cuda:0"]
for command in ("search", "retrain", "measure", "latency-fit", "supernet-train", "supernet-rank"):
    for device in BAD_DEVICES:
        add(
            "option",
            f"{command}--device-{device or 'empty'}",
            lambda w, c=command, d=device: COMMANDS[c](w) + [f"--device={d}"],
        )
for command in ("search", "retrain", "measure", "latency-fit"):
    for runtime in ("tensorrt", "onnx", "torch_compile", "", "pytorch", "tflite"):
        add(
            "option",
            f"{command}--runtime-{runtime or 'empty'}",
            lambda w, c=command, r=runtime: COMMANDS[c](w) + [f"--runtime={r}"],
        )
for sampler in ("grid", "cmaes", "bayes", "", "nsga3"):
    add("option", f"search--sampler-{sampler or 'empty'}", lambda w, s=sampler: search(w, f"--sampler={s}"))
for backend_name in ("dask", "celery", "", "multiprocessing"):
    add("option", f"search--backend-{backend_name or 'empty'}", lambda w, b=backend_name: search(w, f"--backend={b}"))
for fmt in ("tflite", "torchscript", "coreml", "", "onnx2", "tensorrt"):
    add("option", f"export--format-{fmt or 'empty'}", lambda w, f=fmt: export(w, f"--format={f}"))

# the shape of the command line itself
STRUCTURE: dict[str, Callable[[W], list[str]]] = {
    "no-command": lambda w: [],
    "unknown-command": lambda w: ["frobnicate"],
    "unknown-option-top": lambda w: ["--frobnicate"],
    "typo-command": lambda w: ["serach", "--space", TINY],
    "search-unknown-option": lambda w: search(w, "--frobnicate"),
    "search-option-without-value": lambda w: ["search", "--space"],
    "search-ambiguous-prefix": lambda w: ["search", "--s", TINY, "--latency-budget", "5ms"],
    "search-stray-positional": lambda w: search(w, "extra"),
    "search-nothing": lambda w: ["search"],
    "search-no-budget": lambda w: ["search", "--space", TINY],
    "search-no-space": lambda w: ["search", "--latency-budget", "5ms"],
    "latency-no-subcommand": lambda w: ["latency"],
    "latency-unknown-subcommand": lambda w: ["latency", "predict", "--space", TINY],
    "supernet-no-subcommand": lambda w: ["supernet"],
    "supernet-unknown-subcommand": lambda w: ["supernet", "prune", "--space", TINY],
    "latency-fit-no-space": lambda w: ["latency", "fit"],
    "supernet-train-no-space": lambda w: ["supernet", "train"],
    "supernet-rank-no-supernet": lambda w: ["supernet", "rank", "--space", TINY],
    "supernet-rank-no-space": lambda w: ["supernet", "rank", "--supernet", w.supernet],
    "retrain-no-arch": lambda w: ["retrain"],
    "export-no-checkpoint": lambda w: ["export"],
    "describe-no-arch": lambda w: ["describe"],
    "measure-no-arch": lambda w: ["measure"],
    "dashboard-no-run": lambda w: ["dashboard"],
    "describe-two-archs": lambda w: describe(w, w.arch),
    "describe-json-with-value": lambda w: describe(w, "--json=yes"),
    "measure-threads-without-value": lambda w: measure(w, "--threads"),
    "retrain-top-without-value": lambda w: retrain(w, "--top"),
    "export-two-checkpoints": lambda w: export(w, w.model),
    "search-space-flag-as-value": lambda w: ["search", "--space", "--latency-budget", "5ms"],
    "dashboard-two-runs": lambda w: ["dashboard", w.path("a"), w.path("b")],
}
for name, build in STRUCTURE.items():
    add("cmdline", name, build)

# a NUL character can be in no file name and no value
NUL_ARGS: dict[str, Callable[[W], list[str]]] = {
    "describe-arch": lambda w: ["describe", w.arch + "\0.yaml"],
    "search-space": lambda w: ["search", "--space", TINY + "\0", "--latency-budget", "5ms"],
    "search-budget": lambda w: search(w)[:-1] + ["5ms\0"],
    "supernet-train-run-dir": lambda w: train(w, "--run-dir", w.path("run\0x")),
    "export-checkpoint": lambda w: ["export", "model\0.pt"],
    "retrain-data": lambda w: retrain(w, "--data", "\0"),
    "measure-device": lambda w: measure(w, "--device", "cpu\0"),
    "dashboard-run": lambda w: ["dashboard", "\0"],
    "latency-fit-out": lambda w: fit(w, "--out", w.path("p\0.json")),
    "export-out": lambda w: export(w, "--out", w.path("m\0.onnx")),
}
for name, build in NUL_ARGS.items():
    add("nul", name, build)

# ---- 2. latency budgets --------------------------------------------------------------------------------------------
BUDGETS = {
    "empty": "",
    "no-unit": "5",
    "unit-only": "ms",
    "zero-ms": "0ms",
    "zero-s": "0s",
    "negative": "-5ms",
    "minutes": "5m",
    "min": "5min",
    "hours": "1h",
    "sec": "5sec",
    "nan": "nanms",
    "NaN": "NaNms",
    "inf": "infms",
    "inf-s": "inf s",
    "overflow": "1e400ms",
    "over-a-minute": "61s",
    "60001ms": "60001ms",
    "1e9us": "1e9us",
    "two-budgets": "5ms5ms",
    "comma": "5,5ms",
    "words": "five ms",
    "shell": "5ms; rm -rf ~",
    "underflow-to-zero": "1e-400ms",
    "double-unit": "5mss",
    "unit-first": "ms5",
    "fraction-char": "½ms",
    "list": "[5ms]",
    "range": "2-5ms",
    "percent": "5%",
    "newline": "5ms\n6ms",
    "ns": "500ns",
    "huge-seconds": "1e12s",
}
for name, budget in BUDGETS.items():
    add("budget", name, lambda w, b=budget: ["search", "--space", TINY, f"--latency-budget={b}"])
# budgets no sub-network can meet (the space's smallest member is measured first)
for name, budget in {"1us": "1us", "1e-6s": "1e-6s"}.items():
    add(
        "budget",
        f"infeasible-{name}",
        lambda w, b=budget: ["search", "--space", TINY, "--latency-budget", b],
        SLOW_SECONDS,
    )
add("budget", "infeasible-max-params-1", lambda w: search_ckpt(w, "--max-params", "1"), SLOW_SECONDS)

# ---- 3. run folders nas cannot (or must not) write in ------------------------------------------------------------
RUN_DIRS: dict[str, Callable[[W], str]] = {
    "is-a-file": lambda w: w.write("notes.txt", "my notes\n"),
    "dev-null": lambda w: "/dev/null",
    "dev-zero": lambda w: "/dev/zero",
    "holds-user-files": lambda w: w.folder("thesis", {"chapter1.tex": "\\section{Intro}\n", "refs.bib": "@book{}"}),
    "holds-user-subfolder": lambda w: w.folder("photos", {"2024/cat.jpg": b"\xff\xd8\xff"}),
    "holds-hidden-file": lambda w: w.folder("home", {".bashrc": "export X=1\n"}),
    "parent-missing": lambda w: w.path("no/such/parent/run"),
    "parent-is-a-file": lambda w: os.path.join(w.write("plain.txt", "x"), "run"),
    "symlink-to-file": lambda w: w.symlink("link", w.write("target.txt", "x")),
    "symlink-loop": lambda w: w.loop("loop"),
    "dangling-symlink": lambda w: w.symlink("dangling", w.path("nowhere/at/all")),
    "name-too-long": lambda w: w.path(TOO_LONG),
    "fifo": lambda w: w.fifo("pipe"),
}
RUN_DIR_COMMANDS = {"search": search_ckpt, "retrain": retrain, "supernet-train": train, "supernet-rank": rank}
for name, make in RUN_DIRS.items():
    for command, base in RUN_DIR_COMMANDS.items():
        add("run-dir", f"{command}-{name}", lambda w, b=base, m=make: b(w, "--run-dir", m(w)))
# --resume: a folder that holds no search
RESUMES: dict[str, Callable[[W], str]] = {
    "missing": lambda w: w.path("no-such-run"),
    "a-file": lambda w: w.write("run.txt", "x"),
    "empty-folder": lambda w: w.folder("empty"),
    "user-folder": lambda w: w.folder("docs", {"a.txt": "x"}),
    "config-is-list": lambda w: w.folder("r1", {"config.yaml": "- space\n- budget\n"}),
    "config-is-scalar": lambda w: w.folder("r2", {"config.yaml": "42\n"}),
    "config-is-string": lambda w: w.folder("r3", {"config.yaml": "hello\n"}),
    "config-not-utf8": lambda w: w.folder("r4", {"config.yaml": b"space: caf\xe9\n"}),
    "config-binary": lambda w: w.folder("r5", {"config.yaml": RANDOM_BYTES}),
    "config-a-folder": lambda w: w.folder("r6/config.yaml"),
    "config-trials-zero": lambda w: w.folder(
        "r7", {"config.yaml": yaml.safe_dump({"space": TINY, "latency_budget": "5ms", "trials": 0})}
    ),
    "config-no-budget": lambda w: w.folder("r8", {"config.yaml": yaml.safe_dump({"space": TINY})}),
    "name-too-long": lambda w: w.path(TOO_LONG),
}
for name, make in RESUMES.items():
    add("resume", name, lambda w, m=make: ["search", "--resume", m(w)])

# ---- 4. output files that are folders, devices or in missing folders ----------------------------------------------
OUTS: dict[str, Callable[[W], str]] = {
    "a-folder": lambda w: w.folder("outdir"),
    "a-user-folder": lambda w: w.folder("mine", {"keep.txt": "x"}),
    "parent-missing": lambda w: w.path("no/such/folder/out.file"),
    "parent-is-a-file": lambda w: os.path.join(w.write("plain.txt", "x"), "out.file"),
    "dev-null": lambda w: "/dev/null",
    "name-too-long": lambda w: w.path(TOO_LONG),
    "fifo": lambda w: w.fifo("out.pipe"),
}
for name, make in OUTS.items():
    add("out", f"export-{name}", lambda w, m=make: export(w, "--out", m(w)))
    add("out", f"latency-fit-{name}", lambda w, m=make: fit(w, "--out", m(w)))
add("out", "export-is-the-checkpoint", lambda w: export(w, "--out", w.model))
add(
    "out",
    "export-is-the-checkpoint-relative-spelling",
    lambda w: export(w, "--out", os.path.join(os.path.dirname(w.model), ".", "model.pt")),
)


# ---- 5. YAML files ------------------------------------------------------------------------------------------------
# problems of the file itself, whatever kind of YAML it should hold
def deep_flow_list(w: W, name: str) -> str:
    return w.write(name, "[" * 50_000 + "]" * 50_000)


FILE_PROBLEMS: dict[str, Callable[[W, str], str]] = {
    "missing": lambda w, n: w.path("no-such-" + n),
    "a-folder": lambda w, n: w.folder(n),
    "dev-null": lambda w, n: "/dev/null",
    "fifo": lambda w, n: w.fifo(n),
    "symlink-loop": lambda w, n: w.loop(n),
    "name-too-long": lambda w, n: w.path(TOO_LONG),
    "latin1": lambda w, n: w.write(n, "name: café\nresolution: [32]\n".encode("latin-1")),
    "random-binary": lambda w, n: w.write(n, RANDOM_BYTES),
    "elf-binary": lambda w, n: w.write(n, ELF),
    "png-image": lambda w, n: w.write(n, w.a.png),
    "gzip": lambda w, n: w.write(n, gzip.compress(Path(TINY).read_bytes())),
    "empty": lambda w, n: w.write(n, b""),
    "only-comment": lambda w, n: w.write(n, "# nothing here\n"),
    "null": lambda w, n: w.write(n, "~\n"),
    "scalar": lambda w, n: w.write(n, "42\n"),
    "string": lambda w, n: w.write(n, "just some words\n"),
    "list": lambda w, n: w.write(n, "- 1\n- 2\n"),
    "unclosed-flow": lambda w, n: w.write(n, "stages: [\n  {stride: 2,\n"),
    "bad-indent": lambda w, n: w.write(n, "name: x\n  - a\n b: c\n"),
    "tab-indent": lambda w, n: w.write(n, "name: x\nstem:\n\twidth: 8\n"),
    "unclosed-quote": lambda w, n: w.write(n, 'name: "tiny\nresolution: [32]\n'),
    "two-documents": lambda w, n: w.write(n, "name: a\n---\nname: b\n"),
    "python-tag": lambda w, n: w.write(n, "!!python/object/apply:os.system ['echo pwned']\n"),
    "unknown-tag": lambda w, n: w.write(n, "name: !secret tiny\n"),
    "undefined-alias": lambda w, n: w.write(n, "name: *nowhere\n"),
    "unhashable-key": lambda w, n: w.write(n, "? [a, b]\n: 1\n"),
    "mixed-type-keys": lambda w, n: w.write(n, "1: one\nfoo: bar\n~: nothing\n"),
    "deep-flow-list": deep_flow_list,
    "deep-flow-map": lambda w, n: w.write(n, "{a: " * 30_000 + "1" + "}" * 30_000),
    "deep-block-list": lambda w, n: w.write(n, "- " * 3000 + "1\n"),
    "huge-comment": lambda w, n: w.write(n, "# " + "x" * 1_100_000 + "\n"),
    "huge-list": lambda w, n: w.write(n, "resolution: [" + "32, " * 300_000 + "32]\n"),
    "nul-bytes": lambda w, n: w.write(n, b"name: tiny\x00\x00\nresolution: [32]\n"),
    "control-chars": lambda w, n: w.write(n, "name: ti\x07ny\x1b[31m\n"),
}

# which commands read each kind of YAML, as (command line given the file)
KIND_COMMANDS: dict[str, list[Callable[[W, str], list[str]]]] = {
    "space": [
        lambda w, f: describe(w, "--space", f),
        lambda w, f: ["supernet", "train", "--space", f],
        lambda w, f: ["latency", "fit", "--space", f],
        lambda w, f: ["search", "--space", f, "--latency-budget", "5ms"],
        lambda w, f: ["supernet", "rank", "--space", f, "--supernet", w.supernet],
    ],
    "arch": [lambda w, f: ["describe", f], lambda w, f: ["measure", f], lambda w, f: ["retrain", f]],
    "recipe": [lambda w, f: retrain(w, "--recipe", f)],
    "config": [lambda w, f: ["search", "--config", f]],
}
for kind, commands in KIND_COMMANDS.items():
    for index, (name, make) in enumerate(FILE_PROBLEMS.items()):
        if kind == "recipe" and name in ("empty", "only-comment", "null"):
            continue  # an empty recipe is a valid one: no settings overridden
        picks = (
            commands if len(commands) <= 2 else [commands[index % len(commands)], commands[(index + 1) % len(commands)]]
        )
        for pick_index, build in enumerate(picks):
            add(f"yaml-{kind}", f"{name}-{pick_index}", lambda w, b=build, m=make, k=kind: b(w, m(w, f"{k}.yaml")))


# -- search spaces: wrong shape, wrong types, absurd sizes, non-finite values
S0, S1 = "stages.0", "stages.1"
GHOST0, FWA0, FWA1 = f"{S0}.families.ghost", f"{S0}.families.fwa", f"{S1}.families.fwa"
SPACE_MUTATIONS: dict[str, tuple[str, Any]] = {
    "unknown-top-key": ("optimizer", "adam"),
    "stages-missing": ("stages", DELETE),
    "stages-empty": ("stages", []),
    "stages-mapping": ("stages", {"a": 1}),
    "stages-string": ("stages", "ghost, fwa"),
    "stage-not-mapping": (S0, "ghost"),
    "stage-null": (S0, None),
    "stage-unknown-key": (f"{S0}.kernel", 3),
    "families-missing": (f"{S0}.families", DELETE),
    "families-empty": (f"{S0}.families", {}),
    "families-list": (f"{S0}.families", ["ghost", "fwa"]),
    "family-unknown": (f"{S0}.families", {"resnet": {}}),
    "family-knob-unknown": (f"{GHOST0}.dilation", [2]),
    "family-knobs-list": (GHOST0, [2, 3]),
    "width-missing": (f"{S0}.width", DELETE),
    "width-zero": (f"{S0}.width", [0]),
    "width-negative": (f"{S0}.width", [-16]),
    "width-fraction": (f"{S0}.width", [16.5]),
    "width-string": (f"{S0}.width", ["sixteen"]),
    "width-bool": (f"{S0}.width", [True]),
    "width-null": (f"{S0}.width", None),
    "width-empty": (f"{S0}.width", []),
    "width-nan": (f"{S0}.width", [NAN]),
    "width-inf": (f"{S0}.width", [INF]),
    "width-absurd": (f"{S0}.width", [10**9]),
    "width-over-limit": (f"{S0}.width", [8193]),
    "width-nested": (f"{S0}.width", [[16, 24]]),
    "width-mapping": (f"{S0}.width", {"min": 16}),
    "depth-only-zero": (f"{S0}.depth", [0]),
    "depth-negative": (f"{S0}.depth", [-1]),
    "depth-absurd": (f"{S0}.depth", [10**6]),
    "depth-fraction": (f"{S0}.depth", [1.5]),
    "depth-string": (f"{S0}.depth", "two"),
    "depth-nan": (f"{S0}.depth", [NAN]),
    "stage-stride-zero": (f"{S0}.stride", 0),
    "stage-stride-absurd": (f"{S0}.stride", 10**6),
    "stage-stride-string": (f"{S0}.stride", "two"),
    "stage-stride-negative": (f"{S0}.stride", -2),
    "stage-stride-missing": (f"{S0}.stride", DELETE),
    "stem-missing": ("stem", DELETE),
    "stem-string": ("stem", "conv"),
    "stem-type-unknown": ("stem.type", "vit"),
    "stem-stride-zero": ("stem.stride", 0),
    "stem-stride-absurd": ("stem.stride", 10**5),
    "stem-width-zero": ("stem.width", [0]),
    "stem-width-absurd": ("stem.width", [10**7]),
    "stem-unknown-knob": ("stem.dropout", 0.1),
    "stem-act-unknown": ("stem.act", "swishy"),
    "stem-list-empty-entry": ("stem", [{}]),
    "head-missing": ("head", DELETE),
    "head-type-unknown": ("head.type", "mlp"),
    "head-width-negative": ("head.width", [-32]),
    "head-width-absurd": ("head.width", [10**8]),
    "head-neck-negative": ("head.neck", -1),
    "resolution-missing": ("resolution", DELETE),
    "resolution-zero": ("resolution", [0]),
    "resolution-absurd": ("resolution", [10**6]),
    "resolution-string": ("resolution", ["32px"]),
    "resolution-empty": ("resolution", []),
    "resolution-inf": ("resolution", INF),
    "resolution-negative": ("resolution", [-32]),
    "in-channels-zero": ("in_channels", 0),
    "in-channels-absurd": ("in_channels", 10**6),
    "in-channels-string": ("in_channels", "grey"),
    "in-channels-nan": ("in_channels", NAN),
    "num-classes-zero": ("num_classes", 0),
    "num-classes-absurd": ("num_classes", 10**9),
    "num-classes-negative": ("num_classes", -10),
    "global-tokens-negative": ("global_tokens", [-1]),
    "global-tokens-absurd": ("global_tokens", [10**6]),
    "global-tokens-fraction": ("global_tokens", [1.5]),
    "expansion-below-one": (f"{GHOST0}.expansion", [0.5]),
    "expansion-nan": (f"{GHOST0}.expansion", [NAN]),
    "expansion-inf": (f"{GHOST0}.expansion", [INF]),
    "expansion-absurd": (f"{GHOST0}.expansion", [1e9]),
    "expansion-string": (f"{GHOST0}.expansion", ["big"]),
    "expansion-empty": (f"{GHOST0}.expansion", []),
    "kernel-even": (f"{GHOST0}.kernel", [4]),
    "kernel-absurd": (f"{GHOST0}.kernel", [10**6]),
    "kernel-negative": (f"{GHOST0}.kernel", [-3]),
    "kernel-9": (f"{GHOST0}.kernel", [9]),
    "se-one": (f"{GHOST0}.se", [1.0]),
    "se-nan": (f"{GHOST0}.se", [NAN]),
    "se-negative": (f"{GHOST0}.se", [-0.25]),
    "ghost-ratio-absurd": (f"{GHOST0}.ratio", [10**4]),
    "heads-zero": (f"{FWA1}.heads", [0]),
    "heads-absurd": (f"{FWA1}.heads", [10**6]),
    "heads-fit-no-width": (f"{FWA0}.heads", [7]),
    "heads-nan": (f"{FWA1}.heads", [NAN]),
    "mlp-ratio-negative": (f"{FWA0}.mlp_ratio", [-1]),
    "mlp-ratio-nan": (f"{FWA0}.mlp_ratio", [NAN]),
    "mlp-ratio-inf": (f"{FWA0}.mlp_ratio", [INF]),
    "mlp-ratio-absurd": (f"{FWA0}.mlp_ratio", [1e12]),
    "kv-rule-unknown": (f"{FWA0}.kv_rule", ["diagonal"]),
    "kv-size-zero": (f"{FWA0}.kv_size", [0]),
    "kv-size-absurd": (f"{FWA0}.kv_size", [10**6]),
    "aggregator-number": (f"{FWA0}.aggregator", [5]),
    "normaliser-null": (f"{FWA0}.normaliser", [None]),
    "dim-ratio-zero": (f"{FWA0}.dim_ratio", [0]),
    "ffn-unknown": (f"{FWA0}.ffn", ["moe"]),
    "fusion-bool": (f"{FWA0}.fusion", [True]),
}
for index, (name, (path, value)) in enumerate(SPACE_MUTATIONS.items()):
    build = KIND_COMMANDS["space"][index % len(KIND_COMMANDS["space"])]
    add("space", name, lambda w, b=build, p=path, v=value: b(w, w.yaml("space.yaml", mutate(w.a.space_doc, p, v))))
SPACE_RAW: dict[str, tuple[str, str]] = {
    "recursive-knob": (f"{GHOST0}.expansion", "&loop [*loop]"),
    "recursive-width": (f"{S0}.width", "&loop [16, *loop]"),
    "recursive-stage": (S1, "&loop {stride: 2, depth: [1], width: [32], families: {ghost: *loop}}"),
    "laughs-knob": (f"{GHOST0}.expansion", laughs(6)),
    "laughs-width": (f"{S0}.width", laughs(6)),
    "yes-as-width": (f"{S0}.width", "[yes]"),
    "float-overflow-width": (f"{S0}.width", "[1.0e+400]"),
    "huge-int-width": (f"{S0}.width", "[" + "9" * 4000 + "]"),
    "timestamp-resolution": ("resolution", "[2024-01-01]"),
}
for index, (name, (path, raw)) in enumerate(SPACE_RAW.items()):
    for label, build in (("describe", KIND_COMMANDS["space"][0]), ("other", KIND_COMMANDS["space"][1 + index % 4])):
        add(
            "space",
            f"{name}-{label}",
            lambda w, b=build, p=path, r=raw: b(w, w.write("space.yaml", with_raw(w.a.space_doc, p, r))),
        )
add("space", "an-arch-file", lambda w: ["supernet", "train", "--space", w.arch])
add("space", "a-checkpoint", lambda w: ["latency", "fit", "--space", w.model])
add("space", "the-python-source", lambda w: describe(w, "--space", str(ROOT / "nas" / "cli.py")))

# -- architectures (also best.yaml's arch), and timm baselines
A0 = "stages.0"
FWA_STAGE = {
    "family": "fwa",
    "depth": 1,
    "width": 16,
    "stride": 2,
    "knobs": {
        "heads": 2,
        "mlp_ratio": 1,
        "kv_rule": "grid",
        "kv_size": 2,
        "aggregator": "avg",
        "normaliser": "softmax",
    },
}
ARCH_MUTATIONS: dict[str, tuple[str, Any]] = {
    "unknown-top-key": ("optimizer", "sgd"),
    "resolution-missing": ("resolution", DELETE),
    "resolution-zero": ("resolution", 0),
    "resolution-absurd": ("resolution", 10**6),
    "resolution-fraction": ("resolution", 32.5),
    "resolution-string": ("resolution", "32"),
    "resolution-list": ("resolution", [32, 64]),
    "resolution-nan": ("resolution", NAN),
    "resolution-inf": ("resolution", INF),
    "resolution-bool": ("resolution", True),
    "in-channels-zero": ("in_channels", 0),
    "in-channels-absurd": ("in_channels", 10**5),
    "in-channels-missing": ("in_channels", DELETE),
    "num-classes-zero": ("num_classes", 0),
    "num-classes-absurd": ("num_classes", 10**9),
    "num-classes-bool": ("num_classes", True),
    "num-classes-negative": ("num_classes", -1),
    "global-tokens-negative": ("global_tokens", -1),
    "global-tokens-absurd": ("global_tokens", 10**6),
    "global-tokens-nan": ("global_tokens", NAN),
    "global-tokens-list": ("global_tokens", [0, 4]),
    "stem-missing": ("stem", DELETE),
    "stem-list": ("stem", [{"width": 8, "stride": 2}]),
    "stem-type-unknown": ("stem.type", "vit"),
    "stem-width-zero": ("stem.width", 0),
    "stem-width-absurd": ("stem.width", 10**8),
    "stem-width-list": ("stem.width", [8, 12]),
    "stem-stride-zero": ("stem.stride", 0),
    "stem-stride-absurd": ("stem.stride", 10**4),
    "stem-act-unknown": ("stem.act", "swishy"),
    "stages-empty": ("stages", []),
    "stages-missing": ("stages", DELETE),
    "stages-mapping": ("stages", {"0": {}}),
    "stage-null": (A0, None),
    "stage-family-unknown": (f"{A0}.family", "resnet"),
    "stage-family-missing": (f"{A0}.family", DELETE),
    "stage-family-list": (f"{A0}.family", ["ghost"]),
    "stage-depth-zero": (f"{A0}.depth", 0),
    "stage-depth-absurd": (f"{A0}.depth", 10**5),
    "stage-depth-string": (f"{A0}.depth", "one"),
    "stage-width-negative": (f"{A0}.width", -16),
    "stage-width-absurd": (f"{A0}.width", 10**9),
    "stage-width-nan": (f"{A0}.width", NAN),
    "stage-stride-zero": (f"{A0}.stride", 0),
    "stage-stride-fraction": (f"{A0}.stride", 2.5),
    "stage-stride-absurd": (f"{A0}.stride", 4096),
    "stage-knobs-list": (f"{A0}.knobs", [2, 3]),
    "stage-knob-unknown": (f"{A0}.knobs.dilation", 2),
    "stage-unknown-key": (f"{A0}.dropout", 0.1),
    "expansion-nan": (f"{A0}.knobs.expansion", NAN),
    "expansion-inf": (f"{A0}.knobs.expansion", INF),
    "expansion-absurd": (f"{A0}.knobs.expansion", 1e12),
    "expansion-below-one": (f"{A0}.knobs.expansion", 0.9),
    "expansion-string": (f"{A0}.knobs.expansion", "2x"),
    "kernel-even": (f"{A0}.knobs.kernel", 4),
    "kernel-absurd": (f"{A0}.knobs.kernel", 10**9),
    "se-above-one": (f"{A0}.knobs.se", 1.5),
    "se-nan": (f"{A0}.knobs.se", NAN),
    "ratio-5": (f"{A0}.knobs.ratio", 5),
    "per-block-list-too-long": (f"{A0}.knobs.kernel", [3, 5, 7]),
    "per-block-list-empty": (f"{A0}.knobs.kernel", []),
    "head-missing": ("head", DELETE),
    "head-width-zero": ("head.width", 0),
    "head-width-absurd": ("head.width", 10**9),
    "head-type-unknown": ("head.type", "mlp"),
    "head-neck-negative": ("head.neck", -1),
    "head-neck-absurd": ("head.neck", 10**9),
    "fwa-heads-not-dividing": (A0, {**FWA_STAGE, "knobs": {**FWA_STAGE["knobs"], "heads": 3}}),
    "fwa-heads-zero": (A0, {**FWA_STAGE, "knobs": {**FWA_STAGE["knobs"], "heads": 0}}),
    "fwa-heads-absurd": (A0, {**FWA_STAGE, "knobs": {**FWA_STAGE["knobs"], "heads": 10**6}}),
    "fwa-mlp-ratio-inf": (A0, {**FWA_STAGE, "knobs": {**FWA_STAGE["knobs"], "mlp_ratio": INF}}),
    "fwa-kv-size-absurd": (A0, {**FWA_STAGE, "knobs": {**FWA_STAGE["knobs"], "kv_size": 10**6}}),
    "fwa-missing-required-knob": (A0, {**FWA_STAGE, "knobs": {"heads": 2}}),
    "fwa-with-ghost-knobs": (A0, {**FWA_STAGE, "knobs": {"expansion": 2, "kernel": 3, "se": 0}}),
}
ARCH_COMMANDS = KIND_COMMANDS["arch"]
for index, (name, (path, value)) in enumerate(ARCH_MUTATIONS.items()):
    build = ARCH_COMMANDS[0] if index % 3 else ARCH_COMMANDS[1 + (index // 3) % 2]
    add("arch", name, lambda w, b=build, p=path, v=value: b(w, w.yaml("arch.yaml", mutate(w.a.arch_doc, p, v))))
ARCH_RAW: dict[str, tuple[str, str]] = {
    "recursive-knob": (f"{A0}.knobs.expansion", "&loop [*loop]"),
    "recursive-stage": (A0, "&loop {family: ghost, depth: 1, width: 16, stride: 2, knobs: *loop}"),
    "laughs-per-block-knob": (f"{A0}.knobs.kernel", laughs(6)),
    "yes-as-width": (f"{A0}.width", "yes"),
    "huge-int-width": (f"{A0}.width", "9" * 4000),
    "float-overflow-expansion": (f"{A0}.knobs.expansion", "1.0e+400"),
}
for name, (path, raw) in ARCH_RAW.items():
    add(
        "arch",
        f"{name}-describe",
        lambda w, p=path, r=raw: ["describe", w.write("a.yaml", with_raw(w.a.arch_doc, p, r))],
    )
    add(
        "arch", f"{name}-measure", lambda w, p=path, r=raw: ["measure", w.write("a.yaml", with_raw(w.a.arch_doc, p, r))]
    )
add("arch", "a-space-file", lambda w: ["describe", TINY])
add("arch", "a-space-file-measure", lambda w: ["measure", TINY])
add("arch", "a-checkpoint", lambda w: ["describe", w.model])
add("arch", "retrain-a-folder-without-top", lambda w: ["retrain", w.folder("run", {"x.txt": "x"})])
add("arch", "describe-window-too-large-at-resolution", lambda w: ["describe", LIGHTVIT_T, "--resolution", "32"])
add("arch", "describe-resolution-below-strides", lambda w: ["describe", LIGHTVIT_T, "--resolution", "8"])
TIMM_ARCHS: dict[str, Callable[[W], str]] = {
    "empty-name": lambda w: "timm:",
    "unknown-model": lambda w: "timm:definitely_not_a_model",
    "shell-in-name": lambda w: "timm:resnet18;rm -rf ~",
    "path-in-name": lambda w: "timm:../../etc/passwd",
    "yaml-resolution-zero": lambda w: w.yaml("t.yaml", {"timm": "resnet18", "resolution": 0}),
    "yaml-resolution-absurd": lambda w: w.yaml("t.yaml", {"timm": "resnet18", "resolution": 10**6}),
    "yaml-in-channels-zero": lambda w: w.yaml("t.yaml", {"timm": "resnet18", "in_channels": 0}),
    "yaml-in-channels-absurd": lambda w: w.yaml("t.yaml", {"timm": "resnet18", "in_channels": 10**6}),
    "yaml-num-classes-negative": lambda w: w.yaml("t.yaml", {"timm": "resnet18", "num_classes": -1}),
    "yaml-unknown-key": lambda w: w.yaml("t.yaml", {"timm": "resnet18", "pretrained": True}),
    "yaml-name-null": lambda w: w.yaml("t.yaml", {"timm": None}),
    "yaml-name-list": lambda w: w.yaml("t.yaml", {"timm": ["resnet18"]}),
    "yaml-unknown-model": lambda w: w.yaml("t.yaml", {"timm": "resnet_9000", "resolution": 32}),
}
for name, make in TIMM_ARCHS.items():
    add("timm", f"describe-{name}", lambda w, m=make: ["describe", m(w)])
for name in ("empty-name", "unknown-model", "yaml-resolution-zero", "yaml-unknown-key"):
    add("timm", f"measure-{name}", lambda w, m=TIMM_ARCHS[name]: ["measure", m(w)])
    add("timm", f"retrain-{name}", lambda w, m=TIMM_ARCHS[name]: ["retrain", m(w)])


# -- best.yaml: a search's record, hand-edited or damaged
def best_doc(w: W) -> dict:
    return {
        "arch_id": w.a.arch_id,
        "arch": w.a.arch_doc,
        "latency_ms": 1.0,
        "latency_p90_ms": 1.2,
        "budget_ms": 5.0,
        "val_accuracy_supernet": 0.5,
        "params": 1000,
        "macs": 100000,
        "device": {"name": "cpu", "device": "cpu", "threads": 1, "runtime": "torch"},
        "provenance": {
            "space": TINY,
            "space_hash": w.a.space_hash,
            "data": "fashion-mnist",
            "supernet": w.path("no-such-supernet.pt"),
        },
    }


BEST_MUTATIONS: dict[str, tuple[str, Any]] = {
    "arch-null": ("arch", None),
    "arch-string": ("arch", "tiny"),
    "arch-list": ("arch", [1, 2]),
    "arch-empty": ("arch", {}),
    "arch-width-absurd": ("arch.stem.width", 10**9),
    "arch-classes-differ-from-data": ("arch.num_classes", 7),
    "device-a-string": ("device", "cpu"),
    "device-a-list": ("device", ["cpu"]),
    "device-threads-zero": ("device.threads", 0),
    "device-threads-string": ("device.threads", "two"),
    "device-threads-absurd": ("device.threads", 10**6),
    "device-threads-negative": ("device.threads", -4),
    "device-unknown": ("device.device", "tpu"),
    "device-runtime-unknown": ("device.runtime", "tensorrt"),
    "device-runtime-number": ("device.runtime", 3),
    "provenance-a-string": ("provenance", "search"),
    "provenance-a-list": ("provenance", []),
    "provenance-data-missing-file": ("provenance.data", "/no/such/data.npz"),
    "provenance-data-number": ("provenance.data", 5),
    "provenance-data-list": ("provenance.data", ["a", "b"]),
    "budget-a-string": ("budget_ms", "fast"),
    "budget-nan": ("budget_ms", NAN),
}
for name, (path, value) in BEST_MUTATIONS.items():
    add(
        "best-yaml",
        f"retrain-{name}",
        lambda w, p=path, v=value: ["retrain", w.yaml("run/best.yaml", mutate(best_doc(w), p, v))],
    )
for name in ("arch-null", "arch-string", "arch-list", "arch-empty", "arch-width-absurd"):
    path, value = BEST_MUTATIONS[name]
    add(
        "best-yaml",
        f"describe-{name}",
        lambda w, p=path, v=value: ["describe", w.yaml("run/best.yaml", mutate(best_doc(w), p, v))],
    )
    add(
        "best-yaml",
        f"measure-{name}",
        lambda w, p=path, v=value: ["measure", w.yaml("run/best.yaml", mutate(best_doc(w), p, v))],
    )
add(
    "best-yaml",
    "retrain-init-supernet-missing-checkpoint",
    lambda w: ["retrain", w.yaml("run/best.yaml", best_doc(w)), "--init", "supernet"],
)
add(
    "best-yaml",
    "retrain-distill-missing-checkpoint",
    lambda w: ["retrain", w.yaml("run/best.yaml", best_doc(w)), "--distill", "0.5"],
)
# --top K of a search: a folder without a finished search, or with damaged front files
TOPS: dict[str, Callable[[W], str]] = {
    "empty-folder": lambda w: w.folder("search"),
    "user-folder": lambda w: w.folder("search", {"notes.txt": "x"}),
    "best-yaml-without-front": lambda w: w.yaml("search/best.yaml", best_doc(w)),
    "front-not-utf8": lambda w: w.folder("search", {"front/01-abc.yaml": b"arch: caf\xe9\n"}),
    "front-list": lambda w: w.folder("search", {"front/01-abc.yaml": "- 1\n- 2\n"}),
    "front-binary": lambda w: w.folder("search", {"front/01-abc.yaml": RANDOM_BYTES}),
    "front-bad-arch": lambda w: w.folder(
        "search", {"front/01-abc.yaml": yaml.safe_dump(mutate(best_doc(w), "arch.stages", []))}
    ),
    "a-file": lambda w: w.write("search.txt", "x"),
    "missing": lambda w: w.path("no-such-search"),
}
for name, make in TOPS.items():
    add("retrain-top", name, lambda w, m=make: ["retrain", m(w), "--top", "1"])


# -- retraining recipes
RECIPE_VALUES: dict[str, Any] = {
    "unknown-key": {"optimizer": "sgd"},
    "misspelt-key": {"epoch": 3},
    "capitalised-key": {"Epochs": 3},
    "epochs-string": {"epochs": "ten"},
    "epochs-fraction": {"epochs": 1.5},
    "epochs-bool": {"epochs": True},
    "epochs-zero": {"epochs": 0},
    "epochs-negative": {"epochs": -5},
    "epochs-absurd": {"epochs": 10**9},
    "epochs-inf": {"epochs": INF},
    "epochs-null": {"epochs": None},
    "epochs-list": {"epochs": [1, 2]},
    "batch-size-one": {"batch_size": 1},
    "batch-size-zero": {"batch_size": 0},
    "batch-size-absurd": {"batch_size": 10**9},
    "lr-zero": {"lr": 0.0},
    "lr-negative": {"lr": -0.1},
    "lr-nan": {"lr": NAN},
    "lr-inf": {"lr": INF},
    "lr-string": {"lr": "fast"},
    "weight-decay-negative": {"weight_decay": -1.0},
    "weight-decay-inf": {"weight_decay": INF},
    "warmup-negative": {"warmup_epochs": -1},
    "warmup-absurd": {"warmup_epochs": 10**9},
    "label-smoothing-one": {"label_smoothing": 1.0},
    "label-smoothing-nan": {"label_smoothing": NAN},
    "mixup-negative": {"mixup": -1.0},
    "mixup-nan": {"mixup": NAN},
    "cutmix-inf": {"cutmix": INF},
    "mix-prob-two": {"mix_prob": 2.0},
    "randaugment-ops-negative": {"randaugment_ops": -1},
    "randaugment-ops-absurd": {"randaugment_ops": 10**6},
    "randaugment-magnitude-31": {"randaugment_magnitude": 31},
    "random-erasing-above-one": {"random_erasing": 1.5},
    "drop-path-one": {"drop_path": 1.0},
    "ema-decay-one": {"ema_decay": 1.0},
    "ema-decay-nan": {"ema_decay": NAN},
    "clip-grad-negative": {"clip_grad": -1.0},
    "clip-grad-nan": {"clip_grad": NAN},
    "init-unknown": {"init": "pretrained"},
    "init-number": {"init": 1},
    "distill-above-one": {"distill": 1.5},
    "distill-nan": {"distill": NAN},
    "distill-negative": {"distill": -0.5},
}
for name, document in RECIPE_VALUES.items():
    add("recipe", name, lambda w, d=document: retrain(w, "--recipe", w.yaml("recipe.yaml", d)))
add("recipe", "a-space-file", lambda w: retrain(w, "--recipe", TINY))
add("recipe", "recursive-value", lambda w: retrain(w, "--recipe", w.write("recipe.yaml", "epochs: &loop [*loop]\n")))
add("recipe", "laughs-value", lambda w: retrain(w, "--recipe", w.write("recipe.yaml", f"lr: {laughs(6)}\n")))
add("recipe", "mixed-type-keys", lambda w: retrain(w, "--recipe", w.write("recipe.yaml", "1: 2\nepochs: 3\n~: 4\n")))


# -- search configs (--config FILE)
def config_doc() -> dict:
    return {
        "space": TINY,
        "latency_budget": "5ms",
        "device": "cpu",
        "runtime": "torch",
        "threads": 1,
        "trials": 40,
        "sampler": "nsga2",
        "seed": 0,
        "epochs": 6,
        "backend": "optuna",
        "workers": 1,
    }


CONFIG_VALUES: dict[str, tuple[str, Any]] = {
    "budget-number": ("latency_budget", 5),
    "budget-zero": ("latency_budget", "0ms"),
    "budget-nan": ("latency_budget", "nanms"),
    "budget-null": ("latency_budget", None),
    "budget-list": ("latency_budget", ["5ms"]),
    "budget-over-a-minute": ("latency_budget", "2min"),
    "space-missing": ("space", DELETE),
    "space-number": ("space", 42),
    "space-list": ("space", [TINY]),
    "space-missing-file": ("space", "/no/such/space.yaml"),
    "space-mapping": ("space", {"name": "tiny"}),
    "trials-zero": ("trials", 0),
    "trials-negative": ("trials", -1),
    "trials-absurd": ("trials", 10**9),
    "trials-string": ("trials", "many"),
    "trials-fraction": ("trials", 2.5),
    "trials-bool": ("trials", True),
    "trials-nan": ("trials", NAN),
    "threads-zero": ("threads", 0),
    "threads-absurd": ("threads", 10**6),
    "seed-negative": ("seed", -1),
    "seed-absurd": ("seed", 2**40),
    "epochs-zero": ("epochs", 0),
    "epochs-inf": ("epochs", INF),
    "sampler-unknown": ("sampler", "grid"),
    "sampler-number": ("sampler", 3),
    "backend-unknown": ("backend", "dask"),
    "workers-zero": ("workers", 0),
    "device-unknown": ("device", "tpu"),
    "device-number": ("device", 0),
    "runtime-unknown": ("runtime", "tensorrt"),
    "data-number": ("data", 5),
    "data-missing-file": ("data", "/no/such/data.npz"),
    "supernet-number": ("supernet", 123),
    "supernet-missing-file": ("supernet", "/no/such/supernet.pt"),
    "max-params-zero": ("max_params", 0),
    "max-params-negative": ("max_params", -5),
    "max-macs-absurd": ("max_macs", 10**20),
    "limit-train-zero": ("limit_train", 0),
    "data-workers-absurd": ("data_workers", 100),
    "storage-number": ("storage", 5),
    "predictor-list": ("predictor", []),
    "address-mapping": ("address", {}),
}
for name, (path, value) in CONFIG_VALUES.items():
    add(
        "config",
        name,
        lambda w, p=path, v=value: ["search", "--config", w.yaml("config.yaml", mutate(config_doc(), p, v))],
    )
add("config", "only-unknown-keys", lambda w: ["search", "--config", w.yaml("config.yaml", {"foo": 1})])
add("config", "a-space-file", lambda w: ["search", "--config", TINY])
add(
    "config",
    "recursive-value",
    lambda w: ["search", "--config", w.write("config.yaml", with_raw(config_doc(), "trials", "&loop [*loop]"))],
)
add("config", "mixed-type-keys", lambda w: ["search", "--config", w.write("config.yaml", "1: 2\nspace: x\n~: 3\n")])


# ---- 6. data: .npz files and image folders --------------------------------------------------------------------
def arrays(train: int = 30, test: int = 12, classes: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (train, 32, 32), dtype=np.uint8),
        "y_train": np.arange(train) % classes,
        "x_test": rng.integers(0, 256, (test, 32, 32), dtype=np.uint8),
        "y_test": np.arange(test) % classes,
    }


def npz_bytes(**values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **values)
    return buffer.getvalue()


def npy_header_claiming(elements: int) -> bytes:
    header = f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({elements},), }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\x00" * 64


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def changed(**values: Any) -> dict[str, np.ndarray]:
    base = arrays()
    for key, value in values.items():
        if value is DELETE:
            del base[key]
        else:
            base[key] = value
    return base


def flipped_byte(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0xFF
    return bytes(out)


NPZ_FILES: dict[str, Callable[[W], str]] = {
    "not-a-zip": lambda w: w.write("d.npz", RANDOM_BYTES),
    "empty-file": lambda w: w.write("d.npz", b""),
    "text-file": lambda w: w.write("d.npz", "x_train,y_train\n1,2\n"),
    "zip-of-text": lambda w: w.write("d.npz", zip_of({"readme.txt": b"hello"})),
    "zip-of-garbage-npy": lambda w: w.write("d.npz", zip_of({f"{k}.npy": b"garbage" for k in arrays()})),
    "truncated": lambda w: w.write("d.npz", npz_bytes(**arrays())[:20_000]),
    "corrupt-crc": lambda w: w.write("d.npz", flipped_byte(npz_bytes(**arrays()), 5000)),
    "plain-npy": lambda w: w.write(
        "d.npz", (lambda b: (np.save(b, arrays()["x_train"]), b.getvalue())[1])(io.BytesIO())
    ),
    "pickle": lambda w: w.write("d.npz", pickle.dumps(arrays())),
    "header-claims-a-terabyte": lambda w: w.write(
        "d.npz",
        zip_of(
            {
                **{f"{k}.npy": npz_member(k) for k in ("y_train", "x_test", "y_test")},
                "x_train.npy": npy_header_claiming(10**12),
            }
        ),
    ),
    "object-images": lambda w: w.npz("d.npz", **changed(x_train=np.array([object()] * 30, dtype=object))),
    "object-labels": lambda w: w.npz("d.npz", **changed(y_train=np.array([1, "a", None] * 10, dtype=object))),
    "object-class-names": lambda w: w.npz("d.npz", **arrays(), class_names=np.array(["a", "b", None], dtype=object)),
    "no-arrays": lambda w: w.npz("d.npz"),
    "missing-x-test": lambda w: w.npz("d.npz", **changed(x_test=DELETE)),
    "missing-y-train": lambda w: w.npz("d.npz", **changed(y_train=DELETE)),
    "only-class-names": lambda w: w.npz("d.npz", class_names=np.array(["a", "b"])),
    "misnamed-arrays": lambda w: w.npz("d.npz", **{k.upper(): v for k, v in arrays().items()}),
    "train-length-mismatch": lambda w: w.npz("d.npz", **changed(y_train=np.arange(29) % 3)),
    "test-length-mismatch": lambda w: w.npz("d.npz", **changed(y_test=np.arange(13) % 3)),
    "val-length-mismatch": lambda w: w.npz(
        "d.npz", **arrays(), x_val=np.zeros((5, 32, 32), np.uint8), y_val=np.arange(4) % 3
    ),
    "empty-train": lambda w: w.npz(
        "d.npz", **changed(x_train=np.zeros((0, 32, 32), np.uint8), y_train=np.zeros(0, np.int64))
    ),
    "empty-test": lambda w: w.npz(
        "d.npz", **changed(x_test=np.zeros((0, 32, 32), np.uint8), y_test=np.zeros(0, np.int64))
    ),
    "float-images": lambda w: w.npz(
        "d.npz", **changed(x_train=np.random.default_rng(0).random((30, 32, 32), dtype=np.float32))
    ),
    "int64-images": lambda w: w.npz("d.npz", **changed(x_train=np.zeros((30, 32, 32), np.int64))),
    "bool-images": lambda w: w.npz("d.npz", **changed(x_train=np.zeros((30, 32, 32), bool))),
    "uint16-images": lambda w: w.npz("d.npz", **changed(x_test=np.zeros((12, 32, 32), np.uint16))),
    "complex-images": lambda w: w.npz("d.npz", **changed(x_train=np.zeros((30, 32, 32), np.complex64))),
    "string-images": lambda w: w.npz("d.npz", **changed(x_train=np.array(["img"] * 30))),
    "images-1d": lambda w: w.npz("d.npz", **changed(x_train=np.zeros(30, np.uint8))),
    "images-2d": lambda w: w.npz("d.npz", **changed(x_train=np.zeros((30, 1024), np.uint8))),
    "images-5d": lambda w: w.npz("d.npz", **changed(x_train=np.zeros((30, 1, 1, 32, 32), np.uint8))),
    "images-zero-size": lambda w: w.npz("d.npz", **changed(x_train=np.zeros((30, 0, 0), np.uint8))),
    "images-scalar": lambda w: w.npz("d.npz", **changed(x_train=np.uint8(7))),
    "labels-fractional": lambda w: w.npz("d.npz", **changed(y_train=(np.arange(30) % 3) + 0.5)),
    "labels-strings": lambda w: w.npz("d.npz", **changed(y_train=np.array(["cat", "dog", "eel"] * 10))),
    "labels-nan": lambda w: w.npz("d.npz", **changed(y_train=np.full(30, np.nan))),
    "labels-negative": lambda w: w.npz("d.npz", **changed(y_train=np.arange(30) % 3 - 1)),
    "labels-test-negative": lambda w: w.npz("d.npz", **changed(y_test=-(np.arange(12) % 3))),
    "labels-2d": lambda w: w.npz("d.npz", **changed(y_train=np.stack([np.arange(30) % 3] * 2, axis=1))),
    "labels-scalar": lambda w: w.npz("d.npz", **changed(y_train=np.int64(1))),
    "labels-beyond-class-names": lambda w: w.npz("d.npz", **arrays(), class_names=np.array(["a", "b"])),
    "test-label-beyond-class-names": lambda w: w.npz(
        "d.npz", **changed(y_test=np.arange(12) % 4), class_names=np.array(["a", "b", "c"])
    ),
    "labels-beyond-100k-classes": lambda w: w.npz("d.npz", **changed(y_train=np.where(np.arange(30) % 2, 200_000, 0))),
    "labels-int64-max": lambda w: w.npz(
        "d.npz", **changed(y_train=np.where(np.arange(30) % 2, np.iinfo(np.int64).max, 0))
    ),
    "labels-uint64-huge": lambda w: w.npz(
        "d.npz", **changed(y_train=np.where(np.arange(30) % 2, 2**63 + 5, 0).astype(np.uint64))
    ),
    "single-class": lambda w: w.npz("d.npz", **changed(y_train=np.zeros(30, np.int64), y_test=np.zeros(12, np.int64))),
    "single-class-train": lambda w: w.npz("d.npz", **changed(y_train=np.zeros(30, np.int64))),
    "a-folder-named-npz": lambda w: w.folder("d.npz"),
    "dev-null": lambda w: "/dev/null",
    "missing": lambda w: w.path("no-such-data.npz"),
    "csv-file": lambda w: w.write("d.csv", "label,pixels\n1,0 0 0\n"),
    "fifo": lambda w: w.fifo("d.npz"),
    "symlink-loop": lambda w: w.loop("d.npz"),
    "name-too-long": lambda w: w.path(TOO_LONG),
}


def npz_member(key: str) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, arrays()[key])
    return buffer.getvalue()


for name, make in NPZ_FILES.items():
    add("npz", name, lambda w, m=make: train(w, "--batch-size", "64", "--data", m(w)))
for name in ("object-images", "labels-negative", "single-class", "truncated", "not-a-zip"):
    add("npz", f"search-{name}", lambda w, m=NPZ_FILES[name]: search_ckpt(w, "--data", m(w)))
    add("npz", f"retrain-{name}", lambda w, m=NPZ_FILES[name]: retrain(w, "--epochs", "1", "--data", m(w)))
    add("npz", f"rank-{name}", lambda w, m=NPZ_FILES[name]: rank(w, "--epochs", "1", "--data", m(w)))
    add("npz", f"export-{name}", lambda w, m=NPZ_FILES[name]: export(w, "--data", m(w)))


def truncated_png(w: W) -> bytes:
    return w.a.png[: len(w.a.png) // 2]


FOLDERS: dict[str, Callable[[W], str]] = {
    "empty": lambda w: w.folder("images"),
    "loose-images-no-classes": lambda w: w.folder("images", {f"{i}.png": w.a.png for i in range(6)}),
    "class-folders-empty": lambda w: (w.folder("images/a"), w.folder("images/b"))[0].rsplit("/", 1)[0],
    "only-text-files": lambda w: w.folder("images", {f"{c}/{i}.txt": "not an image" for c in "ab" for i in range(3)}),
    "only-corrupt-png": lambda w: w.folder(
        "images", {f"{c}/{i}.png": RANDOM_BYTES[i * 100 :] for c in "ab" for i in range(4)}
    ),
    "only-empty-jpg": lambda w: w.folder("images", {f"{c}/{i}.jpg": b"" for c in "ab" for i in range(4)}),
    "only-truncated-png": lambda w: w.folder(
        "images", {f"{c}/{i}.png": truncated_png(w) for c in "ab" for i in range(4)}
    ),
    "only-decompression-bombs": lambda w: w.folder(
        "images", {f"{c}/{i}.png": BOMB_PNG for c in "ab" for i in range(4)}
    ),
    "mostly-corrupt": lambda w: w.folder(
        "images",
        {**{f"{c}/{i}.png": b"junk" for c in "ab" for i in range(6)}, **{f"{c}/ok.png": w.a.png for c in "ab"}},
    ),
    "single-class": lambda w: w.folder("images", {f"only/{i}.png": w.a.png for i in range(10)}),
    "train-without-test": lambda w: w.folder("images", {f"train/{c}/{i}.png": w.a.png for c in "ab" for i in range(6)}),
    "test-classes-empty": lambda w: w.folder(
        "images",
        {**{f"train/{c}/{i}.png": w.a.png for c in "ab" for i in range(6)}, "test/a/.keep": "", "test/b/.keep": ""},
    ),
    "test-only-corrupt": lambda w: w.folder(
        "images",
        {
            **{f"train/{c}/{i}.png": w.a.png for c in "ab" for i in range(6)},
            **{f"test/{c}/{i}.png": b"junk" for c in "ab" for i in range(3)},
        },
    ),
    "test-classes-disjoint": lambda w: w.folder(
        "images",
        {
            **{f"train/{c}/{i}.png": w.a.png for c in "ab" for i in range(6)},
            **{f"test/{c}/{i}.png": w.a.png for c in "xy" for i in range(3)},
        },
    ),
    "images-are-folders": lambda w: (
        [w.folder(f"images/{c}/{i}.png") for c in "ab" for i in range(3)],
        w.path("images"),
    )[1],
}
for name, make in FOLDERS.items():
    add("image-folder", name, lambda w, m=make: train(w, "--batch-size", "64", "--data", m(w)))
for name in ("empty", "only-corrupt-png", "single-class"):
    add("image-folder", f"search-{name}", lambda w, m=FOLDERS[name]: search_ckpt(w, "--data", m(w)))
    add("image-folder", f"retrain-{name}", lambda w, m=FOLDERS[name]: retrain(w, "--epochs", "1", "--data", m(w)))
    add("image-folder", f"export-{name}", lambda w, m=FOLDERS[name]: export(w, "--data", m(w)))


# ---- 7. checkpoints -----------------------------------------------------------------------------------------------
def torch_zip_lookalike() -> bytes:
    return zip_of(
        {"archive/data.pkl": b"\x80\x02}q\x00.garbage", "archive/version": b"3\n", "archive/byteorder": b"little"}
    )


GARBAGE_CHECKPOINTS: dict[str, Callable[[W], str]] = {
    "empty-file": lambda w: w.write("ckpt.pt", b""),
    "random-bytes": lambda w: w.write("ckpt.pt", RANDOM_BYTES),
    "text": lambda w: w.write("ckpt.pt", "this is my checkpoint, trust me\n"),
    "zip-not-a-checkpoint": lambda w: w.write("ckpt.pt", zip_of({"photo.jpg": b"\xff\xd8\xff", "a.txt": b"x"})),
    "torch-zip-lookalike": lambda w: w.write("ckpt.pt", torch_zip_lookalike()),
    "truncated-model": lambda w: w.write("ckpt.pt", w.a.model_bytes[: len(w.a.model_bytes) // 2]),
    "truncated-supernet": lambda w: w.write("ckpt.pt", w.a.supernet_bytes[:4096]),
    "legacy-pickle-int": lambda w: w.write("ckpt.pt", pickle.dumps(5, protocol=2)),
    "pickle-protocol-5": lambda w: w.write("ckpt.pt", pickle.dumps({"format": "nas-model"}, protocol=5)),
    "gzipped-checkpoint": lambda w: w.write("ckpt.pt", gzip.compress(w.a.model_bytes)),
    "elf-binary": lambda w: w.write("ckpt.pt", ELF),
    "onnx-lookalike": lambda w: w.write("ckpt.pt", b"\x08\x07\x12\x07pytorch" + RANDOM_BYTES[:256]),
    "torch-list": lambda w: w.torch_file("ckpt.pt", [1, 2, 3]),
    "torch-tensor": lambda w: w.torch_file("ckpt.pt", torch.zeros(3)),
    "torch-string": lambda w: w.torch_file("ckpt.pt", "nas-model"),
    "torch-none": lambda w: w.torch_file("ckpt.pt", None),
    "foreign-object": lambda w: w.torch_file("ckpt.pt", argparse.Namespace(format="nas-model")),
    "format-missing": lambda w: w.torch_file("ckpt.pt", {"model": {}, "arch": w.a.arch_doc}),
    "format-other": lambda w: w.torch_file("ckpt.pt", {"format": "keras", "model": {}}),
    "format-a-list": lambda w: w.torch_file("ckpt.pt", {"format": ["nas-model"], "model": {}}),
    "a-folder": lambda w: w.folder("ckpt.pt"),
    "dev-null": lambda w: "/dev/null",
    "missing": lambda w: w.path("no-such.pt"),
    "fifo": lambda w: w.fifo("ckpt.pt"),
    "symlink-loop": lambda w: w.loop("ckpt.pt"),
    "name-too-long": lambda w: w.path(TOO_LONG),
}
CHECKPOINT_COMMANDS: dict[str, Callable[[W, str], list[str]]] = {
    "export": lambda w, c: ["export", c],
    "search": lambda w, c: search(w, "--supernet", c),
    "rank": lambda w, c: ["supernet", "rank", "--space", TINY, "--supernet", c],
    "retrain": lambda w, c: retrain(w, "--init", "supernet", "--supernet", c),
}
for index, (name, make) in enumerate(GARBAGE_CHECKPOINTS.items()):
    for command, build in CHECKPOINT_COMMANDS.items():
        if command == "retrain" and index % 3:
            continue
        add("checkpoint", f"{command}-{name}", lambda w, b=build, m=make: b(w, m(w)))


def model_payload(w: W, **changes: Any) -> dict:

    payload = {
        "format": "nas-model",
        "version": 3,
        "arch": w.a.arch_doc,
        "arch_id": w.a.arch_id,
        "crop_pct": 1.0,
        "model": build_state(w),
    }
    for key, value in changes.items():
        if value is DELETE:
            del payload[key]
        else:
            payload[key] = value
    return payload


def build_state(w: W) -> dict:
    return torch.load(io.BytesIO(w.a.model_bytes), weights_only=True)["model"]


MODEL_CHECKPOINTS: dict[str, Callable[[W], str]] = {
    "a-supernet": lambda w: w.supernet,
    "no-arch": lambda w: w.torch_file("m.pt", model_payload(w, arch=DELETE)),
    "no-weights": lambda w: w.torch_file("m.pt", model_payload(w, model=DELETE)),
    "arch-a-string": lambda w: w.torch_file("m.pt", model_payload(w, arch="tiny")),
    "arch-none": lambda w: w.torch_file("m.pt", model_payload(w, arch=None)),
    "arch-width-absurd": lambda w: w.torch_file(
        "m.pt", model_payload(w, arch=mutate(w.a.arch_doc, "stem.width", 10**9))
    ),
    "arch-kernel-even": lambda w: w.torch_file(
        "m.pt", model_payload(w, arch=mutate(w.a.arch_doc, "stages.0.knobs.kernel", 4))
    ),
    "weights-empty": lambda w: w.torch_file("m.pt", model_payload(w, model={})),
    "weights-a-string": lambda w: w.torch_file("m.pt", model_payload(w, model="weights")),
    "weights-a-list": lambda w: w.torch_file("m.pt", model_payload(w, model=[1, 2])),
    "weights-a-tensor": lambda w: w.torch_file("m.pt", model_payload(w, model=torch.zeros(3))),
    "weights-of-another-arch": lambda w: w.torch_file("m.pt", model_payload(w, model=w.a.largest_state)),
    "weights-not-tensors": lambda w: w.torch_file("m.pt", model_payload(w, model={k: 0 for k in build_state(w)})),
    "weights-extra-key": lambda w: w.torch_file(
        "m.pt", model_payload(w, model={**build_state(w), "extra.weight": torch.zeros(1)})
    ),
    "old-weight-layout": lambda w: w.torch_file("m.pt", {**model_payload(w), "weight_layout": 1}, layout=False),
    "weight-layout-string": lambda w: w.torch_file("m.pt", {**model_payload(w), "weight_layout": "2"}, layout=False),
    "payload-a-list-of-it": lambda w: w.torch_file("m.pt", [model_payload(w)]),
}
for name, make in MODEL_CHECKPOINTS.items():
    add("checkpoint", f"export-model-{name}", lambda w, m=make: ["export", m(w)])


def supernet_payload(w: W, **changes: Any) -> dict:
    payload = {
        "format": "nas-supernet",
        "version": 2,
        "space": w.a.space_doc,
        "space_hash": w.a.space_hash,
        "epoch": 1,
        "step": 0,
        "config": {},
        "history": [],
        "model": torch.load(io.BytesIO(w.a.supernet_bytes), weights_only=True)["model"],
    }
    for key, value in changes.items():
        if value is DELETE:
            del payload[key]
        else:
            payload[key] = value
    return payload


SUPERNET_CHECKPOINTS: dict[str, Callable[[W], str]] = {
    "a-retrained-model": lambda w: w.model,
    "other-space": lambda w: w.torch_file(
        "s.pt", supernet_payload(w, space_hash="0123456789ab", space={"name": "other"})
    ),
    "space-hash-missing": lambda w: w.torch_file("s.pt", supernet_payload(w, space_hash=DELETE)),
    "space-not-a-mapping": lambda w: w.torch_file("s.pt", supernet_payload(w, space="tiny", space_hash="bad")),
    "weights-missing": lambda w: w.torch_file("s.pt", supernet_payload(w, model=DELETE)),
    "weights-empty": lambda w: w.torch_file("s.pt", supernet_payload(w, model={})),
    "weights-a-string": lambda w: w.torch_file("s.pt", supernet_payload(w, model="weights")),
    "weights-a-tensor": lambda w: w.torch_file("s.pt", supernet_payload(w, model=torch.zeros(3))),
    "weights-of-a-model": lambda w: w.torch_file("s.pt", supernet_payload(w, model=build_state(w))),
    "old-weight-layout": lambda w: w.torch_file("s.pt", {**supernet_payload(w), "weight_layout": 1}, layout=False),
}
for name, make in SUPERNET_CHECKPOINTS.items():
    add("checkpoint", f"search-supernet-{name}", lambda w, m=make: search(w, "--supernet", m(w)))
    add(
        "checkpoint",
        f"rank-supernet-{name}",
        lambda w, m=make: ["supernet", "rank", "--space", TINY, "--supernet", m(w)],
    )
for name in ("a-retrained-model", "space-not-a-mapping", "weights-a-string"):
    add(
        "checkpoint",
        f"retrain-supernet-{name}",
        lambda w, m=SUPERNET_CHECKPOINTS[name]: retrain(w, "--distill", "0.5", "--supernet", m(w)),
    )
add("checkpoint", "retrain-init-supernet-without-one", lambda w: retrain(w, "--init", "supernet"))
add("checkpoint", "retrain-distill-without-supernet", lambda w: retrain(w, "--distill", "0.3"))
add(
    "checkpoint",
    "retrain-supernet-of-another-space",
    lambda w: retrain(
        w,
        "--init",
        "supernet",
        "--supernet",
        w.torch_file(
            "s.pt", supernet_payload(w, space=mutate(w.a.space_doc, "stages.0.width", [64]), space_hash="ffffffffffff")
        ),
    ),
)

# ---- 8. predictors and storage URLs for a search ----------------------------------------------------------------
PREDICTORS: dict[str, Callable[[W], str]] = {
    "missing": lambda w: w.path("no-such-predictor.json"),
    "empty": lambda w: w.write("p.json", b""),
    "not-json": lambda w: w.write("p.json", "predictor: yes\n"),
    "not-utf8": lambda w: w.write("p.json", b'{"format": "caf\xe9"}'),
    "json-list": lambda w: w.write("p.json", "[1, 2, 3]"),
    "json-other-format": lambda w: w.write("p.json", '{"format": "sklearn", "version": 1}'),
    "old-version": lambda w: w.write("p.json", '{"format": "nas-latency-predictor", "version": 1}'),
    "right-header-no-body": lambda w: w.write("p.json", '{"format": "nas-latency-predictor", "version": 6}'),
    "right-header-unknown-field": lambda w: w.write(
        "p.json", '{"format": "nas-latency-predictor", "version": 6, "weights": [1, 2], "bias": 0}'
    ),
    "deep-json": lambda w: w.write("p.json", "[" * 100_000 + "]" * 100_000),
    "a-folder": lambda w: w.folder("p.json"),
    "a-checkpoint": lambda w: w.model,
    "nan-json": lambda w: w.write("p.json", '{"format": "nas-latency-predictor", "version": NaN}'),
}
for name, make in PREDICTORS.items():
    add("predictor", name, lambda w, m=make: search_ckpt(w, "--predictor", m(w)))
STORAGES = {
    "not-a-url": "my database",
    "unknown-scheme": "foo://bar/baz",
    "sqlite-missing-folder": "sqlite:////no/such/folder/study.db",
    "postgres-without-driver-or-server": "postgresql://nas:pw@127.0.0.1:9/nas",
    "mysql-without-driver-or-server": "mysql://nas:pw@127.0.0.1:9/nas",
    "sqlite-a-folder": None,
    "journal-path-not-url": "/tmp/study.journal",
}
for name, url in STORAGES.items():
    if url is None:
        add("storage", name, lambda w: search_ckpt(w, "--storage", "sqlite:///" + w.folder("db-folder")))
    else:
        add("storage", name, lambda w, u=url: search_ckpt(w, "--storage", u))

# ---- 9. dashboard: folders that hold no search ----------------------------------------------------------------
DASHBOARDS: dict[str, Callable[[W], str]] = {
    "missing": lambda w: w.path("no-such-run"),
    "a-file": lambda w: w.write("run.txt", "x"),
    "empty-folder": lambda w: w.folder("run"),
    "user-folder": lambda w: w.folder("run", {"photo.jpg": b"\xff\xd8"}),
    "config-list": lambda w: w.folder("run", {"config.yaml": "- a\n- b\n"}),
    "config-not-utf8": lambda w: w.folder("run", {"config.yaml": b"storage: caf\xe9\n"}),
    "config-binary": lambda w: w.folder("run", {"config.yaml": RANDOM_BYTES}),
    "config-storage-number": lambda w: w.folder("run", {"config.yaml": "storage: 5\n"}),
    "config-storage-not-a-url": lambda w: w.folder("run", {"config.yaml": "storage: my database\n"}),
    "config-storage-missing-folder": lambda w: w.folder(
        "run", {"config.yaml": "storage: sqlite:////no/such/folder/x.db\n"}
    ),
    "dev-null": lambda w: "/dev/null",
    "name-too-long": lambda w: w.path(TOO_LONG),
    "symlink-loop": lambda w: w.loop("run"),
}
for name, make in DASHBOARDS.items():
    add("dashboard", name, lambda w, m=make: ["dashboard", m(w)])


# ---- 10. memory: within every bound, but far past what any machine holds ------------------------------------------
# Each arch or space passes every numeric bound, yet needs thousands of GiB (most far more) to run or train at the
# batch the command uses, so no machine can pass the check and start allocating; nas must size it on the meta
# device and refuse it in one line saying what it needs. The ONNX cases hold 0.8 to 3 billion parameters (over an
# ONNX file's 2 GiB of float32 weights): a small machine refuses them for memory, a big one for the ONNX cap.
MEMORY_MESSAGES = ("needs about", "ONNX file holds at most 2 GiB")
WIDE_CONV_STEM = {"type": "conv", "width": 8192, "stride": 1, "act": "relu"}
FWA_KNOBS = {"heads": 64, "mlp_ratio": 2, "kv_rule": "grid", "kv_size": 4, "aggregator": "avg", "normaliser": "softmax"}
RASA_KNOBS = {"heads": 2, "mlp_ratio": 4, "sr": 1, "dilations": [1, 3, 5], "recursion": 2}


def block(family: str, depth: int, width: int, stride: int, **knobs: Any) -> dict:
    """One stage of an arch."""
    return {"family": family, "depth": depth, "width": width, "stride": stride, "knobs": knobs}


def ghost(depth: int, width: int, stride: int, expansion: float = 2) -> dict:
    return block("ghost", depth, width, stride, expansion=expansion, kernel=3, se=0)


def patch_stem(width: int, stride: int, kernel: int) -> dict:
    return {"type": "patch", "width": width, "stride": stride, "kernel": kernel, "norm": "ln"}


def giant_arch(w: W, stages: list[dict], **top: Any) -> str:
    """The tiny space's smallest member with `stages` and the top-level keys in `top` (stem, head, resolution...)."""
    document = {**copy.deepcopy(w.a.arch_doc), "stages": stages, **top}
    return w.yaml("arch.yaml", document)


def reference(name: str, **top: Any) -> dict:
    """search_spaces/reference/NAME.yaml with the top-level keys in `top` changed."""
    return {**yaml.safe_load((ROOT / "search_spaces" / "reference" / f"{name}.yaml").read_text()), **top}


def giant_reference(w: W, name: str, **top: Any) -> str:
    return w.yaml("arch.yaml", reference(name, **top))


def giant_best(w: W, name: str, **top: Any) -> str:
    """A search's best.yaml whose arch is reference NAME with `top` changed (on the data's 10 classes)."""
    record = mutate(best_doc(w), "arch", reference(name, num_classes=10, **top))
    return w.yaml("best.yaml", mutate(record, "arch_id", DELETE))


def slot(stride: int, depth: list[int], width: list[int], **families: dict) -> dict:
    """One stage of a search space."""
    return {"stride": stride, "depth": depth, "width": width, "families": families}


def giant_space(w: W, **top: Any) -> str:
    """The tiny space with the top-level keys in `top` (stages, stem, head, resolution...) changed."""
    return w.yaml("space.yaml", {**copy.deepcopy(w.a.space_doc), **top})


def shipped_space(w: W, name: str, **top: Any) -> str:
    """search_spaces/NAME.yaml with the top-level keys in `top` changed."""
    return w.yaml("space.yaml", {**yaml.safe_load((ROOT / "search_spaces" / f"{name}.yaml").read_text()), **top})


MEMORY: dict[str, Callable[[W], list[str]]] = {
    # describe: running one image (the check on this machine, before the network is built for real)
    "describe-ghost-8192-wide-stride-1-stem-4096px": lambda w: [
        "describe",
        giant_arch(w, [ghost(2, 8192, 1, expansion=8)], resolution=4096, stem=WIDE_CONV_STEM),
    ],
    "describe-ghost-expansion-8192-on-8192-channels": lambda w: [
        "describe",
        giant_arch(w, [ghost(1, 8192, 2), ghost(1, 8192, 1, expansion=8192)], resolution=4096),
    ],
    "describe-patch-stem-kernel-4095-16-channels": lambda w: [
        "describe",
        giant_arch(w, [ghost(1, 16, 1)], resolution=4096, in_channels=16, stem=patch_stem(8192, 8, 4095)),
    ],
    "describe-saa-rate-1-every-token-4096px": lambda w: [
        "describe",
        giant_arch(
            w, [block("saa", 1, 64, 1, heads=2, mlp_ratio=4, rate=1)], resolution=4096, stem=patch_stem(64, 4, 4)
        ),
    ],
    "describe-rasa-sr-1-4096px": lambda w: [
        "describe",
        giant_arch(w, [block("rasa", 1, 64, 1, **RASA_KNOBS)], resolution=4096, stem=patch_stem(64, 4, 7)),
    ],
    "describe-csa-kernel-255-step-1": lambda w: [
        "describe",
        giant_arch(
            w,
            [block("csa", 1, 64, 1, heads=2, mlp_ratio=4, kernel=255, csa_stride=1)],
            resolution=4096,
            stem=patch_stem(64, 4, 7),
        ),
    ],
    "describe-fwa-kv-grid-2048": lambda w: [
        "describe",
        giant_arch(w, [block("fwa", 1, 64, 1, **{**FWA_KNOBS, "heads": 2, "kv_size": 2048})], resolution=4096),
    ],
    "describe-mhsa-over-every-pixel-4096px": lambda w: [
        "describe",
        giant_arch(w, [block("mhsa", 1, 64, 1, heads=8, mlp_ratio=4)], resolution=4096),
    ],
    "describe-lightvit-mlp-ratio-512-256-tokens": lambda w: [
        "describe",
        giant_arch(
            w,
            [block("lightvit", 1, 8192, 1, heads=64, mlp_ratio=512)],
            resolution=4096,
            global_tokens=256,
            stem={"type": "lightvit", "width": 8192, "stride": 8},
            head={"type": "lightvit", "width": 8192},
        ),
    ],
    "describe-100000-classes-8192-neck-4096px": lambda w: [
        "describe",
        giant_arch(
            w,
            [ghost(1, 8192, 1, expansion=16)],
            resolution=4096,
            num_classes=100_000,
            stem=WIDE_CONV_STEM,
            head={"type": "conv", "width": 8192, "neck": 8192, "act": "relu"},
        ),
    ],
    "describe-class-attention-head-100000-classes-4096px": lambda w: [
        "describe",
        giant_arch(
            w,
            [block("rasa", 2, 512, 1, **{**RASA_KNOBS, "heads": 8, "recursion": 4})],
            resolution=4096,
            num_classes=100_000,
            stem=patch_stem(512, 4, 7),
            head={"type": "class_attention", "blocks": 4, "heads": 8, "mlp_ratio": 4},
        ),
    ],
    # measure: running --batch images (default 1)
    "measure-lightvit-s-4096px-256-tokens-batch-4096": lambda w: [
        "measure",
        giant_reference(w, "lightvit_s", resolution=4096, global_tokens=256),
        "--batch",
        "4096",
    ],
    "measure-saevit-1p3g-2048px-batch-4096": lambda w: [
        "measure",
        giant_reference(w, "saevit_1p3g", resolution=2048),
        "--batch",
        "4096",
    ],
    "measure-lvt-4096px-batch-2048": lambda w: ["measure", giant_reference(w, "lvt", resolution=4096), "--batch=2048"],
    "measure-ghostnet-4096px-batch-4096": lambda w: [
        "measure",
        giant_reference(w, "ghostnet_100", resolution=4096),
        "--batch",
        "4096",
    ],
    "measure-csa-kernel-127-batch-1": lambda w: [
        "measure",
        giant_arch(
            w,
            [block("csa", 1, 64, 1, heads=2, mlp_ratio=4, kernel=127, csa_stride=1)],
            resolution=2048,
            stem=patch_stem(64, 4, 7),
        ),
    ],
    "measure-fwa-6x64-blocks-8192-wide-batch-64": lambda w: [
        "measure",
        giant_arch(w, [block("fwa", 64, 8192, 1, **FWA_KNOBS)] * 6, resolution=4096),
        "--batch",
        "64",
    ],
    "measure-best-yaml-lvt-4096px-batch-1024": lambda w: [
        "measure",
        giant_best(w, "lvt", resolution=4096),
        "--batch",
        "1024",
    ],
    "measure-lolvit-4096px-batch-4096-onnxruntime": lambda w: [
        "measure",
        giant_reference(w, "lolvit_xs", resolution=4096),
        "--batch",
        "4096",
        "--runtime",
        "onnxruntime",
    ],
    "measure-onnx-mhsa-4-blocks-4096-wide": lambda w: [
        "measure",
        giant_arch(w, [block("mhsa", 4, 4096, 2, heads=32, mlp_ratio=4)]),
        "--runtime",
        "onnxruntime",
    ],
    "measure-onnx-rasa-8192-wide": lambda w: [
        "measure",
        giant_arch(
            w, [block("rasa", 2, 8192, 1, **{**RASA_KNOBS, "heads": 64, "mlp_ratio": 2})], stem=patch_stem(64, 4, 4)
        ),
        "--runtime=onnxruntime",
    ],
    "measure-onnx-100000-classes-8192-neck": lambda w: [
        "measure",
        giant_arch(
            w, [ghost(1, 16, 2)], num_classes=100_000, head={"type": "conv", "width": 8192, "neck": 8192, "act": "relu"}
        ),
        "--runtime",
        "onnxruntime",
    ],
    # retrain: training at the recipe's batch (128), --batch-size or the recipe file's batch_size
    "retrain-ghostnet-4096px-batch-size-65536": lambda w: [
        "retrain",
        giant_reference(w, "ghostnet_100", resolution=4096),
        "--batch-size",
        "65536",
    ],
    "retrain-saevit-1p3g-4096px-default-batch": lambda w: [
        "retrain",
        giant_reference(w, "saevit_1p3g", resolution=4096),
    ],
    "retrain-lvt-gap-4096px-batch-size-4096": lambda w: [
        "retrain",
        giant_reference(w, "lvt_gap", resolution=4096),
        "--batch-size=4096",
    ],
    "retrain-lightvit-b-2048px-recipe-batch-65536": lambda w: [
        "retrain",
        giant_reference(w, "lightvit_b", resolution=2048),
        "--recipe",
        w.yaml("recipe.yaml", {"batch_size": 65536}),
    ],
    "retrain-lolvit-1024px-recipe-batch-65536-with-ema": lambda w: [
        "retrain",
        giant_reference(w, "lolvit_xs", resolution=1024),
        "--recipe",
        w.yaml("recipe.yaml", {"batch_size": 65536, "ema_decay": 0.999}),
    ],
    "retrain-ghostnet-2048px-recipe-batch-65536-epochs-option": lambda w: [
        "retrain",
        giant_reference(w, "ghostnet_100", resolution=2048),
        "--recipe",
        w.yaml("recipe.yaml", {"batch_size": 65536, "epochs": 3}),
        "--epochs",
        "1",
    ],
    "retrain-csa-kernel-255-step-1": lambda w: [
        "retrain",
        giant_arch(
            w,
            [block("csa", 1, 64, 1, heads=2, mlp_ratio=4, kernel=255, csa_stride=1)],
            resolution=4096,
            stem=patch_stem(64, 4, 7),
        ),
    ],
    "retrain-fwa-6x64-blocks-8192-wide": lambda w: [
        "retrain",
        giant_arch(w, [block("fwa", 64, 8192, 1, **FWA_KNOBS)] * 6, resolution=4096),
    ],
    "retrain-lightvit-4x64-blocks-256-tokens": lambda w: [
        "retrain",
        giant_arch(
            w,
            [block("lightvit", 64, 1024, 1, heads=16, mlp_ratio=8)] * 4,
            resolution=4096,
            global_tokens=256,
            stem={"type": "lightvit", "width": 1024, "stride": 8},
            head={"type": "lightvit", "width": 8192},
        ),
    ],
    "retrain-best-yaml-saevit-0p8g-4096px": lambda w: ["retrain", giant_best(w, "saevit_0p8g", resolution=4096)],
    "retrain-onnx-lightvit-8192-wide-batch-size-2": lambda w: [
        "retrain",
        giant_arch(
            w,
            [block("lightvit", 2, 8192, 1, heads=64, mlp_ratio=4)],
            resolution=224,
            global_tokens=8,
            stem={"type": "lightvit", "width": 64, "stride": 8},
            head={"type": "lightvit", "width": 1280},
        ),
        "--batch-size",
        "2",
    ],
    "retrain-onnx-saa-8192-wide-batch-size-2": lambda w: [
        "retrain",
        giant_arch(
            w,
            [block("saa", 1, 8192, 1, heads=32, mlp_ratio=8, rate=1)],
            stem=patch_stem(64, 4, 4),
            head={"type": "gap"},
        ),
        "--batch-size",
        "2",
    ],
    "retrain-onnx-fwa-8192-wide-batch-size-2": lambda w: [
        "retrain",
        giant_arch(w, [block("fwa", 2, 8192, 1, **{**FWA_KNOBS, "mlp_ratio": 4})]),
        "--batch-size",
        "2",
    ],
    # sized past int64: an attention map or conv output of more than 2**63 bytes
    "retrain-mhsa-16-heads-every-pixel-batch-size-65536": lambda w: [
        "retrain",
        giant_arch(w, [block("mhsa", 1, 64, 1, heads=16, mlp_ratio=4)], resolution=4096),
        "--batch-size",
        "65536",
    ],
    "retrain-ghost-expansion-8192-stride-1-stem-batch-size-65536": lambda w: [
        "retrain",
        giant_arch(w, [ghost(1, 8192, 1, expansion=8192)], resolution=4096, stem=WIDE_CONV_STEM),
        "--batch-size",
        "65536",
    ],
    "measure-mhsa-64-heads-every-pixel-batch-4096": lambda w: [
        "measure",
        giant_arch(w, [block("mhsa", 1, 64, 1, heads=64, mlp_ratio=4)], resolution=4096),
        "--batch",
        "4096",
    ],
    "describe-mhsa-8192-heads-stride-1-stem": lambda w: [
        "describe",
        giant_arch(w, [block("mhsa", 1, 8192, 1, heads=8192, mlp_ratio=1)], resolution=4096, stem=WIDE_CONV_STEM),
    ],
    "supernet-train-mhsa-16-heads-batch-size-65536": lambda w: [
        "supernet",
        "train",
        "--space",
        giant_space(w, resolution=[4096], stages=[slot(1, [1], [64], mhsa={"heads": [16], "mlp_ratio": [4]})]),
        "--batch-size",
        "65536",
    ],
    # supernet train: the space's supernet with its largest member active, at 128 or --batch-size images
    "supernet-train-hybrid-cpu-4096px-batch-size-65536": lambda w: [
        "supernet",
        "train",
        "--space",
        shipped_space(w, "hybrid_cpu", resolution=[32, 4096]),
        "--batch-size",
        "65536",
    ],
    "supernet-train-hybrid-4096px": lambda w: [
        "supernet",
        "train",
        "--space",
        shipped_space(w, "hybrid", resolution=[224, 4096]),
    ],
    "supernet-train-mhsa-slot-4096px": lambda w: [
        "supernet",
        "train",
        "--space",
        giant_space(w, resolution=[32, 4096], stages=[slot(1, [1], [64], mhsa={"heads": [2, 4], "mlp_ratio": [4]})]),
    ],
    "supernet-train-ghost-slot-64x8192-batch-size-65536": lambda w: [
        "supernet",
        "train",
        "--space",
        giant_space(w, stages=[slot(1, [1, 64], [16, 8192], ghost={"expansion": [2, 6], "kernel": [3], "se": [0]})]),
        "--batch-size=65536",
    ],
    "supernet-train-lightvit-slot-256-tokens-4096px": lambda w: [
        "supernet",
        "train",
        "--space",
        giant_space(
            w,
            resolution=[224, 4096],
            global_tokens=[0, 256],
            stem={"type": "lightvit", "width": [64, 512], "stride": 8},
            stages=[slot(1, [1, 8], [64, 512], lightvit={"heads": [2, 8], "mlp_ratio": [4, 8]})],
            head={"type": "lightvit", "width": [1280]},
        ),
    ],
    # search: the supernet it would train (at 128 images) before anything else
    "search-ghost-slot-8192-wide-2048px": lambda w: [
        "search",
        "--space",
        giant_space(
            w,
            resolution=[32, 2048],
            stages=[slot(1, [1, 8], [16, 8192], ghost={"expansion": [2, 6], "kernel": [3], "se": [0]})],
        ),
        "--latency-budget",
        "1s",
    ],
    "search-saa-rate-1-slot-4096px": lambda w: [
        "search",
        "--space",
        giant_space(
            w,
            resolution=[4096],
            stem={"type": "patch", "width": [64], "stride": 4, "kernel": 4, "norm": "bn"},
            stages=[slot(1, [1], [64], saa={"heads": [2], "mlp_ratio": [4], "rate": [1, 2]})],
            head={"type": "gap"},
        ),
        "--latency-budget",
        "1s",
    ],
    "search-csa-slot-4096px": lambda w: [
        "search",
        "--space",
        giant_space(
            w,
            resolution=[32, 4096],
            stem={"type": "patch", "width": [32, 64], "stride": 4, "kernel": 7, "norm": "ln"},
            stages=[
                slot(
                    1,
                    [1, 2],
                    [32, 64],
                    csa={"heads": [1, 2], "mlp_ratio": [4], "kernel": [3, 15], "csa_stride": [1, 2]},
                )
            ],
            head={"type": "gap"},
        ),
        "--latency-budget",
        "1s",
    ],
    "search-hybrid-4096px": lambda w: [
        "search",
        "--space",
        shipped_space(w, "hybrid", resolution=[4096]),
        "--latency-budget",
        "1s",
    ],
    "search-cpu-small-4096px": lambda w: [
        "search",
        "--space",
        shipped_space(w, "cpu_small", resolution=[4096]),
        "--latency-budget",
        "1s",
    ],
    # latency fit: running the space's largest member on one image (and one ONNX file for ONNX Runtime)
    "latency-fit-rasa-sr-1-slot-4096px": lambda w: [
        "latency",
        "fit",
        "--space",
        giant_space(
            w,
            resolution=[4096],
            stem={"type": "patch", "width": [64], "stride": 4, "kernel": 7, "norm": "ln"},
            stages=[slot(1, [1], [64], rasa={"heads": [8], "mlp_ratio": [4], "sr": [1]})],
            head={"type": "gap"},
        ),
    ],
    "latency-fit-mhsa-slot-4096px": lambda w: [
        "latency",
        "fit",
        "--space",
        giant_space(w, resolution=[32, 4096], stages=[slot(1, [1], [64], mhsa={"heads": [2, 8], "mlp_ratio": [4]})]),
    ],
    "latency-fit-ghost-8192-wide-4096px-onnxruntime": lambda w: [
        "latency",
        "fit",
        "--space",
        giant_space(
            w,
            resolution=[32, 4096],
            stem={"width": [8, 8192], "stride": 1},
            stages=[slot(1, [1, 4], [16, 8192], ghost={"expansion": [2, 8], "kernel": [3], "se": [0]})],
        ),
        "--runtime",
        "onnxruntime",
    ],
    "latency-fit-onnx-100000-classes-8192-neck": lambda w: [
        "latency",
        "fit",
        "--space",
        giant_space(w, num_classes=100_000, head={"width": [64, 8192], "neck": 8192}),
        "--runtime",
        "onnxruntime",
    ],
}
for name, build in MEMORY.items():
    add("memory", name, build)


# ---- the check ----------------------------------------------------------------------------------------------------
class CaseTimeout(BaseException):
    """Raised by the alarm; a BaseException so that no `except Exception` in nas can swallow it."""


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under `root` (links not followed): its type, size and modification time."""
    seen = {}
    for folder, subfolders, files in os.walk(root):
        for name in subfolders + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            seen[path] = (stat.S_IFMT(info.st_mode), info.st_size, info.st_mtime_ns)
    return seen


def run_main(argv: list[str], seconds: int) -> tuple[Any, str | None, list[str]]:
    """`nas.cli.main(argv)` in this process: (exit code, why it did not end normally or None, warnings shown)."""
    from nas.cli import main

    def on_alarm(signum: int, frame: Any) -> None:
        raise CaseTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    code, problem = None, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        signal.alarm(seconds)
        try:
            try:
                code = main(list(argv))
            except SystemExit as exit_:
                code = exit_.code
            finally:
                signal.alarm(0)
        except CaseTimeout:
            problem = f"still running after {seconds} s"
        except BaseException as error:  # noqa: BLE001 - a traceback is what the case looks for
            problem = f"uncaught {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]
        finally:
            signal.signal(signal.SIGALRM, previous)
    shown = [
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning))
    ]
    return code, problem, shown


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, assets: Assets
) -> None:
    inputs, cwd = tmp_path / "inputs", tmp_path / "cwd"
    inputs.mkdir()
    cwd.mkdir()
    argv = [str(a) for a in case.build(W(inputs, assets))]
    monkeypatch.chdir(cwd)
    before = snapshot(tmp_path)
    capsys.readouterr()
    code, problem, shown = run_main(argv, case.seconds)
    out, err = capsys.readouterr()
    after = snapshot(tmp_path)

    lines = err.splitlines()
    problems = []
    if problem:
        problems.append(problem)
    if code != 2:
        problems.append(f"exit code {code!r}, not 2")
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr, not 1")
    if "Traceback" in err:
        problems.append("a traceback on stderr")
    if case.id.startswith("memory--") and not any(message in err for message in MEMORY_MESSAGES):
        problems.append(f"no memory refusal (none of {' or '.join(map(repr, MEMORY_MESSAGES))})")
    if shown:
        problems.append(f"{len(shown)} warning(s) would also print: {shown[0][:150]}")
    written = sorted(set(after) - set(before)) + sorted(p for p in before if p in after and after[p] != before[p])
    removed = sorted(set(before) - set(after))
    if written or removed:
        names = [os.path.relpath(p, tmp_path) for p in written + removed]
        problems.append(f"wrote or changed {len(names)} path(s): {', '.join(names[:4])}")
    if problems:
        first = lines[0][:200] if lines else "(nothing)"
        shown_argv = " ".join(a if len(a) < 80 else a[:40] + "..." for a in argv).replace(str(tmp_path), "$T")
        pytest.fail(
            f"BADCASE {case.id}: {'; '.join(problems)} | stderr[0]: {first} | argv: nas {shown_argv}", pytrace=False
        )
