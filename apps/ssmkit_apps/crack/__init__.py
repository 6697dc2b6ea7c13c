"""Crack segmentation: SCSegamba (GBC + SS2D with the structure-aware scan) against a U-Net baseline."""
