"""Newton-parallel nonlinear RNNs against the sequential loop (ssmbench.core.newton).

    .venv/bin/python benchmarks/newton.py [--device cpu|cuda] [--quick]

Table 1: forward + backward of the recurrence h_t = f(h_{t-1}, x_t) (the cell's input drive is
computed once, outside the timing, for both), B = 16, for
    diag_gru, state 64: sequential loop vs jacobian "diag" (quasi-DEER; for this cell exact Newton)
    elman,    state 16: sequential loop vs jacobian "full" (DEER)
at L in {1024, 4096, 16384} (and 65536 on cuda); the best of --repeats runs after a warm-up (the
best, not the median: on a shared machine the other processes only ever add time).
Table 2: Newton iterations per call at initialization and after --train-steps steps of training
an nrnn model (one layer) on the copy task with the parallel solver.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from measure import synchronize  # noqa: E402
from ssmbench.core.newton import newton_solve, newton_solve_reference  # noqa: E402
from ssmbench.data.base import IGNORE_INDEX  # noqa: E402
from ssmbench.data.synthetic.copy import copy_examples  # noqa: E402
from ssmbench.models.backbone import SequenceModel  # noqa: E402
from ssmbench.models.nrnn import NewtonRNNMixer, make_cell  # noqa: E402

CASES = [("diag_gru", 64, "diag"), ("elman", 16, "full")]


def _time_fwd_bwd(solve, u, h0, weight, repeats: int) -> tuple[float, dict]:
    """Best seconds of forward + backward of sum(solve(u, h0) * weight) over `repeats` runs, and the last info."""
    times, info = [], {}
    for i in range(repeats + 1):
        uu = u.detach().requires_grad_()
        synchronize(u.device)
        start = time.perf_counter()
        h, info = solve(uu, h0)
        (h * weight).sum().backward()
        synchronize(u.device)
        if i:  # the first run warms up
            times.append(time.perf_counter() - start)
    return min(times), info


def speed_table(device: torch.device, lengths: list[int], batch: int, repeats: int) -> list[str]:
    rows = [f"{'cell':9} {'state':>5} {'jacobian':8} {'L':>6} {'sequential ms':>14} {'parallel ms':>12} "
            f"{'speedup':>8} {'iters':>6}"]
    print(rows[0], flush=True)
    for kind, state, jacobian in CASES:
        torch.manual_seed(0)
        cell = make_cell(kind, state, state).to(device)
        for length in lengths:
            g = torch.Generator(device="cpu").manual_seed(length)
            with torch.no_grad():
                u = cell.drive(torch.randn(batch, length, state, generator=g).to(device))
            h0 = torch.zeros(batch, state, device=device)
            weight = torch.randn(batch, length, state, generator=g).to(device)
            seq, _ = _time_fwd_bwd(lambda uu, hh: (newton_solve_reference(cell.recurrence, uu, hh), {}),
                                   u, h0, weight, repeats)
            par, info = _time_fwd_bwd(lambda uu, hh: newton_solve(cell.recurrence, uu, hh, jacobian),
                                      u, h0, weight, repeats)
            flag = " (fallback)" if info.get("fallback") else ""
            rows.append(f"{kind:9} {state:>5} {jacobian:8} {length:>6} {1e3 * seq:>14.1f} {1e3 * par:>12.1f} "
                        f"{seq / par:>7.2f}x {info['iterations']:>6}{flag}")
            print(rows[-1], flush=True)
    return rows


def training_table(device: torch.device, steps: int, seq_len: int) -> list[str]:
    """Train a one-layer nrnn on copy with the parallel solver; Newton iterations at step 1 and at the end."""
    rows = [f"{'cell':9} {'state':>5} {'jacobian':8} {'L':>4} {'iters@init':>10} {f'iters@{steps}':>10} "
            f"{'max':>4} {'fallbacks':>9} {'train acc':>9}"]
    print(rows[0], flush=True)
    n_symbols, n_copy, batch = 8, 8, 32
    x_all, y_all = copy_examples(4096, seq_len, n_symbols, n_copy, torch.Generator().manual_seed(0))
    x_all, y_all = x_all.to(device), y_all.to(device)
    for kind, state, jacobian in CASES:
        torch.manual_seed(0)
        mixer = partial(NewtonRNNMixer, cell=kind, d_state=state, jacobian=jacobian)
        net = SequenceModel(name="nrnn", mixer=mixer, n_classes=n_symbols + 2, vocab_size=n_symbols + 2,
                            target="token", d_model=64, n_layers=1, ff="glu", dropout=0.0).to(device)
        layer = net.blocks[0].mixer
        opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.0)
        iters, fallbacks, correct, labelled = [], 0, 0, 0
        order = torch.Generator().manual_seed(1)
        for step in range(steps):
            idx = torch.randint(0, x_all.shape[0], (batch,), generator=order).to(device)
            logits = net(x_all[idx])
            target = y_all[idx]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE_INDEX)
            opt.zero_grad()
            loss.backward()
            opt.step()
            iters.append(layer.metrics["newton_iters"])
            fallbacks += int(layer.metrics["newton_fallback"])
            if step >= steps - 20:
                mask = target != IGNORE_INDEX
                correct += int((logits.argmax(-1)[mask] == target[mask]).sum())
                labelled += int(mask.sum())
        tail = iters[-10:]
        rows.append(f"{kind:9} {state:>5} {jacobian:8} {seq_len:>4} {iters[0]:>10.0f} {sum(tail) / len(tail):>10.1f} "
                    f"{max(iters):>4.0f} {fallbacks:>9} {correct / max(labelled, 1):>9.3f}")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="L in {1024, 4096}, 1 repeat, 50 training steps")
    parser.add_argument("--lengths", type=int, nargs="*", default=None)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=200, help="0: skip the training table")
    parser.add_argument("--train-seq-len", type=int, default=64)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    lengths = args.lengths or ([1024, 4096] if args.quick else
                               [1024, 4096, 16384] + ([65536] if device.type == "cuda" else []))
    repeats = 1 if args.quick else args.repeats
    steps = 50 if args.quick else args.train_steps
    print(f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, float32\n")
    print(f"Forward + backward of the recurrence (best of {repeats}):")
    speed_table(device, lengths, args.batch, repeats)
    if steps < 1:
        print("\n--train-steps 0: no training table")
        return
    print(f"\nNewton iterations while training on copy (d_model 64, 1 layer, batch 32, lr 3e-3, {steps} steps):")
    training_table(device, steps, args.train_seq_len)


if __name__ == "__main__":
    main()
