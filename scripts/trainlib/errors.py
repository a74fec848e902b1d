"""The one error type the training scripts turn into a clean line and exit code 2."""


class TrainingSetupError(Exception):
    """Bad options or inputs, found before any training starts (the same on every rank)."""
