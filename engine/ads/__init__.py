"""Ads: the labelled impression log, pCTR (LightGBM binary) and its isotonic calibration."""
