"""Vector quantizers, k-means and nearest-code search."""
