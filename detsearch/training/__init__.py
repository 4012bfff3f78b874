"""Trainers that produce curves for the selector: graph mode (MoXing), Keras."""
