"""Dataflow, offline: the dry-run job description carries the GPU (or TPU) configuration, the container,
the per-transform accelerator hint and VESL's options; the Flex Template metadata and the worker image
recipes stay in step with the code."""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vesl.dataflow import (
    TPU_SHAPES,
    DataflowJob,
    TpuDataflowJob,
    flex_template_metadata,
    main,
    tpu_environment_shape,
)
from vesl.options import _FIELDS

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "us-docker.pkg.dev/proj-x/vesl/worker:9.9"
TPU_IMAGE = "us-docker.pkg.dev/proj-x/vesl/worker:tpu-9.9"
ACCELERATOR_HINT = "beam:resources:accelerator:v1"
CPU_STAGES = ("ReadShards", "FindDuplicateKeys", "ExtractPhrases", "FilterRegions", "WriteShardOutputs")


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


# TPU workers. Expected values as Google's Dataflow TPU docs give them, written out here rather than read
# from vesl.dataflow.TPU_SHAPES, so that a wrong row of the table fails: shape -> (type, topology, machine, chips).
DATAFLOW_TPU_DOCS = {
    "v5e-1x1": ("tpu-v5-lite-podslice", "1x1", "ct5lp-hightpu-1t", 1),
    "v5e-2x2": ("tpu-v5-lite-podslice", "2x2", "ct5lp-hightpu-4t", 4),
    "v5e-2x4": ("tpu-v5-lite-podslice", "2x4", "ct5lp-hightpu-8t", 8),
    "v6e-1x1": ("tpu-v6e-slice", "1x1", "ct6e-standard-1t", 1),
    "v6e-2x2": ("tpu-v6e-slice", "2x2", "ct6e-standard-4t", 4),
    "v6e-2x4": ("tpu-v6e-slice", "2x4", "ct6e-standard-8t", 8),
    "v5p-2x2x1": ("tpu-v5p-slice", "2x2x1", "ct5p-hightpu-4t", 4),
}
V5E_1X1 = "type:tpu-v5-lite-podslice;topology:1x1"


@pytest.fixture(scope="module")
def tpu_job(tmp_path_factory):
    out = tmp_path_factory.mktemp("dataflow-tpu") / "job.json"
    where = ["--project", "proj-x", "--region", "us-west4", "--bucket", "gs://vesl-test-bucket", "--image", TPU_IMAGE]
    vesl = ["--input", "gs://vesl-test-bucket/shards/*.tar", "--output", "gs://vesl-test-bucket/out"]
    assert main(["dryrun", "--out", str(out), *where, "--tpu", "v5e-1x1", "--max-workers", "7", "--", *vesl]) == 0
    return json.loads(out.read_text())


def test_tpu_configuration_reaches_the_job(tpu_job):
    options = tpu_job["options"]
    assert options["dataflow_service_options"] == [f"worker_accelerator={V5E_1X1}"]  # no NVIDIA driver, no MPS
    assert options["machine_type"] == "ct5lp-hightpu-1t" and options["max_num_workers"] == 7
    assert options["sdk_container_image"] == TPU_IMAGE and options["sdk_location"] == "container"
    assert options["jax_compilation_cache"] == "gs://vesl-test-bucket/dataflow/jax-cache"


def test_tpu_hint_is_on_the_detection_stage_alone(tpu_job):
    environments, transforms = tpu_job["environments"], tpu_job["transforms"]
    assert {env["container_image"] for env in environments.values()} == {TPU_IMAGE}
    hints = {env_id: env["resource_hints"].get(ACCELERATOR_HINT) for env_id, env in environments.items()}
    assert hints[transforms["DetectRegions"]] == V5E_1X1  # the TPU stage asks for the TPU ...
    for stage in CPU_STAGES:
        assert hints[transforms[stage]] is None, stage  # ... the CPU stages ask for nothing
    assert sorted(hint for hint in hints.values() if hint) == [V5E_1X1]


def test_tpu_job_runs_the_jax_detector_in_one_process_per_vm(tpu_job):
    detect = tpu_job["vesl_config"]["detect"]
    assert detect["backend"] == "jax" and detect["device"] == "tpu" and detect["dtype"] == "bfloat16"
    assert detect["share_model_across_processes"] is True and detect["model_copies"] in (None, 1)
    assert detect["batch_size"] == 64  # one v5e chip
    assert detect["options"]["all_devices"] is True
    assert detect["options"]["compilation_cache"] == "gs://vesl-test-bucket/dataflow/jax-cache"


@pytest.mark.parametrize("shape", sorted(DATAFLOW_TPU_DOCS))
def test_each_tpu_shape_gets_its_machine_type(shape):
    tpu_type, topology, machine, chips = DATAFLOW_TPU_DOCS[shape]
    for spelling in (shape, f"{tpu_type};{topology}", f"type:{tpu_type};topology:{topology}"):
        args = TpuDataflowJob("p", "r", "gs://b-bucket", TPU_IMAGE, tpu=spelling).args()
        value = dict(itertools.pairwise(args))  # flag -> its value
        assert value["--machine_type"] == machine, spelling
        assert value["--dataflow_service_options"] == f"worker_accelerator=type:{tpu_type};topology:{topology}"
        assert value["--detect_accelerator"] == f"type:{tpu_type};topology:{topology}"
        assert value["--batch_size"] == str(64 * chips)  # 64 images per chip, the batch split over the chips
        assert "nvidia" not in " ".join(args)  # no NVIDIA driver, no MPS
    assert TPU_SHAPES[shape].chips == chips and set(TPU_SHAPES) == set(DATAFLOW_TPU_DOCS)


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--tpu", "v5e-1x1", "--machine-type", "ct5lp-hightpu-4t"], "Dataflow requires ct5lp-hightpu-1t"),
        (["--tpu", "v6e-2x2", "--machine-type", "ct5lp-hightpu-4t"], "Dataflow requires ct6e-standard-4t"),
        (["--tpu", "v5e-3x3"], "unknown TPU shape 'v5e-3x3'"),
        (["--tpu", "tpu-v5-lite-podslice;2x2x1"], "unknown TPU shape"),
        (["--tpu", "v5e-1x1", "--gpu", "nvidia-l4"], "not both"),
    ],
)
def test_a_wrong_tpu_request_is_a_usage_error_before_any_work(flags, said, tmp_path, monkeypatch, capsys):
    import pipelines.vesl

    monkeypatch.setattr(pipelines.vesl, "run", lambda *a, **k: pytest.fail("the pipeline was built"))
    out = tmp_path / "job.json"
    assert main(["dryrun", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vesl.dataflow: error: ") and said in err and err.count("\n") == 1, err
    assert not out.exists()


def test_tpu_env_prints_a_shapes_build_args_and_checks_an_environment(capsys):
    assert main(["tpu-env", "--tpu", "v6e-2x4"]) == 0
    assert capsys.readouterr().out.split() == ["TPU_ACCELERATOR_TYPE=v6e-8", "TPU_CHIPS_PER_HOST_BOUNDS=2,4,1"]
    for name, shape in TPU_SHAPES.items():
        assert tpu_environment_shape(shape.environment()) == name
    mixed = {**TPU_SHAPES["v5e-2x2"].environment(), "TPU_CHIPS_PER_HOST_BOUNDS": "1,1,1"}
    with pytest.raises(ValueError, match="no shape's"):
        tpu_environment_shape(mixed)


def test_tpu_worker_image_bakes_everything_in():
    dockerfile = (ROOT / "dataflow" / "Dockerfile.tpu").read_text()
    jax = importlib.metadata.version("jax")  # the TPU image runs the JAX the tests run
    for needed in (
        f'JAX_SPEC="jax[tpu]=={jax}"',
        "libtpu_releases.html",
        "etils[epath,epath-gcs]",  # a gs:// compilation cache
        "--index-url https://download.pytorch.org/whl/cpu",
        "requirements/lock.txt",
        "spacy-model.txt",
        "averaged_perceptron_tagger_eng",
        "NLTK_DATA=",
        "ENV HF_HUB_OFFLINE=1",  # the workers' environment, not only the build's check
        "vesl.models.checkpoint check",
        "python -m vesl.dataflow tpu-env --check",
        'ENTRYPOINT ["/opt/apache/beam/boot"]',
        "COPY --from=beam /opt/apache/beam /opt/apache/beam",
    ):
        assert needed in dockerfile, needed
    for name, value in TPU_SHAPES["v5e-1x1"].environment().items():  # the default shape's libtpu environment
        assert f"{name}={value}" in dockerfile, name
    for name in TPU_SHAPES["v5e-1x1"].build_args():  # the per-shape values are build args
        assert f"ARG {name}=" in dockerfile and f"{name}=${{{name}}}" in dockerfile, name
    lock = (ROOT / "requirements" / "lock.txt").read_text()
    beam = next(line for line in lock.splitlines() if line.startswith("apache-beam"))
    assert f"BEAM_VERSION={beam.split('==')[1]}" in dockerfile
    for used in set(re.findall(r"requirements/[\w.-]*\w", dockerfile)):  # the pins it installs from exist
        assert (ROOT / used).is_file(), used


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_selects_a_tpu_job_only_when_asked():
    def dryrun(*variables: str) -> str:
        # Run from `make test` too: without the parent make's flags, and without "Entering directory" lines.
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        command = ["make", "--no-print-directory", "-n", "-o", "setup", "dataflow-dryrun", *variables]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True, env=env)
        return done.stdout.splitlines()[-1]

    tpu = dryrun("TPU=v6e-1x1", "PROJECT=proj-x")
    assert "--tpu 'v6e-1x1'" in tpu and "--gpu" not in tpu
    assert "--image us-docker.pkg.dev/proj-x/vesl/worker:tpu-v6e-1x1 " in tpu
    gpu = dryrun("PROJECT=proj-x")
    assert "--gpu nvidia-l4" in gpu and "--tpu" not in gpu
    assert "--image us-docker.pkg.dev/proj-x/vesl/worker:latest " in gpu
