"""The kata's grader: a scorecard for learners and an autograder for courses.

Run ``python -m grader --help``. The modules here import no torch at import time, so the
command line answers quickly; torch is imported only where a stage is actually run.
"""
