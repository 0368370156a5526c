"""Fuzzing campaign for ``read_livelink_csv``: mutated Live Link Face CSVs, read by path, binary and text stream.

    python bench/fuzz_livelink.py N SEED [--jobs 1] [--timeout 10] [--memory-mb 1024] [--json OUT] [--save DIR]

Case ``i`` of seed ``SEED`` is fully determined by ``(SEED, i)``: one of seven seed takes, one to three
mutations, and a reading mode. Each case runs in a worker process under a memory cap (``RLIMIT_AS``) and a
timeout; a worker that hangs is killed, one that dies is restarted, and either counts as an outcome. The
contract under test: every case ends in ``ok`` (a FaceMotion with finite float32 ``[T, 61]`` values, ``fps > 0``
and a plausible length) or ``typed error`` (``LiveLinkFormatError`` naming the file). Everything else is
printed with its count and, with ``--save``, the inputs are kept for reproduction. The exit status is 1 when any
case ended outside those two outcomes.

``tests/test_livelink_fuzz.py`` runs a fixed-seed corpus of a few hundred cases in-process in CI.
"""

from __future__ import annotations

import argparse
import codecs
import io
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from express4d_hf.core.arkit import CHANNELS, apple_name, BLENDSHAPES
from express4d_hf.livelink import (
    MAX_FRAMES_PER_ROW,
    MAX_TAKE_SECONDS,
    FaceMotion,
    LiveLinkFormatError,
    format_timecode,
    read_livelink_csv,
)

OK, TYPED = "ok", "typed error"
MODES = ("path", "binary stream", "text stream")


# --- seed takes ------------------------------------------------------------------------------------
def _values(rng: np.random.Generator, frames: int) -> np.ndarray:
    t = np.arange(frames)[:, None] / 60.0
    v = 0.5 + 0.45 * np.sin(2 * np.pi * rng.uniform(0.2, 2, (1, 61)) * t + rng.uniform(0, 6, (1, 61)))
    v[:, 52:] = 0.3 * np.sin(2 * np.pi * 0.5 * t)  # head and eye rotations in radians
    return v.astype(np.float32)


def _csv(values: np.ndarray, *, names=None, count="BlendShapeCount", tc_rate=60, step=1, start=0, lost=(),
         dropped=(), newline="\n", extra=0, fmt="{:.7g}") -> bytes:  # fmt: skip
    names = list(names or CHANNELS)
    lines = [",".join(["Timecode", count] + names + [f"Extra{k}" for k in range(extra)])]
    for f in range(len(values)):
        if f in dropped:
            continue
        tc = format_timecode((start + f) * step, tc_rate)[:-4] + ".317"
        if f in lost:
            lines.append(f"{tc},0")
        else:
            lines.append(",".join([tc, "61"] + [fmt.format(float(x)) for x in values[f]] + ["0.5"] * extra))
    return (newline.join(lines) + newline).encode()


def seed_takes() -> list[tuple[str, bytes]]:
    """Seven small takes covering the format's real variants (all read cleanly)."""
    rng = np.random.default_rng(1234)
    return [
        ("plain 60 fps", _csv(_values(rng, 40))),
        ("tracking lost rows", _csv(_values(rng, 50), lost=(5, 6, 7, 30))),
        ("dropped frames, CRLF", _csv(_values(rng, 45), dropped=(10, 11, 20), newline="\r\n")),
        ("camelCase, BlendshapeCount", _csv(_values(rng, 30), names=[c[0].lower() + c[1:] for c in CHANNELS],
                                            count="BlendshapeCount")),  # fmt: skip
        ("30 fps take on 60 fps timecode, Apple names", _csv(
            _values(rng, 35), step=2, names=[apple_name(c) if c in BLENDSHAPES else c for c in CHANNELS])),
        ("midnight rollover, extra columns", _csv(_values(rng, 40), start=60 * 86400 - 20, extra=3)),
        ("python repr floats, 30 fps timecode", _csv(_values(rng, 30), tc_rate=30, fmt="np.float32({!r})")),
    ]


# --- mutations --------------------------------------------------------------------------------------
NASTY_CELLS = ["", " ", "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e39", "-1e39", "3.5e38", "1e308", "1e-400",
               '"0.5"', '""', '"', ' 0.5 ', "\t0.5", "\u2028", "0.5\u2028", "\x00", "0x10", "1_0", "\u0663",
               "np.float32(0.5)", "np.float32(inf)", "0.5.5", "--1", "+.5", "1e", ".", "\ufeff0.5", "１", "0,5",
               "9" * 400, "-0", "1E5"]  # fmt: skip
BAD_TIMECODES = ["", "garbage", "99:99:99:99.000", "00:00:00:999.000", "00:61:00:00.000", "25:00:00:00.000",
                 "00:00:00:00.000.1", "00:00:00", "0:0:0:0", "00:00:00:00." + "9" * 40, "-1:00:00:00.000",
                 "12:00:00;05.5", "\u0661\u0662:00:00:00.000", "00:00:00:99.000"]  # fmt: skip


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _join(lines: list[bytes]) -> bytes:
    return b"\n".join(lines)


def _row_index(rng, lines) -> int:
    """A random body row (not the header, not the empty piece after the last newline), when there is one."""
    if len(lines) <= 2:
        return len(lines) - 1
    return int(rng.integers(1, len(lines) - 1))


def _map_fields(lines: list[bytes], fn) -> list[bytes]:
    out = []
    for line in lines:
        cr = line.endswith(b"\r")
        fields = (line[:-1] if cr else line).split(b",")
        if len(fields) > 2:
            fields = fn(fields)
        out.append(b",".join(fields) + (b"\r" if cr else b""))
    return out


def m_bitflip(rng, data):
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        if buf:
            i = int(rng.integers(len(buf)))
            buf[i] ^= 1 << int(rng.integers(8))
    return bytes(buf)


def m_truncate(rng, data):
    return data[: int(rng.integers(0, len(data) + 1))]


def m_insert(rng, data):
    i = int(rng.integers(0, len(data) + 1))
    chunk = rng.choice([b",", b"\n", b"\r", b"0", b".", b":", b'"', b"\xff", b" ", b"e"], size=int(rng.integers(1, 12)))
    return data[:i] + b"".join(chunk) + data[i:]


def m_delete(rng, data):
    i = int(rng.integers(0, len(data) + 1))
    return data[:i] + data[i + int(rng.integers(1, 200)) :]


def m_drop_column(rng, data):
    k = int(rng.integers(0, 64))
    lines = _lines(data)
    if rng.random() < 0.3:  # in one row only
        r = _row_index(rng, lines)
        lines[r : r + 1] = _map_fields(lines[r : r + 1], lambda f: f[:k] + f[k + 1 :])
        return _join(lines)
    return _join(_map_fields(lines, lambda f: f[:k] + f[k + 1 :]))


def m_duplicate_column(rng, data):
    k = int(rng.integers(0, 64))
    return _join(_map_fields(_lines(data), lambda f: f[: k + 1] + f[k : k + 1] + f[k + 1 :]))


def m_shuffle_columns(rng, data):
    lines = _lines(data)
    width = len(lines[0].split(b","))
    perm = [0] + list(1 + rng.permutation(width - 1))
    return _join(_map_fields(lines, lambda f: [f[p] for p in perm if p < len(f)] + f[width:]))


def m_duplicate_header_name(rng, data):
    lines = _lines(data)
    names = lines[0].split(b",")
    i, j = (int(x) for x in rng.integers(0, len(names), 2))
    names[j] = names[i]
    lines[0] = b",".join(names)
    return _join(lines)


def m_nasty_cell(rng, data):
    lines = _lines(data)
    for _ in range(int(rng.integers(1, 4))):
        r = _row_index(rng, lines)
        fields = lines[r].split(b",")
        if len(fields) > 2:
            fields[int(rng.integers(1, len(fields)))] = str(rng.choice(NASTY_CELLS)).encode("utf-8")
            lines[r] = b",".join(fields)
    return _join(lines)


def m_bad_timecode(rng, data):
    lines = _lines(data)
    r = _row_index(rng, lines)
    fields = lines[r].split(b",")
    fields[0] = str(rng.choice(BAD_TIMECODES)).encode("utf-8")
    lines[r] = b",".join(fields)
    return _join(lines)


def m_far_timecode(rng, data):
    lines = _lines(data)
    r = _row_index(rng, lines) if rng.random() < 0.5 else max(0, len(lines) - 2)
    fields = lines[r].split(b",")
    h, m, s = (int(x) for x in rng.integers(0, [24, 60, 60]))
    fields[0] = f"{h:02d}:{m:02d}:{s:02d}:{int(rng.integers(0, 60)):02d}.{int(rng.integers(0, 1000)):03d}".encode()
    lines[r] = b",".join(fields)
    return _join(lines)


def m_reorder_rows(rng, data):
    lines = _lines(data)
    body = lines[1:]
    if rng.random() < 0.5 and len(body) > 2:
        i, j = (int(x) for x in rng.integers(0, len(body), 2))
        body[i], body[j] = body[j], body[i]
    else:
        body = [body[int(i)] for i in rng.permutation(len(body))]
    return _join(lines[:1] + body)


def m_duplicate_rows(rng, data):
    lines = _lines(data)
    r = _row_index(rng, lines)
    return _join(lines[: r + 1] + [lines[r]] * int(rng.integers(1, 4)) + lines[r + 1 :])


def m_drop_rows(rng, data):
    lines = _lines(data)
    keep = [lines[0]] + [ln for ln in lines[1:] if rng.random() > 0.3]
    return _join(keep)


def m_lost_rows(rng, data):
    lines = _lines(data)
    for _ in range(int(rng.integers(1, 10))):
        r = _row_index(rng, lines)
        lines[r] = lines[r].split(b",")[0] + b",0"
    return _join(lines)


def m_non_utf8(rng, data):
    i = int(rng.integers(0, len(data) + 1))
    bad = rng.choice([b"\xff", b"\xfe", b"\xc3", b"\x80", b"\xed\xa0\x80", b"\xe9", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80"])
    return data[:i] + bytes(bad) + data[i:]


def m_bom(rng, data):
    boms = [codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF8 * 2]
    bom = boms[int(rng.integers(len(boms)))]
    if rng.random() < 0.3:  # a BOM in the middle (files concatenated)
        i = int(rng.integers(0, len(data) + 1))
        return data[:i] + codecs.BOM_UTF8 + data[i:]
    if bom in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) and rng.random() < 0.5:
        return bom + data.decode("utf-8", "replace").encode("utf-16-le" if bom == codecs.BOM_UTF16_LE else "utf-16-be")
    return bom + data


def m_newlines(rng, data):
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    seps = [b"\n", b"\r\n", b"\r", b"\n\n", b"\r\r\n"]
    out = bytearray(lines[0])
    for line in lines[1:]:
        out += seps[int(rng.integers(len(seps)))] + line
    return bytes(out)


def m_header_only_or_empty(rng, data):
    choice = int(rng.integers(4))
    if choice == 0:
        return b""
    if choice == 1:
        return data.split(b"\n")[0] + b"\n"
    if choice == 2:
        return b"\n\n  \n"
    return codecs.BOM_UTF8


def m_wide(rng, data):
    lines = _lines(data)
    extra = int(rng.integers(100, 3000))
    if rng.random() < 0.5:
        lines[0] += b"," + b",".join(f"Wide{k}".encode() for k in range(extra))
        return _join(lines)
    r = _row_index(rng, lines)
    lines[r] += b",0.5" * extra
    return _join(lines)


def m_binary_garbage(rng, data):
    garbage = rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8).tobytes()
    return garbage if rng.random() < 0.5 else data[: int(rng.integers(0, len(data) + 1))] + garbage


MUTATIONS = {f.__name__[2:]: f for f in (
    m_bitflip, m_truncate, m_insert, m_delete, m_drop_column, m_duplicate_column, m_shuffle_columns,
    m_duplicate_header_name, m_nasty_cell, m_bad_timecode, m_far_timecode, m_reorder_rows, m_duplicate_rows,
    m_drop_rows, m_lost_rows, m_non_utf8, m_bom, m_newlines, m_header_only_or_empty, m_wide, m_binary_garbage,
)}  # fmt: skip


def make_case(seed: int, index: int, seeds: list[tuple[str, bytes]] | None = None) -> tuple[bytes, str, list[str]]:
    """``(bytes, reading mode, [mutation names])`` of case ``index`` of campaign ``seed``."""
    seeds = seeds or seed_takes()
    rng = np.random.default_rng([seed, index])
    data = seeds[int(rng.integers(len(seeds)))][1]
    names = list(MUTATIONS)
    applied = [names[int(i)] for i in rng.integers(0, len(names), int(rng.integers(1, 4)))]
    for name in applied:
        data = MUTATIONS[name](rng, data)
    return data, MODES[int(rng.integers(len(MODES)))], applied


# --- running one case ---------------------------------------------------------------------------------
def run_case(data: bytes, mode: str, folder: str) -> str:
    """Read one case and name its outcome: ``ok``, ``typed error``, or what broke the contract."""
    name = os.path.join(folder, "case.csv")
    if mode == "path":
        with open(name, "wb") as f:
            f.write(data)
        source = name
    elif mode == "binary stream":
        source = io.BytesIO(data)
    else:
        buffer = io.BytesIO(data)
        buffer.name = name  # type: ignore[attr-defined]  # the name open(path) would carry
        source = io.TextIOWrapper(buffer, encoding="utf-8", newline="")
    try:
        motion = read_livelink_csv(source)
    except LiveLinkFormatError as err:
        expected = name if mode != "binary stream" else "<stream>"
        if not str(err).startswith(expected):
            return "typed error without the file name"
        return TYPED
    except MemoryError:
        return "MemoryError"
    except Exception as err:  # noqa: BLE001 - anything else breaks the contract; count it by type
        return f"escaped {type(err).__name__}"
    return check_motion(motion, data)


def check_motion(motion: object, data: bytes) -> str:
    if not isinstance(motion, FaceMotion):
        return f"returned {type(motion).__name__}"
    v = motion.values
    if v.dtype != np.float32 or v.ndim != 2 or v.shape[1] != 61 or v.shape[0] < 1:
        return f"returned values {v.dtype} {v.shape}"
    if not np.isfinite(v).all():
        return "returned non-finite values"
    if not (np.isfinite(motion.fps) and motion.fps > 0):
        return "returned fps <= 0"
    rows = data.count(b"\n") + data.count(b"\r") + 1
    if motion.num_frames > MAX_FRAMES_PER_ROW * rows + motion.fps or motion.duration > MAX_TAKE_SECONDS:
        return "returned an implausible length"
    if motion.valid.shape != (motion.num_frames,):
        return "returned a bad valid mask"
    return OK


# --- the worker pool with memory cap and timeout ------------------------------------------------------------
def _vm_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _worker(conn, memory_bytes: int) -> None:
    folder = tempfile.mkdtemp(prefix="fuzz-livelink-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    seeds = seed_takes()
    for mode in MODES:  # warm up (imports, allocator arenas) before the cap
        run_case(seeds[0][1], mode, folder)
    try:
        import resource

        limit = _vm_bytes() + memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass
    while True:
        try:
            job = conn.recv()
        except EOFError:
            break
        if job is None:
            break
        data, mode = job
        try:
            outcome = run_case(data, mode, folder)
        except MemoryError:
            outcome = "MemoryError"
        conn.send(outcome)


class _Worker:
    def __init__(self, memory_bytes: int):
        import multiprocessing as mp

        context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, memory_bytes), daemon=True)
        self.process.start()
        child.close()

    def run(self, data: bytes, mode: str, timeout: float) -> str | None:
        """The outcome, or ``None`` when the worker hung (killed) or died."""
        try:
            self.conn.send((data, mode))
            if self.conn.poll(timeout):
                return self.conn.recv()
            self.kill()
            return "timeout"
        except (EOFError, BrokenPipeError, ConnectionResetError):
            self.process.join(1)
            code = self.process.exitcode
            return f"worker died (exit {code})"

    def kill(self) -> None:
        self.process.kill()
        self.process.join(5)

    def alive(self) -> bool:
        return self.process.is_alive()


def campaign(n: int, seed: int, *, jobs: int = 1, timeout: float = 10.0, memory_mb: int = 1024,
             save: Path | None = None, progress: bool = True) -> dict:  # fmt: skip
    """Run cases ``0..n-1`` of ``seed``; returns outcome counts, per-mode and per-mutation tallies of failures."""
    from concurrent.futures import ThreadPoolExecutor
    import threading

    seeds = seed_takes()
    memory_bytes = memory_mb << 20
    local = threading.local()
    outcomes: Counter = Counter()
    by_mode: dict[str, Counter] = {m: Counter() for m in MODES}
    bad_mutations: Counter = Counter()
    by_mutation: dict[str, Counter] = {m: Counter() for m in MUTATIONS}
    lock = threading.Lock()
    t0 = time.perf_counter()
    done = [0]

    def one(index: int) -> None:
        worker = getattr(local, "worker", None)
        if worker is None or not worker.alive():
            worker = local.worker = _Worker(memory_bytes)
        data, mode, applied = make_case(seed, index, seeds)
        outcome = worker.run(data, mode, timeout)
        with lock:
            outcomes[outcome] += 1
            by_mode[mode][outcome] += 1
            for name in set(applied):
                by_mutation[name][outcome] += 1
            if outcome not in (OK, TYPED):
                bad_mutations.update(applied)
                if save is not None:
                    save.mkdir(parents=True, exist_ok=True)
                    (save / f"case-{seed}-{index}.csv").write_bytes(data)
                    (save / f"case-{seed}-{index}.json").write_text(json.dumps(
                        {"seed": seed, "index": index, "mode": mode, "mutations": applied, "outcome": outcome}))
            done[0] += 1
            if progress and done[0] % 1000 == 0:
                rate = done[0] / (time.perf_counter() - t0)
                print(f"  {done[0]}/{n} cases, {rate:.0f}/s, {dict(outcomes)}", file=sys.stderr, flush=True)

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        list(pool.map(one, range(n)))
    seconds = time.perf_counter() - t0
    return {
        "cases": n, "seed": seed, "jobs": jobs, "timeout_s": timeout, "memory_mb": memory_mb,
        "seconds": round(seconds, 1), "outcomes": dict(outcomes.most_common()),
        "by_mode": {m: dict(c.most_common()) for m, c in by_mode.items()},
        "by_mutation": {m: dict(c.most_common()) for m, c in by_mutation.items()},
        "mutations_in_bad_cases": dict(bad_mutations.most_common()),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", type=int, metavar="N", help="number of cases")
    parser.add_argument("seed", type=int, metavar="SEED", help="campaign seed")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per case before the worker is killed")
    parser.add_argument("--memory-mb", type=int, default=1024, help="address-space cap per worker above its baseline")
    parser.add_argument("--json", type=Path, default=None, help="write the counts here")
    parser.add_argument("--save", type=Path, default=None, help="keep the inputs of cases outside ok / typed error")
    args = parser.parse_args(argv)
    result = campaign(args.n, args.seed, jobs=args.jobs, timeout=args.timeout, memory_mb=args.memory_mb, save=args.save)
    print(f"{result['cases']} cases (seed {result['seed']}) in {result['seconds']} s, {args.jobs} worker(s), "
          f"{args.timeout:g} s timeout, {args.memory_mb} MiB cap")  # fmt: skip
    for outcome, count in result["outcomes"].items():
        print(f"  {count:>9,}  {outcome}")
    for mode, counts in result["by_mode"].items():
        print(f"  by {mode}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    for name, counts in result["by_mutation"].items():
        print(f"  cases with {name}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if set(result["outcomes"]) <= {OK, TYPED} else 1


if __name__ == "__main__":
    sys.exit(main())
