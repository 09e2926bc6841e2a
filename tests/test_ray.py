"""The Ray Tune backend against a real local Ray instance (one per test session) and a simulated 2-node cluster."""

import csv
import ipaddress
import pickle
import signal
import subprocess
import sys
import time

import optuna
import psutil
import pytest

from nas.search.study import SAMPLERS, make_sampler
from tests.conftest import ROOT, TINY_SPACE, run_nas


@pytest.fixture(scope="session")
def ray_address(isolated_cache):
    """One local Ray instance for the session, started the way `nas search --backend ray` starts one."""
    from nas.search.ray_backend import start_ray

    lines = []
    start_ray(None, lines.append, num_cpus=2, object_store_memory=200 * 2**20)
    import ray  # after start_ray: it sets what ray reads on import
    try:
        assert lines[0].startswith("Ray dashboard: http://127.0.0.1:")
        assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}  # loopback only
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def test_every_socket_of_the_local_ray_instance_listens_on_loopback(ray_address):
    import ray

    @ray.remote
    def pid() -> int:
        return __import__("os").getpid()

    assert len(ray.get([pid.remote() for _ in range(4)])) == 4  # workers started too
    me = psutil.Process()
    listening = []
    for process in [me, *me.children(recursive=True)]:  # the driver, GCS, raylet, agents, dashboard, workers
        try:
            sockets = process.net_connections(kind="inet")
            listening += [(process.name(), s.laddr) for s in sockets if s.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            continue
    assert len(listening) >= 8, listening
    assert [entry for entry in listening if not _loopback(entry[1].ip)] == []


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback  # ::ffff:127.0.0.1 is loopback too


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_pickles(name):  # Ray Tune pickles the search algorithm, sampler included
    pickle.dumps(make_sampler(name, seed=0, trials=8))


def _study(run_dir):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run_dir / "study.journal")))
    return optuna.load_study(study_name="search", storage=storage)


def _search(run_dir, address, supernet, trials=4, workers=2):
    return ["search", "--space", TINY_SPACE, "--latency-budget", "1s", "--supernet", supernet, "--trials", trials,
            "--limit-train", 512, "--backend", "ray", "--workers", workers, "--address", address,
            "--run-dir", run_dir]


def test_ray_workers_run_the_search_and_constraints_reach_optuna(tmp_path, ray_address, tiny_supernet):
    run_dir = tmp_path / "run"
    result = run_nas(*_search(run_dir, ray_address, tiny_supernet))
    assert result.returncode == 0, result.stderr
    complete = _study(run_dir).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 4
    assert all(t.constraints and "latency" in t.constraints and t.user_attrs["arch_id"] for t in complete)
    assert len(list(csv.DictReader(open(run_dir / "trials.csv")))) == 4
    assert (run_dir / "best.yaml").exists() and (run_dir / "report.md").exists()

    # resuming with more trials continues the same study
    more = run_nas(*_search(run_dir, ray_address, tiny_supernet, trials=5))
    assert more.returncode == 0, more.stderr
    assert "4/5 trials done" in more.stderr
    assert len(_study(run_dir).get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 5


def _trial_workers():
    """Ray worker processes running a trial right now (Ray titles them after the trainable)."""
    return [p for p in psutil.process_iter(["cmdline"]) if "ImplicitFunc" in " ".join(p.info["cmdline"] or [])]


def test_a_worker_killed_mid_trial_is_retried_and_the_search_finishes(tmp_path, ray_address, tiny_supernet):
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "nas", *map(str, _search(run_dir, ray_address, tiny_supernet))],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, deadline = None, time.time() + 120
    while killed is None and process.poll() is None and time.time() < deadline:
        for worker in _trial_workers():
            try:
                time.sleep(0.2)  # let it get into its trial
                worker.send_signal(signal.SIGKILL)
                killed = worker.pid
                break
            except psutil.NoSuchProcess:  # that trial ended first: wait for the next one
                continue
        time.sleep(0.05)
    _, stderr = process.communicate(timeout=300)
    assert killed is not None, "no trial worker was seen"
    assert process.returncode == 0, stderr
    assert len(_study(run_dir).get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 4


TWO_NODES = """
import sys
from ray.cluster_utils import Cluster
from nas.cli import main
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 150 * 2**20,
                                                         "include_dashboard": False})
cluster.add_node(num_cpus=1, object_store_memory=150 * 2**20)
cluster.wait_for_nodes()
try:
    code = main(sys.argv[1:] + ["--address", cluster.address])
finally:
    cluster.shutdown()
sys.exit(code)
"""


def test_a_simulated_two_node_cluster_shares_the_trials(tmp_path, tiny_supernet):
    run_dir = tmp_path / "run"
    args = ["search", "--space", TINY_SPACE, "--latency-budget", "1s", "--supernet", tiny_supernet, "--trials", 4,
            "--limit-train", 512, "--backend", "ray", "--workers", 2, "--run-dir", run_dir]
    result = subprocess.run([sys.executable, "-c", TWO_NODES, *map(str, args)], cwd=ROOT, capture_output=True,
                            text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    nodes = {t.user_attrs["node"] for t in _study(run_dir).get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert len(nodes) == 2


def test_a_malformed_storage_url_is_one_line(tmp_path, tiny_supernet):
    from tests.conftest import assert_one_line_error

    result = run_nas("search", "--space", TINY_SPACE, "--latency-budget", "1s", "--supernet", tiny_supernet,
                     "--storage", "postgres-ish://nowhere", "--run-dir", tmp_path / "run")
    assert_one_line_error(result, "--storage", "Optuna cannot open it")
    assert not (tmp_path / "run").exists()
