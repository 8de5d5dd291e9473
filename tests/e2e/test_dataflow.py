"""Dataflow, offline: the dry-run job description carries the GPU configuration, the container, the
per-transform accelerator hint and VESL's options; the Flex Template metadata and the worker image
recipe stay in step with the code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vesl.dataflow import DataflowJob, flex_template_metadata, main
from vesl.options import _FIELDS

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "us-docker.pkg.dev/proj-x/vesl/worker:9.9"


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("dataflow") / "job.json"
    assert (
        main(
            [
                "dryrun",
                "--out",
                str(out),
                "--project",
                "proj-x",
                "--region",
                "europe-west4",
                "--bucket",
                "gs://vesl-test-bucket",
                "--image",
                IMAGE,
                "--gpu",
                "nvidia-l4",
                "--max-workers",
                "42",
                "--",
                "--input",
                "gs://vesl-test-bucket/shards/*.tar",
                "--output",
                "gs://vesl-test-bucket/out",
                "--preset",
                "grit",
            ]
        )
        == 0
    )
    return json.loads(out.read_text())


def test_gpu_configuration_reaches_the_job(job):
    options = job["options"]
    assert options["runner"] == "DataflowRunner" and options["project"] == "proj-x"
    assert options["region"] == "europe-west4" and options["max_num_workers"] == 42
    assert options["machine_type"] == "g2-standard-8"
    assert options["dataflow_service_options"] == [
        "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver;use_nvidia_mps"
    ]
    assert options["sdk_container_image"] == IMAGE and options["sdk_location"] == "container"
    assert options["temp_location"] == "gs://vesl-test-bucket/dataflow/temp"


def test_container_and_the_detection_stage_hint(job):
    environments = job["environments"]
    assert {env["container_image"] for env in environments.values()} == {IMAGE}
    hinted = {
        env_id
        for env_id, env in environments.items()
        if env["resource_hints"].get("beam:resources:accelerator:v1") == "type:nvidia-l4;count:1;install-nvidia-driver"
    }
    transforms = job["transforms"]
    assert transforms["DetectRegions"] in hinted  # the GPU stage asks for the GPU ...
    for stage in ("ReadShards", "FindDuplicateKeys", "ExtractPhrases", "FilterRegions", "WriteShardOutputs"):
        assert transforms[stage] not in hinted, stage  # ... the CPU stages do not


def test_a_dataflow_job_lists_its_input_on_the_workers(job):
    """--list_shards auto on Dataflow: the graph holds the pattern, and the listing and resume plan are stages."""
    transforms = job["transforms"]
    assert "ListShards" in transforms and "PlanShards" in transforms
    assert "CommittedShards" not in transforms  # the driver-side list of committed shards


def test_vesl_options_reach_the_job(job):
    config = job["vesl_config"]
    assert config["preset"] == "grit" and config["filter"]["score_threshold"] == 0.65
    assert config["detect"]["device"] == "cuda" and config["detect"]["dtype"] == "bfloat16"
    assert config["detect"]["share_model_across_processes"] is True
    assert job["options"]["input"] == ["gs://vesl-test-bucket/shards/*.tar"]
    assert job["options"]["output"] == "gs://vesl-test-bucket/out"


def test_cpu_workers_get_no_accelerator():
    args = DataflowJob("p", "r", "gs://b-bucket", IMAGE, gpu=None).args()
    assert "--dataflow_service_options" not in args and "--detect_accelerator" not in args
    assert args[args.index("--machine_type") + 1] == "n2-standard-8"
    with pytest.raises(ValueError, match="gs://"):
        DataflowJob("p", "r", "my-bucket", IMAGE).args()


def test_flex_template_metadata_lists_every_option_and_is_current():
    on_disk = json.loads((ROOT / "dataflow" / "flex-template" / "metadata.json").read_text())
    assert on_disk == flex_template_metadata(), "regenerate: python -m vesl.dataflow metadata > dataflow/..."
    names = {p["name"] for p in on_disk["parameters"]}
    assert {flag for flag, *_ in _FIELDS} | {"input", "output", "preset", "overwrite"} <= names
    assert {"detector_backend", "compile", "image_decoder", "write_webdataset"} <= names


def test_worker_image_bakes_everything_in():
    dockerfile = (ROOT / "dataflow" / "Dockerfile").read_text()
    for needed in (
        "requirements/lock.txt",
        "spacy-model.txt",
        "averaged_perceptron_tagger_eng",
        "NLTK_DATA=",
        "HF_HUB_OFFLINE=1",
        "/opt/apache/beam/boot",
        "FLEX_TEMPLATE_PYTHON_PY_FILE",
        "vesl.models.checkpoint check",
    ):
        assert needed in dockerfile, needed
    lock = (ROOT / "requirements" / "lock.txt").read_text()
    beam = next(line for line in lock.splitlines() if line.startswith("apache-beam"))
    assert f"BEAM_VERSION={beam.split('==')[1]}" in dockerfile  # the SDK harness matches the SDK
