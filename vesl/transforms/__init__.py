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


def freeze_loaded_objects() -> None:
    """Put every object alive now out of the cyclic garbage collector's reach (``gc.freeze``), once a
    worker has loaded what it keeps for its whole life (modules, the model, spaCy, tokenizers). A full
    collection otherwise rescans those ~700k objects each time (0.4 s a time on the development VM,
    ~0.1 ms an image at 8,000 images); frozen, it scans only what the records have created since."""
    import gc

    gc.collect()
    gc.freeze()
