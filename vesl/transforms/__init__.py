"""Thin Beam wrappers, one per stage; the logic they call lives in the pure modules."""

RECORDS = "records"
REJECTS = "rejects"
CHECKS = "checks"  # SourceChecks of the read stage
METRICS_NAMESPACE = "vesl"


def reject_failed_batch(failed, stage: str, reason: str, record_of):
    """RunInference's dead letter (batch, exception) -> one Reject per record of the batch."""
    from vesl.records import Reject

    batch, exc = failed
    detail = f"{type(exc).__name__}: {exc}"[:500]
    for item in batch:
        yield Reject.of(record_of(item), stage, reason, detail)
