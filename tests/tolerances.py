"""Every numeric tolerance of the test suite, with the reason for its value."""

# Landmark normalise/denormalise round trip in float64: a handful of 3x3 products and
# an SVD on values of order 100 px leave errors near 1e-13; 1e-9 px is far below a pixel.
ROUNDTRIP_PX = 1e-9

# PyTorch float32 against float64 for the random-initialised generator on real faces.
# The bound: a well-conditioned random model is within 100 dB (an ill-conditioned
# one, with absolute-grid flows, measured 59 dB).
GENERATOR_FP32_VS_FP64_MIN_PSNR_DB = 100.0

# Spectral-norm folding replaces W/sigma computed on the fly by the same quotient stored:
# identical arithmetic up to float32 rounding of one division per weight.
FOLDED_MAX_ABS = 1e-5

# Anti-aliased rasteriser pixels keep their group's hue; coverage scales all channels
# together, rounding to uint8 moves a channel ratio by at most ~2/255 at half coverage.
HUE_RATIO = 0.05

# The paper-size generator "should land near 200 GFLOP per 256x256 frame".
PAPER_GENERATOR_GFLOP = (150.0, 250.0)

# The frame phase barely depends on K : only attention over K*h*w keys grows.
GENERATOR_K8_OVER_K1_MAX = 1.05

# Spectral norm divides by a power-iteration estimate of sigma (15 iterations at init),
# not the exact largest singular value: a folded weight's true norm is 1 to within ~1 %.
FOLDED_SPECTRAL_NORM_REL = 0.02

# The One-Euro filter at rest (min_cutoff 1 Hz at 30 fps: alpha = 0.17) averages ~11 frames,
# so white noise keeps about sqrt(alpha / (2 - alpha)) = 0.3 of its standard deviation;
# 0.4 leaves room for the speed term (beta 0.01: noise of 2 px raises the cutoff ~0.3 Hz).
ONE_EURO_JITTER_RATIO = 0.4
# After a 100 px step the filter must have caught up to within 1 px in half a second.
ONE_EURO_STEP_PX = 1.0

# Kernels (mnt.kernels), on unit-normal test tensors. Warp against PyTorch's float32
# grid_sample: both compute the sampling coordinates in FP32 but in different orders, and
# one ulp of a coordinate near 128 px is 7.6e-6 px; neighbouring unit-normal samples differ
# by up to ~5, so outputs may differ by ~4e-5 (measured up to 1.2e-5 at 128x96).
KERNEL_WARP_F32_MAX_ABS = 4e-5
# Attention against float64 SDPA: FP32 logits, exp-sum and weighted sums over up to 512 keys
# of unit-scale values (measured 1.9e-6 with sharp logits; PyTorch float32 itself 5.3e-6).
KERNEL_ATTN_F32_MAX_ABS = 1e-5
# FP16 storage: the FP32 result rounded once to FP16 may land one FP16 step from the
# reference's own rounding (a half step each), on top of the FP32 differences above.
KERNEL_F16_MAX_ULP = 1.0
# The GPU kernels against PyTorch on the GPU: the same bounds plus CUDA's expf (within 2 ulp
# of glibc's), scaled by the logit range; 2x the CPU bounds.
KERNEL_GPU_FACTOR = 2.0

# mnt::Warp / mnt::CrossAttention reference functions (runtime/backends/mnt_ops.py) in ONNX
# Runtime against PyTorch float64. FP32 storage: float32 coordinates, weights and sums on
# values of order 1 leave a few float32 ulps (the exported GridSample test's bound).
MNT_OPS_FP32_MAX_ABS = 1e-5
# FP16 storage: the maths runs in FP32 and the result is rounded to float16 once, at most
# half an fp16 ulp (2^-11 relative); 2^-10 of the output's peak leaves room for the FP32 part.
MNT_OPS_FP16_MAX_REL = 2.0**-10
# Plugin variant against the standard graph, both in ONNX Runtime on the goldens (K=3), PSNR
# over each output's range. fp32: the same float32 maths; only the flow pooling sums in
# another order (ReduceMean in mnt::Warp's function, AveragePool in the standard graph):
# measured bit-identical except warped_2 (176 dB). fp16: the plugin's attention sums in FP32
# where the standard graph rounds the weights to FP16 first; ONNX Runtime's CPU runs FP16
# MatMul in FP32 and drops that rounding (measured 133 dB, else identical), an executor that
# keeps it differs by FP16 noise, which the FP16 graphs' own 60 dB against float64 measures.
PLUGIN_VS_STANDARD_MIN_PSNR_DB = {"fp32": 140.0, "fp16": 60.0}
# TensorRT engines against ONNX Runtime (CPU) on the goldens, PSNR over each output's range
# (tests/export/tensorrt/test_builder.py, GPU only; not yet measured). FP32 (TF32 is switched off by
# the builder): only summation order differs, the ONNX gate's 60 dB; FP16: the typed graph
# is the same on both sides, but TensorRT's FP16 kernels round differently from ONNX
# Runtime's CPU FP16 (which computes most ops in FP32): the FP16 parity gate's 40 dB.
TENSORRT_VS_ONNXRUNTIME_MIN_PSNR_DB = {"fp32": 60.0, "fp16": 40.0}

# mediapipe's face networks converted to ONNX (mnt.export.faces) against the TFLite
# interpreter, FP32: measured at most 2.0e-4 px (mesh points, 192 px crop) and 3.1e-5 px
# (detector boxes, 128 px input) on 28 real images; 1e-3 px is 5x that and far below a
# conversion error (a wrong layout or pad moves points by whole pixels). The build's gates
# are in mnt.export.faces.gates.
FACE_FP32_MAX_PX = 1e-3

# The ONNX landmark backend (runtime/landmarkers/onnx_mesh.py) against mediapipe's own face
# mesh, 68 points in image pixels. Photos (static mode): the same detection, ROI and mesh,
# only float32 order differs: measured 5e-4 px on the astronaut; 0.05 px bounds it.
FACE_PHOTO_MAX_PX = 0.05
# Tracking through the six shared driving clips (2700 frames, faces 140-185 px between the
# outer eye corners), FP32: mean 0.034-0.065 px per clip, 99th percentile 0.11-0.28 px,
# max 0.74 px, and no frame where only one of them found a face. The rounding differences
# feed back through the ROI from the last frame, so they grow with the clip. The bar: mean
# 0.15 px and p99 0.5 px (about twice the worst clip), a small fraction of the One-Euro
# filter's own jitter allowance and far below a changed ROI rule (a ROI scale of 1.4
# instead of 1.5 moves points by pixels).
FACE_TRACK_MEAN_PX = 0.15
FACE_TRACK_P99_PX = 0.5

# Issue 31, ONNX Runtime's u8 x s8 INT8 kernels on x86 without VNNI (AVX2, AVX-512 without
# VNNI) add pairs of products in saturating 16 bits (calibration/README.md). Modelled in numpy
# on the tiny disentangler's all-INT8 graph and its 6 search samples, saturation took the worst
# output from 53.1 to 31.7 dB against FP32 (the AVX2-only EPYC of the issue measured 31.59 dB
# in ONNX Runtime itself); 3 dB is far below that loss and far above rounding.
U8S8_SATURATION_MIN_LOSS_DB = 3.0
# The all-INT8 tiny disentangler's slack over its 30 dB gate on the search samples, where the
# held-back test wants "no problem seen": about 23 dB here. The figure is the same on every
# x86 CPU only because mnt's sessions ask for exact INT8 products where the kernels saturate;
# without that the AVX2-only EPYC measured 1.59 dB.
INT8_SEARCH_SLACK_MIN_DB = 10.0

# dlib's face network re-implemented in PyTorch (export/train/face_network.py) against
# dlib-bin's compute_face_descriptor on the same 150 px chips: the same float32 arithmetic in
# another order (convolutions folded with their affine layers); measured at most 2.8e-7 on
# the six shared and packaged portraits, descriptors of norm ~1.4.
FACE_DESCRIPTOR_MAX_ABS = 1e-5

# The trainer's face chip is an upright square from the 68 points' box (a perceptual crop,
# not dlib's aligned chip): its descriptor lies 0.11-0.46 from dlib's own (the painting s9
# the farthest), so it must stay within dlib's same-person distance of 0.6.
FACE_CHIP_DESCRIPTOR_DISTANCE = 0.6
