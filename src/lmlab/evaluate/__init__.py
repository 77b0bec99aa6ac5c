"""The evaluate stages: metrics, test perplexity, the driver, results in the W&B run."""
