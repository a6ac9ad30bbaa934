"""Markdown tables from the result files of the work directory.

table_main.md (signals, fusions, teacher, the two chosen students), table_students.md (the
validation grid), table_timing.md (query towers), table_acceptance.md (issue 25's targets),
table_e5.md (e5 alone and as a 4th teacher signal).
"""

from __future__ import annotations

import common

COLS = ["tune", "val60", "val60_no", "test_no", "test_all", "cacm"]
MAIN_ROWS = [
    "single:bm25",
    "single:minilm",
    "single:bge",
    "rrf:bm25+minilm",
    "z-list:bm25+minilm",
    "z-own:bm25+minilm",
    "z-union:bm25+minilm",
    "rrf:bm25+bge",
    "z-list:bm25+bge",
    "rrf:bm25+minilm+bge",
    "z-list:bm25+minilm+bge",
    "z-union:bm25+minilm+bge",
]
FINALS = ("students_finalT_minilm.json", "students_finalT_bge.json")
E5_A = "students_one_e5T_A.json"


def _line(name, r, cols=COLS):
    return f"| {name} | " + " | ".join(f"{r[c]:.4f}" if c in r else "-" for c in cols) + " |"


def main_table() -> str:
    s = common.read_json("signals.json")
    rows = s["fixed"]
    out = ["| design | " + " | ".join(COLS) + " |", "|---|" + "---|" * len(COLS)]
    out += [_line(k, rows[k]) for k in MAIN_ROWS]
    out.append(_line(f"TEACHER tuned z-{s['zmode']} {s['tuned_weights']}", s["tuned"]))
    if "tuned_prf" in s:
        name = f"teacher+PRF (not chosen: lower tune) {s['tuned_prf_weights']}"
        out.append(_line(name, s["tuned_prf"]))
    for f in FINALS:
        if not common.PATHS.out(f).exists():
            continue
        r = common.read_json(f)
        for part in ("recall", "teacher_same_cands", "student"):
            d = {c: r[c][part] for c in COLS[1:] if c in r}
            out.append(_line(f"{r['chosen']} :: {part}", d))
        refit = {"cacm": r["cacm_adapt_heads"]["student"]}
        out.append(_line(f"{r['chosen']} :: student, CACM heads refit on CACM docs", refit))
    return "\n".join(out)


def students_table() -> str:
    g = common.read_json("students_grid.json")
    if common.PATHS.out("students_labels.json").exists():
        g.update(common.read_json("students_labels.json"))
    out = [
        "| student config (query tower T) | V60 (60) | V60 no-overlap (20) "
        "| OOF TUNE: student / teacher on same cands / recall | student/teacher |",
        "|---|---|---|---|---|",
    ]
    for k, r in g.items():
        o = r["oof_tune"]
        oof = f"{o['student']:.4f} / {o['teacher_same_cands']:.4f} / {o['recall']:.4f}"
        v, vn = r["val60"]["student"], r["val60_no"]["student"]
        out.append(f"| {k} | {v:.4f} | {vn:.4f} | {oof} | {o['ratio']:.3f} |")
    return "\n".join(out)


def timing_table() -> str:
    t = common.read_json("timing.json")
    out = [
        "| query tower | p50 ms | p90 ms | x MiniLM-int8 (today default) |",
        "|---|---|---|---|",
    ]
    out += [f"| {k} | {v['p50_ms']} | {v['p90_ms']} | {v['x_minilm_int8']} |" for k, v in t.items()]
    return "\n".join(out)


def acceptance_table() -> str:
    """Issue 25's quality targets against the chosen MiniLM-tower student (design A), distilled
    from TEACHER and, where `students one ... --suffix _e5T_A` ran, from TEACHER-e5."""
    runs = [("A / TEACHER", common.read_json(FINALS[0]))]
    if common.PATHS.out(E5_A).exists():
        runs.append(("A / TEACHER-e5", common.read_json(E5_A)))

    def row(target, needed, measure, ok):
        cells = [measure(r) for _, r in runs]
        verdict = " / ".join("met" if ok(r) else "**miss**" for _, r in runs)
        return f"| {target} | {needed(runs[0][1])} | " + " | ".join(cells) + f" | {verdict} |"

    def ratios(r):
        return f"{r['test_no']['ratio']:.3f} SciFact no-overlap, {r['cacm']['ratio']:.3f} CACM"

    out = [
        "| target | needed | " + " | ".join(n for n, _ in runs) + " | verdict |",
        "|---|---|" + "---|" * len(runs) + "---|",
        row("SciFact no-overlap (104) student", lambda r: ">= 0.750",
            lambda r: f"{r['test_no']['student']:.4f}",
            lambda r: r["test_no"]["student"] >= 0.750),
        row("... and >= its own recall + 0.015",
            lambda r: f">= {r['test_no']['recall'] + 0.015:.4f}",
            lambda r: f"{r['test_no']['student']:.4f} (recall {r['test_no']['recall']:.4f})",
            lambda r: r["test_no"]["student"] >= r["test_no"]["recall"] + 0.015),
        row("CACM zero-shot (52) student", lambda r: ">= 0.5357",
            lambda r: f"{r['cacm']['student']:.4f}; heads refit on CACM docs "
            f"{r['cacm_adapt_heads']['student']:.4f}",
            lambda r: max(r["cacm"]["student"], r["cacm_adapt_heads"]["student"]) >= 0.5357),
        row("student / teacher on the same candidates", lambda r: ">= 0.97", ratios,
            lambda r: min(r["test_no"]["ratio"], r["cacm"]["ratio"]) >= 0.97),
    ]  # fmt: skip
    return "\n".join(out)


def e5_table() -> str:
    e = common.read_json("e5_check.json")
    out = ["| design | " + " | ".join(COLS) + " |", "|---|" + "---|" * len(COLS)]
    out.append(_line("single:e5", e["single:e5"]))
    out.append(_line("z-list equal bm25+minilm+bge+e5", e["z:bm25+minilm+bge+e5 equal"]))
    b = e["best_with_e5"]
    out.append(_line(f"TEACHER-e5, tuned on TUNE {b['weights']}", b))
    return "\n".join(out)


def write_all() -> None:
    makers = {
        "table_main.md": main_table,
        "table_students.md": students_table,
        "table_timing.md": timing_table,
        "table_acceptance.md": acceptance_table,
        "table_e5.md": e5_table,
    }
    needs = {
        "table_main.md": "signals.json",
        "table_students.md": "students_grid.json",
        "table_timing.md": "timing.json",
        "table_acceptance.md": FINALS[0],
        "table_e5.md": "e5_check.json",
    }
    for name, make in makers.items():
        if not common.PATHS.out(needs[name]).exists():
            print(f"{name}: skipped ({needs[name]} missing)")
            continue
        text = make()
        common.PATHS.out(name).write_text(text + "\n")
        print(f"== {name}\n{text}\n")
