"""Cost of one unlearning step per method, next to a plain fine-tuning step, through the real engine.

The fixed setting (issue 7), so that figures compare across tools: a Llama config with hidden 256,
intermediate 688, 4 layers, 4 heads, vocab 1000, random weights, seed 0; forget and retain
batches of 8 x 64 tokens whose first 16 tokens are masked (the prompt); AdamW at lr 1e-5;
2 threads; the baseline is a fine-tuning step (NLL) on the forget batch alone. A step is the
objective, the backward pass and the optimizer step, run by :func:`unlearn_kb.engine.trainer.train`
exactly as ``unlearn-kb run`` runs it. Each method runs in its own process, right after a
fine-tuning run of the same model in that process: the ratio pairs the two, so a machine that
speeds up or slows down during the benchmark does not bias it. Peak memory (resident set on the
CPU, allocated memory on a GPU) is the method's (fine-tuning peaks lower than every method).

    python benchmarks/step_cost.py                      # every implemented method, CPU
    python benchmarks/step_cost.py --methods finetune_hf_trainer   # the peers' fine-tuning step
    python benchmarks/step_cost.py --methods ga,npo --steps 30
    python benchmarks/step_cost.py --shape llama-3.2-1b --device cuda   # on a GPU: MFU too
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

# Step time as a multiple of the fine-tuning step, measured in exactly this setting with
# open-unlearning at commit d3d7cf9 and its own trainers and defaults (issue 7).
PEER = {"ga": 1.16, "grad_diff": 2.01, "ga_kl": 2.62, "npo": 2.10, "simnpo": 1.90, "rmu": 2.09,
        "wga": 1.92, "satimp": 2.00, "undial": 2.34}
TARGET = {"ga": 1.1, "grad_diff": 2.0, "ga_kl": 2.2, "npo": 1.95, "simnpo": 1.9, "rmu": 1.0,
          "wga": 1.9, "satimp": 1.9, "undial": 1.3}

SHAPES = {
    "issue7": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=4, vocab_size=1000),
    # Llama-3.2-1B's shape (random weights: speed needs no download).
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
}
BATCH, SEQUENCE, PROMPT = 8, 64, 16
# RMU's paper layers (steer 7, update 5-7) do not exist in a 4-layer model: steer the third
# layer and update the three below it, the same relative place.
SHAPE_OVERRIDES = {"rmu": {"layer": "2", "update_layers": "[0, 1, 2]"},  # the paper's layers 5-7 do not exist
                   "circuit_breakers": {"target_layers": "1,2"}}  # the paper's 10 and 20 of 32, scaled to 4
FINETUNE = "finetune"
HF_TRAINER = "finetune_hf_trainer"  # the same fine-tuning step through transformers' Trainer (the peers' base)


@dataclass
class Measurement:
    method: str
    median_step_s: float
    baseline_step_s: float  # the fine-tuning step, measured in the same process just before
    tokens_per_s: float
    peak_memory_mb: float
    trained_parameters: int
    reference: str
    steps_timed: int
    mfu: float | None = None


def _examples(count: int, offset: int):
    """Question of 15 tokens (+BOS = 16 masked), answer of 47 tokens (+EOS): 64 tokens each."""
    from unlearn_kb.engine.data import Example

    def words(start: int, n: int) -> str:
        return " ".join(f"w{(start + k) % 996}" for k in range(n))

    return [Example(question=words(offset + 97 * i, 15), answer=words(offset + 31 * i + 7, 47),
                    extras={"alternate": words(offset + 13 * i, 47)}) for i in range(count)]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>"] + [f"w{k}" for k in range(996)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                 unk_token="<unk>")
    hf.chat_template = "{{ messages[0]['content'] }}"  # the prompt is the bare question: 15 tokens + BOS
    return hf


def _median_step(records: list[dict]) -> float:
    warm = records[2:] or records
    return statistics.median(r["tokens"] / r["tokens_per_s"] for r in warm)


def _trainer_steps(model, tokenizer, examples, steps: int) -> list[float]:
    """Seconds per step of a plain fine-tuning run through transformers' ``Trainer``.

    The peer frameworks (open-unlearning, TOFU, MUSE) subclass ``Trainer``, and their figures are
    multiples of its fine-tuning step: this gives that denominator on this machine, in the same
    setting (same model, batch, masking, AdamW at lr 1e-5), so ratios can be turned into time.
    """
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from unlearn_kb.engine.data import collate, encode_all

    encoded = encode_all(tokenizer, examples, SEQUENCE)
    rows = [{k: v[0] for k, v in collate([e], tokenizer.pad_token_id).items() if k != "index"} for e in encoded]
    times: list[float] = []

    def now() -> float:
        if torch_cuda():  # GPU work is asynchronous: wait for it, so a step's time is its own
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.started = now()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(now() - self.started)

    import tempfile

    arguments = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="step-cost-"), per_device_train_batch_size=BATCH, learning_rate=1e-5,
                                  weight_decay=0.0, max_steps=steps, lr_scheduler_type="constant",
                                  optim="adamw_torch", report_to=[], save_strategy="no", logging_strategy="no",
                                  disable_tqdm=True, use_cpu=not torch_cuda(), bf16=torch_cuda(),
                                  dataloader_num_workers=0, seed=0)
    Trainer(model=model, args=arguments, train_dataset=rows, callbacks=[Clock()]).train()
    return times


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def worker(method_id: str, steps: int, shape: str, device: str) -> Measurement:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from unlearn_kb.engine.method import GradientMethod, nll, with_total
    from unlearn_kb.engine.run import config_class, resolve_method, resolve_settings
    from unlearn_kb.engine.trainer import RunConfig, train
    from unlearn_kb.registry import load_registry

    torch.set_num_threads(2)
    torch.manual_seed(0)
    tokenizer = _tokenizer()
    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=128, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32

    def fresh_model() -> torch.nn.Module:
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa").to(device)

    run_settings = dict(lr=1e-5, batch_size=BATCH, grad_accum=1, steps=steps, max_length=SEQUENCE,
                        weight_decay=0.0)
    forget, retain = _examples(BATCH * 4, 0), _examples(BATCH * 4, 500)

    class FineTune(GradientMethod):
        def loss(self, step, config):
            return with_total({"nll": nll(step.token_logprobs("forget"), step.mask("forget"))})

    baseline = train(FineTune(), None, RunConfig(**run_settings), model=fresh_model(), tokenizer=tokenizer,
                     forget=forget)
    if method_id == HF_TRAINER:
        model = fresh_model()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = _trainer_steps(model, tokenizer, forget, steps)
        median = statistics.median(times[2:] or times)
        tokens_per_s = BATCH * SEQUENCE / median
        return Measurement(method_id, median, _median_step(baseline.records), tokens_per_s, _peak_memory_mb(device),
                           sum(p.numel() for p in model.parameters()), "none", len(times[2:]),
                           _mfu(model, tokens_per_s, device))
    if method_id == FINETUNE:
        method, method_config, run = FineTune(), None, RunConfig(**run_settings)
    else:
        record, method_cls = resolve_method(method_id, load_registry())
        overrides = {**run_settings, **SHAPE_OVERRIDES.get(method_id, {})}
        settings = resolve_settings(record, config_class(method_cls), toy=False, overrides=overrides)
        method, method_config, run = method_cls(), settings.config, settings.run
    model = fresh_model()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = train(method, method_config, run, model=model, tokenizer=tokenizer, forget=forget, retain=retain)
    warm = result.records[2:] or result.records
    median = _median_step(result.records)
    tokens_per_s = statistics.median(r["tokens_per_s"] for r in warm)
    return Measurement(method_id, median, _median_step(baseline.records), tokens_per_s, _peak_memory_mb(device),
                       result.trained_parameters, result.reference, len(warm), _mfu(model, tokens_per_s, device))


def _peak_memory_mb(device: str) -> float:
    """Peak allocated GPU memory, or the peak resident set of this process on the CPU."""
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _mfu(model, tokens_per_s: float, device: str) -> float | None:
    """Model FLOPs utilization on a GPU: 6 N FLOPs per token (forward and backward) against the
    peak, N = the weights of every matrix multiply, the LM head included even when it is tied to
    the embedding (the lookup itself is free). Attention's own 12 L H T FLOPs per token are left
    out: 0.3% at the Llama-3.2-1B shape and 64 tokens."""
    import torch

    if device != "cuda":
        return None
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    peak_flops = float(os.environ.get("PEAK_BF16_FLOPS", 989e12))  # H100 SXM dense bf16
    return 6 * n * tokens_per_s / peak_flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="", help="comma-separated ids (default: every implemented one)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="issue7")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", dest="json_out", default=None, help="also write the figures to this file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(asdict(worker(args.worker, args.steps, args.shape, args.device))))
        return

    from unlearn_kb.engine.method import GradientMethod
    from unlearn_kb.engine.run import resolve_method
    from unlearn_kb.registry import load_registry

    registry = load_registry()
    trained = sorted(m.id for m in registry.implemented()  # one loss per step: what a step costs
                     if issubclass(resolve_method(m.id, registry)[1], GradientMethod))
    methods = [m for m in args.methods.split(",") if m] or [HF_TRAINER, *trained]
    rows: list[Measurement] = []
    started = time.time()
    for method_id in methods:
        out = subprocess.run([sys.executable, __file__, "--worker", method_id, "--steps", str(args.steps),
                              "--shape", args.shape, "--device", args.device],
                             capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
        if out.returncode != 0:
            print(f"{method_id}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(Measurement(**json.loads(out.stdout.strip().splitlines()[-1])))
    print(f"step cost, {args.shape} shape, {BATCH}x{SEQUENCE} tokens, {args.steps} steps each "
          f"(median after 2 warm-up steps), device {args.device}, {platform.processor() or platform.machine()}, "
          f"torch threads 2, {time.strftime('%Y-%m-%d')}")
    header = f"{'method':10s} {'step (ms)':>10s} {'x finetune':>10s} {'peer x':>7s} {'target':>7s} " \
             f"{'tokens/s':>9s} {'peak MB':>8s} {'trained params':>15s} {'reference':>9s}"
    if args.device == "cuda":
        header += f" {'MFU':>6s}"
    print(header)
    table = []
    baselines = [r.baseline_step_s for r in rows]
    print(f"{FINETUNE:10s} {statistics.median(baselines) * 1e3:10.1f} {1.0:10.2f}   (median of the {len(rows)} "
          f"paired runs; {min(baselines) * 1e3:.1f} to {max(baselines) * 1e3:.1f} ms)")
    for r in rows:
        ratio = r.median_step_s / r.baseline_step_s
        line = (f"{r.method:10s} {r.median_step_s * 1e3:10.1f} {ratio:10.2f} {PEER.get(r.method, float('nan')):7.2f} "
                f"{TARGET.get(r.method, float('nan')):7.2f} {r.tokens_per_s:9.0f} {r.peak_memory_mb:8.0f} "
                f"{r.trained_parameters:15,d} {r.reference:>9s}")
        if r.mfu is not None:
            line += f" {r.mfu:6.1%}"
        print(line)
        table.append({**asdict(r), "ratio": ratio, "peer": PEER.get(r.method), "target": TARGET.get(r.method)})
    print(f"({time.time() - started:.0f} s)")
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump({"shape": args.shape, "device": args.device, "date": time.strftime("%Y-%m-%d"),
                       "rows": table}, handle, indent=2)


if __name__ == "__main__":
    main()
