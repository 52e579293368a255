"""Hand-built PyTorch baselines (UNet family); knows nothing of nnU-Net."""
