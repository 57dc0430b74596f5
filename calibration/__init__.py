"""mnt.calibration: INT8 by explicit Q/DQ quantisation from real frames (see README.md)."""
