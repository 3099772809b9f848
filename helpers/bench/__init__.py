"""``python -m helpers.bench``: the guide's speed ladder at real scale, measured on this device, against its limit.

The rungs, each one setting added to the best rung so far: full precision and PNDM at 50 steps (the guide's
baseline), half precision, DPM-Solver++ at 20 steps, channels-last memory layout with fused QKV projections,
attention heads zero-padded to a multiple of 64, on a CPU with AVX2 or AVX-512 the project's fused attention kernel
(flash_attention.cpp, compiled at first use) and then the UNet's linear layers on oneDNN with their weights packed
once (linear.py), on an x86 CPU with NNPACK the float32 3x3 convolutions of the UNet and the VAE decoder by
Winograd's algorithm wherever a layer measured faster that way (winograd.py), regional torch.compile (the UNet's
repeated block, compiled once and reused; kept when its UNet step is not slower), torch.compile of the whole UNet
and VAE decoder, and last, on a Linux CPU, an allocator setting
(glibc keeps freed memory for reuse instead of handing it back to the system and faulting it in again at the
next call; it is last because it cannot be taken back). These are *exact* rungs: they change precision,
solver/step count as the guide does, layout, allocation, compilation or kernels, never the model. Each rung adds
its own setting to the best rung measured so far (the baseline's settings if none): a rung whose end-to-end time
is slower than that is printed with ``kept: no``, and the rungs after it build on the best settings instead (from
a freshly loaded pipeline when a setting must be taken off), so ``--rungs 1,3`` runs DPM-Solver++ in float32.
On a CPU that emulates bfloat16 (no AMX or AVX-512 BF16, or
capped to AVX2) the half-precision rung is left out unless ``--rungs`` names it (``all`` does). A rung so slow that
its steps times one UNet call already take over twice the best end-to-end time (half precision so named) is not
timed further: its end-to-end time is that lower bound, and it is not kept. With
``--approx``, three *approximate* rows follow: the best exact rung at fewer steps than the guide's 20, and at 20
steps token merging (tomesd, ratio 0.5) and DeepCache (a full UNet step every 3rd step) on the best rung's
settings without torch.compile; each with its largest and mean pixel difference from the best exact rung's image
for the same seed.

Before the ladder, a short probe measures this machine's limit: the best matrix-multiply throughput at
UNet-like sizes in float32 and in the device's 16-bit type (helpers.bench.peak; not where the CPU emulates bfloat16
and no picked rung runs in it); it probes again after the rungs and keeps the higher reading. For each rung: the UNet's
latency per step (one call on a batch of 2: classifier-free guidance, made as the pipeline makes it), the VAE decode
time, end-to-end seconds per image (measured directly when it is affordable, else steps x UNet + text encoder +
decode: the ``e2e how`` column says which), speedup over the baseline, iterations per second, core-seconds per
image (CPU), achieved TFLOP/s with FLOPs counted by torch.utils.flop_counter on a meta-device copy, the UNet's
TFLOP/s as a percentage of the measured peak for its dtype (``unet % peak``), and whether the rung was kept.

With ``--profile``, each measured rung (and OpenVINO, with ``--peers``) is followed by one more UNet step and
decode under the profiler: seconds per kind of work (convolution, attention, linear, normalisation, other) and each
kind's share of the measured peak, printed, written to profile.csv and drawn in profile.png.

The modules, in the order a run uses them: ``peak`` (the limit), ``flops`` (the cost), ``ladder`` (the rungs and the
climb), ``runner`` (the pipeline moved from rung to rung and timed), ``attention`` (padded heads and the kernel's
processor), ``linear`` (oneDNN's packed linear layers), ``winograd`` (NNPACK's convolutions), ``profile`` (where a
call's time goes), ``peers`` (OpenVINO and ONNX Runtime), ``helpers.bench_figures`` (bench.csv, bench.json and the
profile's table and chart, written, and read back for notebook 01), and ``__main__`` (the command).
"""
