"""How far a trained supernet's order of its sub-networks can be trusted: inherited against standalone accuracy.

Sub-networks are drawn stratified over the MAC range and over block families (a pool of random members sorted by
MACs, cut into equal-count strata; from each, a member of the family the sample holds fewest of so far, by each
member's dominant family: the one most of its blocks belong to), so the ranking is judged across the whole space
rather than its crowded middle. Each gets its supernet-inherited accuracy and the mean accuracy of short standalone
trainings from scratch with `seeds` seeds, both on every image no network trains on (the validation and test
splits: ranking selects nothing, and three times the images of the validation split alone steady the
accuracies, whose differences here are a few points); Kendall tau-b and Spearman rho between the two, with
bootstrap 95 % intervals, say how well the supernet ranks, and Kendall tau between the first two seeds' standalone
accuracies is the noise floor: no supernet can be judged more exactly than standalone training agrees with itself.
Each sub-network's result is saved as it finishes, so a run resumes.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

import numpy as np
import torch

from nas.arch import Arch
from nas.complexity import count_macs, count_params
from nas.data import SPLIT_FILE, Splits, load_space_and_data
from nas.errors import NasError
from nas.evaluate import adapt, inherited_accuracy, split_accuracy
from nas.memory import check_training
from nas.report import plt
from nas.retrain import Recipe, default_recipe, train_standalone
from nas.runs import atomic_write, check_run_dir, differing_settings, file_hash, write_json
from nas.supernet_training import load_supernet
from supernet.network import build

if TYPE_CHECKING:
    from nas.space import SearchSpace
    from nas.weight_sharing import SpaceSupernet

POOL_FACTOR = 10  # candidates sampled per requested sub-network before stratifying
HELD_OUT = ("val", "test")  # the splits both accuracies are measured on
BOOTSTRAP_RESAMPLES = 1000
# what decides a sub-network's standalone accuracy, and so whether another ranking's can be reused ("data": the images'
# fingerprint, so that the same file reached by another path counts as the same)
STANDALONE_SETTINGS = ("space_hash", "data", "train_images", "subnets", "epochs", "seed", "seeds", "evaluated_on",
                       "recipe")
STANDALONE_RECIPES = ("plain", "retrain")
T = TypeVar("T")


# ---- statistics -----------------------------------------------------------------------------------------------
def kendall_tau_b(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Kendall's tau-b: the summed sign agreement of all pairs over the geometric mean of the pairs untied in
    each variable (ties count in neither); None where a variable is constant and tau is undefined."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    i, j = np.triu_indices(len(a), k=1)
    sign_a, sign_b = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    untied = float(np.abs(sign_a).sum() * np.abs(sign_b).sum())
    return float((sign_a * sign_b).sum() / np.sqrt(untied)) if untied else None


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of the ranks they span."""
    values = np.asarray(values, dtype=float)
    ordered = np.sort(values)
    below = np.searchsorted(ordered, values, side="left")
    up_to = np.searchsorted(ordered, values, side="right")
    return (below + 1 + up_to) / 2


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson correlation of the tie-averaged ranks; None where a variable is constant."""
    rank_a, rank_b = average_ranks(a), average_ranks(b)
    da, db = rank_a - rank_a.mean(), rank_b - rank_b.mean()
    spread = float(np.sqrt((da * da).sum() * (db * db).sum()))
    return float((da * db).sum() / spread) if spread else None


def bootstrap_ci(statistic: Callable[[np.ndarray, np.ndarray], float | None], a: Sequence[float],
                 b: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> list[float] | None:
    """Percentile 95 % interval of `statistic` over pairs resampled with replacement (resamples where it is
    undefined are left out); None if it is undefined in all of them."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        index = rng.integers(0, len(a), len(a))
        value = statistic(a[index], b[index])
        if value is not None:
            values.append(value)
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if values else None


def rank_statistics(inherited: Sequence[float], standalone: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """Kendall tau-b and Spearman rho of inherited against standalone accuracy, each with its bootstrap CI."""
    return {name: {"value": statistic(inherited, standalone),
                   "ci95": bootstrap_ci(statistic, inherited, standalone, seed=seed)}
            for name, statistic in (("kendall_tau", kendall_tau_b), ("spearman_rho", spearman_rho))}


# ---- sampling -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Subnet:
    arch: Arch
    macs: int
    params: int

    @property
    def family(self) -> str:
        return dominant_family(self.arch)


def dominant_family(arch: Arch) -> str:
    """The family most of `arch`'s blocks belong to (the deeper one on a tie)."""
    blocks: dict[str, int] = {}
    for stage in arch.stages:
        blocks[stage.family] = blocks.get(stage.family, 0) + stage.depth
    deepest = {stage.family: index for index, stage in enumerate(arch.stages)}
    return max(blocks, key=lambda family: (blocks[family], deepest[family])) if blocks else arch.head_type


def measure_subnet(arch: Arch) -> Subnet:
    model = build(arch)
    return Subnet(arch, count_macs(model, (1, arch.in_channels, arch.resolution, arch.resolution)),
                  count_params(model))


def stratified_sample(space: "SearchSpace", count: int, seed: int, pool_factor: int = POOL_FACTOR) -> list[Subnet]:
    """`count` distinct members spread over the space's MAC range and its families, in ascending MACs: a pool of
    random members sorted by MACs is cut into `count` equal-count strata and one member is drawn from each, of the
    dominant family the draws so far hold fewest of."""
    from tqdm import tqdm

    rng = random.Random(seed)
    pool: dict[str, Arch] = {}
    for _ in range(pool_factor * count):
        arch = space.sample(rng)
        pool.setdefault(arch.arch_id, arch)
    if len(pool) < count:
        raise NasError(f"space {space.name!r} gave only {len(pool)} distinct members in {pool_factor * count} "
                       f"samples; pass fewer --subnets")
    measured = sorted((measure_subnet(arch) for arch in tqdm(pool.values(), desc="counting MACs of the pool",
                                                             unit="arch", leave=False, disable=None)),
                      key=lambda s: (s.macs, s.arch.arch_id))
    return stratify(measured, count, rng, key=lambda subnet: subnet.family)


def stratify(ordered: Sequence[T], count: int, rng: random.Random, key: Callable[[T], str] | None = None) -> list[T]:
    """One item drawn at random from each of `count` consecutive, equal-count strata of `ordered`; with `key`, from
    the items of the stratum whose key the draws so far hold fewest of (strata taken in a random order, so that no
    end of the range is favoured)."""
    bounds = [round(k * len(ordered) / count) for k in range(count + 1)]
    strata = [list(ordered[low:high]) for low, high in zip(bounds, bounds[1:])]
    if key is None:
        return [rng.choice(stratum) for stratum in strata]
    held: dict[str, int] = {key(item): 0 for item in ordered}
    picked: dict[int, T] = {}
    for index in rng.sample(range(count), count):
        fewest = min(held[key(item)] for item in strata[index])
        item = rng.choice([item for item in strata[index] if held[key(item)] == fewest])
        held[key(item)] += 1
        picked[index] = item
    return [picked[index] for index in range(count)]


# ---- the ranking run ------------------------------------------------------------------------------------------
def _plan(run_dir: Path, settings: dict[str, Any], space: "SearchSpace", count: int, seed: int,
          members: Sequence[Arch] | None = None) -> list[Subnet]:
    """The sub-networks of this run: read from `run_dir` when it holds the same ranking, else sampled (or the
    `members` given) and saved. A folder holding anything else is refused, never overwritten."""
    path = run_dir / "rank_plan.json"
    if path.is_file():
        plan = json.loads(path.read_text())
        differs = sorted(differing_settings(_with_recipe(plan["settings"]), settings))
        if differs:
            raise NasError(f"{run_dir} holds a ranking with other settings ({', '.join(differs)} differ); pass a "
                           "new --run-dir, or the original options to resume it")
        return [Subnet(Arch.from_dict(s["arch"], str(path)), s["macs"], s["params"]) for s in plan["subnets"]]
    if run_dir.exists() and any(run_dir.iterdir()):
        raise NasError(f"{run_dir} exists and is not a nas supernet rank folder; pass a new --run-dir")
    subnets = [measure_subnet(arch) for arch in members] if members else stratified_sample(space, count, seed)
    write_json(path, {"settings": settings, "subnets": [
        {"arch_id": s.arch.arch_id, "macs": s.macs, "params": s.params, "arch": s.arch.to_dict()} for s in subnets]})
    return subnets


def rank_supernet(space: "SearchSpace", supernet: "SpaceSupernet", supernet_path: Path, data: Splits,
                  run_dir: Path, count: int, recipe: Recipe, device: torch.device,
                  log: Callable[[str], None] = print, seeds: int = 2, adapt_steps: int = 0,
                  standalone_from: Path | None = None, members: Sequence[Arch] | None = None) -> dict[str, Any]:
    """Rank `count` stratified sub-networks (or the `members` given, such as a search's shortlist) by
    supernet-inherited accuracy (after `adapt_steps` of their own training, as the search scores them) and by
    standalone accuracy (the mean over `seeds` trainings with `recipe`, seeded from its seed on, or the accuracies
    an earlier ranking `standalone_from` measured) in `run_dir` (resuming it); `recipe.seed` also draws the
    sub-networks. Writes rank.json and rank.png and returns rank.json's content."""
    from tqdm import tqdm

    seed = recipe.seed
    settings = {"space_hash": space.space_hash, "supernet_hash": file_hash(supernet_path), "data": data.fingerprint,
                "train_images": data.size("train"), "subnets": count, "epochs": recipe.epochs, "seed": seed,
                "seeds": seeds, "evaluated_on": "+".join(HELD_OUT), "adapt_steps": adapt_steps,
                "recipe": asdict(recipe)}
    if members:
        settings["members"] = [arch.arch_id for arch in members]
    reused = earlier_standalone(standalone_from, settings) if standalone_from else {}  # checked before writing
    subnets = _plan(run_dir, settings, space, count, seed, members)
    if reused:
        log(f"reusing the standalone accuracies of {len(reused)} sub-network(s) from {standalone_from}")
    data.save_split(run_dir)
    results = run_dir / "rank_results.jsonl"
    done = {}
    if results.is_file():
        done = {row["arch_id"]: row for row in map(json.loads, results.read_text().splitlines())}
        log(f"resuming {run_dir}: {len(done)}/{count} sub-networks already ranked")
    with tqdm(total=count, initial=len(done), desc="ranking sub-networks", unit="subnet", disable=None) as bar:
        for subnet in subnets:
            arch = subnet.arch
            if arch.arch_id in done:
                continue
            began = time.perf_counter()
            net = supernet.extract(arch)
            adapt(net, arch, data, adapt_steps, seed)
            inherited = inherited_accuracy(net, arch, data, HELD_OUT)
            standalone = reused.get(arch.arch_id) or [
                split_accuracy(train_standalone(arch, data, replace(recipe, seed=seed + offset), device,
                                                run_dir / "standalone" / _checkpoint_name(arch, seed, offset),
                                                log=lambda _: None).model, arch, data, HELD_OUT)
                for offset in range(seeds)]
            mean = sum(standalone) / seeds
            done[arch.arch_id] = {"arch_id": arch.arch_id, "family": subnet.family, "macs": subnet.macs,
                                  "params": subnet.params, "inherited": inherited, "standalone": mean,
                                  "standalone_seeds": standalone, "ratio": inherited / mean if mean else None,
                                  "seconds": round(time.perf_counter() - began, 1)}
            atomic_write(results, "".join(json.dumps(row) + "\n" for row in done.values()).encode())
            bar.update()
            log(f"{arch.arch_id} ({subnet.family}, {subnet.macs / 1e6:.2f} M MACs): inherited {inherited:.3f}, "
                f"standalone {' '.join(f'{a:.3f}' for a in standalone)}")
    rows = [done[s.arch.arch_id] for s in subnets]
    statistics = rank_statistics([r["inherited"] for r in rows], [r["standalone"] for r in rows], seed)
    if seeds > 1:  # the noise floor: how far standalone training agrees with itself
        first, second = ([r["standalone_seeds"][k] for r in rows] for k in (0, 1))
        statistics["seed_to_seed_tau"] = {"value": kendall_tau_b(first, second),
                                          "ci95": bootstrap_ci(kendall_tau_b, first, second, seed=seed)}
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    result = {"subnets": rows, **statistics, "median_ratio": float(np.median(ratios)) if ratios else None,
              "families": family_table(rows), "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
              "settings": {**settings, "space": space.name, "supernet": str(supernet_path), "device": str(device),
                           "pool": POOL_FACTOR * count,
                           "standalone_from": str(standalone_from) if reused else None}}
    write_json(run_dir / "rank.json", result)
    plot_rank(rows, statistics, run_dir / "rank.png", f"{space.name}: supernet ranking of {len(rows)} sub-networks")
    return result


def _checkpoint_name(arch: Arch, seed: int, offset: int) -> str:
    """The standalone checkpoint of `arch`'s training with seed `seed + offset`; the first keeps its one-seed name."""
    return f"{arch.arch_id}.pt" if offset == 0 else f"{arch.arch_id}-seed{seed + offset}.pt"


def earlier_standalone(run: Path, settings: dict[str, Any]) -> dict[str, list[float]]:
    """Each sub-network's standalone accuracies (one a seed) that the ranking in `run` measured, by arch id, when
    that ranking drew from the same space and data, and trained as `settings` say; its supernet and adapt steps
    may differ, for they change only the inherited side."""
    plan_file, results = run / "rank_plan.json", run / "rank_results.jsonl"
    if not plan_file.is_file():
        raise NasError(f"--standalone-from {run}: no rank_plan.json there; pass a folder of `nas supernet rank`")
    try:
        saved = json.loads(plan_file.read_text())["settings"]
        rows = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
        reused = {row["arch_id"]: row["standalone_seeds"] for row in rows}
    except (ValueError, KeyError, TypeError) as error:
        raise NasError(f"--standalone-from {run}: not a readable ranking ({error})") from None
    differs = differing_settings(_with_recipe(saved), {name: settings[name] for name in STANDALONE_SETTINGS})
    if differs:
        raise NasError(f"--standalone-from {run}: ranked with other settings ({', '.join(differs)} differ), so its "
                       "standalone accuracies do not apply")
    return reused


def _with_recipe(saved: dict[str, Any]) -> dict[str, Any]:
    """A ranking's saved settings, with the standalone recipe that rankings written before it was recorded used:
    the plain one for their epochs and seed."""
    if "recipe" in saved or not {"epochs", "seed"} <= saved.keys():
        return saved
    return {**saved, "recipe": asdict(Recipe(epochs=saved["epochs"], seed=saved["seed"]))}


def standalone_recipe(kind: str, train_images: int, epochs: int | None, seed: int) -> Recipe:
    """How each ranked sub-network is trained standalone: `plain` (shifts, flips and label smoothing; 3 epochs
    unless `epochs` says) or `retrain` (what `nas retrain` gives a winner on `train_images` images: its epochs and
    regularisers, `epochs` overriding the length)."""
    if kind == "plain":
        return Recipe(epochs=epochs or 3, seed=seed)
    return default_recipe(train_images, seed=seed, **({"epochs": epochs} if epochs else {}))


def family_table(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per dominant family: how many sub-networks, their median inherited / standalone ratio, and Kendall tau
    within the family (None below 3 members)."""
    table = {}
    for family in sorted({r["family"] for r in rows}):
        members = [r for r in rows if r["family"] == family]
        ratios = [r["ratio"] for r in members if r["ratio"] is not None]
        tau = (kendall_tau_b([r["inherited"] for r in members], [r["standalone"] for r in members])
               if len(members) >= 3 else None)
        table[family] = {"subnets": len(members), "median_ratio": float(np.median(ratios)) if ratios else None,
                         "kendall_tau": tau}
    return table


def rank_supernet_file(space_file: str | Path, supernet_file: Path, count: int, epochs: int | None,
                       device: torch.device, data: str | None = None, seed: int = 0, limit_train: int | None = None,
                       run_dir: Path | None = None, log: Callable[[str], None] = print,
                       workers: int | None = None, seeds: int = 2, adapt_steps: int = 0,
                       standalone_from: Path | None = None, standalone: str = "plain",
                       members: Sequence[Arch] | None = None) -> dict[str, Any]:
    """`nas supernet rank`: `rank_supernet` for the supernet checkpoint at `supernet_file`, trained for the space
    at `space_file`, in `run_dir` (default: rank/ beside the checkpoint), `workers` loader processes, `seeds`
    standalone trainings a sub-network with the `standalone` recipe (`standalone_recipe`; `epochs` None: its own
    length), `adapt_steps` as the search's, standalone accuracies reused from the ranking folder `standalone_from`,
    the `members` given (with the space's classes) instead of a stratified sample. The result carries its
    `run_dir`."""
    if count < 3 or (epochs is not None and epochs < 1) or not 1 <= seeds <= 5 or not 0 <= adapt_steps <= 10_000:
        raise NasError("--subnets must be at least 3, --epochs at least 1, --seeds 1 to 5 and --adapt-steps 0 to "
                       "10,000")
    if standalone not in STANDALONE_RECIPES:
        raise NasError(f"--standalone {standalone!r}: expected one of {', '.join(STANDALONE_RECIPES)}")
    if not supernet_file.is_file():
        raise NasError(f"--supernet {supernet_file}: no such checkpoint file; pass one from `nas supernet train`")
    given, run_dir = run_dir is not None, run_dir or supernet_file.parent / "rank"
    check_run_dir(run_dir, ("rank_plan.json", "rank_results.jsonl", "rank.json", SPLIT_FILE), given)
    space, splits = load_space_and_data(space_file, data, seed, limit_train, workers, run_dir)
    supernet = load_supernet(supernet_file, space)
    check_training(space.largest(), Recipe.batch_size, device, f"{space_file}'s largest member", False,
                   count_params(supernet), "use a device with more memory, or a smaller space")
    supernet = supernet.to(device)
    recipe = standalone_recipe(standalone, splits.size("train"), epochs, seed)
    members = [arch.with_num_classes(space.num_classes) for arch in members or ()]
    if any(not space.contains(arch) for arch in members):
        raise NasError(f"a member given is not a sub-network of {space_file}")
    result = rank_supernet(space, supernet, supernet_file, splits, run_dir, len(members) or count, recipe, device,
                           log, seeds, adapt_steps, standalone_from, members)
    return {**result, "run_dir": str(run_dir)}


# what two rankings must share for their members to be pooled: the supernet, how it scores and how standalone trains
POOLED_SETTINGS = ("space_hash", "supernet_hash", "data", "train_images", "epochs", "seeds", "evaluated_on",
                   "adapt_steps", "recipe")


def pool_rankings(results: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Several rankings of one supernet (rank.json contents), each on its own sample of members (its own `--seed`),
    as one ranking of all their members: rank statistics and median inherited / standalone ratio, beside each
    sample's own noise floor.
    Twenty members give an interval about 0.3 wide either side; pooled samples narrow it. A member drawn twice
    counts once (its first ranking's row). NasError if they differ in a setting of POOLED_SETTINGS (the recipe's
    seed aside, since it is the sample's) or share a sample seed."""
    if len(results) < 2:
        raise NasError("pooling needs at least two rankings")

    def shared(result: dict[str, Any]) -> dict[str, Any]:
        settings = _with_recipe(result["settings"])
        return {name: ({**settings[name], "seed": None} if name == "recipe" else settings.get(name))
                for name in POOLED_SETTINGS}

    first = shared(results[0])
    for result in results[1:]:
        differs = differing_settings(first, shared(result))
        if differs:
            raise NasError(f"rankings made with other settings cannot be pooled ({', '.join(differs)} differ)")
    sample_seeds = [result["settings"]["seed"] for result in results]
    if len(set(sample_seeds)) < len(sample_seeds):
        raise NasError(f"rankings with the same sample seed cannot be pooled (seeds {sample_seeds})")
    rows: dict[str, dict[str, Any]] = {}
    for result in results:
        for row in result["subnets"]:
            rows.setdefault(row["arch_id"], row)
    members = list(rows.values())
    pooled = rank_statistics([r["inherited"] for r in members], [r["standalone"] for r in members], seed)
    ratios = [r["ratio"] for r in members if r["ratio"] is not None]
    # each sample's own: its trainings use seeds (sample seed, + 1, ...), so pooled first and second seeds would mix
    # one seed's runs with another's, and a seed lifts every member it trains a little
    noise_floors = [result.get("seed_to_seed_tau") for result in results]
    return {"subnets": members, **pooled, "median_ratio": float(np.median(ratios)) if ratios else None,
            "sample_seeds": sample_seeds, "drawn_twice": sum(len(r["subnets"]) for r in results) - len(members),
            "noise_floors": noise_floors if all(noise_floors) else None}


def rank_lines(result: dict[str, Any]) -> list[str]:
    """`rank_supernet_file`'s result as a table of the sub-networks and the rank statistics, for a person."""
    run_dir = Path(result["run_dir"])
    seeds = result["settings"]["seeds"]
    lines = [f"{'arch id':12}  {'family':8}  {'M MACs':>7}  {'params':>9}  {'inherited':>9}  {'standalone':>10}  "
             f"{'ratio':>5}"]
    lines += [f"{r['arch_id']:12}  {r['family']:8}  {r['macs'] / 1e6:7.2f}  {r['params']:9,}  {r['inherited']:9.3f}  "
              f"{r['standalone']:10.3f}  {r['ratio'] or 0:5.2f}" for r in result["subnets"]]
    lines += [f"Kendall tau-b {describe_statistic(result['kendall_tau'])}",
              f"Spearman rho  {describe_statistic(result['spearman_rho'])}"]
    if "seed_to_seed_tau" in result:
        lines.append(f"noise floor: standalone seed against seed, Kendall tau-b "
                     f"{describe_statistic(result['seed_to_seed_tau'])}")
    lines.append(f"inherited / standalone accuracy, median {result['median_ratio'] or 0:.2f}; by family: " + ", ".join(
        f"{family} {row['median_ratio'] or 0:.2f} ({row['subnets']})" for family, row in result["families"].items()))
    adapted = result["settings"].get("adapt_steps", 0)
    reused = result["settings"].get("standalone_from")
    return lines + [f"(inherited: {f'after {adapted} steps of its own training' if adapted else 'as extracted'}; "
                    f"standalone: the mean of {seeds} training(s) of {result['settings']['epochs']} epoch(s) each "
                    f"with {_recipe_name(result['settings'])}"
                    f"{f', measured in {reused}' if reused else ''}; "
                    f"{result['bootstrap_resamples']} bootstrap resamples)",
                    f"results: {run_dir / 'rank.json'}   plot: {run_dir / 'rank.png'}"]


def _recipe_name(settings: dict[str, Any]) -> str:
    plain = _with_recipe(settings)["recipe"] == asdict(Recipe(epochs=settings["epochs"], seed=settings["seed"]))
    return "the plain recipe" if plain else "nas retrain's recipe"


def describe_statistic(entry: dict[str, Any]) -> str:
    """'0.600 (95 % CI 0.200 to 0.900)', or 'undefined' where a variable was constant."""
    if entry["value"] is None:
        return "undefined (constant accuracies)"
    ci = entry["ci95"]
    return f"{entry['value']:.3f} (95 % CI {ci[0]:.3f} to {ci[1]:.3f})"


def plot_rank(rows: list[dict], statistics: dict[str, Any], path: Path, title: str) -> None:
    """Standalone against inherited accuracy: all sub-networks coloured by MACs, then one panel per dominant
    family with its members marked among the others (in grey)."""
    families = sorted({r["family"] for r in rows})
    columns = min(4, 1 + len(families))
    lines = -(-(1 + len(families)) // columns)
    fig, grid = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.9 * lines), squeeze=False, sharex=True,
                             sharey=True)
    axes = list(grid.flat)
    inherited, standalone = [r["inherited"] for r in rows], [r["standalone"] for r in rows]
    points = axes[0].scatter(inherited, standalone, s=22, c=[r["macs"] / 1e6 for r in rows], cmap="viridis")
    fig.colorbar(points, ax=axes[0], label="M MACs")
    tau, rho = statistics["kendall_tau"]["value"], statistics["spearman_rho"]["value"]
    axes[0].set_title(f"all: Kendall τ-b {'n/a' if tau is None else f'{tau:.2f}'}, "
                      f"Spearman ρ {'n/a' if rho is None else f'{rho:.2f}'}", fontsize=9)
    for ax, family in zip(axes[1:], families):
        members = [r for r in rows if r["family"] == family]
        ax.scatter(inherited, standalone, s=14, color="0.8")
        ax.scatter([r["inherited"] for r in members], [r["standalone"] for r in members], s=26, color="C3")
        ax.set_title(f"{family} ({len(members)})", fontsize=9)
    for ax in axes[1 + len(families):]:
        ax.set_visible(False)
    for ax in axes:
        ax.set_xlabel("held-out accuracy, supernet weights")
        ax.grid(alpha=0.3)
    for row in grid:
        row[0].set_ylabel("held-out accuracy, trained standalone")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
