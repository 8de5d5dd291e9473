"""Google Cloud Dataflow: the flags of a GPU job, an offline dry run that writes the job description,
and the Flex Template metadata.

    python -m vesl.dataflow args    --project P --region R --bucket B --image IMAGE [--gpu nvidia-l4] ...
    python -m vesl.dataflow dryrun  --out out/dataflow/job.json [same flags] -- [VESL options]
    python -m vesl.dataflow submit  [same flags] -- --input 'gs://...' --output gs://... [VESL options]
    python -m vesl.dataflow metadata > dataflow/flex-template/metadata.json

GPU workers (see README, "Run on Dataflow"): the accelerator goes to the job
(``--dataflow_service_options worker_accelerator=...``) and, as a Beam resource hint, to the
detection stage (``--detect_accelerator``); several SDK processes share the GPU through NVIDIA MPS
(``use_nvidia_mps``) and one model per machine (``--share_model_across_processes``). The worker
image is ``dataflow/Dockerfile``: requirements, the NLTK tagger, the spaCy model and (by default) the
checkpoint are baked in, so workers download nothing at run time.
"""

from __future__ import annotations

import argparse
import json
import sys
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


@dataclass(frozen=True)
class DataflowJob:
    project: str
    region: str
    bucket: str  # gs://name, for temp and staging files
    image: str  # the worker container (dataflow/Dockerfile)
    gpu: str | None = "nvidia-l4"  # None: CPU workers
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

    def args(self) -> list[str]:
        bucket = self.bucket.rstrip("/")
        if not bucket.startswith("gs://"):
            raise ValueError(f"--bucket must be a gs:// URL, got {self.bucket!r}")
        machine = self.machine_type or (GPU_MACHINES.get(self.gpu or "", "n2-standard-8"))
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
        if self.job_name:
            flags += ["--job_name", self.job_name]
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
    from vesl.models.backends import BACKENDS
    from vesl.options import _FIELDS

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
    for name, backend in BACKENDS.items():  # each detector backend's own settings
        for option in backend.flags:
            label, text = f"detect.options.{option.field} ({name})", f"{option.help} ({name} backend)"
            parameters.append({"name": option.flag, "label": label, "helpText": text, "isOptional": True})
    return {
        "name": "VESL",
        "description": "Image-caption shards -> noun phrases -> OWLv2 regions -> region-text Parquet and TFRecord",
        "parameters": parameters,
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    vesl_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, vesl_args = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["args", "dryrun", "submit", "metadata"])
    parser.add_argument("--project", default="my-project")
    parser.add_argument("--region", default="us-central1")
    parser.add_argument("--bucket", default="gs://my-vesl-bucket")
    parser.add_argument("--image", default="us-docker.pkg.dev/my-project/vesl/worker:latest")
    parser.add_argument("--gpu", default="nvidia-l4", help="GPU type, or 'none' for CPU workers")
    parser.add_argument("--gpu-count", type=int, default=1)
    parser.add_argument("--machine-type", default=None)
    parser.add_argument("--max-workers", type=int, default=100)
    parser.add_argument("--no-mps", action="store_true")
    parser.add_argument("--job-name", default=None)
    parser.add_argument("--out", default="out/dataflow/job.json", help="dryrun: where the job description goes")
    args = parser.parse_args(argv)
    if args.command == "metadata":
        print(json.dumps(flex_template_metadata(), indent=2))
        return 0
    job = DataflowJob(
        args.project,
        args.region,
        args.bucket,
        args.image,
        None if args.gpu == "none" else args.gpu,
        args.gpu_count,
        args.machine_type,
        args.max_workers,
        not args.no_mps,
        job_name=args.job_name,
    )
    if args.command == "args":
        print(" ".join(json.dumps(a) if any(c in a for c in " ;*") else a for a in job.args()))
        return 0
    if args.command == "dryrun":
        from pipelines.vesl import run

        if not any(a.startswith("--input") for a in vesl_args):
            vesl_args += ["--input", f"{args.bucket.rstrip('/')}/shards/*.tar"]
        if not any(a.startswith("--output") for a in vesl_args):
            vesl_args += ["--output", f"{args.bucket.rstrip('/')}/vesl-out"]
        description = describe_job(run([*job.args(), "--dry_run", "True", "--no_auth", *vesl_args]))
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(description, indent=2, sort_keys=True, default=str))
        print(out)
        return 0
    from pipelines.vesl import main as vesl_main

    return vesl_main([*job.args(), *vesl_args])


if __name__ == "__main__":
    sys.exit(main())
