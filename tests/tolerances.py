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

# The paper-size generator "should land near 200 GFLOP per 256x256 frame" (issue 2).
PAPER_GENERATOR_GFLOP = (150.0, 250.0)

# The frame phase barely depends on K (DESIGN.md §3): only attention over K*h*w keys grows.
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
