"""Patch-level use of VESL output: patch-seg targets, class vocabularies, the patch-seg export and a patch-level score."""
