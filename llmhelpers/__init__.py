"""llmhelpers: the code behind the LLMs from Scratch notebooks, one module per idea."""

__version__ = "0.1.0"
