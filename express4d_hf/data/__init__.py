"""Data layer: official release reader, procedural corpus, HF dataset build, torch batches."""
