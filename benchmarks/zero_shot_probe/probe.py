"""Issue 25's zero-shot probe: ensemble teachers and TwinBERT-style students (see README.md).

    python benchmarks/zero_shot_probe/probe.py [--data DIR] [--work DIR] [--models DIR] STEP ...

Steps, in order: fetch, prep, encode, rm3, signals, students grid|labels|final|one, e5,
timing, tables. Paths: --data / ZSP_DATA (default ../shared/datasets from the repository root),
--work / ZSP_WORK (default runs/zero_shot_probe), --models / ZSP_MODELS (default WORK/models).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="datasets folder holding scifact/ and cacm/")
    ap.add_argument("--work", help="work folder: cache/, jars/, models/, result files")
    ap.add_argument("--models", help="unpacked jars (default WORK/models)")
    sub = ap.add_subparsers(dest="step", required=True)
    sub.add_parser("fetch", help="mvn dependency:copy the six LangChain4j jars and unzip them")
    sub.add_parser("prep", help="BM25 score matrices and splits.json")
    enc = sub.add_parser("encode", help="query and document vectors of some towers")
    enc.add_argument("towers", help="comma list: minilm,bge,e5")
    enc.add_argument("--datasets", default="scifact,cacm")
    enc.add_argument("--int8-docs", default="scifact", help="datasets whose docs use -q graphs")
    sub.add_parser("rm3", help="BM25+RM3 grid on TUNE (rm3.json)")
    sig = sub.add_parser("signals", help="singles, fusions, teacher weights, PRF (signals.json)")
    sig.add_argument("--towers", default="minilm,bge")
    st = sub.add_parser("students", help="student grid / labels / final / one")
    st.add_argument("mode", choices=("grid", "labels", "final", "one"))
    st.add_argument("arg", nargs="?", default="", help="final: config prefix; one: config JSON")
    st.add_argument("--signals", default="signals.json", help="the teacher's signals file")
    st.add_argument("--suffix", default="", help="one: output suffix")
    sub.add_parser("e5", help="e5 single and as a 4th teacher signal (e5_check.json)")
    tm = sub.add_parser("timing", help="query-tower latency (timing.json)")
    tm.add_argument("n", nargs="?", type=int, default=60)
    sub.add_parser("tables", help="markdown tables from the result files")
    return ap


def main(argv: list[str] | None = None) -> None:
    a = _parser().parse_args(argv)
    common.set_paths(common.make_paths(a.data, a.work, a.models))
    print("paths:", common.PATHS, flush=True)
    if a.step == "fetch":
        import prep

        prep.fetch_jars()
    elif a.step == "prep":
        import prep

        prep.prep()
    elif a.step == "encode":
        import prep

        int8 = set(a.int8_docs.split(",")) if a.int8_docs else set()
        prep.encode(a.towers.split(","), a.datasets.split(","), int8)
    elif a.step == "rm3":
        import rm3

        rm3.run_rm3()
    elif a.step == "signals":
        import signals

        signals.run_signals(tuple(a.towers.split(",")))
    elif a.step == "e5":
        import signals

        signals.e5_check()
    elif a.step == "students":
        _students(a)
    elif a.step == "timing":
        import prep

        print(json.dumps(prep.time_towers(a.n), indent=1))
    elif a.step == "tables":
        import tables

        tables.write_all()


def _students(a: argparse.Namespace) -> None:
    import students

    run = students.Runner(a.signals)
    if a.mode == "grid":
        students.grid(run)
    elif a.mode == "labels":
        students.labels(run)
    elif a.mode == "final":
        print(json.dumps(students.final(run, a.arg), indent=1))
    else:
        print(json.dumps(students.one(run, json.loads(a.arg), a.suffix), indent=1))


if __name__ == "__main__":
    main()
