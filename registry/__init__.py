"""The knowledge base as data (YAML records); shipped inside the package as ``unlearn_kb.registry_data``."""
