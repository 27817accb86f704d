"""Side-by-side training and inference throughput: rnnkit vs plain PyTorch vs Keras 3.

Every variant trains the same model (embedding 100, hidden 128, one layer, linear/softmax head,
Adam 1e-3, batch 64) on the same documents, grouped into the same batches:

* ``tutorial``: ``nn.Embedding`` + ``nn.LSTM``/``GRU``/``RNN`` + ``nn.Linear`` on the last hidden
  state, every batch padded to ``max_length``, default PyTorch settings (denormals not flushed,
  glibc's default malloc);
* ``tutorial+runtime``: the same code under rnnkit's runtime settings (denormals flushed, freed
  memory kept for reuse: ``train.flush_denormal``, ``train.reuse_memory``), to show what they
  alone give;
* ``rnnkit native``: rnnkit's classifier on length-bucketed batches, rnnkit's runtime settings and
  optimiser (Adam, fused), ``kernel="native"`` (plain torch modules), float32;
* ``rnnkit float32``: the same with ``kernel="auto"`` (rnnkit's fastest exact path for the device);
* ``rnnkit``: rnnkit's defaults, ``kernel="auto"`` with ``train.amp`` mixed precision where the
  device has it natively (float16 on CUDA, bfloat16 on CPUs with AVX512-BF16/AMX);
* ``rnnkit, embedding rows`` (``--embedding-rows``): rnnkit with ``train.embedding_update: rows``,
  the opt-in that updates only the batch's embedding rows (not the same maths as Adam);
* ``rnnkit, embedding frozen`` (``--frozen-embedding``): no embedding gradient or update at all,
  the most any row-wise update could save;
* ``tutorial packed`` (``--packed``): the tutorial with ``pack_padded_sequence``, the other way
  tutorials handle padding;
* ``keras``: Keras 3 on the torch backend, padded to ``max_length``, ``train_on_batch``
  (skipped with a note when keras is not installed).

Timed batches are a stratified sample of one epoch's bucketed batches (evenly spaced length
quantiles), so ``s/epoch`` (mean batch time x batches per epoch of the 11,314-document training
set) is representative with few batches; train tokens/s is the epoch's real tokens (never padding)
over that time. Inference classifies whole length-sorted batches of ``--eval-batch-size`` documents
(rnnkit) or the same documents in padded batches of ``--batch-size`` (tutorial, Keras).

    python scripts/benchmark.py --archive /path/to/20news-bydate.tar.gz --json bench.json
    python scripts/benchmark.py --cells lstm --bidirectional uni --batches 2   # quick, synthetic data
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

os.environ.setdefault("KERAS_BACKEND", "torch")

import matmul_floor  # scripts/, beside this file
import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from rnnkit.config import TrainConfig
from rnnkit.data.batching import BucketBatchSampler, EncodedDataset, collate
from rnnkit.inference import autocast as mixed_precision
from rnnkit.models.classifier import GRUClassifier, LSTMClassifier, RNNClassifier
from rnnkit.runtime import amp_dtype, configure_runtime, resolve_device
from rnnkit.training.trainer import build_optimizer

TRAIN_DOCS = 11314  # 20 Newsgroups "bydate" training set
NUM_CLASSES = 20
CELLS = {"rnn": (nn.RNN, RNNClassifier), "lstm": (nn.LSTM, LSTMClassifier), "gru": (nn.GRU, GRUClassifier)}


@dataclass
class Result:
    """One variant's measurement; ratios are filled in against ``tutorial`` of the same model."""

    cell: str
    direction: str
    variant: str
    train_tokens_per_s: float | None = None
    train_s_per_epoch: float | None = None
    infer_docs_per_s: float | None = None
    train_speedup: float | None = None
    infer_speedup: float | None = None
    gpu_utilisation: float | None = None  # mean % while training, CUDA only
    floor_pct: float | None = None  # train tokens/s as % of the layer's matrix-product floor (CPU)
    note: str = ""


@dataclass
class Timing:
    """Seconds over the timed training batches and over the inference documents."""

    train_s: float
    infer_s: float
    gpu_utilisation: float | None = None


class GpuUtilisation:
    """Mean GPU utilisation (%, from NVML via ``torch.cuda.utilization``) while the block runs.

    Sampled every ``interval`` seconds on a background thread; ``mean`` is None without samples
    (a block shorter than one interval, or no NVML: ``pip install nvidia-ml-py``).
    """

    def __init__(self, device: torch.device, interval: float = 0.05) -> None:
        self.device, self.interval = device, interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(float(torch.cuda.utilization(self.device)))
            except Exception:  # no NVML (pynvml) or no permission: report nothing rather than fail
                return

    def __enter__(self) -> GpuUtilisation:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


@dataclass
class Workload:
    """The documents and their batches, shared by every variant."""

    docs: list[np.ndarray]
    labels: np.ndarray
    vocab_size: int
    max_length: int
    source: str
    train_batches: list[list[int]] = field(default_factory=list)
    infer_docs: list[int] = field(default_factory=list)
    epoch_batches: int = 0
    epoch_tokens: float = 0.0


# --------------------------------------------------------------------------------------------- data


def load_workload(args: argparse.Namespace) -> Workload:
    """Real 20 Newsgroups through rnnkit's data pipeline, or synthetic look-alike documents."""
    if args.archive:
        from rnnkit.data.newsgroups import load_20newsgroups
        from rnnkit.data.text import Tokenizer, Vocabulary

        data = load_20newsgroups(subset="train", archive=args.archive)
        tokenizer = Tokenizer()
        tokens = [tokenizer(text) for text in data.texts]
        vocab = Vocabulary.build(tokens, min_freq=2, max_size=50000, tokenizer=tokenizer)
        docs = [vocab.encode_tokens(t) if t else np.array([1]) for t in tokens]
        labels, vocab_size, source = np.asarray(data.labels), len(vocab), f"20 Newsgroups ({args.archive})"
    else:
        rng = np.random.default_rng(args.seed)
        lengths = np.clip(rng.lognormal(math.log(250), 0.9, TRAIN_DOCS).astype(int), 1, None)
        vocab_size = args.vocab_size
        docs = [np.minimum(rng.zipf(1.3, n), vocab_size - 1) for n in lengths]
        labels = rng.integers(0, NUM_CLASSES, TRAIN_DOCS)
        source = "synthetic 20 Newsgroups-shaped (lognormal lengths, median 250; Zipf ids)"
    work = Workload(docs, labels, vocab_size, args.max_length, source)
    dataset = EncodedDataset(docs, labels, args.max_length)
    batches = list(BucketBatchSampler(dataset.lengths, args.batch_size, seed=args.seed))
    work.epoch_batches = len(batches) * TRAIN_DOCS // len(docs)
    work.epoch_tokens = float(dataset.lengths.sum()) * TRAIN_DOCS / len(docs)
    by_length = sorted(batches, key=lambda b: float(dataset.lengths[b].mean()))
    count = args.warmup + args.batches
    picks = [by_length[int((i + 0.5) * len(by_length) / count)] for i in range(count)]
    # Warm-up on the longest sampled batch allocates the largest buffers once.
    work.train_batches = [picks[-1]] + [p for i, p in enumerate(picks) if i != count - 1]
    # Inference: whole length-sorted evaluation batches (as rnnkit predicts), at evenly spaced quantiles.
    order = np.argsort(dataset.lengths, kind="stable")
    chunks = [order[i : i + args.eval_batch_size] for i in range(0, len(order), args.eval_batch_size)]
    count = min(args.infer_batches, len(chunks))
    work.infer_docs = [int(i) for k in range(count) for i in chunks[int((k + 0.5) * len(chunks) / count)]]
    work.docs = dataset.sequences
    return work


def bucketed(work: Workload, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch = collate([(work.docs[i], int(work.labels[i]), i) for i in indices])
    return batch.token_ids, batch.lengths, batch.labels


def padded(work: Workload, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded to ``max_length`` as tutorials (and Keras' ``pad_sequences(padding='post')``) do."""
    ids = np.zeros((len(indices), work.max_length), dtype=np.int64)
    for row, i in enumerate(indices):
        ids[row, : len(work.docs[i])] = work.docs[i]
    return ids, work.labels[list(indices)]


# ------------------------------------------------------------------------------------------ models


class TutorialClassifier(nn.Module):
    """The textbook model: embedding, recurrent layer, linear head on the final hidden state.

    ``packed=True`` is the other textbook version: ``pack_padded_sequence`` with the lengths read
    off the padding (id 0), so the final state is each text's own.
    """

    def __init__(
        self,
        cell: type[nn.RNNBase],
        vocab_size: int,
        bidirectional: bool,
        args: argparse.Namespace,
        packed: bool = False,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, args.embedding_dim)
        self.rnn = cell(args.embedding_dim, args.hidden_size, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(args.hidden_size * (2 if bidirectional else 1), NUM_CLASSES)
        self.packed = packed

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        inputs = self.embedding(token_ids)
        if self.packed:
            lengths = (token_ids != 0).sum(1).clamp(min=1).cpu()
            inputs = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
        _, hidden = self.rnn(inputs)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        return self.head(torch.cat(list(hidden), dim=1))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, steps: Sequence[Callable[[], object]], warmup: int) -> float:
    """Run ``steps`` in order; return the seconds spent in the ones after the first ``warmup``."""
    for step in steps[:warmup]:
        step()
    synchronize(device)
    start = time.perf_counter()
    for step in steps[warmup:]:
        step()
    synchronize(device)
    return time.perf_counter() - start


def training_steps(
    work: Workload,
    args: argparse.Namespace,
    device: torch.device,
    model: nn.Module,
    *,
    rnnkit: bool,
    amp: bool,
    embedding_update: str = "dense",
) -> list[Callable[[], object]]:
    """One closure per batch of ``work.train_batches``: a whole training step (zero_grad, forward,
    loss, backward, optimizer step) of ``model`` on that batch."""
    torch.manual_seed(args.seed)
    if rnnkit:  # the trainer's optimiser: the same Adam update, fused into one kernel
        cfg = TrainConfig(optimizer="adam", lr=1e-3, embedding_update=embedding_update)
        optimizer = build_optimizer(cfg, model)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    autocast = mixed_precision(device, amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")

    def train_step(indices: list[int]) -> Callable[[], object]:
        if rnnkit:
            ids, lengths, labels = (t.to(device) for t in bucketed(work, indices))
            inputs: tuple[torch.Tensor, ...] = (ids, lengths)
        else:
            ids_np, labels_np = padded(work, indices)
            inputs, labels = (torch.from_numpy(ids_np).to(device),), torch.from_numpy(labels_np).to(device)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = nn.functional.cross_entropy(model(*inputs), labels)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        return step

    model.train()
    return [train_step(b) for b in work.train_batches]


def measure_torch(
    work: Workload,
    args: argparse.Namespace,
    device: torch.device,
    model: nn.Module,
    *,
    rnnkit: bool,
    amp: bool,
    embedding_update: str = "dense",
) -> Timing:
    """Train seconds over the timed batches (and GPU utilisation), inference seconds over ``infer_docs``."""
    steps = training_steps(
        work, args, device, model, rnnkit=rnnkit, amp=amp, embedding_update=embedding_update
    )
    if device.type == "cuda":
        with GpuUtilisation(device) as utilisation:
            train_s = timed(device, steps, args.warmup)
        gpu_utilisation = utilisation.mean
    else:
        train_s, gpu_utilisation = timed(device, steps, args.warmup), None
    autocast = mixed_precision(device, amp)

    eval_batch = args.eval_batch_size if rnnkit else args.batch_size
    chunks = [work.infer_docs[i : i + eval_batch] for i in range(0, len(work.infer_docs), eval_batch)]

    def infer_step(indices: list[int]) -> Callable[[], object]:
        if rnnkit:
            ids, lengths, _ = (t.to(device) for t in bucketed(work, indices))
            inputs: tuple[torch.Tensor, ...] = (ids, lengths)
        else:
            inputs = (torch.from_numpy(padded(work, indices)[0]).to(device),)

        def step() -> object:
            context = torch.inference_mode() if rnnkit else torch.no_grad()
            with context, autocast:
                return model(*inputs).argmax(1)

        return step

    model.eval()
    steps = [infer_step(c) for c in chunks]
    infer_s = timed(device, [steps[-1], *steps], 1)
    return Timing(train_s, infer_s, gpu_utilisation)


@dataclass
class BatchCosts:
    """Training-step time against real tokens over the timed batches, fitted as ``fixed + tokens / rate``."""

    cell: str
    direction: str
    batches: list[tuple[tuple[int, int], int, float]]  # (batch shape, real tokens, best seconds)
    fixed_s: float  # per batch, whatever its length
    tokens_per_s: float  # the marginal rate: each further token


def measure_batch_costs(
    cell: str, bidirectional: bool, work: Workload, args: argparse.Namespace, device: torch.device
) -> BatchCosts:
    """Each timed batch of the ``rnnkit`` variant on its own (best of 3 steps), and the least-squares
    line through them: what a step costs per batch and per token."""
    model = build_rnnkit(cell, bidirectional, work, args, "auto").to(device)
    steps = training_steps(work, args, device, model, rnnkit=True, amp=True)
    timed(device, steps, len(steps))  # warm-up: every batch once
    batches = []
    for indices, step in zip(work.train_batches[args.warmup :], steps[args.warmup :], strict=True):
        ids, lengths, _ = bucketed(work, indices)
        best = min(timed(device, [step], 0) for _ in range(3))
        batches.append(((ids.size(0), ids.size(1)), int(lengths.sum()), best))
    tokens = np.array([b[1] for b in batches], dtype=float)
    seconds = np.array([b[2] for b in batches])
    slope, intercept = np.polyfit(tokens, seconds, 1)
    return BatchCosts(cell, layer_direction(bidirectional), batches, float(intercept), float(1 / slope))


def batch_costs_markdown(costs: list[BatchCosts], floors: dict[str, float]) -> str:
    lines = [
        "",
        "Per batch, `rnnkit` (best of 3 steps each; fit: seconds = fixed + tokens / marginal rate):",
        "",
        "| cell | dir | batch | real tokens | ms | tokens/s |",
        "|---|---|---|---:|---:|---:|",
    ]
    for c in costs:
        for (rows, steps), tokens, seconds in c.batches:
            lines.append(
                f"| {c.cell} | {c.direction} | {rows} x {steps} | {tokens:,} | {seconds * 1e3:.1f} "
                f"| {tokens / seconds:,.0f} |"
            )
    lines.append("")
    for c in costs:
        floor = floors.get(f"{c.cell} {c.direction}")
        share = f" ({100 * c.tokens_per_s / floor:.0f}% of the floor)" if floor else ""
        lines.append(
            f"{c.cell} {c.direction}: fixed {c.fixed_s * 1e3:.1f} ms per batch, "
            f"marginal {c.tokens_per_s:,.0f} tokens/s{share}"
        )
    return "\n".join(lines)


def build_rnnkit(
    cell: str,
    bidirectional: bool,
    work: Workload,
    args: argparse.Namespace,
    kernel: str,
    freeze_embeddings: bool = False,
) -> nn.Module:
    torch.manual_seed(args.seed)
    return CELLS[cell][1](
        work.vocab_size,
        NUM_CLASSES,
        embedding_dim=args.embedding_dim,
        hidden_size=args.hidden_size,
        bidirectional=bidirectional,
        kernel=kernel,
        freeze_embeddings=freeze_embeddings,
    )


def measure_keras(cell: str, bidirectional: bool, work: Workload, args: argparse.Namespace) -> Timing:
    import keras

    keras.utils.set_random_seed(args.seed)
    layer = {"rnn": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[cell]
    recurrent = layer(args.hidden_size)
    model = keras.Sequential(
        [
            keras.Input(shape=(work.max_length,), dtype="int32"),
            keras.layers.Embedding(work.vocab_size, args.embedding_dim),
            keras.layers.Bidirectional(recurrent) if bidirectional else recurrent,
            keras.layers.Dense(NUM_CLASSES, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    # Padded batches all cost the same, so fewer timed batches suffice for this slow variant.
    batches = [padded(work, b) for b in work.train_batches[: args.warmup + args.keras_batches]]
    train_s = timed(torch.device("cpu"), [lambda b=b: model.train_on_batch(*b) for b in batches], args.warmup)
    chunks = [
        work.infer_docs[i : i + args.batch_size] for i in range(0, len(work.infer_docs), args.batch_size)
    ]
    inputs = [padded(work, c)[0] for c in chunks]
    infer_s = timed(
        torch.device("cpu"), [lambda x=x: model.predict_on_batch(x) for x in [inputs[-1], *inputs]], 1
    )
    return Timing(train_s, infer_s)


# ------------------------------------------------------------------------------------------- runs


def make_result(
    cell: str, bidirectional: bool, variant: str, work: Workload, timing: Timing, timed: int
) -> Result:
    """Throughputs from the seconds of ``timed`` training batches and of the inference documents."""
    epoch_s = timing.train_s / timed * work.epoch_batches
    return Result(
        cell,
        "bi" if bidirectional else "uni",
        variant,
        train_tokens_per_s=work.epoch_tokens / epoch_s,
        train_s_per_epoch=epoch_s,
        infer_docs_per_s=len(work.infer_docs) / timing.infer_s,
        gpu_utilisation=timing.gpu_utilisation,
    )


def run_baselines(
    cell: str, bidirectional: bool, work: Workload, args: argparse.Namespace, device: torch.device
) -> list[Result]:
    """``tutorial`` (and ``tutorial packed``, ``keras``) under PyTorch's and glibc's defaults (see
    :func:`main`)."""
    results = []
    for packed in (False, True) if args.packed else (False,):
        torch.manual_seed(args.seed)
        model = TutorialClassifier(CELLS[cell][0], work.vocab_size, bidirectional, args, packed).to(device)
        timing = measure_torch(work, args, device, model, rnnkit=False, amp=False)
        variant = "tutorial packed" if packed else "tutorial"
        results.append(make_result(cell, bidirectional, variant, work, timing, args.batches))
        progress(results[-1])
    if args.no_keras or device.type != "cpu":
        return results
    try:
        timing = measure_keras(cell, bidirectional, work, args)
    except ImportError:
        note = "keras not installed (pip install keras)"
        results.append(Result(cell, results[0].direction, "keras", note=note))
        return results
    results.append(make_result(cell, bidirectional, "keras", work, timing, args.keras_batches))
    results[-1].note = keras_note()
    progress(results[-1])
    return results


def run_rnnkit(
    cell: str, bidirectional: bool, work: Workload, args: argparse.Namespace, device: torch.device
) -> tuple[list[Result], matmul_floor.Floor | None]:
    """``tutorial+runtime`` and the rnnkit variants, under rnnkit's runtime settings, and on CPU the
    layer's matrix-product floor in rnnkit's product dtype (:mod:`matmul_floor`), measured first."""
    with configure_runtime(TrainConfig(device=str(device), num_threads=args.threads)):
        floor = None
        if device.type == "cpu" and not args.no_floor:
            steps = max(1, round(work.epoch_tokens / TRAIN_DOCS))  # mean tokens per document
            layer = matmul_floor.Layer(
                cell, bidirectional, steps, args.batch_size, args.embedding_dim, args.hidden_size
            )
            floor = matmul_floor.measure(layer, matmul_floor.bfloat16_or_float32())
            print(
                f"  {cell:4s} {layer_direction(bidirectional):3s} floor {floor.tokens_per_s:9.0f} tok/s "
                f"({floor.dtype})",
                file=sys.stderr,
                flush=True,
            )
        return _run_rnnkit_variants(cell, bidirectional, work, args, device), floor


def layer_direction(bidirectional: bool) -> str:
    return "bi" if bidirectional else "uni"


ROWS_VARIANT = "rnnkit, embedding rows"


def _run_rnnkit_variants(
    cell: str, bidirectional: bool, work: Workload, args: argparse.Namespace, device: torch.device
) -> list[Result]:
    torch.manual_seed(args.seed)
    tutorial = TutorialClassifier(CELLS[cell][0], work.vocab_size, bidirectional, args).to(device)
    variants: list[tuple[str, nn.Module, bool]] = [("tutorial+runtime", tutorial, False)]
    variants += [
        ("rnnkit native", build_rnnkit(cell, bidirectional, work, args, "native"), False),
        ("rnnkit float32", build_rnnkit(cell, bidirectional, work, args, "auto"), False),
    ]
    if amp_dtype(device) is not None and not args.no_amp:
        variants.append(("rnnkit", build_rnnkit(cell, bidirectional, work, args, "auto"), True))
        if args.embedding_rows:
            rows = build_rnnkit(cell, bidirectional, work, args, "auto")
            variants.append((ROWS_VARIANT, rows, True))
        if args.frozen_embedding:
            frozen = build_rnnkit(cell, bidirectional, work, args, "auto", freeze_embeddings=True)
            variants.append(("rnnkit, embedding frozen", frozen, True))
    if args.compile:
        compiled = torch.compile(build_rnnkit(cell, bidirectional, work, args, "native"))
        variants.append(("rnnkit native+compile", compiled, False))
    results = []
    for variant, model, mixed in variants:
        rnnkit = variant != "tutorial+runtime"
        update = "rows" if variant == ROWS_VARIANT else "dense"
        timing = measure_torch(
            work, args, device, model.to(device), rnnkit=rnnkit, amp=mixed, embedding_update=update
        )
        results.append(make_result(cell, bidirectional, variant, work, timing, args.batches))
        progress(results[-1])
    return results


def add_speedups(results: list[Result], floor: matmul_floor.Floor | None) -> None:
    """Ratios against the first result (``tutorial``) of the same model, and % of its floor."""
    base = results[0]
    for r in results:
        if r.train_tokens_per_s is not None:
            r.train_speedup = r.train_tokens_per_s / base.train_tokens_per_s
            r.infer_speedup = r.infer_docs_per_s / base.infer_docs_per_s
            if floor is not None:
                r.floor_pct = 100 * r.train_tokens_per_s / floor.tokens_per_s


def keras_note() -> str:
    import keras

    return f"keras {keras.__version__}, backend {keras.backend.backend()}"


def progress(r: Result) -> None:
    print(
        f"  {r.cell:4s} {r.direction:3s} {r.variant:22s} train {r.train_tokens_per_s:9.0f} tok/s"
        f"  infer {r.infer_docs_per_s:7.1f} docs/s",
        file=sys.stderr,
        flush=True,
    )


def environment(device: torch.device, work: Workload, args: argparse.Namespace) -> dict[str, object]:
    info: dict[str, object] = {
        "device": str(device),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "data": work.source,
        "batch_size": args.batch_size,
        "embedding_dim": args.embedding_dim,
        "hidden_size": args.hidden_size,
        "max_length": args.max_length,
        "timed_batches": args.batches,
        "warmup_batches": args.warmup,
        "epoch_batches": work.epoch_batches,
        "mean_doc_tokens": float(np.mean([len(d) for d in work.docs])),
        "infer_docs": len(work.infer_docs),
        "eval_batch_size": args.eval_batch_size,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def floor_line(env: dict[str, object]) -> str:
    """The floors the ``% of floor`` column divides by (scripts/matmul_floor.py, this run)."""
    floors = dict(env.get("floor_tokens_per_s") or {})  # type: ignore[call-overload]
    if not floors:
        return "no matrix-product floor (CUDA or --no-floor)"
    dtype = floors.pop("dtype")
    cells = ", ".join(f"{name} {value:,.0f}" for name, value in floors.items())
    return f"floor = the layer's matrix products alone in {dtype}, tokens/s: {cells}"


def markdown(results: list[Result], env: dict[str, object]) -> str:
    lines = [
        f"Device: {env['device']} ({env['machine']}, {env['cpu_cores']} cores, "
        f"{env['torch_threads']} torch threads)"
        f" | torch {env['torch']} | data: {env['data']}",
        f"batch {env['batch_size']}, embedding {env['embedding_dim']}, hidden {env['hidden_size']}, "
        f"max_length {env['max_length']}, {env['timed_batches']} timed batches after "
        f"{env['warmup_batches']} warm-up, "
        f"epoch = {env['epoch_batches']} batches; inference on {env['infer_docs']} documents",
        floor_line(env),
        "",
        "| cell | dir | variant | train tokens/s | % of floor | train s/epoch | train speedup "
        "| infer docs/s | infer speedup | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if r.train_tokens_per_s is None:
            lines.append(f"| {r.cell} | {r.direction} | {r.variant} | - | - | - | - | - | - | {r.note} |")
            continue
        floor_pct = f"{r.floor_pct:.0f}%" if r.floor_pct is not None else "-"
        note = r.note
        if r.gpu_utilisation is not None:
            note = f"GPU {r.gpu_utilisation:.0f}% busy while training" + (f"; {note}" if note else "")
        lines.append(
            f"| {r.cell} | {r.direction} | {r.variant} | {r.train_tokens_per_s:,.0f} | {floor_pct} "
            f"| {r.train_s_per_epoch:,.1f} "
            f"| {r.train_speedup:.2f}x | {r.infer_docs_per_s:,.1f} | {r.infer_speedup:.2f}x | {note} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--archive", help="20news-bydate.tar.gz (default: synthetic documents of the same shape)"
    )
    parser.add_argument("--cells", default="rnn,lstm,gru", help="comma-separated subset of rnn,lstm,gru")
    parser.add_argument("--bidirectional", choices=("uni", "bi", "both"), default="both")
    parser.add_argument("--batches", type=int, default=3, help="timed training batches per variant")
    parser.add_argument("--keras-batches", type=int, default=1, help="timed Keras batches (it is slow)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up batches per variant")
    parser.add_argument("--infer-batches", type=int, default=2, help="rnnkit inference batches per variant")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-batch-size", type=int, default=256, help="rnnkit's inference batch size")
    parser.add_argument("--embedding-dim", type=int, default=100)
    parser.add_argument(
        "--vocab-size", type=int, default=50000, help="words of the synthetic data (no --archive)"
    )
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=400)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument(
        "--threads", type=int, default=0, help="rnnkit's train.num_threads (0 = torch default)"
    )
    parser.add_argument(
        "--no-amp",
        action="store_true",
        help="skip rnnkit's mixed precision variant (float16 on CUDA, bfloat16 on CPUs that have it)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="also measure torch.compile on the native model"
    )
    parser.add_argument("--no-keras", action="store_true", help="skip the Keras 3 comparison")
    parser.add_argument(
        "--frozen-embedding",
        action="store_true",
        help="also measure rnnkit with the embedding frozen: no embedding gradient or update, the "
        "most any sparse or row-wise embedding update could save (not the same maths)",
    )
    parser.add_argument(
        "--embedding-rows",
        action="store_true",
        help="also measure rnnkit with train.embedding_update=rows (Adam on the batch's embedding rows only)",
    )
    parser.add_argument(
        "--no-floor", action="store_true", help="skip the matrix-product floor (scripts/matmul_floor.py)"
    )
    parser.add_argument(
        "--batch-costs",
        action="store_true",
        help="also time rnnkit's timed batches one by one and split a step's cost into a fixed part "
        "per batch and a rate per token",
    )
    parser.add_argument(
        "--packed",
        action="store_true",
        help="also measure the tutorial with pack_padded_sequence (slow on CPU)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    args.cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    unknown = sorted(set(args.cells) - set(CELLS))
    if unknown or not args.cells:
        parser.error(
            f"--cells takes a comma-separated subset of {', '.join(CELLS)}; got {unknown or 'nothing'}"
        )
    if min(args.batches, args.warmup, args.keras_batches, args.infer_batches) < 1:
        parser.error("--batches, --keras-batches, --warmup and --infer-batches must be at least 1")
    if args.batch_costs and args.batches < 2:
        parser.error("--batch-costs fits a line through the timed batches: give --batches 2 or more")
    args.keras_batches = min(args.keras_batches, args.batches)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    work = load_workload(args)
    directions = {"uni": (False,), "bi": (True,), "both": (False, True)}[args.bidirectional]
    models = [(cell, bidirectional) for cell in args.cells for bidirectional in directions]
    # Every baseline runs before rnnkit's first run: glibc's malloc cannot be put back to its
    # defaults once changed (its adaptive mmap threshold stays off), so they come first, under
    # PyTorch's defaults: its thread count, no flushing, malloc untouched; run_rnnkit applies
    # --threads and the rest of rnnkit's settings.
    defaults = TrainConfig(device=args.device, flush_denormal=False, reuse_memory=False)
    with configure_runtime(defaults):
        baselines = {model: run_baselines(*model, work, args, device) for model in models}
    results: list[Result] = []
    floors: dict[str, float] = {}
    for model in models:
        rnnkit_rows, floor = run_rnnkit(*model, work, args, device)
        rows = [baselines[model][0], *rnnkit_rows, *baselines[model][1:]]
        add_speedups(rows, floor)
        results.extend(rows)
        if floor is not None:
            floors[f"{model[0]} {layer_direction(model[1])}"] = floor.tokens_per_s
            floors["dtype"] = str(floor.dtype).removeprefix("torch.")  # type: ignore[assignment]
    env = environment(device, work, args)
    env["floor_tokens_per_s"] = floors
    print(markdown(results, env))
    costs = []
    if args.batch_costs and amp_dtype(device) is not None and not args.no_amp:
        with configure_runtime(TrainConfig(device=str(device), num_threads=args.threads)):
            costs = [measure_batch_costs(*model, work, args, device) for model in models]
        print(batch_costs_markdown(costs, floors))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            report = {"environment": env, "results": [asdict(r) for r in results]}
            report["batch_costs"] = [asdict(c) for c in costs]
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
