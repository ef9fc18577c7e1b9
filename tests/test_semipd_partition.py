"""Compute shares on real hardware (semipd/partition.py): cores on a CPU, MPS on a GPU."""
import pytest

from semipd.partition import (cpu_cores_for_share, mps_daemon_commands, mps_environment,
                              num_cores_for_share, side_of)


@pytest.mark.parametrize("share,cores,expect", [(50, 2, 1), (100, 2, 2), (30, 2, 1), (70, 2, 1), (80, 2, 2),
                                                (1, 64, 1), (50, 64, 32), (100, 1, 1), (25, 8, 2)])
def test_a_share_is_at_least_one_core_and_at_most_all(share, cores, expect):
    assert num_cores_for_share(share, cores) == expect


def test_disjoint_below_100_overlapping_above():
    cores = [0, 1, 2, 3]
    pre, dec = cpu_cores_for_share(50, cores, side_of("prefill")), cpu_cores_for_share(50, cores, side_of("decode"))
    assert (pre, dec) == ([0, 1], [2, 3])
    pre, dec = cpu_cores_for_share(75, cores, "low"), cpu_cores_for_share(75, cores, "high")
    assert (pre, dec) == ([0, 1, 2], [1, 2, 3]) and set(pre) & set(dec) == {1, 2}
    assert cpu_cores_for_share(100, [5, 3], "low") == [3, 5]  # any core ids, sorted
    assert side_of("mixed") == "high"


@pytest.mark.parametrize("bad", [0, -5, 100.5, float("nan")])
def test_shares_outside_0_100_are_refused(bad):
    with pytest.raises(ValueError, match="compute share"):
        num_cores_for_share(bad, 4)


def test_mps_environment_and_daemon_commands():
    assert mps_environment(37.5) == {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "37.5"}
    assert mps_environment(100, "/tmp/p")["CUDA_MPS_PIPE_DIRECTORY"] == "/tmp/p"
    start, stop = mps_daemon_commands("/tmp/p", "/tmp/l")
    assert start[-2:] == ["nvidia-cuda-mps-control", "-d"]
    assert "CUDA_MPS_PIPE_DIRECTORY=/tmp/p" in start and "CUDA_MPS_LOG_DIRECTORY=/tmp/l" in stop
    assert stop[-1] == "echo quit | nvidia-cuda-mps-control"
    with pytest.raises(ValueError):
        mps_environment(0)


def test_mps_daemon_starts_and_stops_with_the_runs_directories(tmp_path):
    from semipd.partition import MpsDaemon
    calls = []
    daemon = MpsDaemon(str(tmp_path), run=lambda cmd, **kw: calls.append((cmd, kw)))
    daemon.start()
    assert calls[0][0][-2:] == ["nvidia-cuda-mps-control", "-d"] and calls[0][1]["check"]
    assert f"CUDA_MPS_PIPE_DIRECTORY={tmp_path}/pipe" in calls[0][0] and (tmp_path / "log").is_dir()
    assert daemon.environment(40) == {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "40",
                                      "CUDA_MPS_PIPE_DIRECTORY": f"{tmp_path}/pipe"}
    daemon.stop()
    daemon.stop()  # once only
    assert len(calls) == 2 and calls[1][0][-1] == "echo quit | nvidia-cuda-mps-control"
