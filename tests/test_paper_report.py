"""REPORT.md's comparative sentences follow the data, and history files render as tables.

Synthetic series stand in for the paper suite's runs (the suite itself is tests/test_paper.py),
once where the paper's claims hold and once where they are false: the sentences must change.
"""
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from paper import claims, history
from paper.report import render

DATA = Path(__file__).resolve().parent / "data" / "paper_history"
RATES = (10.0, 12.0, 14.0)


def fig12(semipd_factor: float, distserve_growth: float = 10.0) -> pd.DataFrame:
    """Two panels x three rates; semi-PD's latencies are vLLM-D's times `semipd_factor`."""
    rows = []
    for panel in ("A", "B"):
        for i, rate in enumerate(RATES):
            base = 0.1 * (1 + i)
            for label, f in (("vLLM-D", 1.0), ("vLLM-S", 0.9), ("semi-PD", semipd_factor)):
                rows.append({"panel": panel, "tag": f"fig12_{panel}", "label": label, "rate": rate,
                             "p90_ttft_s": base * f, "p90_tpot_s": base * f / 4})
            ttft = 0.05 * distserve_growth ** (i / (len(RATES) - 1))
            rows.append({"panel": panel, "tag": f"fig12_{panel}", "label": "DistServe", "rate": rate,
                         "p90_ttft_s": ttft, "p90_tpot_s": 0.01})
    return pd.DataFrame(rows)


def test_tpot_sentence_counts_where_semipd_is_lower():
    assert "lower than vLLM-D's at 6 of 6" in claims.tpot_bullet(fig12(0.5))
    assert "lower than vLLM-S's at 6 of 6" in claims.tpot_bullet(fig12(0.5))
    false = claims.tpot_bullet(fig12(2.0))  # the paper's claim is false in this data
    assert "lower than vLLM-D's at 0 of 6" in false and "lower than vLLM-S's at 0 of 6" in false


def test_ttft_sentence_follows_the_data():
    good = fig12(0.5)
    text = claims.ttft_bullet(good, claims.top_rate_ratios(good))
    assert "lower than vLLM-D's at 6 of 6" in text and "0.50-0.50x vLLM-D's" in text
    assert "Where it is higher" not in text  # no explanation for something that did not happen
    bad = fig12(1.5)
    text = claims.ttft_bullet(bad, claims.top_rate_ratios(bad))
    assert "lower than vLLM-D's at 0 of 6" in text and "1.50-1.50x vLLM-D's" in text
    assert "Where it is higher at the top rate (A, B)" in text


def test_distserve_sentence_is_computed():
    grows = claims.distserve_bullet(fig12(1.0, distserve_growth=10.0))
    assert "A x10, B x10" in grows and "highest P90 TTFT of all systems at the top rate in 2 of 2" in grows
    flat = claims.distserve_bullet(fig12(1.0, distserve_growth=1.0))
    assert "A x1, B x1" in flat and "in 0 of 2 panels" in flat
    for text in (grows, flat):
        assert "without bound" not in text and "as in the paper" not in text


def test_differences_has_no_fixed_verdicts():
    text = claims.differences(fig12(2.0))
    for fixed in ("follows the paper", "as in the paper", "0.85-0.9", "many times over"):
        assert fixed not in text
    assert "No Fig. 12 runs" in claims.differences(pd.DataFrame())


def _kv(decode_mean: float, prefill_mean: float) -> pd.DataFrame:
    rows = []
    for rate in (1.0, 2.0):
        rows.append({"tag": "fig3_kv_usage", "label": "DistServe", "rate": rate, "pool": "prefill0",
                     "role": "prefill", "peak_used": 0.5, "mean_used": prefill_mean})
        rows.append({"tag": "fig3_kv_usage", "label": "DistServe", "rate": rate, "pool": "decode0",
                     "role": "decode", "peak_used": 0.9, "mean_used": decode_mean})
    return pd.DataFrame(rows)


def test_fig3_note_compares_the_pools():
    assert "higher than of the prefill pool in 2 of 2 runs" in claims.fig3_note(_kv(0.7, 0.1))
    assert "higher than of the prefill pool in 0 of 2 runs" in claims.fig3_note(_kv(0.1, 0.7))
    assert "mostly idle" not in claims.fig3_note(_kv(0.1, 0.7))


def test_fig4_note_reports_the_runs():
    data = pd.DataFrame([{"label": "DistServe", "rate": r, "p90_tpot_s": 0.1, "p99_tpot_s": 0.2,
                          "num_preemptions": n, "peak_used": p} for r, n, p in ((1.0, 0, 0.4), (2.0, 7, 1.0))])
    assert "DistServe: decode-side pool peak 0.40-1.00, 7 preemptions over 2 rates" in claims.fig4_note(data)


def test_history_fixture_renders_as_a_table():
    section = history.render_section(DATA)
    assert section.startswith("\n## Changes measured against earlier versions\n")
    assert "### Example: decode step time before and after a change" in section
    assert "The example change made decode steps cheaper." in section
    assert ("Both sides: `python bench.py engine=semipd workload.num_requests=100 workload.seed=0`; "
            "before: `e3d10af`, after: this commit.") in section
    assert "| metric | before | after | after / before |\n|---|---|---|---|\n" in section
    assert "| p90_tpot_s | 0.0412346 | 0.0398765 | 0.967066 |" in section
    assert "| finished | 100 | 100 |  |" in section
    assert section.rstrip().endswith("after / before from the two runs above.")


def test_history_without_files(tmp_path):
    assert "No measurements recorded" in history.render_section(tmp_path)


@pytest.mark.parametrize("change, field", [
    ({"rows": [["p90_tpot_s", 1.0]]}, "rows[0]"),
    ({"before_commit": "HEAD~1"}, "before_commit"),
    ({"after": "later"}, "after"),
    ({"columns": []}, "columns"),
    ({"title": ""}, "title"),
    ({"rows": [[{"x": 1}, 1, 2, 3]]}, "rows[0][0]"),
])
def test_history_errors_name_the_file_and_field(tmp_path, change, field):
    data = json.loads((DATA / "01_example.json").read_text()) | change
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=re.escape(f"bad.json: field '{field}'")):
        history.load(bad)


def test_history_rejects_unknown_and_missing_fields(tmp_path):
    data = json.loads((DATA / "01_example.json").read_text())
    (tmp_path / "extra.json").write_text(json.dumps(data | {"before": 1}))
    with pytest.raises(ValueError, match=r"extra\.json: unknown field\(s\) \['before'\]"):
        history.load(tmp_path / "extra.json")
    del data["command"]
    (tmp_path / "missing.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"missing\.json: field 'command': expected a non-empty string"):
        history.load(tmp_path / "missing.json")


def test_render_includes_computed_differences_and_history(tmp_path):
    series = fig12(2.0)
    runs = series.assign(run=str(tmp_path / "exp" / "run0"), model="llama3_8b", hardware="a100_80g",
                         slo_ttft_s=0.3, slo_tpot_s=0.15, rate_unit="gpu", num_requests=100,
                         workload_source="synthetic sharegpt_like", attainment=0.95)
    report = render(runs, {"fig12": series}, history_dir=DATA)
    assert "semi-PD's P90 TPOT is lower than vLLM-D's at 0 of 6" in report
    assert "## Changes measured against earlier versions" in report
    assert report.index("## Where our numbers differ") < report.index("## Changes measured")
