"""The answer key: one module per stage, the same names, signatures and docstrings as exercises/.

It is also the fallback: when a stage you have not finished is needed by the one being graded,
the grader loads it from here and says so.
"""
