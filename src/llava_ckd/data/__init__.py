"""LLaVA conversation data -> model inputs; the synthetic shapes benchmark."""
