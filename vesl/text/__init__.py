"""Caption -> noun phrases (detector queries). No Beam import here."""
