"""``samplm embed``, ``segment`` and ``eval`` under ``torchrun`` with 2 CPU processes (gloo), against one
process: the same cache entries, the same merged files, the same printed table; a rank killed mid-run and
the job restarted gives the same results; a bad image is skipped and counted without hanging a rank, and
a rank that fails makes every rank stop."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from samplm.cli import main

MODEL = ["--model-type", "samplm_tiny", "--device", "cpu"]
TIMEOUT_S = 300

# one thread in the test's own runs, as in each launched process: the same sums, the same bits
pytestmark = pytest.mark.usefixtures("one_thread")


def _command(nproc: int, args: list[str]) -> list[str]:
    """``torchrun --nproc_per_node N -m samplm.cli ARGS`` on a free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    return [*launcher, "--master_addr", "127.0.0.1", "--master_port", port, "-m", "samplm.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(nproc, args), capture_output=True, text=True, timeout=TIMEOUT_S, env=_env(), check=False
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """``images/``: seven 96 x 128 photos with yellow boxes and, as the fourth file, one that is no image;
    ``masks/``: the first box of each photo (the broken file has none)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name in ("images", "masks"):
        (root / name).mkdir()
    for i in range(7):
        image = rng.integers(0, 60, (96, 128, 3), dtype=np.uint8)
        mask = np.zeros((96, 128), np.uint8)
        mask[10 + 4 * i : 40 + 4 * i, 10 + 6 * i : 44 + 6 * i] = 255
        image[mask > 0] = (220, 180, 40)
        image[55:85, 70:110] = (220, 180, 40)  # a second instance
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    (root / "images" / "3_broken.png").write_bytes(b"this is not a PNG")
    return root


def _data(folder: Path) -> list[str]:
    return ["--data", str(folder / "masks"), "--images", str(folder / "images"), "--format", "masks"]


def _entries(cache: Path) -> dict[str, dict]:
    return {p.name: load_file(str(p)) for p in cache.rglob("*.safetensors")}


def test_embed_shards_the_images_into_one_cache(folder, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["embed", *_data(folder), *MODEL, "--cache", str(one)]) == 0
    done = torchrun(["embed", *_data(folder), *MODEL, "--cache", str(two)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("7 embedded, 0 already cached") == 1  # the main process sums the shards
    expected, got = _entries(one), _entries(two)
    assert len(got) == 7 and sorted(got) == sorted(expected)
    for name, tensors in expected.items():
        assert all(np.array_equal(tensors[k].numpy(), got[name][k].numpy()) for k in tensors)
    assert len(list(two.rglob("model.json"))) == 1 and not list(two.rglob("*.tmp"))
    again = torchrun(["embed", *_data(folder), *MODEL, "--cache", str(two)])
    assert again.returncode == 0 and "0 embedded, 7 already cached" in again.stdout


def test_a_rank_that_fails_stops_every_rank(tmp_path, folder):
    data = tmp_path / "data"
    (data / "masks").mkdir(parents=True)
    (data / "images").mkdir()
    for i in range(4):
        Image.open(folder / "masks" / f"{i if i != 3 else 4}.png").save(data / "masks" / f"{i}.png")
        Image.open(folder / "images" / f"{i if i != 3 else 4}.png").save(data / "images" / f"{i}.png")
    # rank 1's second image: readable, but too thin to resize to the base's input
    Image.fromarray(np.full((2, 3000, 3), 90, np.uint8)).save(data / "images" / "3.png")
    Image.fromarray(np.full((2, 3000), 255, np.uint8)).save(data / "masks" / "3.png")
    args = ["embed", "--data", str(data / "masks"), "--images", str(data / "images"), "--format", "masks"]
    started = time.monotonic()
    done = torchrun([*args, *MODEL, "--cache", str(tmp_path / "cache")])
    assert done.returncode != 0 and time.monotonic() - started < 120  # nobody waited for the timeout
    assert "3.png" in done.stderr and "rank 1 of 2 failed" in done.stderr


#: Runs ``samplm.cli.main`` with ``sys.argv[3:]``; on rank 1 the value of option ``sys.argv[1]`` becomes
#: ``sys.argv[2]``: two ranks started by one command that see different inputs.
RANK_DEPENDENT = """
import os, sys
from samplm.cli import main
option, other, args = sys.argv[1], sys.argv[2], sys.argv[3:]
if os.environ["RANK"] == "1":
    args[args.index(option) + 1] = other
sys.exit(main(args))
"""


def _rank_dependent(tmp_path: Path, args: list[str], option: str, other: str) -> subprocess.CompletedProcess:
    """``args`` under ``torchrun`` (2 processes), rank 1 with ``other`` as the value of ``option``."""
    script = tmp_path / "rank_dependent.py"
    script.write_text(RANK_DEPENDENT)
    command = _command(2, [])  # ends with "-m samplm.cli": run the script instead
    command[-2:] = [str(script), option, other, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, env=_env(), check=False)


def test_ranks_that_see_different_images_stop_together_and_write_nothing(folder, tmp_path):
    out = tmp_path / "out"
    started = time.monotonic()
    done = _rank_dependent(tmp_path, [*_segment_args(folder, out), "--max-images", "8"], "--max-images", "7")
    assert done.returncode != 0 and time.monotonic() - started < 120
    assert "rank 1 of 2 has 7 images and rank 0 has 8" in done.stderr
    assert done.stderr.count("every rank must see the same files") == 2  # each rank says it
    assert not (out / "results.json").exists()


def test_a_rank_that_fails_while_loading_its_tasks_stops_every_rank(folder, tmp_path, adapter_factory):
    adapter = tmp_path / "adapter"
    adapter_factory("boxes").save_pretrained(adapter)
    args = ["segment", "--images", str(folder / "images"), "--out", str(tmp_path / "out"), *MODEL]
    started = time.monotonic()
    done = _rank_dependent(
        tmp_path, [*args, "--adapter", str(adapter)], "--adapter", str(tmp_path / "missing")
    )
    assert done.returncode != 0 and time.monotonic() - started < 120  # rank 0 did not wait for rank 1
    assert "rank 1 of 2 failed" in done.stderr and "missing" in done.stderr


def test_embed_and_eval_stop_when_the_ranks_read_different_data(folder, tmp_path):
    fewer = tmp_path / "fewer"
    shutil.copytree(folder / "images", fewer)
    (fewer / "6.png").unlink()
    embed = ["embed", *_data(folder), *MODEL, "--cache", str(tmp_path / "cache")]
    done = _rank_dependent(tmp_path, embed, "--images", str(fewer))
    assert done.returncode != 0 and "rank 1 of 2 has 6 images and rank 0 has 7" in done.stderr
    assert not list((tmp_path / "cache").rglob("*.safetensors"))  # stopped before encoding
    evaluate = [
        "eval",
        *_data(folder),
        *MODEL,
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "e"),
    ]
    done = _rank_dependent(tmp_path, [*evaluate, "--seed", "0"], "--seed", "1")  # another split
    assert done.returncode != 0 and "rank 1 of 2 has other instances than rank 0" in done.stderr
    assert not (tmp_path / "e" / "results.json").exists()


def _segment_args(folder: Path, out: Path) -> list[str]:
    reference = ["--reference-image", str(folder / "images" / "0.png")]
    reference += ["--reference-mask", str(folder / "masks" / "0.png")]
    return ["segment", "--images", str(folder / "images"), "--out", str(out), *reference, *MODEL]


def _same_outputs(one: Path, two: Path) -> None:
    for name in ("results.json", "images.json"):
        assert (one / name).read_text() == (two / name).read_text(), name
    first, second = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    for key in ("images", "no_match", "failed", "masks", "prompts"):
        assert first[key] == second[key], key


def test_segment_two_processes_write_what_one_writes(folder, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(_segment_args(folder, one)) == 0
    done = torchrun(_segment_args(folder, two))
    assert done.returncode == 0, done.stderr[-3000:]
    _same_outputs(one, two)
    summary = json.loads((two / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["segmented"] == 7 and len(summary["failed"]) == 1
    ranks = summary["ranks"]
    assert [r["image_ids"] for r in ranks] == [[1, 3, 5, 7], [2, 4, 6, 8]]  # dealt round-robin
    assert sorted(r["failed"] for r in ranks) == [0, 1]  # the broken file, on the rank it was dealt to
    assert done.stderr.count("samplm: skipped an image:") == 1 and "3_broken.png" in done.stderr
    assert done.stdout.count("8 images: 7 segmented, 0 already done") == 1


def _workers(launcher: int) -> dict[int, int]:
    """``{rank: pid}`` of the processes ``torchrun`` (pid ``launcher``) started (from ``/proc``)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"PPid:\t{launcher}\n" in status:
            rank = [v[5:] for v in environ if v.startswith(b"RANK=")]
            if rank:
                found[int(rank[0])] = int(entry.name)
    return found


def test_a_rank_killed_mid_run_resumes_to_the_same_results(folder, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    slower = ["--prompts", "grid", "--points-per-side", "16"]  # time to kill a rank mid-run
    assert main([*_segment_args(folder, one), *slower]) == 0
    args = [*_segment_args(folder, two), *slower]
    launcher = subprocess.Popen(_command(2, args), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not (two / "per_image").is_dir() or not list((two / "per_image").glob("*.json")):
            assert launcher.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(_workers(launcher.pid)[1], signal.SIGKILL)
        launcher.communicate(timeout=TIMEOUT_S)
    finally:
        launcher.kill()
    assert launcher.returncode != 0
    assert not (two / "results.json").exists()
    done = torchrun(args)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((two / "summary.json").read_text())
    assert summary["resumed"] >= 1 and summary["resumed"] + summary["segmented"] == 7
    _same_outputs(one, two)


def test_eval_two_processes_print_the_table_one_prints(folder, tmp_path, capsys):
    args = ["eval", *_data(folder), *MODEL, "--cache", str(tmp_path / "cache"), "--val-fraction", "0.6"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    done = torchrun([*args, "--out", str(tmp_path / "two")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line for line in done.stdout.splitlines() if line.startswith("|")] == table and table
    first, second = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert first["miou"] == second["miou"] and first["instances"] == second["instances"]


def test_a_command_leaves_the_process_group_it_ran_in(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        args = ["segment", "--images", str(tmp_path / "absent"), "--out", str(tmp_path / "out"), *MODEL]
        assert main(args) == 2  # the command itself failed: the group is closed all the same
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
