"""Reporting: notebook context, figure style and plotting, figure index, the interactive explorer
and the papers' reference numbers."""
