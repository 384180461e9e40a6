"""The figures of `ssmbench analyze` (matplotlib, Agg backend): one PNG per kind of number, one panel
per layer, the trained model and (with --at-init) its initialization overlaid."""

from __future__ import annotations

from pathlib import Path

COLORS = {"trained": "tab:blue", "init": "tab:orange"}


def _panels(states: dict, key: str) -> list[int]:
    """The layer indices that have `key` in some state."""
    return sorted({layer["layer"] for layers in states.values() for layer in layers if key in layer})


def _figure(n: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(4 * n, 4), squeeze=False)
    return plt, fig, axes[0]


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _each(states: dict, key: str, layer_index: int):
    """(state, that layer's `key` entry) for each state that has it."""
    for state, layers in states.items():
        entry = layers[layer_index].get(key)
        if entry is not None:
            yield state, entry


def eigenvalue_plot(states: dict, path: Path) -> None:
    import math

    layers = _panels(states, "lti")
    plt, fig, axes = _figure(len(layers))
    circle = [i * 2 * math.pi / 256 for i in range(257)]
    for ax, i in zip(axes, layers):
        ax.plot([math.cos(t) for t in circle], [math.sin(t) for t in circle], color="gray", lw=0.8)
        for state, lti in _each(states, "lti", i):
            pairs = [p for row in lti["eigenvalues"] for p in row]
            ax.scatter([p[0] for p in pairs], [p[1] for p in pairs], s=6, alpha=0.6, color=COLORS[state], label=state)
            zeros = [p for row in lti.get("zeros", []) for p in row if all(map(math.isfinite, p))]
            if zeros:
                ax.scatter([p[0] for p in zeros], [p[1] for p in zeros], s=14, marker="o", facecolors="none",
                           edgecolors=COLORS[state], label=f"{state} zeros")
        ax.set_aspect("equal")
        has_zeros = any("zeros" in lti for _, lti in _each(states, "lti", i))
        ax.set_title(f"layer {i}: eigenvalues" + (" (dots), zeros (circles)" if has_zeros else ""))
        ax.set_xlabel("Re lambda")
        ax.set_ylabel("Im lambda")
        ax.legend(fontsize="small")
    _save(plt, fig, path)


def _histogram_plot(states: dict, key: str, hist_key: str, title: str, xlabel: str, path: Path,
                    seq_len: int | None = None) -> None:
    """One panel per layer with the `hist_key` histogram of trained and init; with seq_len, a log x axis and a
    line at seq_len."""
    layers = _panels(states, key)
    plt, fig, axes = _figure(len(layers))
    for ax, i in zip(axes, layers):
        for state, entry in _each(states, key, i):
            hist = entry[hist_key]
            ax.stairs(hist["counts"], hist["edges"], color=COLORS[state], label=state)
        if seq_len is not None:
            ax.axvline(seq_len, color="black", ls="--", lw=1, label=f"seq_len {seq_len}")
            ax.set_xscale("log")
        ax.set_title(f"layer {i}: {title}")
        ax.set_xlabel(xlabel)
        ax.legend(fontsize="small")
    _save(plt, fig, path)


def timescale_plot(states: dict, key: str, seq_len: int, path: Path) -> None:
    _histogram_plot(states, key, "tau_histogram", f"timescales ({key})", "tau = -1 / log|lambda| (steps)", path,
                    seq_len)


def decay_plot(states: dict, path: Path) -> None:
    _histogram_plot(states, "decays", "decay_histogram", "per-step decay", "decay a_t", path)


def kernel_plot(states: dict, path: Path) -> None:
    layers = [i for i in _panels(states, "lti") if any("kernel" in e for _, e in _each(states, "lti", i))]
    plt, fig, axes = _figure(len(layers))
    for ax, i in zip(axes, layers):
        for state, lti in _each(states, "lti", i):
            for c, k in enumerate(lti.get("kernel", [])):
                ax.plot(k, color=COLORS[state], alpha=0.8, lw=1, label=state if c == 0 else None)
        ax.set_title(f"layer {i}: impulse response (first channels)")
        ax.set_xlabel("lag (steps)")
        ax.legend(fontsize="small")
    _save(plt, fig, path)


def write_plots(states: dict, seq_len: int, out: Path) -> dict:
    """The figures whose numbers exist, written under `out`: {"dir": out, "files": [names]}."""
    files = []
    if _panels(states, "lti"):
        eigenvalue_plot(states, out / "eigenvalues.png")
        timescale_plot(states, "lti", seq_len, out / "timescales.png")
        files += ["eigenvalues.png", "timescales.png"]
        if any("kernel" in e for layers in states.values() for layer in layers for e in [layer.get("lti", {})]):
            kernel_plot(states, out / "kernels.png")
            files.append("kernels.png")
    if _panels(states, "decays"):
        decay_plot(states, out / "decays.png")
        timescale_plot(states, "decays", seq_len, out / "decay_timescales.png")
        files += ["decays.png", "decay_timescales.png"]
    return {"dir": str(out.resolve()), "files": files}
