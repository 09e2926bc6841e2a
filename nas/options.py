"""Command-line option types with bounds, and a parser whose every error is one line.

Each numeric option names its range here, so a bad value (out of range, not finite, not a number) is refused by
argparse, in one line, before any command runs.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Callable

from nas.errors import NasError


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (argparse's own print the usage first), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args: list[str] | None = None, namespace: Any = None) -> argparse.Namespace:
        if any("\0" in str(word) for word in (sys.argv[1:] if args is None else args)):
            self.error("an argument holds a NUL character, which no file name or value can")
        return super().parse_args(args, namespace)


def integer(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low:,} to {high:,}, got {text!r}")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low:,} to {high:,}, got {value:,}")
        return value
    return parse


def number(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [`low`, `high`] (above `low` when `low_open`)."""
    bounds = f"{'above' if low_open else 'from'} {low:g} {'and at most' if low_open else 'to'} {high:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {bounds}, got {text!r}")
        if not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value
    return parse


# the ranges of the integer settings, shared with the settings files that can also give them (config.yaml)
RANGES = {"threads": (1, 1024), "seed": (0, 2**32 - 1), "epochs": (1, 10_000), "trials": (1, 100_000),
          "workers": (1, 1024), "data_workers": (0, 64), "limit_train": (1, 10**9), "max_params": (1, 10**12),
          "max_macs": (1, 10**15), "adapt_steps": (0, 10_000), "rescore_top": (0, 100), "rescore_steps": (1, 10_000)}
THREADS, SEED, EPOCHS, WORKERS, DATA_WORKERS, IMAGES, ADAPT_STEPS, RESCORE_TOP, RESCORE_STEPS = (
    integer(*RANGES[name]) for name in ("threads", "seed", "epochs", "workers", "data_workers", "limit_train",
                                        "adapt_steps", "rescore_top", "rescore_steps"))
ADAPT_HELP = "train each sub-network alone for this many batches before scoring it (default: 0)"
BATCH = integer(2, 65_536)  # BatchNorm needs two images
PORT = integer(1, 65_535)
RESOLUTION = integer(8, 4096)


def check_range(name: str, value: object, where: str) -> None:
    """Refuse a setting `name` read from a file (`where`) unless a whole number within its `RANGES`."""
    low, high = RANGES[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise NasError(f"{where}: {name} must be a whole number from {low:,} to {high:,}, got {value!r}")
