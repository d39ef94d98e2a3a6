"""One module per runnable unlearning method; shipped as ``unlearn_kb.methods``.

A method exists because its registry record's ``implementation.entry`` points at it: there is
no second list to keep up to date.
"""
