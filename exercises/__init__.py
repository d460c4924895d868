"""Your transformer: one module per stage, in learning order. Open s01_vocab.py first.

Each file's docstrings are the contract; replace every ``raise NotImplementedError`` with code
and run ``python -m grader`` to see where you stand.
"""
