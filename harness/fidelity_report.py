"""The fidelity report's text and figure (harness/fidelity.py measures): the error table,
the goal check of issue 13 at the light and medium rates, and the latency ECDFs of the
simulated and the real runs overlaid."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

METRICS = ("ttft_s", "tpot_s", "e2e_s")
STATS = ("mean", "p50", "p90", "p99")
KV_CACHE_BYTES = 1 << 30  # the real executor's CPU default, given to both sides
# Goals of issue 13 at the light and medium rates.
MEAN_GOAL, P90_GOAL = 0.05, 0.10


def report_markdown(table: pd.DataFrame, rates: list[float], profile: str, meta: dict) -> str:
    pct = lambda x: f"{100 * x:+.1f}"  # noqa: E731
    light_medium = set(rates[:2])
    lines = [f"# Simulator fidelity: {meta['model']} on {meta['machine']}", "",
             f"Real engine (executor=torch, worker processes) vs simulator (executor=sim, "
             f"cost_model=profiled, profile `{profile}`); {meta['num_requests']} ShareGPT-like requests, "
             f"seed 0, same KV pool ({KV_CACHE_BYTES >> 20} MiB), {meta['real_repeats']} real run(s) per point. "
             "Cells: simulated / real - 1, in %.", "",
             "`real noise`: the real runs' own spread, max over the means (and throughput) and over the "
             "P90s of |run / median of the runs - 1|: the floor under any error here.", "",
             "`profile scale`: the profile's multiplier (1 unless --drift-anchors 1 re-timed anchor steps or "
             "--drift-runs 1 timed a short real run before each real run; > 1 = the machine was slower than "
             "when profiled).", "",
             "| design | rate | TTFT mean | p50 | p90 | p99 | TPOT mean | p50 | p90 | p99 | E2E mean | p50 | p90 | "
             "p99 | throughput | real noise: means | P90s | profile scale |",
             "|" + "---|" * 18]
    for _, r in table.iterrows():
        cells = [pct(r[f"err.{m}.{s}"]) for m in METRICS for s in STATS] + [pct(r["err.throughput"])]
        noise_means = max([r[f"noise.{m}.mean"] for m in METRICS] + [r["noise.throughput"]])
        noise_p90 = max(r[f"noise.{m}.p90"] for m in METRICS)
        scale = r.get("profile_scale", 1.0)
        lines.append(f"| {r['design']} | {r['rate']:g} | " + " | ".join(cells)
                     + f" | {100 * noise_means:.1f} | {100 * noise_p90:.1f} | {scale:.3f} |")
    checked = table[table["rate"].isin(light_medium)]
    worst_mean, median_mean, worst_p90 = goal_errors(checked)
    lines += ["", f"At the light and medium rates ({', '.join(f'{r:g}' for r in sorted(light_medium))} req/s): "
              f"worst |error| of the means and throughput {100 * worst_mean:.1f} % (goal {100 * MEAN_GOAL:.0f} %), "
              f"of the P90s {100 * worst_p90:.1f} % (goal {100 * P90_GOAL:.0f} %); median |error| of the means "
              f"and throughput {100 * median_mean:.1f} %."]
    if "unscaled.err.throughput" in table:
        worst_mean, median_mean, worst_p90 = goal_errors(checked, "unscaled.")
        lines += ["", "Without the drift runs' scale (profile scale 1), the same points: worst |error| of the means "
                  f"and throughput {100 * worst_mean:.1f} %, of the P90s {100 * worst_p90:.1f} %; median |error| of "
                  f"the means and throughput {100 * median_mean:.1f} % (`unscaled.*` in fidelity.csv)."]
    return "\n".join(lines) + "\n"


def goal_errors(table: pd.DataFrame, prefix: str = "") -> tuple[float, float, float]:
    """Over the table's points: the worst and the median |error| of the means and throughput,
    and the worst |error| of the P90s."""
    if table.empty:
        return float("nan"), float("nan"), float("nan")
    means = table[[f"{prefix}err.{m}.mean" for m in METRICS] + [f"{prefix}err.throughput"]].abs().to_numpy()
    p90s = table[[f"{prefix}err.{m}.p90" for m in METRICS]].abs().to_numpy()
    return float(means.max()), float(pd.Series(means.ravel()).median()), float(p90s.max())


def ecdf_figure(runs: dict[tuple[str, str], Path], designs: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    fig, axes = plt.subplots(len(designs), len(METRICS), figsize=(4 * len(METRICS), 2.6 * len(designs)),
                             squeeze=False)
    for i, design in enumerate(designs):
        for j, metric in enumerate(METRICS):
            ax = axes[i][j]
            for kind, style in (("real", "-"), ("sim", "--")):
                run_dir = runs.get((design, kind))
                if run_dir is None:
                    continue
                req = pd.read_csv(run_dir / "requests.csv")
                sns.ecdfplot(req[metric].dropna(), ax=ax, linestyle=style, label=kind)
            ax.set_title(f"{design}: {metric.removesuffix('_s').upper()}", fontsize=9)
            ax.set_xlabel("s")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
