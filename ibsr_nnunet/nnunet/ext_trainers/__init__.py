"""What nnU-Net's own CLI loads through nnUNet_extTrainer: our trainer classes, built on first use."""
