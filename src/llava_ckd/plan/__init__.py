"""`llava-ckd plan`: parameters, memory per GPU, tokens, FLOPs and GPU-hours of a cascade before it runs."""
