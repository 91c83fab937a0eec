"""Image-retrieval ablation benchmark: frozen backbones, trained projection heads, exact cosine search."""

__version__ = "0.1.0"
