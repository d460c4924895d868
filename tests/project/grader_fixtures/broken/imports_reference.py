"""A deliberately dishonest s02_scale: passes by importing the answer key."""

from reference.s02_scale import scale  # noqa: F401
