"""Accelerate training loops that end in loadable folders (``from_pretrained``)."""
