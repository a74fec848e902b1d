"""Shared pieces of UGRO's training scripts (train_production.py, train_single_test.py).

Kept beside the scripts so that a synced `scripts/` directory is all a node needs.
"""
