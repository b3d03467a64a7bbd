"""Federated training throughput against centralised training, measured in the same run.

Usage::

    python -m benchmarks.federated_bench [--rows 1000000 | --data PROC_DIR] [--steps 200]
        [--variants 8:float32,16:float32,8:float16] [--out benchmarks/results]

For one dataset (generated and preprocessed, or ``--data``), split into the two parties' files:
the centralised arm (every column in one process, ``federated.baselines``), then each federated
variant (embedding width : wire dtype) as two processes over mutual-TLS gRPC on loopback
(``federated.local.run_federated``), then the centralised arm again. Each runs ``--steps``
training steps of the default model and batch size; samples/s counts the training loop only
(the PSI, start-up and evaluation are outside it, and the PSI runs once, before the first
variant). The ratio is federated / the mean of the two centralised measurements, so that a
drift of the machine during the run shows as the spread of the two. Also recorded: bytes on the
wire per training sample (both directions, framing included) and the PSI's wall time.

Writes ``OUT/federated_throughput_<date>.json``; ``benchmarks.report`` renders it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from typing import Dict, List, Optional

from common.atomic import atomic_write_text
from common.tables import print_table


def parse_variants(text: str) -> List[Dict]:
    """``"8:float32,16:float16"`` -> ``[{"width": 8, "wire_dtype": "float32"}, ...]``."""
    out = []
    for item in text.split(","):
        width, _, dtype = item.strip().partition(":")
        if not width.isdigit() or dtype not in ("float32", "float16"):
            raise ValueError(f"--variants: {item!r} is not WIDTH:float32|float16")
        out.append({"width": int(width), "wire_dtype": dtype})
    return out


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m benchmarks.federated_bench``."""
    from common.quiet import quiet_tensorflow
    quiet_tensorflow()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.federated_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--data", default=None, help="a preprocessing.run output to use")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--variants", default="8:float32,16:float32,8:float16")
    parser.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--psi-cache", default=None,
                        help="a federated.local run's psi_cache over the same data (the PSI "
                             "is then not run, and psi_seconds not measured)")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results"))
    args = parser.parse_args(argv)
    try:
        variants = parse_variants(args.variants)
        if args.steps < 10:
            raise ValueError("--steps must be >= 10")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    work = args.work or tempfile.mkdtemp(prefix="federated_bench_")
    doc = run_bench(args.rows, args.data, args.steps, variants, work, args.psi_cache)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"federated_throughput_{doc['date']}.json")
    atomic_write_text(path, json.dumps(doc, indent=2))
    rows = [("centralised samples/s (before, after)",
             " / ".join(f"{v:,.0f}" for v in doc["centralized_samples_per_second"]))]
    for v in doc["variants"]:
        rows.append((f"federated width {v['width']} {v['wire_dtype']}",
                     f"{v['samples_per_second']:,.0f} samples/s = "
                     f"{v['vs_centralized']:.2f}x; {v['bytes_per_sample']:.1f} B/sample"))
    rows += [("PSI seconds (both parties, all splits)",
              "not run (--psi-cache)" if doc["psi_seconds"] is None
              else f"{doc['psi_seconds']:.1f}"), ("results", path)]
    print_table("benchmarks.federated_bench", rows)
    return 0


def run_bench(rows: int, data: Optional[str], steps: int, variants: List[Dict],
              work: str, psi_cache: Optional[str] = None) -> Dict:
    """The measurements (see the module docstring); returns the results document."""
    from preprocessing.device import machine_info
    from federated.baselines import train_arm
    from federated.certs import write_certificates
    from federated.config import PartyConfig, SplitConfig
    from federated.local import run_federated, save_psi_cache, versions
    from federated.parties import split_parties
    from models.config import ModelConfig, TrainConfig

    os.makedirs(work, exist_ok=True)
    generated = data is None
    if generated:
        from preprocessing.generate import generate
        from preprocessing.run import run as preprocess
        gen, data = os.path.join(work, "generated"), os.path.join(work, "processed")
        generate(rows, 7, gen, progress=False)
        preprocess(gen, data, progress=False)
    parties = os.path.join(work, "parties")
    split_parties(data, parties, seed=0)
    certs = os.path.join(work, "certs")
    write_certificates(certs)
    model_config, train_config = ModelConfig(), TrainConfig(max_steps=steps)
    load_before = os.getloadavg()[0]

    def centralised() -> float:
        r = train_arm("centralized", os.path.join(parties, "media"),
                      os.path.join(parties, "advertiser"), "esmm", 0, 0, model_config,
                      train_config, progress=False)
        return r["samples_per_second"]

    central = [centralised()]
    results, psi_seconds = [], None
    for i, v in enumerate(variants):
        base = PartyConfig(party="media", data="", out="", certs=certs,
                           split=SplitConfig(width=v["width"], wire_dtype=v["wire_dtype"]),
                           model=model_config, train=train_config)
        run_dir = os.path.join(work, "runs", f"w{v['width']}_{v['wire_dtype']}")
        both = run_federated(base, parties, certs, run_dir, 0, psi_cache)
        media = both["media"]
        if psi_cache is None:
            psi_cache = save_psi_cache(run_dir)
            psi_seconds = media["psi_seconds"]
        results.append({**v, "samples_per_second": media["samples_per_second"],
                        "bytes_per_sample": media["train_bytes_per_sample"],
                        "steps": media["applied_batches"],
                        "wire_bytes": media["wire_bytes"]})
    central.append(centralised())
    mean_central = sum(central) / len(central)
    for r in results:
        r["vs_centralized"] = r["samples_per_second"] / mean_central
    from common.provenance import portable_path, recorded_command  # no machine paths recorded
    return {"date": datetime.date.today().isoformat(), "rows": rows if generated else None,
            "data": portable_path(data, "PROC", {work: "WORK"}), "steps": steps,
            "batch_size": train_config.batch_size,
            "centralized_samples_per_second": central,
            "centralized_mean": mean_central, "variants": results,
            "psi_seconds": psi_seconds,
            "loadavg_1min_before": load_before, "loadavg_1min_after": os.getloadavg()[0],
            "machine": machine_info(), "versions": versions(),
            "command": recorded_command("benchmarks.federated_bench", sys.argv[1:])}


if __name__ == "__main__":
    sys.exit(main())
