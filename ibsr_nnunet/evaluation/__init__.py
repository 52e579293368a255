"""Scoring: per-case metrics, evaluate, the leaderboard, training history and the figures."""
