"""`express4d data build` never crashes, lies or destroys (issue 16): exit status 0 on success in a subprocess,
--overwrite replaces only a built dataset, stale temporaries go, pool workers die with their parent, bad values and
bad text name their file and line; every expected CLI failure is one line and a non-zero exit."""

from __future__ import annotations

import os


import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from express4d_hf.core.arkit import CHANNELS
from express4d_hf.cli import main
from express4d_hf.data import hub
from express4d_hf.data.release import ReleaseFormatError, read_release, write_release

ROOT = Path(__file__).resolve().parents[1]


def _clips(n=4):
    rng = np.random.default_rng(3)
    for k in range(n):
        values = (0.3 + 0.2 * rng.random((90, len(CHANNELS)))).astype(np.float32)
        yield f"take_{k}", "train" if k < n - 1 else "test", values, [f"A person smiles {k}#"]


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory):
    return write_release(tmp_path_factory.mktemp("rel") / "Express4D", _clips())


@pytest.fixture(scope="module")
def built(release_dir, tmp_path_factory):
    return hub.build_dataset(release_dir, tmp_path_factory.mktemp("built") / "ds", progress=False)


def _env():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")  # fmt: skip
    return env


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "express4d_hf.cli", *map(str, args)], capture_output=True, text=True,
                          env=_env(), timeout=timeout)  # fmt: skip


# --- the build ------------------------------------------------------------------------------------------------
def test_build_exits_zero_every_time_in_a_subprocess(release_dir, tmp_path):
    out = tmp_path / "ds"
    for run in range(6):
        result = _cli("data", "build", release_dir, out, "--no-progress", *(["--overwrite"] if run else []))
        assert result.returncode == 0, (run, result.returncode, result.stderr[-2000:])
        assert "built" in result.stdout and "terminate called" not in result.stderr


def test_overwrite_replaces_only_a_built_dataset(release_dir, built, tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    with pytest.raises(hub.DatasetExistsError, match="replaces only a dataset folder built by"):
        hub.build_dataset(release_dir, user, progress=False, overwrite=True)
    assert (user / "thesis.tex").read_text() == "years of work"

    extra = tmp_path / "ds_with_notes"
    shutil.copytree(built, extra)
    (extra / "notes.txt").write_text("keep me")
    (extra / "data" / "my.csv").write_text("keep me too")
    with pytest.raises(hub.DatasetExistsError, match=r"files the build did not write \(notes.txt, data/my.csv\)"):
        hub.build_dataset(release_dir, extra, progress=False, overwrite=True)
    assert (extra / "notes.txt").exists() and (extra / "data" / "my.csv").exists()

    a_file = tmp_path / "file.parquet"
    a_file.write_text("x")
    with pytest.raises(hub.DatasetExistsError, match="not a folder"):
        hub.build_dataset(release_dir, a_file, progress=False, overwrite=True)
    assert a_file.read_text() == "x"

    below_a_file = a_file / "ds"
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        hub.build_dataset(release_dir, below_a_file, progress=False)


def test_stale_temporaries_are_removed_at_the_next_build(release_dir, tmp_path):
    out = tmp_path / "ds"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".ds.building-{dead.pid}-0123abcd"
    live = tmp_path / f".ds.building-{os.getppid()}-89abcdef"  # a build still running elsewhere: kept
    legacy = tmp_path / ".ds.building-deadbeef"  # an old name without pid, an hour old
    other = tmp_path / ".other.building-1-0123abcd"  # another output's: not ours to touch
    for folder in (stale, live, legacy, other):
        (folder / "data").mkdir(parents=True)
    os.utime(legacy, (time.time() - 3600, time.time() - 3600))
    hub.build_dataset(release_dir, out, progress=False)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["ds", live.name, other.name])
    replaced = tmp_path / ".ds.replaced-0badf00d"  # a replaced dataset a killed build did not delete
    replaced.mkdir()
    assert hub.remove_stale_temporaries(out) == [replaced]


def test_pool_workers_die_with_their_parent(tmp_path):
    script = tmp_path / "pool.py"
    script.write_text(textwrap.dedent("""
        import time
        from express4d_hf.data.hub import _process_pool

        def nap(x):
            time.sleep(120)
            return x

        if __name__ == "__main__":
            pool = _process_pool(2)
            futures = [pool.submit(nap, i) for i in range(2)]
            while len(pool._processes) < 2:
                time.sleep(0.05)
            time.sleep(1.0)
            print(" ".join(str(p) for p in pool._processes), flush=True)
            time.sleep(120)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup possible
        proc.wait(10)
        deadline = time.time() + 15
        while any(_alive(p) for p in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in workers)
    finally:
        proc.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _copy_release(release_dir, tmp_path) -> Path:
    root = tmp_path / "rel"
    shutil.copytree(release_dir, root)
    return root


@pytest.mark.parametrize("cell,match", [("1e39", "beyond float32's range"), ("5000", "beyond the plausible magnitude"),
                                        ("nan", "not a finite number")])  # fmt: skip
def test_out_of_range_csv_value_names_take_and_line(release_dir, tmp_path, cell, match):
    root = _copy_release(release_dir, tmp_path)
    csv = root / "data" / "take_1.csv"
    lines = csv.read_text().split("\n")
    fields = lines[7].split(",")
    fields[10] = cell
    lines[7] = ",".join(fields)
    csv.write_text("\n".join(lines))
    with pytest.raises(ReleaseFormatError, match=match) as info:
        hub.build_dataset(root, tmp_path / "out", progress=False)
    assert "take_1.csv, line 8, column 11" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_out_of_range_npy_value_names_take_and_row(tmp_path):
    values = np.full((40, 61), 0.2, np.float32)
    values[12, 5] = np.inf
    root = write_release(tmp_path / "rel", [("a", "train", values, ["A smile#"])], motion_format="npy")
    with pytest.raises(ReleaseFormatError, match=r"a\.npy, row 12 \(frame 12\), column 5"):
        hub.build_dataset(root, tmp_path / "out", progress=False)


def test_non_utf8_release_texts_name_the_file(release_dir, tmp_path):
    root = _copy_release(release_dir, tmp_path)
    (root / "texts" / "take_2.txt").write_bytes(b"A person sm\xe9les#\n")
    with pytest.raises(ReleaseFormatError, match=r"not UTF-8: texts/take_2.txt \(line 1, byte 12: 0xe9"):
        read_release(root)
    (root / "texts" / "take_2.txt").write_text("A person smiles#\n")
    (root / "train.txt").write_bytes(b"take_0\ntake_1\n\xfftake_2\n")
    with pytest.raises(ReleaseFormatError, match=r"train.txt \(line 3, byte 1: 0xff"):
        read_release(root)


# --- the command line -------------------------------------------------------------------------------------------
def test_ten_bad_invocations_one_line_each(release_dir, built, tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "keep.txt").write_text("x")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (["data", "build", tmp_path / "nowhere", tmp_path / "o1"], "no such folder"),
        (["data", "build", release_dir, user, "--overwrite"], "replaces only a dataset folder"),
        (["data", "build", release_dir, a_file / "out"], "is not a folder"),
        (["data", "build", release_dir, tmp_path / "o2", "--num-proc", "-2"], "must be a positive integer"),
        (["data", "synth", tmp_path / "s", "--num-clips", "zero"], "must be a positive integer"),
        (["data", "info", tmp_path / "nowhere"], "no such folder"),
        (["data", "push", built, "not a repo id", "--dry-run"], "is not a Hub repo id"),
        (["generate", "A smile", "--model", tmp_path, "--out", tmp_path / "g", "--device", "bogus"], "not a torch device"),
        (["generate", "A smile", "--model", tmp_path, "--out", tmp_path / "g", "--guidance", "nan"], "finite number"),
        (["demo", "--port", "70000"], "port number"),
        (["benchmark", "--eta", "2"], "from 0 to 1"),
        (["train", "mdm", "--max-steps", "-3"], "must be a positive integer"),
        (["nosuchcommand"], "invalid choice"),
    ]
    for args, expected in cases:
        result = _cli(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0 and len(lines) == 1, (args, result.returncode, result.stderr[-3000:])
        assert lines[0].startswith("express4d") and expected in lines[0], (args, lines[0])
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists() and (user / "keep.txt").exists()


def test_verbose_shows_the_traceback(tmp_path):
    result = _cli("-v", "data", "info", tmp_path / "nowhere")
    assert result.returncode != 0 and "Traceback" in result.stderr and "no such folder" in result.stderr


def test_memory_and_os_errors_are_one_line(monkeypatch, tmp_path, capsys):
    from express4d_hf.commands import data

    def exhausted(args):
        raise MemoryError()

    monkeypatch.setattr(data, "_synth", exhausted)
    assert main(["data", "synth", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of memory" in err[0]

    def unwritable(args):
        return open(tmp_path / "no" / "such" / "dir" / "f", "w")

    monkeypatch.setattr(data, "_synth", unwritable)
    assert main(["data", "synth", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No such file or directory" in err[0] and "express4d data synth: error:" in err[0]
