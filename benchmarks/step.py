"""Speed and memory of one DiscriTune update against naive per-image REINFORCE steps, in one process.

    python benchmarks/step.py --size gpt2-small --batch_size 100 --max_len 40 --threads 1

A ClipCap captioner (MLP mapper, prefix 10, random weights, GPT-2's vocabulary of 50257) is finetuned against a
frozen CLIP text tower (``--retriever tiny``, or ViT-B/32's with random weights); the candidates come as image
embeddings, as from the feature cache.  The stop token is made unreachable, so every caption in every step is
exactly ``--max_len`` tokens long and all steps do the same work.  Measured in the same run:

- the plugin's step (the game's forward, backward and an Adam update, as EGG's Trainer runs it): seconds per
  step, steps per second, peak memory, and the projected time of ``--updates`` updates;
- two naive reference steps written here, as research code for the method does it: each image decoded on its
  own token by token *with gradients* (the whole prefix re-run at every token, or a KV cache), its REINFORCE
  loss back-propagated per image, one Adam update per batch.  They run on ``--naive_images`` images and are
  scaled to the batch (the output says so);
- caption-generation throughput for evaluation (beam search, 5 beams, captions per second);
- memory growth across ``--growth_steps`` plugin steps (memory in use and live tensors, after warm-up);
- model-FLOPs utilisation: the step's analytic matmul FLOPs over its time, divided by the throughput of a large
  matmul in the step's precision measured in the same run (the better of a reading before and one after).

On the CPU, times are CPU seconds of the main thread (with ``--threads 1``, what the step takes on an unloaded
machine: a shared machine's load does not count), wall-clock seconds alongside, and memory is the process's
resident memory, sampled every millisecond.  As a CPU training run, the benchmark keeps the memory a step frees
for the next one (``runtime/host_memory.py``; ``--glibc_malloc``: glibc's default, which hands freed memory back).  With
``--device cuda``, times are wall-clock seconds between synchronisations and memory is the CUDA allocator's
peak.  The last line reads ``speedup vs naive: N.Nx (kv-cache)``, the plugin step against the KV-cache
reference.

The step's split follows: decoding, the scoring forward (the game's forward less decoding), the backward and the
Adam update; then decoding with each ``--decoder`` (``generate``, transformers' own loop;
``static``, the default; ``compiled``): time per token, the top-level torch operators it dispatches per token
(from the torch profiler; with ``--device cuda`` also its kernel launches and host syncs per token), the
first call's time (``compiled`` compiles then) and beam-5 captions per second (5 captions).

With ``--generic``, the same GPT-2 also runs through the generic transformers path (``--captioner hf``): a
``VisionEncoderDecoderModel`` whose decoder is that GPT-2 (with the cross-attention a vision encoder-decoder
adds) over a one-layer ViT, with the same batch, rollout length and optimizer; the line ``generic vs ClipCap:
time N.NNx, peak memory N.NNx`` compares its step with ClipCap's.

    python benchmarks/step.py --device cuda --size gpt2-small --retriever vit-b32 --precision bf16 --steps 5

With ``--micro_batch_sizes 100 50 20 10`` the step alone is measured at each ``--micro_batch_size`` (images per
scoring pass with gradients), each in a process of its own, and a table gives its time and the memory it adds
above the models and optimizer state, with their ratios to the first size's; ``--captioner smolvlm`` runs it on a
random-weight SmolVLM-256M (``benchmarks/smolvlm.py``, ``--captioner hf``'s path), ``--rollouts_per_image`` K
samples K captions per image (RLOO baseline), and ``--no-encode_once`` runs its frozen vision parts in every pass
(as before they ran once per step), ``--gradient_checkpointing`` recomputes its layers' activations in the
backward (as ``--captioner hf --gradient_checkpointing`` does).  A size that does not fit in ``--memory_limit_gib``
reports so, with the memory its first step had added when it ran out.

    python benchmarks/step.py --size gpt2-small --micro_batch_sizes 100 50 20 10 --rollouts_per_image 4
    python benchmarks/step.py --captioner smolvlm --micro_batch_sizes 100 50 20 10 --steps 1
"""

import argparse
import contextlib
import ctypes
import functools
import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's own start/stop notices, before torch loads it
import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from egg.zoo.discriminative_captioner.archs import (
    CaptionerSender,
    DiscriminativeGame,
    GroupBaseline,
    RetrieverReceiver,
)
from egg.zoo.discriminative_captioner.captioners import static_decoding
from egg.zoo.discriminative_captioner.captioners.clipcap import ClipCapCaptioner, ClipCapConfig, ClipCapModel
from egg.zoo.discriminative_captioner.choices import DECODERS
from egg.zoo.discriminative_captioner.core import MeanBaseline
from egg.zoo.discriminative_captioner.games import fused_adam
from egg.zoo.discriminative_captioner.losses import DiscriminationLoss
from egg.zoo.discriminative_captioner.retrievers.clip import ClipRetriever
from egg.zoo.discriminative_captioner.runtime.clip_loading import clip, clip_transform
from egg.zoo.discriminative_captioner.runtime.host_memory import keep_freed_memory
from egg.zoo.discriminative_captioner.runtime.precision import PRECISIONS, autocast

SIZES = {  # GPT-2 layers, width, heads
    "tiny": (2, 64, 2),
    "small4": (4, 256, 4),
    "gpt2-small": (12, 768, 12),
}
GPT2_VOCAB = 50257
PREFIX_LENGTH, PREFIX_SIZE = 10, 512  # ClipCap-ConCap's MLP mapper over ViT-B/32 features
GiB = 2**30


def resident_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def process_peak_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def trimmed_resident_bytes():
    """Resident memory after a full collection and returning freed heap pages to the system."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return resident_bytes()


class PeakMemory:
    """Highest resident memory while the block runs, sampled every millisecond by a thread; on a GPU, the
    highest memory the CUDA allocator handed out (``max_memory_allocated``).  ``added``: the peak above the
    memory in use when the block began (what the steps add to the models and optimizer state)."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return self
        self.start = trimmed_resident_bytes()
        self.peak, self.running = resident_bytes(), True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while self.running:
            self.peak = max(self.peak, resident_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
            return
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, resident_bytes())

    @property
    def added(self):
        return self.peak - self.start


def word_tokenizer(vocab_size):
    """A word-level tokenizer as large as GPT-2's vocabulary, with its end-of-text token last, like GPT-2's."""
    vocabulary = {".": 0, **{f"w{i}": i for i in range(1, vocab_size - 1)}, "<|endoftext|>": vocab_size - 1}
    backend = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    eos = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=eos, eos_token=eos, unk_token=eos, pad_token=eos)


def build_captioner(size, max_len):
    layers, width, heads = SIZES[size]
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=GPT2_VOCAB, n_positions=128, n_embd=width, n_layer=layers, n_head=heads,
                        bos_token_id=GPT2_VOCAB - 1, eos_token_id=GPT2_VOCAB - 1)  # fmt: skip
    gpt = GPT2LMHeadModel(config)
    model = ClipCapModel(ClipCapConfig(prefix_length=PREFIX_LENGTH, prefix_size=PREFIX_SIZE), gpt)
    captioner = ClipCapCaptioner(model, word_tokenizer(GPT2_VOCAB), image_encoder=None, max_len=max_len)
    captioner.stop_ids = [GPT2_VOCAB]  # an id outside the vocabulary: never sampled, every caption is max_len long
    return captioner


RETRIEVERS = {  # CLIP sizes: embedding, text width, text heads, text layers, image resolution
    "tiny": (64, 64, 1, 1, 32),
    "vit-b32": (512, 512, 8, 12, 224),  # OpenAI CLIP ViT-B/32's text tower (candidates come as embeddings)
}


def build_retriever(size):
    embed, width, heads, layers, resolution = RETRIEVERS[size]
    torch.manual_seed(1)
    model = clip.model.CLIP(embed_dim=embed, image_resolution=resolution, vision_layers=1, vision_width=64,
                            vision_patch_size=32, context_length=77, vocab_size=49408, transformer_width=width,
                            transformer_heads=heads, transformer_layers=layers)  # fmt: skip
    return ClipRetriever(model.eval(), clip_transform(resolution))


def step_flops(size, batch_size, max_len):
    """Analytic matmul FLOPs of one step: sampling (KV cache), the scoring pass and its backward (2x forward)."""
    layers, width, _ = SIZES[size]
    per_token = 2 * 12 * layers * width**2  # attention projections (4 E^2) and MLP (8 E^2) per layer
    attention = lambda context: 2 * 2 * layers * width * context  # noqa: E731 (scores and weighted values)
    head = 2 * width * GPT2_VOCAB
    hidden = width * PREFIX_LENGTH // 2
    mapper = 2 * (PREFIX_SIZE * hidden + hidden * width * PREFIX_LENGTH)
    total_len = PREFIX_LENGTH + max_len
    sample = PREFIX_LENGTH * per_token + sum(per_token + attention(PREFIX_LENGTH + t) + head for t in range(max_len))
    score = total_len * per_token + sum(attention(t + 1) for t in range(total_len)) + max_len * head
    return batch_size * (mapper + sample + 3 * (score + mapper))


def matmul_throughput(device, dtype):
    """FLOP/s of a large matmul in ``dtype`` on ``device`` (the best of five)."""
    n = 2048 if device.type == "cpu" else 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    return 2 * n**3 / timed(lambda: a @ b, 5, device)[0]


def make_batch(batch_size, embed_dim, device, seed=2):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch_size, PREFIX_SIZE, generator=generator)
    images = torch.nn.functional.normalize(torch.randn(batch_size, embed_dim, generator=generator), dim=-1)
    return features.to(device), images.to(device), torch.arange(batch_size, device=device)


def plugin_step(game, optimizer, batch):
    features, images, labels = batch
    loss, _ = game(features, labels, images)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def naive_step(captioner, retriever, optimizer, batch, images_used, kv_cache):
    """REINFORCE as per-image research code does it: decode each caption token by token with gradients and
    back-propagate it (the Adam update, once per batch, is timed apart)."""
    features, images, labels = batch
    gpt, model = captioner.model.gpt, captioner.model
    for i in range(images_used):
        prefix = model.prefix(features[i : i + 1])  # [1, P, E]
        tokens, log_prob, past = [], 0.0, None
        out = gpt(inputs_embeds=prefix, use_cache=kv_cache)
        for t in range(captioner.max_len):
            log_probs = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [1, V]
            token = torch.multinomial(log_probs.detach().exp(), 1)  # [1, 1]
            log_prob = log_prob + log_probs.gather(1, token).sum()
            tokens.append(token)
            if t == captioner.max_len - 1:
                break
            if kv_cache:
                past = out.past_key_values
                out = gpt(input_ids=token, past_key_values=past, use_cache=True)
            else:
                embeddings = torch.cat([prefix, gpt.get_input_embeddings()(torch.cat(tokens, dim=1))], dim=1)
                out = gpt(inputs_embeds=embeddings)
        caption = captioner.tokenizer.decode(torch.cat(tokens, dim=1)[0].tolist())
        scores = retriever.encode_texts([caption]) @ images.T  # [1, N]
        reward = torch.log_softmax(scores / retriever.temperature, dim=1)[0, labels[i]]
        (-(reward * log_prob)).backward()


def timed(function, repeats, device):
    """The best of ``repeats`` runs: on the CPU in CPU seconds of this thread (with one thread, the time of an
    unloaded machine: other processes on a shared machine do not count), with the matching wall-clock seconds;
    on a GPU in wall-clock seconds between synchronisations, twice."""
    synchronize = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    clock = time.perf_counter if device.type == "cuda" else time.thread_time
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        synchronize()
        start, wall = clock(), time.perf_counter()
        function()
        synchronize()
        best = min(best, (clock() - start, time.perf_counter() - wall))
    return best


def allocated_bytes(device):
    """Memory in use after a full collection: GPU memory the CUDA allocator handed out, or trimmed resident."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated()
    return trimmed_resident_bytes()


def live_tensors():
    return sum(1 for obj in gc.get_objects() if torch.is_tensor(obj))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small4", help="GPT-2 size (random weights)")
    parser.add_argument("--retriever", choices=sorted(RETRIEVERS), default="tiny", help="CLIP text tower size")
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--max_len", type=int, default=40, help="rollout length (every caption has this length)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32")
    parser.add_argument("--steps", type=int, default=2, help="timed plugin steps after one warm-up step")
    parser.add_argument("--naive_images", type=int, default=2, help="images the naive steps decode (scaled up)")
    parser.add_argument("--beam_captions", type=int, default=20, help="captions decoded to time beam search")
    parser.add_argument("--growth_steps", type=int, default=50, help="plugin steps of the memory-growth check")
    parser.add_argument("--entropy_coeff", type=float, default=0.0)
    parser.add_argument("--kl_coeff", type=float, default=0.0)
    parser.add_argument("--updates", type=int, default=56_000, help="updates of the run whose time is projected")
    parser.add_argument("--generic", action="store_true", help="also time the generic transformers path (hf)")
    parser.add_argument("--glibc_malloc", action="store_true",
                        help="on the CPU, glibc's default malloc, which hands freed memory back to the kernel (the "
                             "CPU step as it first ran); by default freed memory is kept, as in a CPU training run "
                             "(runtime/host_memory.py)")  # fmt: skip
    parser.add_argument("--decoder", choices=DECODERS, default="auto",
                        help="what decodes the plugin step's captions (the split compares all three)")  # fmt: skip
    parser.add_argument("--captioner", choices=["clipcap", "smolvlm"], default="clipcap",
                        help="clipcap: ClipCap over the GPT-2 of --size; smolvlm: SmolVLM-256M, random weights "
                             "(--micro_batch_sizes measurements only)")  # fmt: skip
    parser.add_argument("--rollouts_per_image", type=int, default=1, help="K captions per image (RLOO when K > 1)")
    parser.add_argument("--micro_batch_size", type=int, default=None, help="images per pass with gradients")
    parser.add_argument("--rollout_batch_size", type=int, default=None,
                        help="images decoded at a time (default: the whole batch)")
    parser.add_argument("--micro_batch_sizes", type=int, nargs="+", default=None,
                        help="measure the step alone at each micro-batch size, each in a fresh process")
    parser.add_argument("--encode_once", action=argparse.BooleanOptionalAction, default=True,
                        help="smolvlm: its frozen vision parts run once per image per step")
    parser.add_argument("--lora_rank", type=int, default=0, help="smolvlm: train LoRA adapters of this rank")
    parser.add_argument("--gradient_checkpointing", action="store_true",
                        help="smolvlm: recompute each layer's activations in the backward instead of keeping them")
    parser.add_argument("--memory_limit_gib", type=float, default=20.0,
                        help="--micro_batch_sizes: each process's address-space limit (a size that needs more "
                             "reports it instead of the machine running out of memory)")  # fmt: skip
    parser.add_argument("--only_step", action="store_true", help=argparse.SUPPRESS)  # one size of the sweep
    args = parser.parse_args()
    if args.micro_batch_sizes:
        return sweep(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    if args.only_step:
        return only_step(args)
    if args.device == "cpu" and not args.glibc_malloc:
        keep_freed_memory()  # as a CPU training run does (train.py)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    B, T = args.batch_size, args.max_len

    captioner, retriever = build_captioner(args.size, T).to(device), build_retriever(args.retriever).to(device)
    captioner.decoder = args.decoder
    reference = None
    if args.kl_coeff:
        from egg.zoo.discriminative_captioner.archs import FrozenReference

        reference = FrozenReference(captioner)
    game = DiscriminativeGame(CaptionerSender(captioner), RetrieverReceiver(retriever),
                              DiscriminationLoss(temperature=retriever.temperature), baseline_type=MeanBaseline,
                              entropy_coeff=args.entropy_coeff, kl_reference=reference, kl_coeff=args.kl_coeff,
                              precision=args.precision)  # fmt: skip
    optimizer = fused_adam(captioner.trainable_parameters(), lr=1e-7)  # the plugin's optimizer
    batch = make_batch(B, RETRIEVERS[args.retriever][0], device)
    layers, width, _ = SIZES[args.size]
    where = torch.cuda.get_device_name(device) if on_gpu else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"GPT-2 {layers} layers x {width} wide, vocabulary {GPT2_VOCAB}, ClipCap MLP prefix {PREFIX_LENGTH}; "
          f"{args.retriever} CLIP text tower; batch {B}, {T}-token rollouts; {args.precision}, {where}",
          flush=True)  # fmt: skip
    seconds_of = "GPU wall-clock" if on_gpu else "CPU"
    memory_of = "peak GPU memory allocated" if on_gpu else "peak resident"

    matmul_dtype = torch.float32 if args.precision == "fp32" else PRECISIONS[args.precision]
    peak_flops = matmul_throughput(device, matmul_dtype)
    print(f"{str(matmul_dtype).split('.')[1]} matmul: {peak_flops / 1e12:.3f} TFLOP/s", flush=True)

    game.train()
    plugin_step(game, optimizer, batch)  # warm-up
    with PeakMemory(device) as plugin_memory:
        plugin_seconds, plugin_wall = timed(lambda: plugin_step(game, optimizer, batch), args.steps, device)
    # The machine's best matmul speed, before or after the step: on a shared machine the lower reading is the
    # one taken under more load, and the higher one makes the utilisation below the conservative figure.
    peak_flops = max(peak_flops, matmul_throughput(device, matmul_dtype))
    flops = step_flops(args.size, B, T)
    mfu = flops / plugin_seconds / peak_flops
    print(f"plugin step: {plugin_seconds:.3f} s {seconds_of} ({1 / plugin_seconds:.3f} steps/s; "
          f"wall {plugin_wall:.3f} s), "
          f"{memory_of} {plugin_memory.peak / GiB:.2f} GiB; process peak resident so far "
          f"{process_peak_bytes() / GiB:.2f} GiB", flush=True)  # fmt: skip
    print(f"model FLOPs: {flops / 1e12:.3f} TFLOP per step, {flops / plugin_seconds / 1e12:.3f} TFLOP/s, "
          f"MFU {100 * mfu:.1f}% (of the best matmul, before or after the step: {peak_flops / 1e12:.3f} TFLOP/s)",
          flush=True)  # fmt: skip
    print(f"projected {args.updates} updates: {args.updates * plugin_seconds / 3600:.1f} h", flush=True)

    naive = {}
    n = min(args.naive_images, B)
    for name, kv_cache in (("no cache", False), ("kv-cache", True)) if n else ():
        with PeakMemory(device) as memory:
            step = functools.partial(naive_step, captioner, retriever, optimizer, batch, n, kv_cache)
            seconds = timed(step, 1, device)[0]
            update = timed(lambda: (optimizer.step(), optimizer.zero_grad(set_to_none=True)), 1, device)[0]
        naive[name] = seconds * B / n + update
        print(f"naive per-image step ({name}): {seconds:.2f} s for {n} images, scaled to the batch plus one update "
              f"{naive[name]:.2f} s ({1 / naive[name]:.4f} steps/s), {memory_of} {memory.peak / GiB:.2f} GiB, "
              f"plugin {naive[name] / plugin_seconds:.1f}x faster", flush=True)  # fmt: skip

    captions = min(args.beam_captions, B)
    if captions:
        game.eval()
        with torch.no_grad(), autocast(args.precision, device.type):
            seconds = timed(lambda: captioner.generate(batch[0][:captions], num_beams=5), 1, device)[0]
        print(f"evaluation decoding (beam 5): {captions / seconds:.1f} captions/s ({captions} captions)", flush=True)
        game.train()

    warmup = min(5, args.growth_steps)
    for _ in range(warmup):
        plugin_step(game, optimizer, batch)
    memory_before, tensors_before = allocated_bytes(device), live_tensors()
    for _ in range(args.growth_steps - warmup):
        plugin_step(game, optimizer, batch)
    memory_after, tensors_after = allocated_bytes(device), live_tensors()
    print(f"memory growth over steps {warmup}..{args.growth_steps}: "
          f"{(memory_after - memory_before) / 2**20:+.1f} MiB {'GPU allocated' if on_gpu else 'resident'}, "
          f"{tensors_after - tensors_before:+d} live tensors", flush=True)  # fmt: skip
    print(f"process peak resident: {process_peak_bytes() / GiB:.2f} GiB")
    step_split(game, captioner, optimizer, batch, T, device)
    if args.generic:
        compare_generic(args, device, retriever, plugin_seconds, plugin_memory.added)
    if naive:
        print(f"speedup vs naive: {naive['kv-cache'] / plugin_seconds:.1f}x (kv-cache)")


def sweep(args):
    """The step at each ``--micro_batch_sizes`` m, each in a process of its own; prints a table."""
    argv, skip = [], False
    for token in sys.argv[1:]:  # this command line without --micro_batch_sizes and its values
        if token == "--micro_batch_sizes":
            skip = True
        elif skip and not token.startswith("--"):
            continue
        else:
            skip = False
            argv.append(token)
    rows = []
    for m in args.micro_batch_sizes:
        command = [sys.executable, os.path.abspath(__file__), *argv, "--micro_batch_size", str(m), "--only_step"]
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        result = json.loads(lines[-1]) if lines else {"error": f"exit {done.returncode}: {done.stderr[-300:]}"}
        rows.append((m, result))
        print(f"m={m}: {result}", flush=True)
    first = next((result for _, result in rows if "seconds" in result), None)
    decoded = f", {args.rollout_batch_size} images decoded at a time" if args.rollout_batch_size else ""
    checkpointed = ", activations recomputed in the backward" if args.gradient_checkpointing else ""
    print(f"{args.captioner}, batch {args.batch_size}, K={args.rollouts_per_image}, {args.max_len}-token "
          f"rollouts{'' if args.encode_once or args.captioner != 'smolvlm' else ', vision in every pass'}{decoded}"
          f"{checkpointed}")
    print("| micro-batch (images) | step (s) | step memory above the models (GiB) | time vs first | memory vs first |")
    print("|---|---|---|---|---|")
    for m, result in rows:
        if "seconds" not in result:
            reached = result.get("added_before_failing")
            reached = f"more than {reached / GiB:.2f} (then out of memory)" if reached else ""
            print(f"| {m} | {result['error'][:60]} | {reached} | | |")
            continue
        print(f"| {m} | {result['seconds']:.2f} | {result['added'] / GiB:.2f} | "
              f"{result['seconds'] / first['seconds']:.2f}x | {result['added'] / first['added']:.2f}x |")


def only_step(args):
    """One size of the sweep: warm-up, then the timed steps; prints one JSON line."""
    limit = int(args.memory_limit_gib * GiB)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if args.device == "cpu" and not args.glibc_malloc:
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    B, T, K = args.batch_size, args.max_len, args.rollouts_per_image
    retriever = build_retriever(args.retriever).to(device)
    _, images, labels = make_batch(B, RETRIEVERS[args.retriever][0], device)
    if args.captioner == "smolvlm":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from smolvlm import build_smolvlm

        from egg.zoo.discriminative_captioner.captioners.hf_loading import checkpoint_activations

        captioner = build_smolvlm(T, args.lora_rank).to(device)
        captioner.encode_once = args.encode_once
        if args.gradient_checkpointing:
            checkpoint_activations(captioner.model)
        generator = torch.Generator().manual_seed(3)
        sender_input = torch.randn(B, *captioner.probe_pixels.shape, generator=generator).to(device)
    else:
        captioner = build_captioner(args.size, T).to(device)
        sender_input = make_batch(B, RETRIEVERS[args.retriever][0], device)[0]
    captioner.stop_ids = [10**9]  # never drawn: every caption is max_len long and every step does the same work
    baseline = functools.partial(GroupBaseline, leave_one_out=True) if K > 1 else MeanBaseline
    micro = args.micro_batch_size if args.micro_batch_size and args.micro_batch_size < B else None
    game = DiscriminativeGame(CaptionerSender(captioner), RetrieverReceiver(retriever),
                              DiscriminationLoss(temperature=retriever.temperature), baseline_type=baseline,
                              rollouts_per_image=K, micro_batch_size=micro, precision=args.precision,
                              rollout_batch_size=args.rollout_batch_size).train()  # fmt: skip
    optimizer = fused_adam(captioner.trainable_parameters(), lr=1e-7)
    batch = (sender_input, images, labels)
    memory = PeakMemory(device)
    try:
        with memory:  # the warm-up's memory counts only where the step does not fit
            plugin_step(game, optimizer, batch)
        with PeakMemory(device) as memory:
            seconds, wall = timed(lambda: plugin_step(game, optimizer, batch), args.steps, device)
    except (RuntimeError, MemoryError) as error:  # torch's allocator: "can't allocate memory"
        print(json.dumps({"error": f"does not fit in {args.memory_limit_gib:g} GiB: {str(error)[:120]}",
                          "added_before_failing": memory.added}))  # fmt: skip
        return
    packed = any(static_decoding._packing_pays.values())  # whether decoding multiplied with MKL-packed weights
    print(json.dumps({"seconds": seconds, "wall": wall, "peak": memory.peak, "added": memory.added,
                      "mkl_packed": packed}), flush=True)  # fmt: skip


def step_split(game, captioner, optimizer, batch, max_len, device):
    """Times the step's parts: decoding, the rest of the forward, the backward, the optimizer update; then
    decoding per token with each ``--decoder`` (``generate``: transformers' own loop)."""
    features, images, labels = batch
    condition = captioner.condition(features).detach()
    with torch.no_grad():
        decode = timed(lambda: captioner._decode(condition, sample=True), 2, device)[0]
    forward = timed(lambda: game(features, labels, images), 2, device)[0]
    loss, _ = game(features, labels, images)
    backward = timed(lambda: loss.backward(retain_graph=True), 1, device)[0]
    update = timed(lambda: optimizer.step(), 1, device)[0]
    optimizer.zero_grad(set_to_none=True)
    print(f"step split ({captioner.decoder} decoder): decode {decode:.3f} s, scoring forward {forward - decode:.3f} "
          f"s, backward {backward:.3f} s, optimizer {update:.3f} s", flush=True)  # fmt: skip
    chosen = captioner.decoder
    for decoder in (decoder for decoder in DECODERS if decoder != "auto"):
        captioner.decoder = decoder
        with torch.no_grad():
            started = time.monotonic()
            captioner._decode(condition, sample=True)  # warm-up; compiles the step for "compiled"
            first = time.monotonic() - started
            seconds = timed(lambda: captioner._decode(condition, sample=True), 2, device)[0]
            few = condition[:5]
            captioner._decode(few, num_beams=5)  # warm-up
            beam_seconds = timed(functools.partial(captioner._decode, few, num_beams=5), 1, device)[0]
        counts = decoding_counts(captioner, condition, device, max_len)
        print(f"decoder {decoder}: {1000 * seconds / max_len:.2f} ms per token; {counts} per token; first call "
              f"{first:.1f} s wall; beam 5: {few.shape[0] / beam_seconds:.2f} captions/s", flush=True)  # fmt: skip
    captioner.decoder = chosen


def decoding_counts(captioner, condition, device, max_len):
    """Per decoded token: top-level torch operators (those no other operator called), and with CUDA the kernel
    launches and host syncs (torch profiler)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.no_grad(), torch.profiler.profile(activities=activities) as profile:
        captioner._decode(condition, sample=True)
    events = profile.events()
    operators = ("aten::", "mkl::")  # MKL's packed products (the static loop's on a CPU) are operators too
    top_level = sum(1 for event in events if event.cpu_parent is None and event.name.startswith(operators))
    counts = f"{top_level / max_len:.0f} top-level operators"  # a compiled region's own kernels are not operators
    if device.type == "cuda":  # the CUDA runtime calls the decoding made, per decoded token
        launch_calls = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cudaGraphLaunch")
        kernels = sum(1 for event in events if event.name in launch_calls)
        syncs = sum(1 for event in events if "Synchronize" in event.name or event.name == "cudaMemcpy")
        counts += f", {kernels / max_len:.0f} kernel launches and {syncs / max_len:.1f} host syncs"
    return counts


def build_generic_captioner(size, max_len, image_size=32):
    """The same GPT-2 as ``build_captioner``'s, as the decoder of a ViT-GPT-2 ``VisionEncoderDecoderModel``."""
    from transformers import VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig, ViTImageProcessor

    from egg.zoo.discriminative_captioner.captioners.hf import HFCaptioner
    from egg.zoo.discriminative_captioner.captioners.hf_loading import ImageAndText

    layers, width, heads = SIZES[size]
    torch.manual_seed(0)
    decoder = GPT2Config(vocab_size=GPT2_VOCAB, n_positions=128, n_embd=width, n_layer=layers, n_head=heads,
                         bos_token_id=GPT2_VOCAB - 1, eos_token_id=GPT2_VOCAB - 1, add_cross_attention=True,
                         is_decoder=True)  # fmt: skip
    encoder = ViTConfig(hidden_size=width, num_hidden_layers=1, num_attention_heads=heads, intermediate_size=4 * width,
                        image_size=image_size, patch_size=16)  # fmt: skip
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = config.pad_token_id = config.eos_token_id = GPT2_VOCAB - 1
    model = VisionEncoderDecoderModel(config)
    processor = ImageAndText(ViTImageProcessor(size={"height": image_size, "width": image_size}),
                              word_tokenizer(GPT2_VOCAB))  # fmt: skip
    captioner = HFCaptioner(model, processor, max_len=max_len)
    captioner.stop_ids = [GPT2_VOCAB]  # as for ClipCap: every caption is max_len long
    return captioner


def compare_generic(args, device, retriever, clipcap_seconds, clipcap_added):
    """Times the generic path's step; memory is compared as what the steps add above the models in use."""
    captioner = build_generic_captioner(args.size, args.max_len).to(device)
    game = DiscriminativeGame(CaptionerSender(captioner), RetrieverReceiver(retriever),
                              DiscriminationLoss(temperature=retriever.temperature), baseline_type=MeanBaseline,
                              precision=args.precision)  # fmt: skip
    optimizer = fused_adam(captioner.trainable_parameters(), lr=1e-7)
    _, images, labels = make_batch(args.batch_size, RETRIEVERS[args.retriever][0], device)
    pixels = torch.randn(args.batch_size, 3, 32, 32, generator=torch.Generator().manual_seed(3)).to(device)
    batch = (pixels, images, labels)
    game.train()
    plugin_step(game, optimizer, batch)  # warm-up
    with PeakMemory(device) as memory:
        seconds, wall = timed(lambda: plugin_step(game, optimizer, batch), args.steps, device)
    trainable = sum(p.numel() for p in captioner.trainable_parameters())
    print(f"generic step (ViT-GPT-2, {trainable / 1e6:.1f}M trainable): {seconds:.3f} s (wall {wall:.3f} s), "
          f"step memory above the models {memory.added / GiB:.2f} GiB (ClipCap's {clipcap_added / GiB:.2f} GiB)",
          flush=True)  # fmt: skip
    print(f"generic vs ClipCap: time {seconds / clipcap_seconds:.2f}x, peak memory {memory.added / clipcap_added:.2f}x",
          flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
