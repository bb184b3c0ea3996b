"""Timing a model: timers and memory readers for CPU and CUDA, the `Bench` driver that
switches one model between stock llava and our engine, the scoring probe (an observer), the
round-robin measurement of `llava_star.bench`'s rows, the engine-overhead A/B and a profile."""
from __future__ import annotations

import contextlib
import statistics
import sys
import time
from typing import Dict, List

import torch

from .bench import Case, Result
from .engine.plan import Plan
from .engine.seams import Observer


# ------------------------------------------------------------------ timers, memory
class Timer:
    """Wall-clock marks; CUDA events on a GPU (read after one synchronize)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks = []

    def start(self):
        if self.cuda:
            torch.cuda.synchronize()
        self.marks = []
        self.mark()

    def mark(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append(ev)
        else:
            self.marks.append(time.perf_counter())

    def seconds(self) -> List[float]:
        """Seconds from the start to each later mark."""
        if self.cuda:
            torch.cuda.synchronize()
            return [self.marks[0].elapsed_time(m) / 1e3 for m in self.marks[1:]]
        return [m - self.marks[0] for m in self.marks[1:]]


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: torch.device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:  # "5" resets the peak RSS (VmHWM) of this process (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


def read_peak(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def kv_bytes(cache) -> int:
    """Bytes of keys + values held after prefill, over all layers (StarCache, DynamicCache
    of transformers 4.37 or 5, or the legacy tuple of (key, value) per layer)."""
    if hasattr(cache, "layers"):  # transformers 5: one object per layer
        pairs = ((layer.keys, layer.values) for layer in cache.layers)
    elif hasattr(cache, "key_cache"):
        pairs = zip(cache.key_cache, cache.value_cache)
    else:
        pairs = ((kv[0], kv[1]) for kv in cache)
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in pairs)


# ---------------------------------------------------------------------- the model
class Bench:
    """One model of the llava host, switched between stock llava and our engine with a plan
    (class swap, no reload). `timing_hf.HFBench` is the same for transformers' LLaVA."""

    def __init__(self, model):
        self.model = model
        self.tower = model.get_vision_tower()
        self.device = next(model.parameters()).device
        self.image_sizes = None  # (width, height) per image, for anyres (LLaVA-NeXT) checkpoints

    def set_case(self, case: Case):
        from .hosts.llava import apply_star, remove_star

        m = self.model
        if case.stock:
            if hasattr(m, "star_plan"):
                remove_star(m)
        else:
            apply_star(m, case.plan)

    def prefill(self, case: Case, ids, pixels):
        """Logits of the last position and the cache."""
        m = self.model
        if case.stock:
            from .flop_count import _stock_prefill
            return _stock_prefill(m, ids, pixels, image_sizes=self.image_sizes)
        out = m(input_ids=ids, images=pixels, image_sizes=self.image_sizes, use_cache=True, last_logits_only=True)
        return out.logits, out.past_key_values

    def decode_step(self, tok, cache):
        """(logits, cache) of one generated token."""
        out = self.model(input_ids=tok, past_key_values=cache, use_cache=True)
        return out.logits, out.past_key_values

    def vision_modules(self):
        """(the vision tower, the projector): the scoring probe times from one's input to the other's output."""
        lm = self.model.get_model()
        return lm.get_vision_tower(), lm.mm_projector

    def ab_pair(self, ids, pixels):
        """(stock, engine): the decoder loop alone on the same merged embeddings, transformers'
        LlamaModel.forward against our `DecoderPruner.prefill` with pruning disabled."""
        from .engine.decoder import DecoderPruner
        from .engine.seams import Hooks
        from .hosts.llava.layers import LlamaLayers, StarCache

        m = self.model
        self.set_case(Case("stock", "stock", None, None))
        _, _, _, _, embeds, _ = m.prepare_inputs_labels_for_multimodal(ids, None, None, None, None, pixels,
                                                                       self.image_sizes)
        lm = m.get_model()
        valid = torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
        pruner, layers = DecoderPruner(Plan("none")), LlamaLayers(lm)
        return (lambda: lm(inputs_embeds=embeds, use_cache=True),
                lambda: pruner.prefill(layers, embeds, valid, None, StarCache(), Hooks()))

    def run(self, case: Case, ids, pixels, new_tokens: int) -> Dict[str, object]:
        timer = Timer(self.device)
        reset_peak(self.device)
        timer.start()
        logits, cache = self.prefill(case, ids, pixels)
        tok = logits[:, -1].argmax(-1, keepdim=True)
        timer.mark()
        kv = kv_bytes(cache)  # shapes only, no sync
        for _ in range(new_tokens - 1):
            logits, cache = self.decode_step(tok, cache)
            tok = logits[:, -1].argmax(-1, keepdim=True)
        timer.mark()
        t_prefill, t_end = timer.seconds()
        return {"prefill": t_prefill, "e2e": t_end,
                "decode": (t_end - t_prefill) / max(new_tokens - 1, 1),
                "peak": read_peak(self.device), "kv_bytes": kv}


class ScoringProbe(Observer):
    """Times the scoring of both stages (the engine's observer seam) and the vision tower +
    projector (torch module hooks, so stock llava is timed the same way) during prefill,
    synchronizing on CUDA. Used in a separate pass so the latency runs carry no
    instrumentation."""

    _KEYS = {"vision_scores": "score1", "decoder_scores": "score2"}

    def __init__(self, bench: Bench):
        self.bench, self.device = bench, bench.device
        self.t = {"score1": 0.0, "score2": 0.0, "vision": 0.0}
        self._exit = contextlib.ExitStack()

    @contextlib.contextmanager
    def phase(self, name: str):
        t0 = self._now()
        try:
            yield
        finally:
            self.t[self._KEYS[name]] += self._now() - t0

    def _now(self) -> float:
        sync(self.device)
        return time.perf_counter()

    def __enter__(self):
        from .engine.seams import hooks

        m = self.bench.model
        if hasattr(m, "star_hooks"):  # stock llava has no scoring to time
            self._exit.enter_context(hooks(m, observer=self))
        tower, projector = self.bench.vision_modules()
        start = []
        pre = tower.register_forward_pre_hook(lambda *a: start.append(self._now()))
        post = projector.register_forward_hook(
            lambda *a: self.t.__setitem__("vision", self.t["vision"] + self._now() - start.pop()))
        self._exit.callback(pre.remove)
        self._exit.callback(post.remove)
        return self

    def __exit__(self, *exc):
        self._exit.close()


# ------------------------------------------------------------------ measurement
def measure_rows(bench: Bench, results: List[Result], ids, pixels, args, g) -> Dict[str, float]:
    """Warm-up, then `args.repeats` round-robin rounds over every row (drift hits every row
    alike), then the instrumented scoring pass; returns the engine-overhead A/B (or None)."""
    from tqdm import tqdm

    n_scoring = 0 if args.no_scoring else max(1, args.scoring_repeats)
    total = len(results) * (args.warmup + args.repeats + n_scoring)
    bar = tqdm(total=total, desc="bench", unit="run", disable=args.quiet, file=sys.stderr)
    with torch.inference_mode():
        for r in results:
            _warm_up(bench, r, ids, pixels, args, g, bar)
        for _ in range(args.repeats):
            for r in results:
                bar.set_postfix_str(r.case.label)
                _timed_run(bench, r, ids, pixels, args.new_tokens)
                bar.update()
        for _ in range(n_scoring):
            for r in results:
                bar.set_postfix_str(f"scoring {r.case.label}")
                _scoring_run(bench, r, ids, pixels)
                bar.update()
        ab = engine_overhead_ab(bench, ids, pixels, args.ab_pairs) if args.ab_pairs > 0 else None
    bar.close()
    return ab


def _warm_up(bench: Bench, r: Result, ids, pixels, args, g, bar) -> None:
    """Untimed runs, and the stock row's token counts (which no record gives)."""
    bench.set_case(r.case)
    for _ in range(args.warmup):
        bench.run(r.case, ids, pixels, args.new_tokens)
        bar.update()
    if r.case.stock and bench.image_sizes is None:
        r.tokens_per_layer, r.t_eq = [g.visual_tokens] * g.layers, float(g.visual_tokens)
    elif r.case.stock:  # NeXT: the image's merged token count, as the unpruned engine records it
        none = Case("none", "none", None, Plan("none"))
        bench.set_case(none)
        bench.prefill(none, ids, pixels)
        r.tokens_per_layer = list(bench.model.star_record[0].tokens_per_layer)
        r.t_eq = bench.model.star_record[0].t_eq
        bench.set_case(r.case)


def _timed_run(bench: Bench, r: Result, ids, pixels, new_tokens: int) -> None:
    bench.set_case(r.case)
    out = bench.run(r.case, ids, pixels, new_tokens)
    r.prefill.append(out["prefill"])
    r.decode.append(out["decode"])
    r.e2e.append(out["e2e"])
    r.peak.append(out["peak"])
    r.kv_bytes = out["kv_bytes"]
    if not r.case.stock:
        rec = bench.model.star_record[0]
        r.tokens_per_layer, r.t_eq = list(rec.tokens_per_layer), rec.t_eq


def _scoring_run(bench: Bench, r: Result, ids, pixels) -> None:
    """One prefill under the scoring probe (a separate pass: the timed runs carry no probe)."""
    bench.set_case(r.case)
    with ScoringProbe(bench) as probe:
        sync(bench.device)
        t0 = time.perf_counter()
        bench.prefill(r.case, ids, pixels)
        sync(bench.device)
        r.timed_prefill.append(time.perf_counter() - t0)
    r.score1.append(probe.t["score1"])
    r.score2.append(probe.t["score2"])
    r.vision.append(probe.t["vision"])


def noise_image(size: str, seed: int):
    """A synthetic photo-sized noise image of `--image-size` WxH (both hosts' NeXT inputs)."""
    import numpy as np
    from PIL import Image

    try:
        w, h = (int(x) for x in size.lower().split("x"))
    except ValueError:
        raise SystemExit(f"error: --image-size must look like 672x672, got {size!r}") from None
    if w < 1 or h < 1:
        raise SystemExit(f"error: --image-size must be positive, got {size!r}")
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def anyres_inputs(model, size: str, batch: int, seed: int, device, dtype):
    """Pixels of a synthetic photo-sized noise image through llava's own anyres processing."""
    from llava.mm_utils import process_images

    image = noise_image(size, seed)
    px = process_images([image] * batch, model.star_bench_processor, model.config)
    px = [p.to(device, dtype) for p in px] if isinstance(px, list) else px.to(device, dtype)
    return px, [image.size] * batch


def counted_flops(bench: Bench, case, ids, pixels, base=None) -> Dict[str, float]:
    """FLOPs of one real prefill, counted by torch.utils.flop_counter, against stock llava
    (for checkpoints whose visual token count the theory does not model). `base`: stock's
    count (`count_prefill` of the stock row) when already known, so it is counted once."""
    base = base or count_prefill(bench, Case("stock", "stock", None, None), ids, pixels)
    got = base if case.stock else count_prefill(bench, case, ids, pixels)
    return {"total_flops": got["total"], "total_ratio": got["total"] / base["total"],
            "decoder_flops": got["decoder"], "ratio": got["decoder"] / base["decoder"]}


def count_prefill(bench: Bench, case, ids, pixels) -> Dict[str, int]:
    """FLOPs of one prefill of `case` by category (flop_count._categorise)."""
    from .flop_count import _categorise, flop_counter

    class Prefill(torch.nn.Module):  # a module, so FLOPs are named from the model down
        def __init__(self):
            super().__init__()
            self.m = bench.model

        def forward(self):
            return bench.prefill(case, ids, pixels)

    bench.set_case(case)
    counter = flop_counter()
    with torch.no_grad(), counter:
        Prefill()()
    return _categorise(counter.get_flop_counts())


def engine_overhead_ab(bench: Bench, ids, pixels, pairs: int) -> Dict[str, float]:
    """Paired A/B of the decoder loop alone on the same merged embeddings (`bench.ab_pair`):
    what stock llava runs against our engine with pruning disabled, alternating which goes
    first. Isolates the engine's own overhead from the vision tower (ours stops at the select
    layer, stock runs one more CLIP layer)."""
    device = bench.device
    stock, engine = bench.ab_pair(ids, pixels)
    ratios, t_stock, t_engine = [], [], []
    for i in range(pairs + 1):  # the first pair warms up
        times = {}
        for name, fn in ((("stock", stock), ("engine", engine)) if i % 2 else (("engine", engine), ("stock", stock))):
            timer = Timer(device)
            timer.start()
            fn()
            timer.mark()
            times[name] = timer.seconds()[0]
        if i:
            t_stock.append(times["stock"])
            t_engine.append(times["engine"])
            ratios.append(times["engine"] / times["stock"])
    return {"pairs": pairs, "overhead_pct_median": 100 * (statistics.median(ratios) - 1),
            "overhead_pct_mean": 100 * (statistics.mean(ratios) - 1),
            "overhead_pct_best_of": 100 * (min(t_engine) / min(t_stock) - 1),
            "stock_ms_median": 1e3 * statistics.median(t_stock), "engine_ms_median": 1e3 * statistics.median(t_engine)}


def profile(bench: Bench, case: Case, ids, pixels, device) -> str:
    from torch.profiler import ProfilerActivity, profile as tprofile, record_function

    bench.set_case(case)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.inference_mode(), tprofile(activities=acts) as prof:
        with record_function(f"prefill {case.label}"):
            bench.prefill(case, ids, pixels)
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return f"torch.profiler, one prefill of {case.label}\n" + prof.key_averages().table(sort_by=key, row_limit=25)
