"""What the GPU changes, each figure beside the CPU's on the same machine and data: the
two-tower training on CUDA (examples/s), the sharded training under NCCL when there are two
GPUs, FAISS exact search on the GPU (queries/s and agreement with the CPU's top 100), and the
online path over a version whose index sits on the GPU (`recommend()` p50/p99). Run by
`bench/gpu_check.sh`, which bounds it to 10 minutes and exits 0 on a machine without a GPU.

    python bench/gpu_check.py --out /tmp/gpu-check
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_nightly import dataset
from harness import Report, latencies


def training_rate(config: Path, device: str) -> float:
    """Examples/s of one epoch of `train_two_tower` on `device` ("cpu" hides the GPUs)."""
    code = (
        "import time, os; from engine.config import EngineConfig; "
        "from pipelines.config import load_config; from pipelines.dataset import build_features; "
        "from embeddings.train import train_two_tower; "
        f"cfg = load_config(r'{config}', EngineConfig); "
        "cfg = cfg.model_copy(update={'train': cfg.train.model_copy(update={'epochs': 1})}); "
        "fs = build_features(cfg); r = train_two_tower(fs, cfg); "
        "print('RATE', r.epochs[0].examples / r.epochs[0].seconds)"
    )
    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {})}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240
    )
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return float(out.stdout.split("RATE")[-1])


def faiss_search(n: int, dim: int, queries: int) -> dict[str, float]:
    """Exact inner-product search over `n` random unit vectors: q/s on CPU and GPU, and the
    share of the CPU's top 100 the GPU returns."""
    import faiss

    rng = np.random.default_rng(0)
    xb = rng.standard_normal((n, dim), dtype=np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq = xb[rng.choice(n, queries, replace=False)] + 0.1 * rng.standard_normal(
        (queries, dim), dtype=np.float32
    )
    cpu = faiss.IndexFlatIP(dim)
    cpu.add(xb)
    t0 = time.perf_counter()
    _, want = cpu.search(xq, 100)
    cpu_s = time.perf_counter() - t0
    gpu = faiss.index_cpu_to_all_gpus(cpu)
    gpu.search(xq[:100], 100)  # warm
    t0 = time.perf_counter()
    _, got = gpu.search(xq, 100)
    gpu_s = time.perf_counter() - t0
    agree = np.mean([len(np.intersect1d(a, b)) / 100 for a, b in zip(want, got, strict=True)])
    return {"cpu_qps": queries / cpu_s, "gpu_qps": queries / gpu_s, "agreement": float(agree)}


def online(config: Path, root: Path, use_gpu: bool) -> tuple[float, float, str]:
    """p50/p99 ms of `recommend()` over a version built with the index on the GPU or not."""
    from engine.config import EngineConfig
    from engine.jobs.nightly import run_nightly
    from pipelines.config import load_config
    from serving.recommender import Recommender

    cfg = load_config(config, EngineConfig)
    cfg = cfg.model_copy(
        update={"index": cfg.index.model_copy(update={"use_gpu": use_gpu, "kind": "flat"})}
    )
    run_nightly(cfg, root)
    rec = Recommender.load(root)
    users = [str(u) for u in range(1, 501)]
    p50, p99 = latencies(lambda u: rec.recommend(u, k=10), users, repeats=1)
    index = rec._state.ctx.index  # where the version searches
    return p50[0], p99[0], "index on the GPU" if index is not None and index.on_gpu else "CPU index"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("artifacts/gpu-check"))
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=5_000)
    args = ap.parse_args()
    report = Report("gpu_check", args)
    gpus = torch.cuda.device_count()
    print(f"{gpus} GPU(s): {[torch.cuda.get_device_name(i) for i in range(gpus)]}", flush=True)
    data = dataset(args.out, args.users, args.items, per_user=20, seed=0)
    config = data / "config.toml"
    config.write_text(
        config.read_text().split("\n# gpu-check\n")[0]
        + "\n# gpu-check\n[train]\nepochs = 2\n[evaluation]\nenabled = false\n"
        "[jobs]\nexplain = false\n"
    )

    cuda, cpu = training_rate(config, "cuda"), training_rate(config, "cpu")
    report.add("two-tower training, CUDA", cuda, "ex/s", ratio=("CPU", cuda / cpu))
    report.add("two-tower training, CPU (same machine)", cpu, "ex/s")
    if gpus >= 2:
        t0 = time.perf_counter()
        subprocess.run(
            [
                str(Path(sys.executable).with_name("recengine")),
                "train",
                "--config",
                str(config),
                "--out",
                str(args.out / "nccl"),
                "--nproc",
                "2",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=240,
        )
        report.add(
            "sharded training, 2 ranks over NCCL (whole command)", time.perf_counter() - t0, "s"
        )
    else:
        print("one GPU: the NCCL check needs two; skipped", flush=True)
    f = faiss_search(1_000_000, 64, 10_000)
    report.add(
        "FAISS exact search 1M x 64, GPU",
        f["gpu_qps"],
        "q/s",
        ratio=("CPU", f["gpu_qps"] / f["cpu_qps"]),
    )
    report.add("FAISS exact search 1M x 64, CPU", f["cpu_qps"], "q/s")
    report.add("GPU top-100 agreement with CPU", f["agreement"], "share")
    for use_gpu in (True, False):
        p50, p99, kind = online(config, args.out / f"root-{'gpu' if use_gpu else 'cpu'}", use_gpu)
        where = "GPU" if use_gpu else "CPU"
        report.add(f"recommend() p50, index on {where}", p50, "ms", note=kind)
        report.add(f"recommend() p99, index on {where}", p99, "ms", note=kind)
    report.finish()


if __name__ == "__main__":
    main()
