"""The reference architectures: their size, cost and speed on this machine, and the checks the issue asks for.

    .venv/bin/python bench/reference.py                   # table -> docs/reference_archs.md, LOLViT-XS ratio
    .venv/bin/python bench/reference.py --checks          # also forward+backward at 96..320 and ONNX at 2 sizes
    .venv/bin/python bench/reference.py --only lvt lightvit_t --no-write

For every arch in search_spaces/reference/ (and the timm baselines): parameters, MACs at its own resolution
(fvcore with our handles), and batch-1 latency on this CPU for torch eager and ONNX Runtime (1 thread,
flush-denormal on, random weights). Then the LOLViT-XS reconstruction against timm's mobilevit_xs at 256:
both runtimes, the two models measured in alternation so a slow spell of this shared machine hits both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "search_spaces" / "reference"
TABLE = ROOT / "docs" / "reference_archs.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="arch file stems (or timm:NAME) to include")
    parser.add_argument("--baselines", nargs="*", default=["timm:mobilevit_xs", "timm:ghostnet_100"])
    parser.add_argument("--checks", action="store_true", help="forward+backward at 96..320 and ONNX checks")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per block")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds for the LOLViT-XS ratio")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = parser.parse_args()
    os.environ["NAS_CACHE_DIR"] = tempfile.mkdtemp(prefix="nas-bench-cache-")

    import torch

    from nas.arch import load_arch
    from nas.complexity import count_macs, count_params
    from nas.latency import measure_latency
    from supernet.network import build

    torch.set_flush_denormal(True)
    sources = [str(p) for p in sorted(REFERENCE.glob("*.yaml"))] + list(args.baselines)
    if args.only:
        sources = [s for s in sources if Path(s).stem in args.only or s in args.only]
    cpu = torch.device("cpu")
    rows = []
    for source in sources:
        arch = load_arch(source)
        model = build(arch).eval()
        shape = (1, arch.in_channels, arch.resolution, arch.resolution)
        params, macs = count_params(model), count_macs(model, shape)
        eager = measure_latency(model, arch.in_channels, arch.resolution, cpu, runs=args.runs, warmup=3)
        onnx = measure_latency(model, arch.in_channels, arch.resolution, cpu, runtime="onnxruntime",
                               runs=args.runs, warmup=3)
        row = {"name": arch.label, "file": Path(source).name if not source.startswith("timm:") else source,
               "params": params, "macs": macs, "resolution": arch.resolution, "torch_ms": eager.median_ms,
               "ort_ms": onnx.median_ms}
        if args.checks:
            row.update(_checks(arch, model))
        rows.append(row)
        print(f"{row['name']:28s} {params / 1e6:7.3f} M params {macs / 1e9:7.3f} G MACs @{arch.resolution}  "
              f"torch {eager.median_ms:8.2f} ms  onnxruntime {onnx.median_ms:8.2f} ms"
              + (f"  checks: {row['checks']}" if args.checks else ""), flush=True)
    if not args.no_write and not args.only:
        _write_table(rows, eager.device_name, eager.runtime_version, onnx.runtime_version)
        print(f"wrote {TABLE.relative_to(ROOT)}")
    if not args.only or {"lolvit_xs", "timm:mobilevit_xs"} <= set(args.only):
        _lolvit_ratio(args.rounds, args.runs)


def _checks(arch, model) -> dict:
    """Forward + backward at every size divisible by 32 from 96 to 320; ONNX Runtime vs torch at two sizes."""
    import torch

    from nas.export import export_onnx, onnx_session, verify_onnx

    began = time.perf_counter()
    for size in range(96, 321, 32):
        model.train()
        model(torch.randn(1, arch.in_channels, size, size)).sum().backward()
        model.zero_grad(set_to_none=True)
    model.eval()
    diffs = []
    with tempfile.TemporaryDirectory() as workdir:
        for size in (arch.resolution, 160 if arch.resolution != 160 else 192):  # one model serves every size
            path = export_onnx(model, arch.in_channels, size, Path(workdir) / f"m{size}.onnx")
            x = torch.randn(1, arch.in_channels, size, size)
            diffs.append(verify_onnx(model, onnx_session(path), x))
    return {"checks": f"fwd+bwd 96..320 ok, ONNX max abs diff {max(diffs):.1e}",
            "onnx_diff": max(diffs), "check_s": time.perf_counter() - began}


def _write_table(rows: list[dict], device: str, torch_version: str, ort_version: str) -> None:
    lines = ["# Reference architectures", "",
             "Generated by `.venv/bin/python bench/reference.py`; do not edit by hand. Parameters and MACs",
             "(fvcore multiply-accumulates, with handles for attention, pooling and fold) at each arch's own",
             f"resolution; median batch-1 latency on {device}, 1 thread, fp32, random weights with flush-denormal",
             f"on (torch {torch_version}, ONNX Runtime {ort_version}). This machine is shared and noisy: read",
             "latencies as rough (±20 %).", "",
             "| arch | file | params | MACs | input | torch eager ms | ONNX Runtime ms |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | `{r['file']}` | {r['params'] / 1e6:.3f} M | {r['macs'] / 1e9:.3f} G | "
                     f"{r['resolution']} | {r['torch_ms']:.1f} | {r['ort_ms']:.1f} |")
    TABLE.parent.mkdir(exist_ok=True)
    TABLE.write_text("\n".join(lines) + "\n")


def _lolvit_ratio(rounds: int, runs: int) -> None:
    import torch

    from nas.arch import load_arch
    from nas.latency import measure_latency
    from supernet.network import build

    cpu = torch.device("cpu")
    lolvit, mobilevit = load_arch(REFERENCE / "lolvit_xs.yaml"), load_arch("timm:mobilevit_xs")
    models = {name: build(a).eval() for name, a in (("lolvit", lolvit), ("mobilevit", mobilevit))}
    print(f"\nLOLViT-XS (reconstructed) vs timm mobilevit_xs at 256, batch 1, {rounds} alternating rounds:")
    for runtime in ("torch", "onnxruntime"):
        times: dict[str, list[float]] = {"lolvit": [], "mobilevit": []}
        for _ in range(rounds):
            for name, model in models.items():
                record = measure_latency(model, 3, 256, cpu, runtime=runtime, runs=runs, warmup=3, repeats=1)
                times[name].append(record.median_ms)
        lol, mob = statistics.median(times["lolvit"]), statistics.median(times["mobilevit"])
        print(f"  {runtime:12s} LOLViT-XS {lol:7.2f} ms   mobilevit_xs {mob:7.2f} ms   "
              f"speed-up {mob / lol:.2f}x (paper claims 5x for LOLViT-X vs MobileViT-X)")


if __name__ == "__main__":
    main()
