"""mnt.kernels: CUDA grid-sample and attention kernels and their loader (not built yet)."""
