"""Throwaway GPU probe (not committed): where the Worker path loses time at x64."""
import asyncio, statistics, sys, time
sys.path.insert(0, ".")
import torch
from tools.bench import full_size_random_engine
from tools.bench_requests import photo_request, make_requests
from tools.bench_worker import phone_photos
from inference.runtime.batch_engine import BatchEngine
from inference.runtime.config import RuntimeConfig, EnginePaths
from inference.images import normalize_image
from inference.worker import Worker, host_prep_threads
from inference.types import Finished

import argparse
from tools.bench import load_engine
TINY = "--tiny" in sys.argv
if TINY:
    base = load_engine(argparse.Namespace(full_size_random=False, tiny=True, model=None, device="cpu", image_soft_tokens=70, experts_implementation=None))
else:
    base = full_size_random_engine("cuda", 280)
engine = BatchEngine(base, RuntimeConfig(max_slots=64, max_seq_len=2048 if TINY else 4096), EnginePaths())
log = []
t0 = [0.0]
clock = lambda: time.perf_counter() - t0[0]
orig_prepare, orig_add, orig_prefill = engine.prepare, engine.add, engine.runner.prefill
def prepare(req):
    s = clock(); r = orig_prepare(req); log.append(("prep", s, clock())); return r
def add(*a, **k):
    log.append(("add", clock(), clock())); return orig_add(*a, **k)
def prefill(inputs, slots, prefix=()):
    s = clock(); r = orig_prefill(inputs, slots, prefix); log.append(("prefill%d" % len(inputs), s, clock())); return r
engine.prepare, engine.add, engine.runner.prefill = prepare, add, prefill

def summary(tag, done):
    kinds = {}
    for k, s, e in log:
        kinds.setdefault(k if not k.startswith("prefill") else "prefill", []).append((s, e, k))
    print(f"== {tag}: wall {max(done):.3f}s; host_prep_threads={host_prep_threads()}")
    for k, v in kinds.items():
        starts = [s for s, _, _ in v]; ends = [e for _, e, _ in v]
        print(f"  {k:8} n={len(v):3} first start {min(starts):.3f} last end {max(ends):.3f} mean dur {statistics.mean(e-s for s,e,_ in v)*1000:.1f} ms", ("sizes " + ",".join(x[2][7:] for x in v)) if k == "prefill" else "")

async def worker_run(n, seed):
    worker = Worker(lambda: engine, max_queue=max(64, n))
    await worker.start()
    photos = phone_photos(n, seed=seed)
    norm = []
    async def one(i):
        t = clock(); img = await asyncio.to_thread(normalize_image, photos[i]); norm.append(clock() - t)
        async for ev in worker.submit(photo_request(i, img, 8 if TINY else 128, owner="probe")):
            if isinstance(ev, Finished): return clock()
    log.clear(); t0[0] = time.perf_counter()
    done = await asyncio.gather(*(one(i) for i in range(n)))
    summary(f"worker x{n}", done)
    print(f"  normalize: mean {statistics.mean(norm)*1000:.1f} ms, max {max(norm)*1000:.1f} ms")
    await worker.forget("probe"); await worker.stop()

def engine_run(n, seed):
    reqs = make_requests(n, 8 if TINY else 128, seed=seed)
    seqs = [orig_prepare(r) for r in reqs]
    log.clear(); t0[0] = time.perf_counter(); done = []
    for s in seqs:
        engine.add(s, lambda ev, d=done: d.append(clock()) if isinstance(ev, Finished) else None, lambda: False)
    while engine.num_active:
        engine.step()
    summary(f"engine x{n}", done)

import json, os
import inference.worker as worker_module
results = {}
_summary = summary
def summary(tag, done):
    _summary(tag, done); results.setdefault(VARIANT + ", " + tag, []).append(round(max(done), 3))
VARIANT = "warm"
engine_run(4, 500)
asyncio.run(worker_run(4, 600))
sizes = (4,) if TINY else (8, 64)
VARIANT = "reference"
for n in sizes:
    engine_run(n, 1000 + n)
for k, (name, gather, switch) in enumerate((("no gathering", 0.0, 0.005), ("gathering 50 ms", 0.05, 0.005), ("gathering 50 ms, GIL switch 1 ms", 0.05, 0.001))):
    VARIANT = name
    worker_module.PREFILL_GATHER_S = gather
    sys.setswitchinterval(switch)
    for n in sizes:
        asyncio.run(worker_run(n, 5000 + 100 * k + n))
    print(json.dumps(results), flush=True)
    out = os.environ.get("OUT")
    if out:
        open(os.path.join(out, "worker-probe.json"), "w").write(json.dumps(results, indent=1))
