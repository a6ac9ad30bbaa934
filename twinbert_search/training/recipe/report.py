"""The run's report: results.json is written by `evaluate`; results.md (the CLI's) is the
table, the timing ratios, the reference points, the wall time, machine and command."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twinbert_search.training.recipe.artifacts import RESULTS_JSON, RESULTS_MD

__all__ = ["RESULTS_JSON", "RESULTS_MD", "render_markdown"]


def _ratio_text(timing: Mapping[str, Any], name: str) -> str:
    mean, p50 = timing["ms_per_query"], timing["p50_ms_per_query"]
    return (
        f"{timing['speedup'][name]:.0f}x cheaper than the teacher (means {mean[name]:.2f} vs "
        f"{mean['teacher']:.0f} ms/query; medians {p50[name]:.2f} vs {p50['teacher']:.0f} ms, "
        f"{timing['speedup_p50'][name]:.0f}x; timed in alternating blocks of {timing['block']})"
    )


def _subset_cell(row: Mapping[str, Any], subset: str) -> str:
    values = row.get("subsets", {}).get(subset)
    return "-" if values is None else f"{values['ndcg@10']:.4f}"


def _table(rows: list[Mapping[str, Any]], split: bool) -> list[str]:
    """A markdown table of `rows`; `split`: nDCG@10 by overlap subset, no-overlap first."""
    if not rows:
        return []
    if split:
        sizes = rows[0].get("subsets", {})
        n_no = sizes.get("no_overlap", {}).get("queries", 0)
        n_ov = sizes.get("overlap", {}).get("queries", 0)
        head = (
            f"| system | nDCG@10 no-overlap ({n_no}) | nDCG@10 overlap ({n_ov}) | "
            f"nDCG@10 all ({rows[0]['queries']}) | MRR@10 | Recall@100 | rerank ms/query | note |"
        )
        lines = [head, "|---|---:|---:|---:|---:|---:|---:|---|"]
    else:
        lines = [
            f"| system | nDCG@10 ({rows[0]['queries']}) | MRR@10 | Recall@100 | note |",
            "|---|---:|---:|---:|---|",
        ]
    for r in rows:
        cells = [r["system"]]
        if split:
            cells += [_subset_cell(r, "no_overlap"), _subset_cell(r, "overlap")]
        cells += [f"{r['ndcg@10']:.4f}", f"{r['mrr@10']:.4f}", f"{r['recall@100']:.4f}"]
        if split:
            cells.append("-" if r["rerank_ms"] is None else f"{r['rerank_ms']:.2f}")
        cells.append(r["note"])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


SECTIONS = (
    ("main", "SciFact test: rerankers of the default model's hybrid recall", True),
    ("served", "SciFact test: as served (each student's own query vector recalls)", True),
    ("ood", "Out of domain, zero-shot (no label of this collection used anywhere)", False),
)


def render_markdown(state: Mapping[str, Any], command: str) -> str:
    """results.md: the tables (SciFact split by overlap with the training positives, the
    no-overlap subset first; out of domain), the timing ratios, the reference points, the
    adaptation summary, wall time, machine and command."""
    res = state["steps"]["evaluate"]["result"]
    m = state["machine"]
    lines: list[str] = []
    for section, title, split in SECTIONS:
        rows = [r for r in res["rows"] if r.get("section", "main") == section]
        if rows:
            lines += ["", f"### {title}", "", *_table(rows, split)]
    paired = res.get("paired_timing", {})
    for name in paired.get("speedup", {}):
        lines.append(
            f"\n{name}: rerank stage {_ratio_text(paired, name)} "
            f"({paired['queries']} test queries x {paired['candidates']} candidates of the "
            "default model's recall; the student's time is its query tower + crossing)."
        )
    for student, timing in res.get("served_timing", {}).items():
        parts = [f"{name}: {_ratio_text(timing, name)}" for name in timing["speedup"]]
        lines.append(
            f"\nServed {student} (its own recall, {timing['candidates']} candidates): "
            + "; ".join(parts)
            + "."
        )
    for step in ("adapt_in_domain", "adapt"):
        summary = state["steps"].get(step, {}).get("result", {}).get("summary")
        if summary:
            lines += ["", f"Adaptation (`{step}` step):", "", *[f"- {x}" for x in summary]]
    # A student kept from an earlier pass still cost its training time: count every student.
    seconds = {k: v["seconds"] for k, v in state["steps"].items()}
    students = state["steps"].get("students", {}).get("result", {})
    if students:
        seconds["students"] = sum(v["seconds"] for v in students.values())
    wall = sum(seconds.values())
    per_step = ", ".join(f"{k} {v / 60:.1f}" for k, v in seconds.items())
    lines += [
        "",
        "Published reference points (nDCG@10, SciFact test, zero-shot systems): BM25 0.665; "
        "BM25 + MiniLM cross-encoder 0.688; all-MiniLM-L6-v2 0.645.",
        "",
        f"Recipe wall time: {wall / 60:.1f} min (minutes per step: {per_step}).",
        f"Machine: {m['nproc']} CPU cores, {m['cpu']} ({m['platform']}).",
        f"Command: `{command}`",
    ]
    return "\n".join(lines).lstrip("\n") + "\n"
