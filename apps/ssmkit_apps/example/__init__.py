"""Example app: noisy waveform classification with a Mamba layer (the engine's whole path, small)."""
