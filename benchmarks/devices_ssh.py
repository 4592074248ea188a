"""The same artifacts measured locally and over ssh on 127.0.0.1: equal accuracy, p50 within
noise, and what the transport costs per run.

The "remote" device is this machine behind a real SSH server (asyncssh, started here on
127.0.0.1, key auth, real SFTP and exec; `tests/devices_env.py`), in a separate folder and a
separate Python environment that has numpy, onnxruntime and ai-edge-litert but neither torch nor
modelpress. A briefly trained digits CNN and GRU are built for ONNX Runtime (fp32, dynamic int8,
int8) and LiteRT (fp32), then measured here (a worker process each) and there (the travelling
runner), alternating device order per round so neither always goes first; then
`modelpress compare` puts the two side by side. Writes benchmarks/results/devices_ssh.md.

    python benchmarks/devices_ssh.py [--rounds 2] [--min-seconds 1.0] [--epochs 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from machine import measuring  # benchmarks/ is sys.path[0] for a script

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/devices_env.py: the SSH server and the light Python

JOBS = (
    ("resnet8", "image", "onnxruntime", "fp32"),
    ("resnet8", "image", "onnxruntime", "dynamic_int8"),
    ("resnet8", "image", "onnxruntime", "int8"),
    ("resnet8", "image", "litert", "fp32"),
    ("gru", "sequence", "onnxruntime", "fp32"),
    ("gru", "sequence", "onnxruntime", "dynamic_int8"),
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2, help="local and ssh measurements each")
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/devices_ssh.md")
    a = p.parse_args(argv)
    from modelpress.fsutil import atomic_write_text

    with measuring(__file__, argv) as measured, tempfile.TemporaryDirectory() as tmp:
        rounds, summary = measure(a, Path(tmp))
    text = render(a, measured.header_lines(), rounds, summary)
    atomic_write_text(a.out, text)
    print(text)
    return 0


def checkpoints(out: Path, epochs: int) -> dict[str, tuple]:
    from modelpress.bench import reference_logits

    from modelpress.baselines import fit
    from modelpress.checkpoint import save_trained
    from modelpress.data import load_dataset

    found = {}
    for model, view, _, _ in JOBS:
        if model in found:
            continue
        data = load_dataset("digits", view=view)
        art = save_trained(
            out / f"{model}.safetensors", fit(model, data, epochs=epochs).model, data
        )
        found[model] = (art, reference_logits(art, out / f"{model}.ref.npy"))
    return found


def measure(a: argparse.Namespace, tmp: Path):
    from modelpress.devices.spec import LOCAL_DEVICE, Device
    from modelpress.measure.bench import BenchJob, BenchSettings, benchmark, build_for
    from modelpress.measure.results import save_results
    from tests.devices_env import SshServer, light_python

    arts = checkpoints(tmp, a.epochs)
    settings = BenchSettings(batch_sizes=(1, 32), min_seconds=a.min_seconds, min_calls=200)
    jobs = []
    for model, _, target, precision in JOBS:
        art, ref = arts[model]
        job = BenchJob(
            art,
            target,
            precision,
            {"threads": 1},
            build=True,
            build_dir=tmp / model / target / precision,
            reference_logits=ref,
        )
        built, _, failed = build_for(job, settings, tmp)
        if failed:
            raise SystemExit(f"{model} {target} {precision}: {failed['reason']}")
        jobs.append(BenchJob(built, target, precision, {"threads": 1}, reference_logits=ref))
    python = light_python(tmp / "light-env")
    server = SshServer(tmp / "remote-home", tmp / "keys")
    device = Device(
        name="ssh-loopback",
        url=f"ssh://bench@127.0.0.1:{server.port}",
        python=str(python),
        identity=str(server.identity),
        known_hosts=str(server.known_hosts),
    )
    rounds = []
    try:
        for r in range(a.rounds):
            order = [LOCAL_DEVICE, device] if r % 2 == 0 else [device, LOCAL_DEVICE]
            res = benchmark(jobs, settings, devices=order, log=lambda s: print(s, file=sys.stderr))
            save_results(res, tmp / f"round{r}.json")
            rounds.append(res)
    finally:
        server.close()
    return rounds, compare_summary(tmp / "round0.json", tmp)


def compare_summary(results: Path, tmp: Path) -> list[str]:
    """`modelpress compare` on the first round: its markdown summary (for the line count)."""
    from modelpress.measure.compare import compare_files
    from modelpress.measure.compare_format import markdown_summary

    cmp = compare_files([results], 1, None, None)
    return markdown_summary(cmp, "local vs ssh-loopback").splitlines()


def render(a, header: list[str], rounds: list, summary: list[str]) -> str:
    out = [
        "# The same artifacts over ssh (127.0.0.1) and locally",
        "",
        *header,
        "",
        f"Per artifact and round: local worker vs the travelling runner over ssh; {a.rounds} "
        f"rounds (device order alternating), batch 1 and 32, at least {a.min_seconds} s and 200 "
        "calls per batch, one thread. `acc equal`: accuracy from the device's own logits "
        "equals the local one exactly. Ratios: ssh p50 / local p50 per round (min-max over rounds).",
        "",
        "| artifact | local p50 ms b1 | ssh p50 ms b1 | ratio b1 | ratio b32 | acc local | acc ssh | acc equal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    transport = []
    for rec in (r for r in rounds[0].records if r.device is None):
        pairs = [(_on(res, rec, None), _on(res, rec, "ssh-loopback")) for res in rounds]
        bad = next((r for pair in pairs for r in pair if r is None or r.status != "ok"), "")
        if bad != "":
            why = "no remote record" if bad is None else f"{bad.label}: {bad.status}: {bad.reason}"
            out.append(f"| {rec.model} {rec.target} {rec.precision} | {why} |||||||")
            continue
        ratios = {
            b: [t.latency_at(b).p50_ms / h.latency_at(b).p50_ms for h, t in pairs] for b in (1, 32)
        }
        here, there = pairs[0]
        equal = all(h.validation.accuracy == t.validation.accuracy for h, t in pairs)
        out.append(
            f"| {rec.model} {rec.target} {rec.precision} | {here.latency_at(1).p50_ms:.4f} | "
            f"{there.latency_at(1).p50_ms:.4f} | {_span(ratios[1])} | {_span(ratios[32])} | "
            f"{here.validation.accuracy:.4f} | {there.validation.accuracy:.4f} | "
            f"{'yes' if equal else 'NO'} |"
        )
        transport += [t.runtime["details"]["transport"] for _, t in pairs]
    out += ["", "What the transport cost (seconds, median over every artifact and round):", ""]
    for key in ("connect_s", "probe_s", "copy_s", "start_s", "fetch_s"):
        values = [t[key] for t in transport if key in t]
        if values:
            out.append(f"- {key}: {statistics.median(values):.3f} (max {max(values):.3f})")
    out += [
        "",
        "connect and probe are paid once per device and run; copy (artifact, inputs the first "
        "time, job), start (the runner's Python starting and importing numpy + the runtime, "
        "outside its own timer) and fetch (result, logits, samples) once per artifact.",
        "",
        f"`modelpress compare` of round 1 (one file, two devices): a summary of {len(summary)} "
        "lines (bound: 60):",
        "",
        *summary,
    ]
    return "\n".join(out) + "\n"


def _on(res, rec, device):
    """``rec``'s artifact as measured in round ``res`` on ``device`` (None: locally)."""
    return res.find(rec.model, rec.target, rec.precision, device)


def _span(values: list[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


if __name__ == "__main__":
    sys.exit(main())
