"""``python -m fuzz TARGET --time SECONDS``: fuzz one target of fuzz/targets.py.

The engine is atheris (libFuzzer, coverage-guided) when it is installed, else a
hypothesis loop over record-shaped inputs and mutated seeds (``--engine`` decides).
The corpus and the findings stay under ``--work`` (fuzz/work/TARGET by default): the
corpus grows from run to run; a finding is written to ``findings/`` and the command
exits non-zero. ``python -m fuzz replay TARGET FILE...`` runs inputs through the
checks without any engine (how to look at a finding).

fcgibridge is imported only once atheris's import hook is in place: code imported
before it is not instrumented, and the fuzzer would be blind to it. The compiled build
(mypyc) is C, not instrumented either: fuzz the pure-Python source.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGETS = ("app", "client", "records")
HERE = Path(__file__).resolve().parent

#: libFuzzer options for every run: a slow input (over 10 s) or a process past 2 GiB is a
#: finding too; inputs stay small enough for byte-at-a-time feeding to be cheap.
LIBFUZZER_OPTIONS = ["-timeout=10", "-rss_limit_mb=2048", "-max_len=8192", "-print_final_stats=1"]


def main(argv: list[str] | None = None) -> int:
    args, extra = parser().parse_known_args(argv)
    if args.target == "replay":
        return replay(args.files)
    work = Path(args.work) if args.work else HERE / "work" / args.target
    for sub in ("corpus", "seeds", "findings"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if has_atheris() else "hypothesis"
    if engine == "atheris":
        return run_atheris(args.target, work, args.time, args.runs, extra)
    return run_hypothesis(args.target, work, args.time, args.runs)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("target", choices=(*TARGETS, "replay"), help="what to fuzz, or replay FILE... through the checks")
    p.add_argument("files", nargs="*", help="replay: the target, then the inputs")
    p.add_argument("--time", type=int, default=60, help="seconds to run (default 60)")
    p.add_argument("--runs", type=int, default=0, help="stop after this many inputs as well (0: no bound)")
    p.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    p.add_argument("--work", help="where the corpus and findings go (default fuzz/work/TARGET)")
    p.epilog = "Options it does not know (-dict=..., -jobs=N) go to libFuzzer."
    return p


def has_atheris() -> bool:
    return importlib.util.find_spec("atheris") is not None


def load_target(name: str) -> tuple[Callable[[bytes], None], Any]:
    from fuzz import seeds, targets

    return targets.TARGETS[name], seeds


# ----------------------------------------------------------------------- atheris


def run_atheris(target: str, work: Path, seconds: int, runs: int, extra: list[str]) -> int:
    atheris = importlib.import_module("atheris")  # no type stubs: a plain module object
    with atheris.instrument_imports(include=["fcgibridge", "fuzz.targets"]):
        check, seeds = load_target(target)
    import fcgibridge

    if fcgibridge.build() != "pure Python":
        print(f"fuzz: fcgibridge is {fcgibridge.build()}: atheris sees no coverage in it", file=sys.stderr)
    count = seeds.write(target, work / "seeds")
    print(f"fuzz: {target}: {count} seeds, corpus {work / 'corpus'}, findings {work / 'findings'}", flush=True)
    options = [*LIBFUZZER_OPTIONS, f"-max_total_time={seconds}", f"-artifact_prefix={work / 'findings'}/"]
    if runs:
        options.append(f"-runs={runs}")
    argv = [f"fuzz-{target}", *options, *extra, str(work / "corpus"), str(work / "seeds")]
    atheris.Setup(argv, check)
    atheris.Fuzz()  # exits the process itself: 0 when the time is up, non-zero on a finding
    return 0


# -------------------------------------------------------------------- hypothesis


def run_hypothesis(target: str, work: Path, seconds: int, runs: int) -> int:
    """Rounds of hypothesis examples until the time (or the count) is used up. Not
    coverage-guided: it leans on inputs shaped like records and on mutated seeds."""
    check, seeds = load_target(target)
    seeds.write(target, work / "seeds")
    corpus = [path.read_bytes() for folder in ("seeds", "corpus") for path in sorted((work / folder).iterdir())]
    deadline = time.monotonic() + seconds
    done = 0
    while time.monotonic() < deadline and (not runs or done < runs):
        size = 500 if not runs else min(500, runs - done)
        failure = hypothesis_round(check, corpus, size)
        done += size
        if failure is not None:
            path = work / "findings" / f"crash-{hashlib.sha1(failure).hexdigest()}"
            path.write_bytes(failure)
            print(f"fuzz: finding written to {path}", file=sys.stderr)
            return 1
    print(f"fuzz: {target}: {done} inputs, no finding (hypothesis)")
    return 0


def hypothesis_round(check: Callable[[bytes], None], corpus: list[bytes], examples: int) -> bytes | None:
    from hypothesis import HealthCheck, given, settings

    from fuzz import strategies

    failing: list[bytes] = []

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategies.inputs(corpus))
    def run(data: bytes) -> None:
        try:
            check(data)
        except Exception:
            failing.append(data)
            raise

    try:
        run()
    except Exception:
        traceback.print_exc()
        return failing[-1] if failing else b""
    return None


# ------------------------------------------------------------------------ replay


def replay(files: list[str]) -> int:
    if not files or files[0] not in TARGETS:
        print("usage: python -m fuzz replay {app,client,records} FILE...", file=sys.stderr)
        return 2
    check, _ = load_target(files[0])
    status = 0
    for name in files[1:]:
        try:
            check(Path(name).read_bytes())
        except Exception:
            print(f"{name}: finding", file=sys.stderr)
            traceback.print_exc()
            status = 1
        else:
            print(f"{name}: no finding")
    return status


if __name__ == "__main__":
    sys.exit(main())
