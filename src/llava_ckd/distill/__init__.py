"""Distillation math: divergences, vocabulary alignment, chunked LM-head losses, RDist, cached signals."""
