"""The markdown table and the picture of `make reproduce`'s results.json."""

from __future__ import annotations

from pathlib import Path

LABELS = {
    "base": "base (before any arm)",
    "sft": "SFT on references",
    "rft": "RFT (positives only)",
    "naive": "naive (eq. 1)",
    "rift": "RIFT, token level (default)",
    "rift_seq": "RIFT, sequence level (eq. 5 literal)",
    "rift_gaussian": "RIFT, gaussian-normalized rewards",
    "rift_round2": "RIFT, round 2 (fresh samples)",
}


def _cell(m: dict, key: str) -> str:
    return f"{100 * m[key]:.1f} ± {100 * m[key + '_sd']:.1f}"


def _seeds(m: dict, key: str) -> str:
    return " / ".join(f"{100 * r[key]:.1f}" for r in m["per_seed"])


def markdown(results: dict) -> str:
    k = results["k"]
    n = len(results["methods"]["base"]["per_seed"])
    lines = [
        f"Held-out eval: mean@{k} and pass@{k} in %, mean ± sample standard deviation over {n} seed(s) "
        "(per seed in brackets).",
        "",
        f"| method | LR (chosen on val) | mean@{k} | pass@{k} | LR {results['shared_lr']:g} (shared): "
        f"mean@{k} | pass@{k} |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    shared = results["methods_shared_lr"]
    for name, m in results["methods"].items():
        lr = f"{m['lr']:g}" if "lr" in m else "-"
        row = [
            LABELS.get(name, name),
            lr,
            f"{_cell(m, 'mean_at_k')} ({_seeds(m, 'mean_at_k')})",
            f"{_cell(m, 'pass_at_k')} ({_seeds(m, 'pass_at_k')})",
        ]
        if name in shared:
            row += [
                f"{_cell(shared[name], 'mean_at_k')} ({_seeds(shared[name], 'mean_at_k')})",
                _cell(shared[name], "pass_at_k"),
            ]
        else:
            row += ["-", "-"]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        f"Learning rate selection (val mean@{k} in %, seed {results['methods']['base']['per_seed'][0]['seed']}):",
        "",
    ]
    grid = results["lr_grid"]
    lines.append("| method | " + " | ".join(f"{lr:g}" for lr in grid) + " |")
    lines.append("| --- |" + " --- |" * len(grid))
    for name, sel in results["lr_selection_val_mean_at_k"].items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * sel[f'{lr:g}']:.1f}" for lr in grid) + " |")
    b = results["buffer_stats"]["round1"]
    lines += [
        "",
        f"Round-1 buffer: {b['responses']:,} samples of {b['problems']:,} problems, {b['positive_pct']}% positive, "
        f"{b['mixed_pct']}% of problems mixed (Table 1/4).",
        f"Wall time {results['wall_seconds']:.0f} s, CPU {results['cpu_seconds']:.0f} s ({results['machine']}).",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = results["k"]
    names = list(results["methods"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    width = 0.38
    for ax, key in zip(axes, ("mean_at_k", "pass_at_k")):
        xs = range(len(names))
        chosen = [100 * results["methods"][n][key] for n in names]
        chosen_sd = [100 * results["methods"][n][key + "_sd"] for n in names]
        shared = [100 * results["methods_shared_lr"][n][key] if n in results["methods_shared_lr"] else 0 for n in names]
        shared_sd = [
            100 * results["methods_shared_lr"][n][key + "_sd"] if n in results["methods_shared_lr"] else 0
            for n in names
        ]
        ax.bar([x - width / 2 for x in xs], chosen, width, yerr=chosen_sd, capsize=3, label="LR chosen on val")
        ax.bar(
            [x + width / 2 for x in xs],
            shared,
            width,
            yerr=shared_sd,
            capsize=3,
            label=f"shared LR {results['shared_lr']:g}",
        )
        for x, n in zip(xs, names):
            for s in results["methods"][n]["per_seed"]:
                ax.plot(x - width / 2, 100 * s[key], "k.", ms=3)
        ax.axhline(100 * results["methods"]["base"][key], color="grey", lw=0.8, ls="--")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.set_ylabel(f"{key.replace('_at_k', f'@{k}')} (%)")
        ax.set_title(f"{key.replace('_at_k', f'@{k}')} on held-out problems")
    axes[0].legend(fontsize=8)
    fig.suptitle(
        "make reproduce: tiny Qwen2 on generated arithmetic word problems "
        f"({len(results['methods']['base']['per_seed'])} seeds)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
