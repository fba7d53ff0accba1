"""Patch n' Pack vs padding: forward+backward throughput of the predictor transformer on skewed sample lengths.

Two length mixes, ``--n-samples`` samples per step (default 512), token width ``--dim`` 32, 2 blocks, 2 heads:

- ``longtail``: one kind of ordered sample, length ``L = clip(round(exp(Z)), 1, 64)`` with ``Z ~ Normal(1.5, 1.0)``
  (numpy ``default_rng(seed)``); RoPE positions ``0 … L-1``.
- ``train_mix``: a mix resembling one BioJEPA training step: 60 % masked-module samples of fixed length 9 (cell
  token + 8 masked modules, no positions), 25 % time series of length uniform in {2, …, 15} (positions: cumulative
  sums of time gaps uniform in {1, 2, 3}, starting at 0), 15 % perturbation sets of length uniform in {2, 3} (no
  positions).

Methods (all compute the same thing; checked once per mix and seed: max |packed − padded| on real tokens < 1e-4):

- ``pad``: every sample in one ``(S, Lmax, dim)`` batch with a key-padding mask (padded keys excluded; padded query
  rows attend to every key so none is all-False), RoPE positions per sample.
- ``pad_per_kind`` (``train_mix`` only): one padded batch per kind (what a per-task predictor would do).
- ``pack_longest`` / ``pack_64`` / ``pack_128``: :func:`biojepa.nn.run_packed` with row capacity = longest sample,
  64 and 128 (first-fit decreasing, block-diagonal mask, per-sample RoPE).

Each step = the method's whole path from the flat ``(N, dim)`` tokens (a leaf requiring grad, as if from upstream) to
``loss.backward()``: scatter to rows, mask/layout (``pack()`` included for packing), transformer, gather, backward.
Methods are interleaved within each step (order rotated step by step) so that machine noise hits them alike.
Throughput = real (non-pad) tokens / mean step time; ratios are taken within the same seed.

Run ``python benchmarks/packing.py --seeds 0 1 2 --n-samples 512 --dim 32 --depth 2 --heads 2 --steps 40 --threads 1
--out benchmarks/results/packing`` (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from biojepa.nn import PackedTransformer, Segment, pack, run_packed

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_model

CAPACITIES = (None, 64, 128)


# ---------------------------------------------------------------------------------------------- length mixes
def longtail(n: int, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, bool]]:
    """``{kind: (lengths, has_positions)}``: lognormal lengths clipped to [1, 64]."""
    lengths = np.clip(np.round(np.exp(rng.normal(1.5, 1.0, n))), 1, 64).astype(int)
    return {"sequence": (lengths, True)}


def train_mix(n: int, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, bool]]:
    """Masked modules (length 9), time series (2–15), perturbation sets (2–3)."""
    n_mod, n_time = round(0.60 * n), round(0.25 * n)
    n_pert = n - n_mod - n_time
    return {
        "module": (np.full(n_mod, 9), False),
        "time": (rng.integers(2, 16, n_time), True),
        "perturbation": (rng.integers(2, 4, n_pert), False),
    }


MIXES = {"longtail": longtail, "train_mix": train_mix}


def make_segments(kinds: dict[str, tuple[np.ndarray, bool]], dim: int, rng: np.random.Generator) -> list[Segment]:
    """One :class:`Segment` per kind; tokens are leaves requiring grad; positions start at 0 in each sample."""
    segments = []
    for kind, (lengths, has_pos) in kinds.items():
        n = int(lengths.sum())
        tokens = torch.from_numpy(rng.standard_normal((n, dim)).astype(np.float32)).requires_grad_()
        positions = None
        if has_pos:
            gaps = rng.integers(1, 4, n) if kind == "time" else np.ones(n, dtype=int)  # time gaps vs plain order
            starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
            cum = np.cumsum(gaps)
            positions = torch.from_numpy((cum - cum[starts]).astype(np.float32))  # 0 at each sample's start
        segments.append(Segment(tokens, torch.from_numpy(lengths.astype(np.int64)), positions))
    return segments


# ---------------------------------------------------------------------------------------------- the two methods
def run_padded(net: PackedTransformer, segments: list[Segment]) -> list[torch.Tensor]:
    """Every sample of ``segments`` in one padded ``(S, Lmax, dim)`` batch with a key-padding mask."""
    tokens = torch.cat([s.tokens for s in segments])
    lengths = torch.cat([s.lengths for s in segments])
    S, Lmax, dim = lengths.numel(), int(lengths.max()), tokens.shape[-1]
    sample = torch.repeat_interleave(torch.arange(S), lengths)
    within = torch.arange(sample.numel()) - (torch.cumsum(lengths, 0) - lengths)[sample]
    idx = sample * Lmax + within
    x = tokens.new_zeros(S * Lmax, dim).index_copy(0, idx, tokens).view(S, Lmax, dim)
    mask = None
    if int(lengths.min()) != Lmax:
        valid = torch.arange(Lmax)[None] < lengths[:, None]  # (S, Lmax)
        mask = (valid[:, None, :] | ~valid[:, :, None])[:, None]  # real queries: real keys; pad queries: all keys
    rotary = None
    if net.rope is not None and any(s.positions is not None for s in segments):
        pos = torch.cat(
            [s.positions if s.positions is not None else s.tokens.new_zeros(len(s.tokens)) for s in segments]
        )
        rotary = net.rope(pos.new_zeros(S * Lmax).index_copy(0, idx, pos).view(S, Lmax))
    out = net(x, mask, rotary).reshape(-1, dim)[idx]
    return list(out.split([len(s.tokens) for s in segments]))


def run_padded_per_kind(net: PackedTransformer, segments: list[Segment]) -> list[torch.Tensor]:
    """One padded batch per segment (kind)."""
    return [run_padded(net, [s])[0] for s in segments]


def layout_stats(method: str, segments: list[Segment], capacity: int | None) -> dict[str, float]:
    """Rows, capacity, slots and attention elements (per head and layer) of a method on ``segments``."""
    lengths = torch.cat([s.lengths for s in segments])
    if method == "pack":
        layout = pack(lengths, capacity)
        shapes = [(layout.rows, layout.capacity)]
    elif method == "pad":
        shapes = [(lengths.numel(), int(lengths.max()))]
    else:  # pad_per_kind
        shapes = [(s.lengths.numel(), int(s.lengths.max())) for s in segments]
    slots = sum(r * c for r, c in shapes)
    n = int(lengths.sum())
    return {
        "rows": sum(r for r, _ in shapes),
        "capacity": "/".join(str(c) for _, c in shapes),
        "slots": slots,
        "pad_frac": 1 - n / slots,
        "attn_elems": sum(r * c * c for r, c in shapes),
        "attn_useful": int((lengths.double() ** 2).sum()),
        "peak_attn_row": max(c * c for _, c in shapes),
    }


def methods_for(mix: str) -> dict[str, tuple[str, int | None]]:
    """``{name: (kind, capacity)}``."""
    out: dict[str, tuple[str, int | None]] = {"pad": ("pad", None)}
    if mix == "train_mix":
        out["pad_per_kind"] = ("pad_per_kind", None)
    for cap in CAPACITIES:
        out[f"pack_{cap or 'longest'}"] = ("pack", cap)
    return out


def forward(net: PackedTransformer, segments: list[Segment], kind: str, cap: int | None) -> list[torch.Tensor]:
    if kind == "pad":
        return run_padded(net, segments)
    if kind == "pad_per_kind":
        return run_padded_per_kind(net, segments)
    return run_packed(net, net.rope, segments, cap)


def step(net: PackedTransformer, segments: list[Segment], kind: str, cap: int | None, n_tokens: int) -> float:
    """One forward+backward; seconds."""
    start = time.perf_counter()
    outs = forward(net, segments, kind, cap)
    loss = sum(o.square().sum() for o in outs) / n_tokens
    loss.backward()
    seconds = time.perf_counter() - start
    net.zero_grad(set_to_none=True)
    for s in segments:
        s.tokens.grad = None
    return seconds


# ---------------------------------------------------------------------------------------------- benchmark
def bench(mix: str, seed: int, args) -> tuple[list[dict], dict]:
    rng = np.random.default_rng(seed)
    kinds = MIXES[mix](args.n_samples, rng)
    segments = make_segments(kinds, args.dim, rng)
    lengths = np.concatenate([v[0] for v in kinds.values()])
    n_tokens = int(lengths.sum())
    torch.manual_seed(seed)
    net = PackedTransformer(args.dim, args.depth, args.heads)
    methods = methods_for(mix)

    # equal computations: every method's outputs on real tokens vs one padded batch
    with torch.no_grad():
        ref = torch.cat(run_padded(net, segments))
        diffs = {}
        for name, (kind, cap) in methods.items():
            diffs[name] = float((torch.cat(forward(net, segments, kind, cap)) - ref).abs().max())
    print(
        f"[{mix} seed {seed}] max |method - pad| on real tokens: " + ", ".join(f"{k}={v:.1e}" for k, v in diffs.items())
    )
    assert max(diffs.values()) < 1e-4, diffs

    names = list(methods)
    for _ in range(args.warmup):
        for name in names:
            step(net, segments, *methods[name], n_tokens)
    times: dict[str, list[float]] = {name: [] for name in names}
    pack_times: dict[str, list[float]] = {name: [] for name in names if methods[name][0] == "pack"}
    all_lengths = torch.from_numpy(lengths.astype(np.int64))
    gc.collect()
    for i in range(args.steps):
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            times[name].append(step(net, segments, *methods[name], n_tokens))
        for name in pack_times:  # pack() alone (already inside the packed steps), for the overhead column
            start = time.perf_counter()
            pack(all_lengths, methods[name][1])
            pack_times[name].append(time.perf_counter() - start)

    rows = []
    for name in names:
        kind, cap = methods[name]
        t = np.array(times[name])
        rows.append(
            {
                "mix": mix,
                "seed": seed,
                "method": name,
                "n_samples": len(lengths),
                "n_tokens": n_tokens,
                **layout_stats(kind, segments, cap),
                "step_ms_mean": 1e3 * t.mean(),
                "step_ms_median": 1e3 * np.median(t),
                "step_ms_sd": 1e3 * t.std(ddof=1),
                "pack_ms_mean": 1e3 * np.mean(pack_times[name]) if name in pack_times else 0.0,
                "tokens_per_s": n_tokens / t.mean(),
                "tokens_per_s_median": n_tokens / np.median(t),
                "max_abs_diff_vs_pad": diffs[name],
            }
        )
    base = next(r for r in rows if r["method"] == "pad")
    for r in rows:
        r["ratio_vs_pad"] = r["tokens_per_s"] / base["tokens_per_s"]
        r["ratio_vs_pad_median"] = r["tokens_per_s_median"] / base["tokens_per_s_median"]
    info = {
        "mix": mix,
        "seed": seed,
        "mean_len": lengths.mean(),
        "median_len": np.median(lengths),
        "max_len": lengths.max(),
        "pad_frac": 1 - n_tokens / (len(lengths) * lengths.max()),
    }
    return rows, info


def pm(x: pd.Series, fmt: str) -> str:
    sd = x.std(ddof=1) if len(x) > 1 else 0.0
    return f"{format(x.mean(), fmt)} ± {format(sd, fmt)}"


def markdown(raw: pd.DataFrame, info: pd.DataFrame, args, command: str, seconds: float) -> str:
    lines = [
        "# Patch n' Pack vs padding: predictor transformer throughput",
        "",
        f"Command: `{command}`",
        "",
        f"Date {datetime.date.today()}; {cpu_model()}, os.cpu_count()={os.cpu_count()}, "
        f"torch.set_num_threads({args.threads}), torch {torch.__version__}; total wall time {seconds:.0f} s. "
        "Shared, noisy machine: methods are interleaved within each step and ratios are taken within a seed.",
        "",
        f"Model: `PackedTransformer(dim={args.dim}, depth={args.depth}, n_heads={args.heads})` (RoPE base 100), "
        f"fp32, CPU. {args.n_samples} samples per step; {args.warmup} warm-up + {args.steps} timed steps per method "
        "and seed; a step = scatter to rows + mask/layout (incl. `pack()`) + forward + gather + backward. Tokens/s "
        "counts real tokens only. All methods give the same outputs on real tokens (max abs diff printed per seed, "
        f"largest seen: {raw['max_abs_diff_vs_pad'].max():.1e}).",
        "",
        "Length mixes (see the script's docstring for the exact distributions):",
        "",
        "| mix | samples | real tokens | mean length | median | max | padding fraction when padded to the max |",
        "|---|---|---|---|---|---|---|",
    ]
    for mix, g in info.groupby("mix", sort=False):
        tok = raw[(raw.mix == mix) & (raw.method == "pad")].n_tokens
        lines.append(
            f"| {mix} | {args.n_samples} | {pm(tok, '.0f')} | {pm(g.mean_len, '.2f')} | {pm(g.median_len, '.1f')} "
            f"| {', '.join(str(int(v)) for v in g.max_len)} | {pm(g.pad_frac, '.3f')} |"
        )
    lines += [
        "",
        "## Summary (mean ± sd over seeds " + ", ".join(map(str, args.seeds)) + ")",
        "",
        "`attention elems` = rows × capacity² score elements per head and layer that SDPA computes (also the "
        "mask size); `useful` = Σ length² (the block-diagonal part). `ratio` = method tokens/s ÷ `pad` tokens/s in "
        "the same seed (mean of per-seed ratios); `ratio (median)` uses median step times.",
        "",
        "| mix | method | rows | capacity | pad fraction | attention elems (×10³) | useful / computed | step ms "
        "| of which pack() ms | real tokens/s (×10³) | ratio vs pad | ratio (median) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (mix, method), g in raw.groupby(["mix", "method"], sort=False):
        caps = g.capacity.astype(str).unique()
        lines.append(
            f"| {mix} | {method} | {pm(g.rows, '.0f')} | {', '.join(caps)} | {pm(g.pad_frac, '.3f')} "
            f"| {pm(g.attn_elems / 1e3, '.0f')} | {pm(g.attn_useful / g.attn_elems, '.3f')} "
            f"| {pm(g.step_ms_mean, '.1f')} | {pm(g.pack_ms_mean, '.2f')} | {pm(g.tokens_per_s / 1e3, '.0f')} "
            f"| **{pm(g.ratio_vs_pad, '.2f')}** | {pm(g.ratio_vs_pad_median, '.2f')} |"
        )
    lines += [
        "",
        "## Per seed",
        "",
        "| mix | seed | method | rows × capacity | pad fraction | step ms (mean ± sd over steps) | median ms "
        "| real tokens/s (×10³) | ratio vs pad | max abs diff vs pad |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in raw.itertuples():
        lines.append(
            f"| {r.mix} | {r.seed} | {r.method} | {r.rows} × {r.capacity} | {r.pad_frac:.3f} "
            f"| {r.step_ms_mean:.1f} ± {r.step_ms_sd:.1f} | {r.step_ms_median:.1f} | {r.tokens_per_s / 1e3:.0f} "
            f"| {r.ratio_vs_pad:.2f} | {r.max_abs_diff_vs_pad:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-samples", type=int, default=512, help="samples per step")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per method and seed")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per method and seed")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--mixes", nargs="+", default=list(MIXES), choices=list(MIXES))
    parser.add_argument("--out", default="benchmarks/results/packing", help="writes OUT.md and OUT.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    command = "python benchmarks/packing.py " + shlex.join(sys.argv[1:])
    print(command)
    start = time.time()
    raw, info = [], []
    for mix in args.mixes:
        for seed in args.seeds:
            rows, inf = bench(mix, seed, args)
            raw += rows
            info.append(inf)
            for r in rows:
                print(
                    f"  {r['method']:>13}: {r['rows']:>4} x {r['capacity']:<8} pad {r['pad_frac']:.3f} "
                    f"{r['step_ms_mean']:7.1f} ms  {r['tokens_per_s'] / 1e3:7.0f}k tok/s  x{r['ratio_vs_pad']:.2f}"
                )
    seconds = time.time() - start
    raw_df, info_df = pd.DataFrame(raw), pd.DataFrame(info)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    raw_df.to_csv(out.with_suffix(".csv"), index=False)
    text = markdown(raw_df, info_df, args, command, seconds)
    out.with_suffix(".md").write_text(text)
    print(text)
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.csv')} ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
