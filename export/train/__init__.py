"""The reference trainer (paper supplement A3-A4 and B): data from videos through the
runtime's own landmark and crop code, landmark statistics, the landmark disentangler,
the adversarial generator training, and the self-reenactment evaluation."""
