"""Where and how the torch models run: device, threads, precision and memory-sized batches.

* Device: ``"auto"`` is CUDA when available, else the CPU using every core this process
  may run on (``os.sched_getaffinity``) that is not busy with other work
  (:func:`configure_threads`).
* Precision: ``"float32"``, ``"bfloat16"`` (autocast: matrix products and convolutions
  in bfloat16, everything else in float32) or ``"auto"``. Auto means float32 on the CPU
  (the benchmark ``benchmarks/bench_bcnn.py`` measures bfloat16 there) and, on CUDA,
  bfloat16 only after a check on real data shows it stays within a tolerance of float32
  (see :func:`precision_agrees`).
* Batch sizes: :func:`rows_per_chunk` sizes a chunk from the memory available on the
  device and the bytes one row needs; :func:`run_in_chunks` halves the chunk and retries
  when the device runs out of memory anyway.
"""

from __future__ import annotations

import contextlib
import functools
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import torch

from ...exceptions import LabelExplorerError

__all__ = ["busy_cores", "choose_device", "configure_threads", "forked_rng", "flush_denormals", "autocast",
           "resolve_precision", "native_cpu_bfloat16", "precision_agrees", "memory_budget", "rows_per_chunk",
           "run_in_chunks", "is_out_of_memory"]

PRECISIONS = ("auto", "float32", "bfloat16")


@functools.lru_cache(maxsize=1)
def configure_threads() -> int:
    """Let torch use the CPU cores available to this process; returns the thread count.

    Decided once per process: every core in the affinity set that other work keeps busy
    right now is left alone (:func:`busy_cores`), at least one is used. On a machine
    shared with other jobs, OpenMP threads that wait for a descheduled sibling make a
    2-thread run many times slower than a 1-thread one. Setting ``OMP_NUM_THREADS`` (or
    ``MKL_NUM_THREADS``) keeps whatever torch chose from it.

    Examples
    --------
    >>> configure_threads() >= 1
    True
    """
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    threads = max(1, min(cores, int(round(cores - busy_cores()))))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def busy_cores(samples: int = 5, interval: float = 0.01, loadavg: str | Path = "/proc/loadavg") -> float:
    """Threads of other work running now: the median over a few reads of the running count
    in ``/proc/loadavg``, less this reader; the 1-minute load average where that file is absent.

    Not the load average alone: it remembers the last minute, so a job started just after
    another one (a benchmark after a training run, a script after the previous one) took
    its cores for busy and ran on half of them.

    Examples
    --------
    >>> busy_cores() >= 0
    True
    """
    counts = []
    try:
        for _ in range(samples):
            counts.append(int(Path(loadavg).read_text().split()[3].split("/")[0]) - 1)
            time.sleep(interval)
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except OSError:
            return 0.0
    return float(statistics.median(counts))


def choose_device(preference="auto") -> torch.device:
    """The device to run on: ``"auto"`` (CUDA if present, else CPU), ``"cpu"``, ``"cuda[:i]"``.

    Raises
    ------
    LabelExplorerError
        If CUDA is asked for but not available, or the name is not a device.

    Examples
    --------
    >>> choose_device("cpu")
    device(type='cpu')
    """
    if isinstance(preference, torch.device):
        preference = str(preference)
    name = str(preference).lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise LabelExplorerError(f"device: {preference!r} is not a device; use 'auto', 'cpu' or 'cuda'") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LabelExplorerError(f"device: {preference!r} asked for, but CUDA is not available here; "
                                 "use device='auto' or 'cpu'")
    if device.type == "cpu":
        configure_threads()
    return device


def forked_rng(device: torch.device):
    """A context in which torch's global generators (CPU, and *device* if CUDA) may be re-seeded
    without changing the caller's random state.

    Examples
    --------
    >>> before = torch.get_rng_state()
    >>> with forked_rng(torch.device("cpu")):
    ...     _ = torch.manual_seed(123)
    >>> bool(torch.equal(before, torch.get_rng_state()))
    True
    """
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=cuda)


@contextlib.contextmanager
def flush_denormals() -> Iterator[bool]:
    """Treat denormal floats as zero on the CPU inside the block, then restore torch's default.

    Adam's second moments and the gradients of rarely used weights fall into the denormal
    range during training, and CPU arithmetic on denormals is many times slower.

    Examples
    --------
    >>> with flush_denormals():
    ...     float(torch.tensor([1e-44], dtype=torch.float32)[0])
    0.0
    """
    supported = torch.set_flush_denormal(True)
    try:
        yield supported
    finally:
        torch.set_flush_denormal(False)


def resolve_precision(precision: str, device: torch.device, *, checked: bool = False) -> str:
    """The precision to try first: ``"float32"`` or ``"bfloat16"``.

    ``"auto"`` gives bfloat16 on CUDA devices that support it and float32 on the CPU,
    unless *checked*: a caller that confirms bfloat16 against float32 with
    :func:`precision_agrees` also gets bfloat16 on a CPU with native bfloat16
    instructions (AVX512-BF16 or AMX), where it is faster (``bcnn``: ×1.2–1.3 on a Zen 4
    core, benchmarks/bench_bcnn.py); emulated bfloat16 is slower than float32.

    Examples
    --------
    >>> resolve_precision("auto", torch.device("cpu"))
    'float32'
    >>> resolve_precision("auto", torch.device("cpu"), checked=True) == (
    ...     "bfloat16" if native_cpu_bfloat16() else "float32")
    True
    """
    if precision not in PRECISIONS:
        raise LabelExplorerError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bfloat16"
    if device.type == "cpu" and checked and native_cpu_bfloat16():
        return "bfloat16"
    return "float32"


@functools.lru_cache(maxsize=1)
def native_cpu_bfloat16() -> bool:
    """True when this CPU has bfloat16 matrix instructions (the Linux CPU flags ``avx512_bf16`` or ``amx_bf16``).

    Examples
    --------
    >>> isinstance(native_cpu_bfloat16(), bool)
    True
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace").split()
    except OSError:  # not Linux: no way to tell cheaply, stay with float32
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Run matrix products in bfloat16 when *precision* is ``"bfloat16"``; otherwise do nothing.

    Examples
    --------
    >>> with autocast(torch.device("cpu"), "bfloat16"):
    ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    torch.bfloat16
    """
    if precision == "bfloat16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def precision_agrees(reduced: torch.Tensor, reference: torch.Tensor, scale: torch.Tensor,
                     tolerance: float = 0.1) -> bool:
    """True when ``max |reduced − reference| / scale`` is below *tolerance* (e.g. 0.1 σ).

    Examples
    --------
    >>> precision_agrees(torch.tensor([1.01]), torch.tensor([1.0]), torch.tensor([0.2]))
    True
    """
    difference = (reduced.float() - reference.float()).abs() / scale.float().clamp_min(1e-12)
    return bool(difference.max() < tolerance)


def memory_budget(device: torch.device, fraction: float = 0.25) -> int:
    """Bytes a chunk may use: *fraction* of the free GPU memory or of the available RAM.

    Examples
    --------
    >>> memory_budget(torch.device("cpu")) > 0
    True
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * fraction)
    try:
        with open("/proc/meminfo") as handle:
            info = dict(line.split(":", 1) for line in handle)
        available = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return int(available * fraction)


def rows_per_chunk(bytes_per_row: int, device: torch.device, *, maximum: int, fraction: float = 0.25) -> int:
    """How many rows fit in the memory budget, between 1 and *maximum*.

    Examples
    --------
    >>> rows_per_chunk(10**6, torch.device("cpu"), maximum=64)
    64
    """
    return int(max(1, min(maximum, memory_budget(device, fraction) // max(int(bytes_per_row), 1))))


def _threaded_chunks(function: Callable[[slice], object], n_rows: int, chunk: int, workers: int) -> list:
    slices = [slice(start, min(n_rows, start + chunk)) for start in range(0, n_rows, chunk)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="labelexplorer-chunk") as pool:
            return list(pool.map(function, slices))
    finally:
        torch.set_num_threads(threads)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA out-of-memory errors and failed CPU allocations.

    Examples
    --------
    >>> is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory"))
    True
    """
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def run_in_chunks(function: Callable[[slice], object], n_rows: int, chunk: int, *, workers: int = 1) -> list:
    """Call ``function(rows)`` over consecutive slices of *chunk* rows, halving on out-of-memory.

    Returns the list of results in order. With *workers* > 1 the chunks run in that many
    threads with one torch intra-op thread each (out-of-memory is then not retried): for
    small matrices this beats intra-op threads, whose OpenMP barriers cost more than
    they gain (``bcnn`` inference on 2 cores: ×1.8, benchmarks/bench_bcnn.py). *function*
    must then not depend on the order of the calls.

    Examples
    --------
    >>> run_in_chunks(lambda rows: rows.stop - rows.start, 10, 4)
    [4, 4, 2]
    >>> run_in_chunks(lambda rows: rows.start, 10, 4, workers=2)
    [0, 4, 8]
    """
    if workers > 1 and n_rows > chunk:
        return _threaded_chunks(function, n_rows, chunk, workers)
    results: list = []
    start = 0
    while start < n_rows:
        rows = slice(start, min(n_rows, start + chunk))
        try:
            results.append(function(rows))
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            if not is_out_of_memory(exc) or chunk == 1:
                raise
            chunk = max(1, chunk // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        start = rows.stop
    return results

