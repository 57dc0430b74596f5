"""mnt.calibration: INT8 by explicit quantisation from real frames (not built yet)."""
