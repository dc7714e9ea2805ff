"""Data layer: tables, sequences, metadata, distances, transforms and batches."""
