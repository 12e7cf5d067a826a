"""Drawing: PDF pages of patterns, colour scales, the axes-free canvas, page tables."""
