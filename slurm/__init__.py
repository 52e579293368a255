"""The sbatch templates and local-cluster.sh, shipped inside the package as ibsr_nnunet.campaign.templates."""
