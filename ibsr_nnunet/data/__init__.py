"""IBSR18 as people have it on disk, made into nnU-Net raw data: layouts, label codings, splits, volume I/O,
preprocessing, phantoms, convert."""
