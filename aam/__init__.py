"""AAM (Attention All Microbes): deep learning on microbiome amplicon tables by reading ASV sequences."""

__version__ = "0.1.0"
