"""3D medical segmentation: MambaClinix (HGConv + Mamba U-Net) against MONAI baselines."""
