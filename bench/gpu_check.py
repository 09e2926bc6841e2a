"""The prepared GPU check: every CUDA path of `nas` once, in about 10 minutes on one GPU, as one JSON summary.

    python bench/gpu_check.py --out gpu.json                 # on the GPU machine (see docs/gpu.md to set it up)
    python bench/gpu_check.py --tiny --device cpu --out x.json   # the same paths, tiny and on CPU (the tests run it)

In order, each stage timed, a failing stage recorded (its error's first line) and the rest still run:

1. data: an image folder of the embedded images upscaled to 224x224 RGB JPEGs (--images of them);
2. supernet: `nas supernet train` on `hybrid.yaml` over that folder, --supernet-steps steps: images/s, peak GPU
   memory, the precision autocast picked;
3. search: `nas search --space search_spaces/hybrid.yaml --latency-budget 5ms --device cuda` with that supernet,
   --trials trials on the Optuna backend (CUDA-event latency), through to best.yaml;
4. retrain: `nas retrain best.yaml` for one epoch, which exports model.onnx, checks ONNX Runtime against torch and
   times it (its CUDA provider when it has one, else its CPU one);
5. latency: CUDA-event latency of every reference arch and of timm `mobilevit_xs`, at batch 1 and 64;
6. memory: for every reference arch, one AMP training step at batch 64: the memory check's estimate
   (`nas.memory.training_need`) beside the peak CUDA memory the step allocated.

--tiny runs the same stages on a tiny space at 40x40 with a few images, steps and trials, one reference arch and
batch 1 and 2: the test suite runs it on CPU so that the script cannot rot.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from data import make_folder  # bench/data.py: Python puts this script's folder first on the path

ROOT = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stage(summary: dict[str, Any], name: str, work: Callable[[], dict[str, Any]]) -> None:
    """Run one stage into `summary[name]`: its figures and seconds, or the error that stopped it."""
    log(f"=== {name}")
    began = time.perf_counter()
    try:
        summary[name] = {**work(), "ok": True}
    except BaseException as error:  # noqa: BLE001  (a check reports every failure and goes on)
        if isinstance(error, KeyboardInterrupt):
            raise
        first = str(error).splitlines()[0] if str(error) else ""
        summary[name] = {"ok": False, "error": f"{type(error).__name__}: {first}",
                         "where": traceback.format_exc().strip().splitlines()[-3:]}
    summary[name]["seconds"] = round(time.perf_counter() - began, 1)
    log(json.dumps(summary[name])[:400])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (a CPU run in the test suite)")
    parser.add_argument("--images", type=int, help="images in the generated folder (default 10000; tiny 60)")
    parser.add_argument("--supernet-steps", type=int, help="supernet training steps (default 300; tiny 4)")
    parser.add_argument("--trials", type=int, help="search trials (default 12; tiny 2)")
    parser.add_argument("--work", help="working folder (default: a new temporary folder)")
    parser.add_argument("--out", help="write the JSON summary here too")
    args = parser.parse_args()

    import torch

    from nas.data import load_data
    from nas.latency import LatencyCache, measure_arch, resolve_device
    from nas.supernet_training import TrainConfig, train_supernet_run

    device = resolve_device(args.device)
    tiny = args.tiny
    images = args.images or (60 if tiny else 10_000)
    steps = args.supernet_steps or (4 if tiny else 300)
    trials = args.trials or (2 if tiny else 12)
    batch = 8 if tiny else 64
    work = Path(args.work or tempfile.mkdtemp(prefix="nas-gpu-check-"))
    if tiny:
        space_file = tiny_space(work)
    else:
        space_file = str(ROOT / "search_spaces" / "hybrid.yaml")
    summary: dict[str, Any] = {"device": str(device), "tiny": tiny, "python": platform.python_version(),
                               "torch": torch.__version__, "cuda": torch.version.cuda,
                               "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    folder = work / "images"

    def data() -> dict[str, Any]:
        make_folder(folder, images, size=40 if tiny else 224)
        loaded = load_data(folder)
        return {"folder": str(folder), "images": images, "train": loaded.size("train"), "val": loaded.size("val"),
                "test": loaded.size("test"), "classes": loaded.num_classes}

    def supernet() -> dict[str, Any]:
        from nas.memory import meta_supernet, training_need
        from nas.space import load_space

        space = load_space(space_file)
        need = training_need(space.largest(), batch, device, network=meta_supernet(space))
        train_split = summary["data"]["train"]
        epochs = -(-steps * batch // train_split)
        per_epoch = -(-steps // epochs) * batch  # training images an epoch, whole batches
        config = TrainConfig(epochs=epochs, batch_size=batch, checkpoint_every=10_000)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        result = train_supernet_run(space_file, config, device, str(folder), min(per_epoch, train_split),
                                    work / "supernet", log)
        history = result["history"]
        precision = "float32"
        if device.type == "cuda":
            precision = "bfloat16" if torch.cuda.is_bf16_supported() else "float16 + GradScaler"
        return {"checkpoint": result["checkpoint"], "epochs": epochs, "images_per_epoch": min(per_epoch, train_split),
                "batch_size": batch, "images_per_s": round(history[-1]["images_per_s"], 1),
                "epoch_seconds": [round(h["seconds"], 1) for h in history],
            "peak_gpu_gb": round(torch.cuda.max_memory_allocated(device) / 1e9, 2) if device.type == "cuda" else None,
            "estimated_gb": round(need.total_bytes / 1e9, 2),
            "precision": precision, "val_acc_largest": history[-1]["val_acc_largest"],
            "steps_per_resolution": history[-1]["steps_per_resolution"]}

    def search() -> dict[str, Any]:
        from nas.search.run import search as run_search
        from nas.search.study import search_settings

        budget = "500ms" if tiny else "5ms"
        settings = search_settings({"space": space_file, "latency_budget": budget, "device": args.device,
                                    "trials": trials, "data": str(folder),
                                    "supernet": summary["supernet"]["checkpoint"]})
        best = run_search(settings, work / "search", log)
        return {"best_yaml": best["best_yaml"], "arch_id": best["arch_id"], "latency_ms": best["latency_ms"],
                "latency_p90_ms": best["latency_p90_ms"], "budget_ms": best["budget_ms"],
                "val_accuracy_supernet": best["val_accuracy_supernet"], "trials": trials}

    def retrain() -> dict[str, Any]:
        from nas.retrain_runs import RetrainOptions, retrain_file

        result = retrain_file(summary["search"]["best_yaml"], RetrainOptions(epochs=1, batch_size=batch),
                              work / "retrain", log)
        metrics = result.metrics
        import onnxruntime

        return {"test_top1": metrics["test_top1"], "latency_ms": metrics["latency_ms"],
                "onnx_max_abs_diff": metrics["onnx"]["max_abs_diff"],
                "onnxruntime_ms": metrics["latency"]["onnxruntime"]["median_ms"],
                "onnxruntime_providers": onnxruntime.get_available_providers(),
                "train_seconds": metrics["train_seconds"]}

    def latency() -> dict[str, Any]:
        from nas.arch import load_arch

        files = sorted((ROOT / "search_spaces" / "reference").glob("*.yaml"))[:1 if tiny else None]
        archs = {f.stem: load_arch(f) for f in files}
        if not tiny:
            archs["timm:mobilevit_xs"] = load_arch("timm:mobilevit_xs")
        table, cache = {}, LatencyCache()
        for name, arch in archs.items():
            table[name] = {}
            for size in (1, 2) if tiny else (1, 64):
                record = measure_arch(arch, device, "torch", 1, size, cache=cache, refresh=True,
                                      **({"runs": 5, "warmup": 2} if tiny else {}))
                table[name][f"batch{size}_ms"] = round(record.median_ms, 3)
        return {"archs": table}

    def memory() -> dict[str, Any]:
        from nas.arch import load_arch
        from nas.memory import training_need
        from nas.training import Precision
        from supernet.network import build

        files = sorted((ROOT / "search_spaces" / "reference").glob("*.yaml"))[:1 if tiny else None]
        size = 2 if tiny else 64
        table = {}
        for path in files:
            arch = load_arch(path)
            estimate = training_need(arch, size, device).total_bytes
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            model = build(arch).to(device)
            optimizer = torch.optim.AdamW(model.parameters())
            precision = Precision(device)
            x = torch.randn(size, arch.in_channels, arch.resolution, arch.resolution, device=device)
            with precision.autocast():
                loss = torch.nn.functional.cross_entropy(model(x).float(), torch.zeros(size, dtype=torch.long,
                                                                                       device=device))
            loss.backward()
            optimizer.step()
            peak = torch.cuda.max_memory_allocated(device) - before if device.type == "cuda" else None
            table[path.stem] = {"estimate_gb": round(estimate / 1e9, 3),
                                "peak_gb": round(peak / 1e9, 3) if peak is not None else None,
                                "estimate_over_peak": round(estimate / peak, 2) if peak else None}
            del model, optimizer, x, loss
        return {"batch": size, "archs": table}

    for name, work_fn in (("data", data), ("supernet", supernet), ("search", search), ("retrain", retrain),
                          ("latency", latency), ("memory", memory)):
        stage(summary, name, work_fn)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


def tiny_space(work: Path) -> str:
    """The tests' tiny space at 40x40 with two resolutions, written into `work`."""
    import yaml

    document = yaml.safe_load((ROOT / "tests" / "tiny_space.yaml").read_text())
    document["resolution"] = [32, 40]
    work.mkdir(parents=True, exist_ok=True)
    (work / "tiny.yaml").write_text(yaml.safe_dump(document))
    return str(work / "tiny.yaml")


if __name__ == "__main__":
    main()
