"""Tokenizing corpora of 10 MB, 100 MB and 1 GB: time, MB/s and peak memory, side by side with `tokenizers` alone.

    python benchmarks/data_scale.py [--sizes 10,100,1000] [--kinds char,bpe] [--dir /tmp]

Each corpus is CPython's documentation text repeated, every copy behind its own "== copy N ==" line, written
under --dir and deleted at the end. For each corpus and tokenizer kind, three processes run one after the
other, so that each peak resident memory (VmHWM) is its own:
  - ours, tokenizer: `TextData` trains the tokenizer (the char alphabet pass, or BPE merges from the
    training split) and caches it;
  - ours, tokenize: `TextData.setup()` with that cached tokenizer encodes both splits into the token cache;
  - alone: `tokenizers` on its own: the same tokenizer.json, the file read 2 MB of lines at a time and
    encoded with `Tokenizer.encode_batch_fast` (all cores), the ids counted and dropped.
Goals: ours' peak memory flat (under about 1 GB at 1 GB of text), time linear in the size, tokenizing at
least 0.8x as fast as `tokenizers` alone. Writes benchmarks/results/data_scale.{json,md,png}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MB = 1_000_000


def cpu_seconds() -> float:
    """User and system time of this process, all its threads."""
    import resource
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_mb() -> float:
    """This process's peak resident memory so far (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / MB
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


def make_corpus(path: Path, size: int) -> None:
    """`size` bytes of the built-in text, each copy behind its own line so that no two copies are the same."""
    from builder.train.data.corpus import default_text, missing_bytes
    text = default_text().encode("utf-8")
    with open(path, "wb") as f:
        copy = 0
        while f.tell() < size:
            f.write(f"== copy {copy} ==\n".encode() + text + b"\n")
            copy += 1
        f.truncate(size)
    with open(path, "r+b") as f:  # end on a character boundary
        f.seek(max(0, size - 4))
        tail = f.read()
        if missing_bytes(tail):
            lead = max(i for i, b in enumerate(tail) if b & 0xC0 != 0x80)
            f.truncate(size - len(tail) + lead)


def ours(path: str, cache: str, kind: str, phase: str) -> dict:
    from builder.train.data.text import TextData
    base = peak_mb()
    dm = TextData({"name": "text", "path": path, "block_size": 64, "batch_size": 12, "cache_dir": cache,
                   "tokenizer": {"kind": kind, "vocab_size": 4096}})
    start, cpu = time.perf_counter(), cpu_seconds()
    dm.get_tokenizer()
    if phase == "tokenize":
        start, cpu = time.perf_counter(), cpu_seconds()
        dm.setup()
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    tokens = len(dm.train_ids) + len(dm.val_ids) if phase == "tokenize" else 0
    return {"seconds": seconds, "cpu_s": cpu, "peak_mb": peak_mb(), "base_mb": base, "tokens": tokens}


def alone(path: str, tokenizer: str) -> dict:
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tokenizer)
    base = peak_mb()
    start, cpu, tokens = time.perf_counter(), cpu_seconds(), 0
    with open(path, encoding="utf-8") as f:
        while lines := f.readlines(1 << 21):
            tokens += sum(len(e.ids) for e in tok.encode_batch_fast(lines, add_special_tokens=False))
    return {"seconds": time.perf_counter() - start, "cpu_s": cpu_seconds() - cpu, "peak_mb": peak_mb(),
            "base_mb": base, "tokens": tokens}


def run(*args: str) -> dict:
    """One measurement in a fresh process; its last output line is the JSON result."""
    done = subprocess.run([sys.executable, __file__, "--worker", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "worker failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(size_mb: int, kinds: list[str], work: Path, repeats: int) -> list[dict]:
    corpus = work / f"corpus_{size_mb}mb.txt"
    make_corpus(corpus, size_mb * MB)
    size = corpus.stat().st_size / MB
    rows = []
    try:
        for kind in kinds:
            cache = work / f"cache_{size_mb}_{kind}"
            trained = run("ours", str(corpus), str(cache), kind, "tokenizer")
            tokenizer = next(cache.glob("*.tokenizer.json"))
            tries: dict[str, list[dict]] = {"ours": [], "alone": []}
            for _ in range(repeats):  # interleaved, so that a busy moment of the machine hits both alike
                for bin_file in cache.glob("*.bin"):
                    bin_file.unlink()
                tries["ours"].append(run("ours", str(corpus), str(cache), kind, "tokenize"))
                tries["alone"].append(run("alone", str(corpus), str(tokenizer)))
            encoded, lone = (min(tries[k], key=lambda r: r["seconds"]) for k in ("ours", "alone"))
            row = {"size_mb": round(size, 1), "kind": kind, "repeats": repeats, "tokenizer": trained, "ours": encoded,
                   "alone": lone, "ratio": lone["seconds"] / encoded["seconds"],
                   "cpu_ratio": lone["cpu_s"] / encoded["cpu_s"]}
            rows.append(row)
            print(line(row), flush=True)
            shutil.rmtree(cache)
    finally:
        corpus.unlink(missing_ok=True)
    return rows


HEADER = ("| corpus | kind | tokenizer pass s (peak MB) | ours: tokenize s | ours MB/s | ours peak MB | "
          "alone s | alone MB/s | alone peak MB | ours/alone speed | ours/alone speed by CPU time |")


def line(r: dict) -> str:
    size, t, o, a = r["size_mb"], r["tokenizer"], r["ours"], r["alone"]
    return (f"| {size:,.0f} MB | {r['kind']} | {t['seconds']:.1f} ({t['peak_mb']:,.0f}) | {o['seconds']:.1f} | "
            f"{size / o['seconds']:.1f} | {o['peak_mb']:,.0f} | {a['seconds']:.1f} | {size / a['seconds']:.1f} | "
            f"{a['peak_mb']:,.0f} | {r['ratio']:.2f}x | {r['cpu_ratio']:.2f}x |")


def plot(rows: list[dict], file: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind, colour in (("char", "tab:blue"), ("bpe", "tab:orange")):
        rs = [r for r in rows if r["kind"] == kind]
        if not rs:
            continue
        x = [r["size_mb"] for r in rs]
        for key, style, label in (("ours", "-o", "ours: tokenize"), ("alone", "--s", "tokenizers alone"),
                                  ("tokenizer", ":^", "ours: " + ("alphabet pass" if kind == "char" else "BPE training"))):
            ax_t.plot(x, [r[key]["seconds"] for r in rs], style, color=colour, label=f"{kind} {label}")
            ax_m.plot(x, [r[key]["peak_mb"] for r in rs], style, color=colour, label=f"{kind} {label}")
    ax_t.set(xscale="log", yscale="log", xlabel="corpus (MB)", ylabel="seconds", title="time")
    ax_m.set(xscale="log", xlabel="corpus (MB)", ylabel="peak resident memory (MB)", title="memory (VmHWM)")
    ax_m.set_ylim(bottom=0)
    ax_t.legend(fontsize=7)
    ax_t.grid(alpha=0.3, which="both")
    ax_m.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(file, dpi=120)


def describe_machine() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    cpu = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), platform.machine())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()}-core {cpu}, {memory:.0f} GiB memory, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,100,1000", help="corpus sizes in MB")
    parser.add_argument("--kinds", default="char,bpe")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the corpora are written (not the repo)")
    parser.add_argument("--repeats", type=int, default=2, help="tokenizing runs per corpus up to 100 MB (the fastest counts)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        role, *rest = args.worker
        print(json.dumps(ours(*rest) if role == "ours" else alone(*rest)))
        return
    sys.path.insert(0, str(ROOT))
    from benchmarks.save_results import RESULTS, save
    import tokenizers
    work = Path(tempfile.mkdtemp(prefix="data_scale_", dir=args.dir))
    machine = describe_machine()
    print(f"{machine}; tokenizers {tokenizers.__version__}\n{HEADER}\n|{'---|' * 11}", flush=True)
    rows = []
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            rows += measure(size, args.kinds.split(","), work, args.repeats if size <= 100 else 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    command = "python benchmarks/data_scale.py" + ("" if args.sizes == "10,100,1000" else f" --sizes {args.sizes}")
    lines = ["# Tokenizing large corpora: time and peak memory, ours and `tokenizers` alone", "",
             f"`{command}` on {machine}, tokenizers {tokenizers.__version__}. Peak memory is each process's "
             "VmHWM, Python, numpy and the tokenizer included (ours also imports torch and Lightning: the base "
             "column of the JSON). Times are wall seconds, the fastest of the interleaved runs (2 up to 100 MB, 1 at "
             "1 GB); CPU time is user + system seconds of all threads, which another load on the machine changes "
             "less than wall time.", "", HEADER, "|" + "---|" * 11, *map(line, rows), "",
             "Goals: ours' peak memory flat (under about 1 GB at 1 GB), time linear, ours/alone speed >= 0.8x."]
    save("data_scale", {"machine": machine, "tokenizers": tokenizers.__version__, "command": command, "rows": rows},
         lines)
    plot(rows, RESULTS / "data_scale.png")
    print(f"written to {RESULTS / 'data_scale.md'} and data_scale.png")


if __name__ == "__main__":
    main()
