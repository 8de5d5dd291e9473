"""VESL: image-caption shards -> noun phrases -> OWLv2 regions -> region-text shards."""

__version__ = "0.1.0"
