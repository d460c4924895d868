"""The fixture kata's answer key."""
