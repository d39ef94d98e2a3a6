"""unlearn-kb: the LLM-unlearning knowledge base, its reference implementations and evaluation."""

__version__ = "0.1.0"
