"""The demo's picture: RIFT against the naive reward-weighted loss, step by step, on the same data.

``plot(runs, path)`` draws one PNG from per-step logs; ``check(runs)`` states, as assertions a
reader can verify in the picture, what the demo claims. A run is a list of per-step dicts with
``step``, ``loss``, ``pos`` (the part of the loss from responses with r > 0), ``neg`` (from
r < 0) and ``neg_prob`` (mean p of negative responses' target tokens).
"""

from __future__ import annotations

from pathlib import Path

COLORS = {"naive": "#d62728", "rift": "#1f77b4", "rift_lf": "#2ca02c", "rift_trl": "#9467bd"}
#: RIFT runs of the other hosts, drawn beside MS-Swift's (dashed) and checked like it.
OTHER_HOSTS = {"rift_lf": "LLaMA-Factory", "rift_trl": "TRL"}


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the loss of one step depends on which responses its batch drew)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def check(runs: dict[str, list[dict]]) -> list[str]:
    """What the picture shows, checked: returns the statements; raises ``AssertionError`` if one fails.

    - RIFT's loss is >= 0 at every step: its positive part is -r log p >= 0 and its negative part
      -r p lies in [0, |r|] (Theorem 3.4: bounded).
    - The naive loss goes below zero and keeps falling: its negative part -r log p -> -inf as the
      model pushes a wrong response's p to 0 (Theorem 3.2: unbounded below).
    """
    rift, naive = runs["rift"], runs["naive"]
    facts = []
    low = min(r["loss"] for r in rift)
    if low < -1e-6:
        raise AssertionError(f"RIFT's loss must stay >= 0, got {low:.4f}")
    facts.append(f"RIFT (MS-Swift): loss >= 0 at every one of {len(rift)} steps (lowest {low:.3f})")
    for name, host in OTHER_HOSTS.items():
        if name not in runs:
            continue
        low_host = min(r["loss"] for r in runs[name])
        if low_host < -1e-6:
            raise AssertionError(f"RIFT's loss ({host}) must stay >= 0, got {low_host:.4f}")
        facts.append(f"RIFT ({host}): loss >= 0 at every one of {len(runs[name])} steps (lowest {low_host:.3f})")
    tail = max(5, len(naive) // 10)
    first_neg = sum(r["neg"] for r in naive[:tail]) / tail
    last_neg = sum(r["neg"] for r in naive[-tail:]) / tail
    last_loss = sum(r["loss"] for r in naive[-tail:]) / tail
    if not last_loss < 0:
        raise AssertionError(
            f"the naive loss must end below zero, got a mean of {last_loss:.3f} over its last {tail} steps"
        )
    if not last_neg < 2 * first_neg:
        raise AssertionError(f"the naive negative part must keep falling, got {first_neg:.3f} -> {last_neg:.3f}")
    if "grad_norm" in naive[0] and "grad_norm" in rift[0]:
        g_naive = sorted(r["grad_norm"] for r in naive[-tail:])[tail // 2]
        g_rift = sorted(r["grad_norm"] for r in rift[-tail:])[tail // 2]
        if not g_naive > 2 * g_rift:
            raise AssertionError(
                f"the naive gradient norm must blow up against RIFT's, got medians {g_naive:.2f} vs {g_rift:.2f}"
            )
        facts.append(f"gradient norm over the last {tail} steps (median): naive {g_naive:.1f}, RIFT {g_rift:.2f}")
    below = next(r["step"] for r in naive if r["loss"] < 0)
    facts.append(
        f"naive: below zero from step {below}; its negative part fell from {first_neg:.2f} to {last_neg:.2f} "
        f"(mean of the first and last {tail} steps); loss {last_loss:.2f} at the end"
    )
    return facts


def plot(runs: dict[str, list[dict]], path: str | Path, *, title: str, lr: float, batch: int) -> Path:
    """Draw the demo's PNG: total loss, its positive and negative parts, and the gradient norm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"naive": "naive  -r log p  (eq. 1), MS-Swift", "rift": "RIFT  (eq. 5), MS-Swift"}
    labels.update({name: f"RIFT  (eq. 5), {host}" for name, host in OTHER_HOSTS.items()})
    window = max(3, len(runs["rift"]) // 25)
    with_grad = all("grad_norm" in runs[n][0] for n in ("naive", "rift"))
    ncols = 3 if with_grad else 2
    fig, axes = plt.subplots(
        1, ncols, figsize=(6.2 * ncols, 5.4), dpi=100, gridspec_kw={"width_ratios": [1.25, 1, 1][:ncols]}
    )
    ax, bx = axes[0], axes[1]
    for name in ("naive", "rift", *OTHER_HOSTS):
        if name not in runs:
            continue
        steps = [r["step"] for r in runs[name]]
        loss = [r["loss"] for r in runs[name]]
        other = name in OTHER_HOSTS
        style = {"color": COLORS[name], "linestyle": "--" if other else "-"}
        ax.plot(steps, loss, alpha=0.18, linewidth=0.8, color=COLORS[name])
        ax.plot(steps, _smooth(loss, window), linewidth=1.5 if other else 2.2, label=labels[name], **style)
        if other:
            continue
        short = "RIFT" if name == "rift" else "naive"
        pos = _smooth([r["pos"] for r in runs[name]], window)
        bx.plot(steps, pos, linestyle=":", linewidth=1.8, color=COLORS[name],
                label=f"{short}: positive part (correct answers)")  # fmt: skip
        bx.plot(steps, _smooth([r["neg"] for r in runs[name]], window), linewidth=2.2, color=COLORS[name],
                label=f"{short}: negative part (wrong answers)")  # fmt: skip
        if with_grad:
            cx = axes[2]
            grad = [r["grad_norm"] for r in runs[name]]
            cx.plot(steps, grad, alpha=0.18, linewidth=0.8, color=COLORS[name])
            cx.plot(steps, _smooth(grad, window), linewidth=2.2, color=COLORS[name], label=short)
    for axis in axes:
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_xlabel("optimizer step")
        axis.grid(alpha=0.25)
    ax.set_ylabel("training loss (mean over target tokens)")
    ax.set_title("Training loss: same buffer, seed and learning rate")
    bx.set_title("The same loss split by the sign of the reward")
    naive, rift = runs["naive"], runs["rift"]
    end = naive[-1]["step"]
    ax.annotate(
        "naive: unbounded below. Pushing a wrong\nanswer's p to 0 sends -r log p to -inf\n(Theorem 3.2)",
        xy=(end, _smooth([r["loss"] for r in naive], window)[-1]),
        xytext=(0.40, 0.07), textcoords="axes fraction", color=COLORS["naive"], fontsize=9.5,
        arrowprops={"arrowstyle": "->", "color": COLORS["naive"]},
    )  # fmt: skip
    ax.annotate(
        "RIFT: bounded. A wrong answer costs -r p,\nbetween 0 and |r| = 0.2 (Theorem 3.4):\n"
        "the loss never goes below 0",
        xy=(end, _smooth([r["loss"] for r in rift], window)[-1]),
        xytext=(0.40, 0.76), textcoords="axes fraction", color=COLORS["rift"], fontsize=9.5,
        arrowprops={"arrowstyle": "->", "color": COLORS["rift"]},
    )  # fmt: skip
    ax.legend(loc="lower left", fontsize=8.5)
    bx.legend(loc="lower left", fontsize=8.5)
    pos_naive = _smooth([r["pos"] for r in naive], window)
    if pos_naive[-1] > 1.5 * min(pos_naive):
        bx.annotate(
            "naive: the loss on correct answers\nrises again (forgetting, paper sec. 3.2)",
            xy=(end, pos_naive[-1]), xytext=(0.35, 0.80), textcoords="axes fraction", color=COLORS["naive"],
            fontsize=9.5,
            arrowprops={"arrowstyle": "->", "color": COLORS["naive"]},
        )  # fmt: skip
    if with_grad:
        cx = axes[2]
        cx.set_yscale("log")
        cx.set_title("Gradient norm (logged before clipping)")
        cx.legend(loc="upper left", fontsize=8.5)
        cx.annotate(
            "naive: the gradient -r / p of a\nwrong answer explodes as p -> 0",
            xy=(end, _smooth([r["grad_norm"] for r in naive], window)[-1]),
            xytext=(0.25, 0.80), textcoords="axes fraction", color=COLORS["naive"], fontsize=9.5,
            arrowprops={"arrowstyle": "->", "color": COLORS["naive"]},
        )  # fmt: skip
    fig.suptitle(title, fontsize=11.5)
    fig.text(
        0.5, 0.005,
        f"Faint: every step; bold: mean of the last {window} steps. Rewards +1.0 (correct) / -0.2 (wrong) from "
        f"`rift-losses label` (math-verify). AdamW, lr {lr:g} constant, {batch} responses a step.",
        ha="center", fontsize=8.5, color="#444444",
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def check_png(path: str | Path, *, min_bytes: int = 20_000) -> str:
    """The PNG exists, is large enough to hold curves and text, and is not a blank canvas."""
    import matplotlib.image as mpimg

    path = Path(path)
    if not path.is_file():
        raise AssertionError(f"{path} was not written")
    size = path.stat().st_size
    if size < min_bytes:
        raise AssertionError(f"{path} must be at least {min_bytes} bytes for a plot with curves and text, got {size}")
    image = mpimg.imread(path)
    height, width = image.shape[:2]
    colors = {
        tuple(px) for px in image[:: max(1, height // 60), :: max(1, width // 60), :3].reshape(-1, 3).round(2).tolist()
    }
    if len(colors) < 8:
        raise AssertionError(f"{path} looks blank: {len(colors)} distinct colours")
    return f"{path}: {width}x{height} px, {size / 1024:.0f} KB"
