"""Google Cloud Dataflow: the flags of a GPU or TPU job, an offline dry run that writes the job
description, and the Flex Template metadata.

    python -m vesl.dataflow args    --project P --region R --bucket B --image IMAGE [--gpu nvidia-l4 | --tpu v5e-1x1] ...
    python -m vesl.dataflow dryrun  --out out/dataflow/job.json [same flags] -- [VESL options]
    python -m vesl.dataflow submit  [same flags] -- --input 'gs://...' --output gs://... [VESL options]
    python -m vesl.dataflow metadata > dataflow/flex-template/metadata.json
    python -m vesl.dataflow tpu-env --tpu v5e-2x2   # the shape's build args of dataflow/Dockerfile.tpu

GPU workers (see README, "Run on Dataflow"): the accelerator goes to the job
(``--dataflow_service_options worker_accelerator=...``) and, as a Beam resource hint, to the
detection stage (``--detect_accelerator``); several SDK processes share the GPU through NVIDIA MPS
(``use_nvidia_mps``) and one model per machine (``--share_model_across_processes``). The worker
image is ``dataflow/Dockerfile``: requirements, the NLTK tagger, the spaCy model and (by default) the
checkpoint are baked in, so workers download nothing at run time.

TPU workers (``--tpu SHAPE``, one of ``TPU_SHAPES``): single-host slices whose machine type is fixed by
the TPU type and topology; the jax detector backend in one model process per VM (a TPU cannot be
opened by two processes), sharding each batch over the host's chips. The image is
``dataflow/Dockerfile.tpu``, built once per shape (libtpu reads the shape from its environment).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# GPU type -> a machine type it is offered on (L4 needs G2, A100 needs A2, H100 needs A3).
GPU_MACHINES = {
    "nvidia-l4": "g2-standard-8",
    "nvidia-tesla-t4": "n1-standard-8",
    "nvidia-tesla-a100": "a2-highgpu-1g",
    "nvidia-a100-80gb": "a2-ultragpu-1g",
    "nvidia-h100-80gb": "a3-highgpu-1g",
}
DEFAULT_GPU = "nvidia-l4"
DEFAULT_TPU = "v5e-1x1"
IMAGE = "us-docker.pkg.dev/my-project/vesl/worker"  # the CLI's default image, tagged latest or tpu-SHAPE

# What libtpu must find in a custom container on a single-host Dataflow TPU worker, whatever the shape, as
# Dataflow's TPU troubleshooting page gives it: one host, this one, and no metadata-server query for a slice.
TPU_HOST_ENVIRONMENT = {
    "TPU_SKIP_MDS_QUERY": "1",
    "TPU_HOST_BOUNDS": "1,1,1",
    "TPU_WORKER_HOSTNAMES": "localhost",
    "TPU_WORKER_ID": "0",
}
# Images per chip in one detector batch. The jax backend splits each batch over the host's chips
# (--jax_all_devices), so every chip runs 64 images a step, as the L4 of a GPU job does. OWLv2 L/14 at
# 448 px in bf16: ~1 GB of weights and, estimated (not measured), ~5 GB of activations for 64 images (the
# 16 x 1025 x 1025 attention scores of each layer dominate): well inside a v5e chip's 16 GB of HBM, and
# large enough that a step is mostly matmuls, not dispatch. Every batch size is one more XLA program.
TPU_BATCH_PER_CHIP = 64


@dataclass(frozen=True)
class TpuShape:
    """A single-host Dataflow TPU slice: what the job asks for (type and topology), the one machine type
    Dataflow accepts for that pair, and the two values of libtpu's environment that differ by shape."""

    type: str  # Dataflow's TPU type (worker_accelerator=type:...)
    topology: str
    machine_type: str
    accelerator_type: str  # libtpu's TPU_ACCELERATOR_TYPE
    chips_per_host_bounds: str  # libtpu's TPU_CHIPS_PER_HOST_BOUNDS: the host's chip grid, x,y,z

    @property
    def chips(self) -> int:
        return math.prod(int(n) for n in self.chips_per_host_bounds.split(","))

    @property
    def accelerator(self) -> str:
        """Dataflow's spelling: the worker_accelerator service option and the stage's resource hint."""
        return f"type:{self.type};topology:{self.topology}"

    def build_args(self) -> dict[str, str]:
        """The environment that differs between shapes: dataflow/Dockerfile.tpu's build args."""
        return {"TPU_ACCELERATOR_TYPE": self.accelerator_type, "TPU_CHIPS_PER_HOST_BOUNDS": self.chips_per_host_bounds}

    def environment(self) -> dict[str, str]:
        return {**TPU_HOST_ENVIRONMENT, **self.build_args()}


# The one table of TPU shapes: the job's flags, the worker image's environment and the docs follow it.
TPU_SHAPES = {
    "v5e-1x1": TpuShape("tpu-v5-lite-podslice", "1x1", "ct5lp-hightpu-1t", "v5litepod-1", "1,1,1"),
    "v5e-2x2": TpuShape("tpu-v5-lite-podslice", "2x2", "ct5lp-hightpu-4t", "v5litepod-4", "2,2,1"),
    "v5e-2x4": TpuShape("tpu-v5-lite-podslice", "2x4", "ct5lp-hightpu-8t", "v5litepod-8", "2,4,1"),
    "v6e-1x1": TpuShape("tpu-v6e-slice", "1x1", "ct6e-standard-1t", "v6e-1", "1,1,1"),
    "v6e-2x2": TpuShape("tpu-v6e-slice", "2x2", "ct6e-standard-4t", "v6e-4", "2,2,1"),
    "v6e-2x4": TpuShape("tpu-v6e-slice", "2x4", "ct6e-standard-8t", "v6e-8", "2,4,1"),
    "v5p-2x2x1": TpuShape("tpu-v5p-slice", "2x2x1", "ct5p-hightpu-4t", "v5p-8", "2,2,1"),
}


def tpu_shape(choice: str) -> TpuShape:
    """A TPU_SHAPES name (``v5e-1x1``) or Dataflow's spelling of one (``tpu-v5-lite-podslice;1x1`` or
    ``type:tpu-v5-lite-podslice;topology:1x1``); ValueError (one line) for anything else, before any work,
    since Dataflow would refuse it only at submission."""
    if choice in TPU_SHAPES:
        return TPU_SHAPES[choice]
    parts = [part.strip().removeprefix("type:").removeprefix("topology:") for part in choice.split(";")]
    for shape in TPU_SHAPES.values():
        if parts == [shape.type, shape.topology]:
            return shape
    raise ValueError(f"unknown TPU shape {choice!r}: give one of {', '.join(TPU_SHAPES)} (or TYPE;TOPOLOGY of one)")


def tpu_environment_shape(environ: Mapping[str, str]) -> str:
    """The TPU_SHAPES name whose libtpu environment ``environ`` holds: the TPU image checks at build time
    that its build args are one shape's, not a mix of two. ValueError otherwise."""
    found = {name: environ.get(name) for name in TPU_SHAPES[DEFAULT_TPU].environment()}
    for name, shape in TPU_SHAPES.items():
        if shape.environment() == found:
            return name
    given = " ".join(f"{name}={value}" for name, value in found.items())
    raise ValueError(f"the TPU environment is no shape's ({given}); `tpu-env --tpu SHAPE` prints a shape's build args")


@dataclass(frozen=True)
class DataflowJob:
    project: str
    region: str
    bucket: str  # gs://name, for temp and staging files
    image: str  # the worker container (dataflow/Dockerfile)
    gpu: str | None = DEFAULT_GPU  # None: CPU workers
    gpu_count: int = 1
    machine_type: str | None = None  # default: GPU_MACHINES[gpu], or n2-standard-8 on CPU
    max_workers: int = 100
    mps: bool = True  # several SDK processes share each GPU
    disk_size_gb: int = 100
    job_name: str | None = None

    @property
    def accelerator(self) -> str | None:
        if not self.gpu:
            return None
        return f"type:{self.gpu};count:{self.gpu_count};install-nvidia-driver"

    @property
    def bucket_url(self) -> str:
        bucket = self.bucket.rstrip("/")
        if not bucket.startswith("gs://"):
            raise ValueError(f"--bucket must be a gs:// URL, got {self.bucket!r}")
        return bucket

    def common_flags(self, machine: str) -> list[str]:
        """The flags of every job, whatever its workers: where it runs, its container and its machines."""
        bucket = self.bucket_url
        flags = [
            "--runner", "DataflowRunner",
            "--project", self.project,
            "--region", self.region,
            "--temp_location", f"{bucket}/dataflow/temp",
            "--staging_location", f"{bucket}/dataflow/staging",
            "--sdk_container_image", self.image,
            "--sdk_location", "container",
            "--machine_type", machine,
            "--max_num_workers", str(self.max_workers),
            "--disk_size_gb", str(self.disk_size_gb),
            "--experiments", "use_runner_v2",
        ]  # fmt: skip
        return flags + (["--job_name", self.job_name] if self.job_name else [])

    def args(self) -> list[str]:
        flags = self.common_flags(self.machine_type or GPU_MACHINES.get(self.gpu or "", "n2-standard-8"))
        if self.accelerator:
            service = f"worker_accelerator={self.accelerator}" + (";use_nvidia_mps" if self.mps else "")
            flags += [
                "--dataflow_service_options", service,
                "--detect_accelerator", self.accelerator,
                "--device", "cuda",
                "--dtype", "bfloat16",
                "--batch_size", "64",
                "--share_model_across_processes", "true",
            ]  # fmt: skip
        return flags


@dataclass(frozen=True)
class TpuDataflowJob(DataflowJob):
    """A job on TPU workers (image: dataflow/Dockerfile.tpu built for the same shape). The shape fixes the
    machine type, so another one is refused here, before any work. The detector is the jax backend in
    one model process per VM, shared by the SDK processes that do the CPU stages: a TPU can be opened by
    one process only, and that process splits each batch over all the host's chips. gpu_count and mps
    do not apply."""

    gpu: str | None = None
    tpu: str = DEFAULT_TPU  # a TPU_SHAPES name, or TYPE;TOPOLOGY

    def __post_init__(self) -> None:
        if self.gpu:
            raise ValueError(f"a TPU job has no GPU: give --tpu or --gpu, not both (got --gpu {self.gpu})")
        shape = self.shape
        if self.machine_type and self.machine_type != shape.machine_type:
            raise ValueError(
                f"--machine-type {self.machine_type} does not go with TPU {shape.type} {shape.topology}: "
                f"Dataflow requires {shape.machine_type} (or leave --machine-type out)"
            )

    @property
    def shape(self) -> TpuShape:
        return tpu_shape(self.tpu)

    @property
    def accelerator(self) -> str:
        return self.shape.accelerator

    def args(self) -> list[str]:
        shape = self.shape
        return [
            *self.common_flags(shape.machine_type),
            "--dataflow_service_options", f"worker_accelerator={shape.accelerator}",
            "--detect_accelerator", shape.accelerator,  # the detection stage alone asks for the TPU
            "--detector_backend", "jax",
            "--device", "tpu",
            "--dtype", "bfloat16",
            "--batch_size", str(TPU_BATCH_PER_CHIP * shape.chips),
            "--share_model_across_processes", "true",
            "--jax_all_devices", "true",
            "--jax_compilation_cache", f"{self.bucket_url}/dataflow/jax-cache",  # compiled once for all workers
        ]  # fmt: skip


def describe_job(run_result: dict[str, Any]) -> dict[str, Any]:
    """The offline job description of a dry run: Beam's job request, the portable pipeline's
    environments (container, resource hints) and transforms, and the options."""
    pipeline, result, options = run_result["pipeline"], run_result["result"], run_result["options"]
    proto = pipeline.runner.proto_pipeline
    environments = {}
    for env_id, env in proto.components.environments.items():
        from apache_beam.portability.api import beam_runner_api_pb2

        image = beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image if env.payload else None
        environments[env_id] = {
            "urn": env.urn,
            "container_image": image,
            "resource_hints": {k: v.decode() for k, v in env.resource_hints.items()},
        }
    hinted = {env_id for env_id, env in environments.items() if env["resource_hints"]}
    transforms = {
        t.unique_name: t.environment_id
        for t in proto.components.transforms.values()
        if t.unique_name and ("/" not in t.unique_name or t.environment_id in hinted)
    }
    job = json.loads(type(result.job.proto).to_json(result.job.proto))
    return {
        "job": job,
        "environments": environments,
        "transforms": dict(sorted(transforms.items())),
        "options": {k: v for k, v in options.get_all_options(drop_default=True).items() if v is not None},
        "vesl_config": run_result["config"].to_dict(),
    }


def flex_template_metadata() -> dict[str, Any]:
    """Every VESL option as a Flex Template parameter (regenerate after changing options)."""
    from vesl.options import _FIELDS, backend_flags

    parameters = [
        {"name": "input", "label": "Input shards", "helpText": "img2dataset output folder(s) (any format), or "
         "shard pattern(s): .tar, .parquet, .tfrecord or .jsonl; comma-separate several", "isOptional": False},
        {"name": "output", "label": "Output folder", "helpText": "gs:// folder for the region shards", "isOptional": False},
        {"name": "preset", "label": "Preset", "helpText": "cloc (default), owlst or grit", "isOptional": True},
        {"name": "overwrite", "label": "Overwrite", "helpText": "redo shards already committed in the output",
         "isOptional": True},
        {"name": "allow_empty", "label": "Allow empty", "helpText": "succeed even when no record is written",
         "isOptional": True},
        {"name": "detect_accelerator", "label": "Detection accelerator",
         "helpText": "resource hint for the detection stage, e.g. type:nvidia-l4;count:1;install-nvidia-driver",
         "isOptional": True},
    ]  # fmt: skip
    for flag, section, field, _, help_text in _FIELDS:
        parameters.append({"name": flag, "label": f"{section}.{field}", "helpText": help_text, "isOptional": True})
    for name, option in backend_flags():  # each detector backend's own settings
        label, text = f"detect.options.{option.field} ({name})", f"{option.help} ({name} backend)"
        parameters.append({"name": option.flag, "label": label, "helpText": text, "isOptional": True})
    return {
        "name": "VESL",
        "description": "Image-caption shards -> noun phrases -> OWLv2 regions -> region-text Parquet and TFRecord",
        "parameters": parameters,
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m vesl.dataflow", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["args", "dryrun", "submit", "metadata", "tpu-env"])
    parser.add_argument("--project", default="my-project")
    parser.add_argument("--region", default="us-central1")
    parser.add_argument("--bucket", default="gs://my-vesl-bucket")
    parser.add_argument("--image", default=None, help=f"default {IMAGE}:latest, with --tpu {IMAGE}:tpu-SHAPE")
    parser.add_argument("--gpu", default=None, help=f"GPU type (default {DEFAULT_GPU}), or 'none' for CPU workers")
    parser.add_argument("--gpu-count", type=int, default=1)
    parser.add_argument(
        "--tpu",
        nargs="?",
        const=DEFAULT_TPU,
        default=None,
        help=f"TPU workers instead of GPUs: {', '.join(TPU_SHAPES)} ({DEFAULT_TPU} if no value), or TYPE;TOPOLOGY",
    )
    parser.add_argument("--machine-type", default=None)
    parser.add_argument("--max-workers", type=int, default=100)
    parser.add_argument("--no-mps", action="store_true")
    parser.add_argument("--job-name", default=None)
    parser.add_argument("--out", default="out/dataflow/job.json", help="dryrun: where the job description goes")
    parser.add_argument("--check", action="store_true", help="tpu-env: check that this environment is a shape's")
    return parser.parse_args(argv)


def make_job(args: argparse.Namespace) -> DataflowJob:
    """The job the command line asks for: TPU workers with ``--tpu``, else GPU (or, ``--gpu none``, CPU)."""
    if args.tpu is not None:
        chosen = tpu_shape(args.tpu)  # the image's default tag names the shape as TPU_SHAPES does
        name = next(name for name, shape in TPU_SHAPES.items() if shape == chosen)
        where = (args.project, args.region, args.bucket, args.image or f"{IMAGE}:tpu-{name}")
        return TpuDataflowJob(
            *where, gpu=args.gpu, machine_type=args.machine_type, max_workers=args.max_workers,
            job_name=args.job_name, tpu=args.tpu,
        )  # fmt: skip
    gpu = None if args.gpu == "none" else (args.gpu or DEFAULT_GPU)
    where = (args.project, args.region, args.bucket, args.image or f"{IMAGE}:latest")
    return DataflowJob(
        *where, gpu, args.gpu_count, args.machine_type, args.max_workers, not args.no_mps, job_name=args.job_name
    )


def tpu_env(args: argparse.Namespace) -> int:
    """``tpu-env``: a shape's build args for dataflow/Dockerfile.tpu (NAME=VALUE lines, read by ``make
    dataflow-image TPU=...``), or with ``--check`` whether this process's environment is one shape's."""
    if args.check:
        name = tpu_environment_shape(os.environ)
        print(f"TPU environment of {name} ({TPU_SHAPES[name].accelerator})")
        return 0
    for name, value in tpu_shape(args.tpu or DEFAULT_TPU).build_args().items():
        print(f"{name}={value}")
    return 0


def dryrun(flags: list[str], args: argparse.Namespace, vesl_args: list[str]) -> int:
    """Builds the job offline (Beam's --dry_run: nothing listed, read or submitted) and writes its description."""
    from pipelines.vesl import run

    if not any(a.startswith("--input") for a in vesl_args):
        vesl_args = [*vesl_args, "--input", f"{args.bucket.rstrip('/')}/shards/*.tar"]
    if not any(a.startswith("--output") for a in vesl_args):
        vesl_args = [*vesl_args, "--output", f"{args.bucket.rstrip('/')}/vesl-out"]
    description = describe_job(run([*flags, "--dry_run", "True", "--no_auth", *vesl_args]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(description, indent=2, sort_keys=True, default=str))
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    vesl_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, vesl_args = argv[:split], argv[split + 1 :]
    args = parse_args(argv)
    if args.command == "metadata":
        print(json.dumps(flex_template_metadata(), indent=2))
        return 0
    try:  # a wrong combination (unknown TPU shape, a machine type it does not allow, ...): said before any work
        if args.command == "tpu-env":
            return tpu_env(args)
        flags = make_job(args).args()
    except ValueError as exc:
        print(f"vesl.dataflow: error: {exc}", file=sys.stderr)
        return 2
    if args.command == "args":
        print(" ".join(json.dumps(a) if any(c in a for c in " ;*") else a for a in flags))
        return 0
    if args.command == "dryrun":
        return dryrun(flags, args, vesl_args)
    from pipelines.vesl import main as vesl_main

    return vesl_main([*flags, *vesl_args])


if __name__ == "__main__":
    sys.exit(main())
