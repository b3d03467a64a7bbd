"""Both parties on loopback, as separate processes: the demo, the tests and the evaluation.

Usage::

    python -m federated.local --rows N --out DIR [--seeds 0[,1,2]] [--dp-epsilons 8[,4,1]]
        [--data PROC_DIR] [--width 8] [--wire-dtype float32] [--defence marvell]
        [--marvell-power 4]
        [--config FILE] [--no-progress]

Steps: generate ``N`` rows (``preprocessing.generate``, seed ``--generator-seed``) and
preprocess them, or take ``--data``; split them into the two parties' own files
(``DIR/parties``, ``federated.split``); write the CA and the parties' certificates
(``DIR/certs``); then for each seed (which is also the arm's shuffle seed) train

- ``advertiser_only``, ``centralized`` (the federated model with every column in one process:
  its upper bound) and ``centralized_flat`` (the harness model with every column in its input
  layer), each in this process (``federated.baselines``),
- ``federated``: ``python -m federated.advertiser`` and ``python -m federated.media`` as two
  processes over mutual-TLS gRPC, with the default gradient defence (``--defence``: Marvell
  and max-norm),
- ``federated_no_defence``: the same with the gradient defence off,
- ``federated_dp_eps<E>`` for each ``--dp-epsilons``: DP on the embeddings (defence on).

``DIR/federated.json``: ``entire_space_cvr_auc`` (mean over seeds) per arm, with ``_std`` and
``_values``; ``leak_auc_norm``, ``leak_auc_direction`` and ``leak_auc_pca`` with the defence
``on`` (from the ``federated`` runs) and ``off`` (``federated_no_defence``), and Marvell's bound
on any attack's AUC; every test metric per arm; bytes on the
wire per training sample; training samples/s of ``federated`` against ``centralized`` measured
in the same run; the machine and versions. ``DIR/federated.md`` and ``DIR/federated.png`` show
the same.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from typing import Dict, List, Optional, Sequence


from common.atomic import atomic_write_text
from common.tables import print_table

HEADLINE = ("entire_space_cvr_auc", "ctcvr_auc", "cvr_auc_clicked", "ctr_auc")
#: The label-leak figures of a federated arm (``federated.training.LeakAudit.aucs``).
LEAK_KEYS = ("leak_auc_norm", "leak_auc_direction", "leak_auc_pca", "leak_auc_batch",
             "marvell_auc_bound_at_mean_kl")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def party_configs(base, parties_dir: str, certs: str, run_dir: str, seed: int, port: int):
    """The two parties' configs of one federated run (from ``base``, a media-side
    ``PartyConfig`` whose ``split``, ``model`` and ``train`` both share)."""
    from federated.certs import party_directory
    address = f"127.0.0.1:{port}"
    media = replace(base, party="media", data=os.path.join(parties_dir, "media"),
                    out=os.path.join(run_dir, "media"), certs=party_directory(certs, "media"),
                    address=address, seed=seed)
    advertiser = replace(base, party="advertiser",
                         data=os.path.join(parties_dir, "advertiser"),
                         out=os.path.join(run_dir, "advertiser"),
                         certs=party_directory(certs, "advertiser"), address=address, seed=seed)
    return media, advertiser


def start_party(config, config_path: str, log_path: str, progress: bool = False
                ) -> subprocess.Popen:
    """Write ``config`` to ``config_path`` and start its party as a process."""
    config.save(config_path)
    cmd = [sys.executable, "-m", f"federated.{config.party}", "--config", config_path]
    if config.party == "media" and not progress:
        cmd.append("--no-progress")
    log = open(log_path, "ab")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def wait_for_port(run_out: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    """Wait until the advertiser wrote its ``port`` file (it is listening)."""
    path = os.path.join(run_out, "port")
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise RuntimeError(f"the advertiser exited with {proc.returncode} before listening")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the advertiser did not listen within {timeout:.0f} s")
        time.sleep(0.2)


def run_federated(base, parties_dir: str, certs: str, run_dir: str, seed: int,
                  psi_cache: Optional[str] = None, progress: bool = False) -> Dict:
    """One federated run as two processes; returns both parties' reports.

    ``psi_cache`` (a directory with ``media/`` and ``advertiser/`` PSI caches of an earlier run
    over the same party files) seeds both parties' alignment, so that repeated runs of one
    evaluation run the PSI once."""
    import shutil
    os.makedirs(run_dir, exist_ok=True)
    media, advertiser = party_configs(base, parties_dir, certs, run_dir, seed, free_port())
    for cfg in (media, advertiser):
        if os.path.exists(os.path.join(cfg.out, "port")):
            os.remove(os.path.join(cfg.out, "port"))
        if psi_cache and os.path.isdir(os.path.join(psi_cache, cfg.party)):
            shutil.copytree(os.path.join(psi_cache, cfg.party), os.path.join(cfg.out, "psi"),
                            dirs_exist_ok=True)
    started = time.perf_counter()
    adv = start_party(advertiser, os.path.join(run_dir, "advertiser.yaml"),
                      os.path.join(run_dir, "advertiser.log"))
    try:
        wait_for_port(advertiser.out, adv)
        med = start_party(media, os.path.join(run_dir, "media.yaml"),
                          os.path.join(run_dir, "media.log"), progress)
        media_code = med.wait()
        adv_code = adv.wait(timeout=120)
    finally:
        if adv.poll() is None:
            adv.kill()
    if media_code or adv_code:
        tail = open(os.path.join(run_dir, "media.log"), errors="replace").read()[-2000:]
        raise RuntimeError(f"federated run {run_dir} failed (media exit {media_code}, "
                           f"advertiser exit {adv_code}); media log tail:\n{tail}")
    return {"media": json.load(open(os.path.join(media.out, "media.json"))),
            "advertiser": json.load(open(os.path.join(advertiser.out, "advertiser.json"))),
            "wall_seconds": time.perf_counter() - started}


def save_psi_cache(run_dir: str) -> str:
    """Copy both parties' PSI caches of a finished run to ``RUN/psi_cache/{media,advertiser}``
    (what ``--psi-cache`` takes); returns that directory."""
    import shutil
    cache = os.path.join(run_dir, "psi_cache")
    for party in ("media", "advertiser"):
        shutil.copytree(os.path.join(run_dir, party, "psi"), os.path.join(cache, party),
                        dirs_exist_ok=True)
    return cache


def federated_record(arm: str, seed: int, media: Dict, advertiser: Dict, run_dir: str) -> Dict:
    """One federated run's result from both parties' reports (``media.json``,
    ``advertiser.json``), after checking that both applied the same batches."""
    if media["chain"] != advertiser["chain"] or (media["applied_batches"]
                                                 != advertiser["applied_batches"]):
        raise RuntimeError(f"{run_dir}: the parties applied different batches")
    return {"arm": arm, "seed": seed, "test": advertiser["test"],
            "samples_per_second": media["samples_per_second"],
            "leak_sent": advertiser["leak_sent"], "leak_raw": advertiser["leak_raw"],
            "train_bytes_per_sample": media["train_bytes_per_sample"], "dp": media["dp"],
            "width": media["config"]["split"]["width"],
            "applied_batches": media["applied_batches"]}


def summarise(values: Sequence[float]) -> Dict[str, float]:
    """Mean, std (ddof 1; 0 for one value) and the values."""
    from models.metrics import mean_std
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "values": [float(v) for v in values]}


def build_report(results: Dict[str, List[Dict]], info: Dict) -> Dict:
    """``federated.json`` from the per-arm, per-seed results."""
    report: Dict = {"generated": info, "date": info.get("date"), "machine": info.get("machine"),
                    "command": info.get("command") or "; ".join(
                        c for c in info.get("commands", []) if c)}
    arms = {}
    for arm, runs in results.items():
        metrics = {}
        for key in sorted(runs[0]["test"]):
            vals = [r["test"][key] for r in runs]
            if all(isinstance(v, (int, float)) for v in vals):
                metrics[key] = summarise(vals)
        arms[arm] = {"seeds": [r["seed"] for r in runs], "test": metrics,
                     "samples_per_second": summarise([r["samples_per_second"] for r in runs])}
        for extra in ("leak_sent", "leak_raw", "train_bytes_per_sample", "dp"):
            if extra in runs[0]:
                arms[arm][extra] = runs[0][extra] if extra == "dp" else (
                    summarise([r[extra] for r in runs]) if extra == "train_bytes_per_sample"
                    else {k: summarise([r[extra][k] for r in runs]) for k in runs[0][extra]})
    report["arms"] = arms
    for key in HEADLINE:
        report[key] = {a: arms[a]["test"][key]["mean"] for a in arms if key in arms[a]["test"]}
        report[f"{key}_std"] = {a: arms[a]["test"][key]["std"] for a in arms
                                if key in arms[a]["test"]}
        report[f"{key}_values"] = {a: arms[a]["test"][key]["values"] for a in arms
                                   if key in arms[a]["test"]}
    for attack in LEAK_KEYS:
        report[attack] = {}
        for state, arm in (("on", "federated"), ("off", "federated_no_defence")):
            if arm in arms and attack in arms[arm].get("leak_sent", {}):
                report[attack][state] = arms[arm]["leak_sent"][attack]["mean"]
    if "federated" in arms and "centralized" in arms:
        fed = arms["federated"]["samples_per_second"]["mean"]
        cen = arms["centralized"]["samples_per_second"]["mean"]
        report["throughput"] = {"federated_samples_per_second": fed,
                                "centralized_samples_per_second": cen,
                                "federated_vs_centralized": fed / cen if cen else None}
        report["train_bytes_per_sample"] = arms["federated"]["train_bytes_per_sample"]["mean"]
        if info.get("merged_from"):
            report["throughput"]["note"] = ("merged from jobs that ran in parallel on shared "
                                            "cores: not a benchmark (benchmarks.federated_bench "
                                            "measures both in one run)")
    return report


def write_markdown(report: Dict, path: str) -> None:
    """``federated.md``: one row per arm (mean ± std over seeds)."""
    from models.metrics import format_mean_std
    lines = ["| arm | seeds | " + " | ".join(HEADLINE)
             + " | leak norm | leak direction | leak PCA | leak batch | Marvell AUC bound |",
             "|---" * (len(HEADLINE) + 2 + len(LEAK_KEYS)) + "|"]
    for arm, a in report["arms"].items():
        cells = [format_mean_std(a["test"][k]["values"]) if k in a["test"] else "-"
                 for k in HEADLINE]
        leak = a.get("leak_sent") or {}
        lk = [format_mean_std(leak[k]["values"], 3) if k in leak else "-" for k in LEAK_KEYS]
        lines.append(f"| {arm} | {len(a['seeds'])} | " + " | ".join(cells + lk) + " |")
    atomic_write_text(path, "\n".join(lines) + "\n")


def plot(report: Dict, path: str) -> None:
    """``federated.png``: entire-space CVR AUC per arm (mean ± std) and the leak AUCs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    arms = list(report["arms"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    means = [report["arms"][a]["test"]["entire_space_cvr_auc"]["mean"] for a in arms]
    stds = [report["arms"][a]["test"]["entire_space_cvr_auc"]["std"] for a in arms]
    ax1.bar(range(len(arms)), means, yerr=stds, color="tab:blue", capsize=4)
    ax1.set_xticks(range(len(arms)))
    ax1.set_xticklabels(arms, rotation=30, ha="right")
    lo = min(m - s for m, s in zip(means, stds))
    ax1.set_ylim(lo - 0.01, max(m + s for m, s in zip(means, stds)) + 0.005)
    ax1.set_title("test entire-space CVR AUC")
    groups = [(k, report.get(k, {})) for k in LEAK_KEYS[:4]]
    for i, (name, vals) in enumerate(groups):
        for j, state in enumerate(("off", "on")):
            if state in vals:
                ax2.bar(i * 3 + j, vals[state], color=("tab:red", "tab:green")[j],
                        label=f"defence {state}" if i == 0 else None)
    ax2.axhline(0.5, color="gray", lw=0.8, ls="--")
    ax2.set_xticks([0.5, 3.5, 6.5, 9.5])
    ax2.set_xticklabels(["norm", "direction", "batch PCA", "batch level"])
    ax2.set_ylim(0.4, 1.0)
    ax2.set_title("label-leak AUC (conversion) on the returned gradients")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path + ".partial.png", dpi=110)
    plt.close(fig)
    os.replace(path + ".partial.png", path)


def versions() -> Dict[str, str]:
    """Versions of the packages a reader needs to reproduce the numbers."""
    from importlib.metadata import version
    out = {"python": sys.version.split()[0]}
    for pkg in ("tensorflow-cpu", "grpcio", "cryptography", "dp-accounting", "numpy"):
        try:
            out[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - a package that is absent is reported as such
            out[pkg] = "absent"
    return out


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m federated.local``."""
    from common.quiet import quiet_tensorflow
    quiet_tensorflow()
    parser = argparse.ArgumentParser(prog="python -m federated.local",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=0,
                        help="rows to generate (ignored with --data)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", default=None, help="a preprocessing.run output to use")
    parser.add_argument("--generator-seed", type=int, default=7)
    parser.add_argument("--seeds", default="0", help="model seeds, comma-separated")
    parser.add_argument("--dp-epsilons", default="", help="e.g. 8,4,1 (empty: no DP arm)")
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--dp-width", type=int, default=0,
                        help="embedding width of the DP arms (0: --width); under DP a narrow "
                             "embedding keeps more signal per unit of noise (README)")
    parser.add_argument("--wire-dtype", default="float32", choices=("float32", "float16"))
    parser.add_argument("--defence", default="marvell", choices=("marvell", "max_norm", "none"),
                        help="the gradient defence of the federated and DP arms "
                             "(default: %(default)s, with max-norm)")
    parser.add_argument("--marvell-power", type=float, default=None,
                        help="Marvell's power budget in units of the squared class-mean "
                             "distance (default: GradientDefenceConfig's)")
    parser.add_argument("--config", default=None,
                        help="YAML with 'model:' and 'train:' sections (models.train's format)")
    parser.add_argument("--arms", default="advertiser_only,centralized,centralized_flat,"
                        "federated,federated_no_defence", help="which arms to run")
    parser.add_argument("--psi-cache", default=None,
                        help="a run's psi_cache directory (media/ and advertiser/) over the "
                             "same party files: every federated arm reuses its alignment "
                             "(default: each federated arm of each seed runs its own PSI)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                        help="build DIR/federated.json from the results of earlier "
                             "federated.local runs (their results_partial.json) instead")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        return run_local(args)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run_local(args) -> int:
    """The body of :func:`main`."""
    from federated.baselines import ARMS, train_arm
    from federated.certs import write_certificates
    from federated.config import PartyConfig, SplitConfig
    from federated.parties import split_parties
    from federated.privacy import DPConfig, GradientDefenceConfig
    from models.config import load_configs
    from preprocessing.device import machine_info

    started = time.perf_counter()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    if args.merge:
        return merge(args.merge, out)
    progress = not args.no_progress
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    epsilons = [float(e) for e in args.dp_epsilons.split(",") if e.strip()]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if args.data:
        proc = os.path.abspath(args.data)
    else:
        if args.rows < 1:
            raise ValueError("give --rows N (rows to generate) or --data PROC_DIR")
        from preprocessing.generate import generate
        from preprocessing.run import run as preprocess
        gen, proc = os.path.join(out, "generated"), os.path.join(out, "processed")
        generate(args.rows, args.generator_seed, gen, progress=progress)
        preprocess(gen, proc, progress=progress)
    parties = os.path.join(out, "parties")
    split_summary = split_parties(proc, parties, seed=0)
    certs = os.path.join(out, "certs")
    write_certificates(certs)
    model_config, train_config = load_configs(args.config)
    defence = GradientDefenceConfig(method=args.defence)
    if args.marvell_power is not None:
        defence = replace(defence, marvell_power=args.marvell_power)
    split = SplitConfig(width=args.width, wire_dtype=args.wire_dtype, gradient_defence=defence)
    base = PartyConfig(party="media", data="", out="", certs=certs, split=split,
                       model=model_config, train=train_config)
    variants = {"federated": split}
    variants["federated_no_defence"] = replace(split,
                                               gradient_defence=GradientDefenceConfig("none"))
    for eps in epsilons:
        variants[f"federated_dp_eps{eps:g}"] = replace(
            split, width=args.dp_width or split.width, dp=DPConfig(epsilon=eps))
    wanted = arms + [a for a in variants if a.startswith("federated_dp_")]
    results: Dict[str, List[Dict]] = {}
    psi_cache = os.path.abspath(args.psi_cache) if args.psi_cache else None
    for seed in seeds:
        for arm in wanted:
            print(f"[federated.local] seed {seed}: {arm}", file=sys.stderr, flush=True)
            # Each seed shuffles with its own order (shuffle_seed = the seed), and each federated
            # arm runs its own PSI unless --psi-cache asks to reuse one.
            if arm in ARMS:
                r = train_arm(arm, os.path.join(parties, "media"),
                              os.path.join(parties, "advertiser"), split.model, seed,
                              seed, model_config, train_config, progress,
                              export_dir=os.path.join(out, "runs", f"{arm}_seed{seed}",
                                                      "saved_model"),
                              width=split.width, bottom_units=split.bottom_units)
            elif arm in variants:
                run_dir = os.path.join(out, "runs", f"{arm}_seed{seed}")
                both = run_federated(
                    replace(base, split=replace(variants[arm], shuffle_seed=seed)), parties,
                    certs, run_dir, seed, psi_cache, progress)
                save_psi_cache(run_dir)  # for a later --psi-cache, never reused by this run
                r = federated_record(arm, seed, both["media"], both["advertiser"], run_dir)
            else:
                raise ValueError(f"unknown arm {arm!r}")
            results.setdefault(arm, []).append(r)
            atomic_write_text(os.path.join(out, "results_partial.json"),
                              json.dumps(results, indent=2))
    from common.provenance import portable_path, recorded_command  # no machine paths recorded
    info = {"date": datetime.date.today().isoformat(),
            "data": portable_path(proc, "PROC", {out: "OUT"}),
            "rows": args.rows or None, "seeds": seeds, "split": split_summary,
            "machine": machine_info(), "versions": versions(),
            "wall_seconds": time.perf_counter() - started,
            "command": recorded_command("federated.local", sys.argv[1:])}
    atomic_write_text(os.path.join(out, "run_info.json"), json.dumps(info, indent=2))
    return finish(results, info, out)


def merge(dirs: Sequence[str], out: str) -> int:
    """``federated.json`` of several ``federated.local`` runs over the same data (e.g. seeds
    run in parallel): their per-seed results joined arm by arm."""
    results: Dict[str, List[Dict]] = {}
    infos = []
    for d in dirs:
        for arm, runs in json.load(open(os.path.join(d, "results_partial.json"))).items():
            results.setdefault(arm, []).extend(runs)
        info_path = os.path.join(d, "run_info.json")
        if os.path.exists(info_path):
            infos.append(json.load(open(info_path)))
    for arm, runs in results.items():
        seeds = [r["seed"] for r in runs]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"arm {arm}: seeds {seeds} repeat across the merged runs")
        runs.sort(key=lambda r: r["seed"])
    info = dict(infos[0]) if infos else {}
    from common.provenance import portable_path  # the jobs as JOBS/<name>, not this machine's paths
    info.update(merged_from=[portable_path(d, "JOB", {os.path.dirname(os.path.abspath(d)): "JOBS"})
                             for d in dirs],
                seeds=sorted({r["seed"] for runs in results.values() for r in runs}),
                commands=[i.get("command") for i in infos],
                wall_seconds=[i.get("wall_seconds") for i in infos])
    info.pop("command", None)
    return finish(results, info, out)


def finish(results: Dict[str, List[Dict]], info: Dict, out: str) -> int:
    """Write ``federated.json``, ``.md`` and ``.png`` and print the summary table."""
    os.makedirs(out, exist_ok=True)
    report = build_report(results, info)
    atomic_write_text(os.path.join(out, "federated.json"), json.dumps(report, indent=2))
    write_markdown(report, os.path.join(out, "federated.md"))
    if "entire_space_cvr_auc" in report and all(
            "entire_space_cvr_auc" in a["test"] for a in report["arms"].values()):
        plot(report, os.path.join(out, "federated.png"))
    rows = [(f"{arm} entire-space CVR AUC",
             f"{v:.4f} ± {report['entire_space_cvr_auc_std'][arm]:.4f}")
            for arm, v in report["entire_space_cvr_auc"].items()]
    for attack in LEAK_KEYS:
        for state, v in report.get(attack, {}).items():
            rows.append((f"{attack} (defence {state})", f"{v:.3f}"))
    if "throughput" in report:
        t = report["throughput"]
        rows.append(("federated / centralized samples/s",
                     f"{t['federated_vs_centralized']:.2f} ({t['federated_samples_per_second']:,.0f}"
                     f" / {t['centralized_samples_per_second']:,.0f})"))
        rows.append(("bytes on the wire per training sample",
                     f"{report['train_bytes_per_sample']:.1f}"))
    rows.append(("report", os.path.join(out, "federated.json")))
    print_table("federated.local", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
