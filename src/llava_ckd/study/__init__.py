"""A study: a recipe's plans over paired Student seeds, direct KD from every Teacher size, and the paper's layout,
as one resumable command (`run.py`) over derived cascades (`variants.py`), summarised with paired statistics
(`stats.py`, `summary.py`) and pictures (`plots.py`)."""
