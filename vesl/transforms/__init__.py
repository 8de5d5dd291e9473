"""Thin Beam wrappers, one per stage; the logic they call lives in the pure modules."""

RECORDS = "records"
REJECTS = "rejects"
METRICS_NAMESPACE = "vesl"
