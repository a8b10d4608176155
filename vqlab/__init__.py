"""vqlab: vector-quantized tokenizers that do not collapse, and the diagnostics that show it."""
__version__ = "0.1.0"
