"""The markdown table and the picture of `make reproduce`'s results.json."""

from __future__ import annotations

from pathlib import Path

LABELS = {
    "base": "base (before any arm)",
    "sft": "SFT on references",
    "dft": "DFT on references",
    "rft": "RFT (positives only)",
    "dpo": "DPO (sample vs reference pairs)",
    "naive": "naive (eq. 1)",
    "rift": "RIFT, token level (default)",
    "rift_seq": "RIFT, sequence level (eq. 5 literal)",
    "rift_gaussian": "RIFT, gaussian-normalized rewards",
    "rft_round2": "RFT, round 2 (fresh samples)",
    "rift_round2": "RIFT, round 2 (fresh samples)",
}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:+.1f}"


def _ci(m: dict, key: str) -> str:
    lo, hi = m.get(key + "_ci95", [None, None])
    return "" if lo is None else f" [{100 * lo:.1f}, {100 * hi:.1f}]"


def _verdict(flag) -> str:
    return {True: "yes", False: "no", None: "n/a (1 seed)"}[flag]


def _cell(m: dict, key: str) -> str:
    if len(m["per_seed"]) == 1:  # one seed: no spread to show
        return f"{100 * m[key]:.1f}"
    return f"{100 * m[key]:.1f} ± {100 * m[key + '_sd']:.1f}{_ci(m, key)}"


def _side(group: dict, n: int) -> str:
    """ ", seed 0" when a group (the shared- or fifth-rate runs) ran on fewer seeds than the main runs."""
    if not group:
        return ""
    seeds = [r["seed"] for r in next(iter(group.values()))["per_seed"]]
    if len(seeds) == n:
        return ""
    return f", seed{'s' if len(seeds) > 1 else ''} {', '.join(str(s) for s in seeds)}"


def _seeds(m: dict, key: str) -> str:
    return " / ".join(f"{100 * r[key]:.1f}" for r in m["per_seed"])


def markdown(results: dict) -> str:
    k = results["k"]
    n = len(results["methods"]["base"]["per_seed"])
    new_protocol = "protocol" in results  # results of the protocol fixed for issue 19 (intervals, edge rule)
    shared = results["methods_shared_lr"]
    fifth = results.get("methods_fifth_rft_lr", {})
    shared_seeds = _side(shared, n)
    lines = [
        f"Held-out eval: mean@{k} and pass@{k} in %, mean ± sample standard deviation over {n} seed(s)"
        + (", [95% t-interval] " if new_protocol else " ")
        + "(per seed in brackets).",
        "",
        f"| method | LR (chosen on val) | mean@{k} | pass@{k} | "
        f"LR {results['shared_lr']:g} (shared{shared_seeds}): mean@{k} | pass@{k} |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
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
        f"Learning rate selection (val mean@{results['config'].get('val_k', k)} in %, "
        f"{results['config']['sizes']['val']} val problems, seed {results['methods']['base']['per_seed'][0]['seed']}):",
        "",
    ]
    sels = results["lr_selection_val_mean_at_k"]
    grid = sorted({float(lr) for sel in sels.values() for lr in sel})
    lines.append("| method | " + " | ".join(f"{lr:g}" for lr in grid) + " |")
    lines.append("| --- |" + " --- |" * len(grid))
    for name, sel in sels.items():
        cells = [f"{100 * sel[f'{lr:g}']:.1f}" if f"{lr:g}" in sel else "-" for lr in grid]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if fifth:
        lines += ["", f"At one fifth of RFT's chosen rate ({results['fifth_rft_lr']:g}{_side(fifth, n)}):", ""]
        lines += [f"| method | mean@{k} | pass@{k} |", "| --- | --- | --- |"]
        for name, m in fifth.items():
            lines.append(f"| {LABELS.get(name, name)} | {_cell(m, 'mean_at_k')} | {_cell(m, 'pass_at_k')} |")
    gate = results.get("validity_gate")
    if gate:
        spread = "-" if gate["seed_spread"] is None else f"{100 * gate['seed_spread']:.1f}"
        lines += [
            "",
            f"Validity gate ({gate['rule']}): RFT - base = {_pct(gate['rft_minus_base'])} points, seed spread "
            f"{spread} points: **{'holds' if gate['holds'] else 'DOES NOT HOLD'}**"
            + ("" if gate["assessable"] else " (not assessable with one seed)")
            + ".",
        ]
    for title, key in (("at the chosen rates", "paired"), (f"at the shared rate{shared_seeds}", "paired_shared_lr")):
        if key not in results:
            continue
        lines += [
            "",
            f"Paired differences {title} (points of %; 95% intervals; distinguishable = interval excludes 0):",
            "",
            "| difference | metric | by seed: mean [95% t] | distinguishable | bootstrap over problems: "
            "mean [95%] | distinguishable |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, entry in results[key].items():
            for metric in ("mean_at_k", "pass_at_k"):
                a, b = entry[metric]["by_seed"], entry[metric]["bootstrap_over_problems"]
                lines.append(
                    f"| {name.replace('_minus_', ' - ')} | {metric.replace('_at_k', f'@{k}')} | {_pct(a['mean'])} "
                    f"[{_pct(a['ci95'][0])}, {_pct(a['ci95'][1])}] | {_verdict(a['distinguishable_from_zero'])} | "
                    f"{_pct(b['mean'])} [{_pct(b['ci95'][0])}, {_pct(b['ci95'][1])}] | "
                    f"{_verdict(b['distinguishable_from_zero'])} |"
                )
    ext = {m: e for m, e in results.get("lr_extensions", {}).items() if e}
    if new_protocol:
        lines += [
            "",
            "Grid extensions (edge rule): "
            + (
                "none"
                if not ext
                else "; ".join(f"{m}: " + ", ".join(f"{x['lr']:g}" for x in e) for m, e in ext.items())
            )
            + ".",
        ]
    b = results["buffer_stats"]["round1"]
    lines += [
        "",
        f"Round-1 buffer: {b['responses']:,} samples of {b['problems']:,} problems, {b['positive_pct']}% positive, "
        f"{b['mixed_pct']}% of problems mixed (Table 1/4); the base's model.safetensors sha256 "
        f"{results['base_sha256'][:16]}.",
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
