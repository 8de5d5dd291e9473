"""Region and image keep rules. No Beam import here."""
