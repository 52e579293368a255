"""The ground floor every stage stands on: workspace paths, atomic writes, errors, exit codes, devices, signals,
vocabulary."""
