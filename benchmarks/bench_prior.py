#!/usr/bin/env python
"""The bundled prior's U-Net forward: milliseconds per call by batch size and thread count.

    python benchmarks/bench_prior.py [--runs 15] [--batches 1,2,4,8] [--threads 1,2]

An SDS step of the default recipe scores 2 renders with classifier-free guidance, a batch of 4
images at 32x32. Whether a second thread or a smaller batch makes that call cheaper decides what a
faster run can take out of the prior (docs/speed.md). The settings are interleaved round by round
in one process (the machine is noisy) and medians reported. The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

import torch

from dreamfusion.paths import data_dir
from dreamfusion.toyworld.prior import load_prior


def time_call(unet, batch: int, threads: int, runs: int) -> list[float]:
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    t = torch.full((batch,), 500)
    emb = torch.randn(batch, 8, unet.config.cross_attention_dim, generator=g)
    labels = torch.randn(batch, unet.config.projection_class_embeddings_input_dim, generator=g)
    times = []
    with torch.no_grad():
        for i in range(runs + 2):
            start = time.perf_counter()
            unet(x, t, encoder_hidden_states=emb, class_labels=labels)
            if i >= 2:
                times.append(1000.0 * (time.perf_counter() - start))
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--batches", default="1,2,4,8")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    unet = load_prior(data_dir("assets") / "toy_prior").unet
    settings = list(itertools.product([int(b) for b in args.batches.split(",")], [int(t) for t in args.threads.split(",")]))
    times: dict[tuple[int, int], list[float]] = {s: [] for s in settings}
    for _ in range(args.rounds):
        for batch, threads in settings:
            times[(batch, threads)] += time_call(unet, batch, threads, args.runs)
    figures = {}
    for (batch, threads), t in times.items():
        median = statistics.median(t)
        figures[f"batch{batch}_threads{threads}_ms"] = round(median, 1)
        print(f"batch {batch} ({batch // 2 if batch > 1 else '-'} renders with CFG), {threads} thread(s): {median:7.1f} ms")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
