"""The ground floor every stage stands on: workspace paths, the conversion manifest, JSON and atomic writes, errors,
exit codes, devices, signals, vocabulary."""
