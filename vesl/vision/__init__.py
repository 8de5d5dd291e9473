"""Image decoding, detector-input geometry and box math. No Beam import here."""
