"""Closure planning: calibration of measurements and device sizing aids (#5)."""
