"""VeslOptions: VESL's command-line options as Beam PipelineOptions, and their mapping to VeslConfig.

Every option defaults to "not given" (None), so the preset decides; runner options (--runner,
--project, --temp_location, ...) pass through to Beam.
"""

from __future__ import annotations

from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from vesl.config import (
    DEFAULT_DETECTOR_BACKEND,
    DEFAULT_PRESET,
    OFF,
    PHRASE_MODES,
    VeslConfig,
    build_config,
    load_preset,
    parse_bool,
)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _optional_float(text: str) -> float | str:
    return OFF if text.strip().lower() in ("off", "none") else float(text)


def _optional_int(text: str) -> int | str:
    return OFF if text.strip().lower() in ("off", "none") else int(text)


# (flag, section, field, type, help)
_FIELDS: list[tuple[str, str, str, Any, str]] = [
    ("max_caption_chars", "read", "max_caption_chars", int, "reject captions longer than this"),
    ("max_image_bytes", "read", "max_image_bytes", int, "reject larger images unread (bytes)"),
    (
        "image_column",
        "read",
        "image_column",
        str,
        "image bytes column (parquet/tfrecord) or extension (tar/files); default: auto",
    ),
    ("caption_column", "read", "caption_column", str, "parquet/tfrecord input: caption column (default: auto)"),
    ("caption", "caption", "enabled", parse_bool, "run the captioning stage (on in the cloc-full preset)"),
    ("captioner_checkpoint", "caption", "checkpoint", str, "image-to-text checkpoint: HF id, folder or gs://"),
    ("caption_use", "caption", "use", str, "captions to parse: alt | generated | both"),
    ("caption_prompt", "caption", "prompt", str, "prompt or task token for captioners that take one"),
    ("caption_max_new_tokens", "caption", "max_new_tokens", int, "longest generated caption, in tokens"),
    ("caption_num_beams", "caption", "num_beams", int, "beam search width (1: greedy)"),
    ("caption_batch_size", "caption", "batch_size", int, "images per captioner batch"),
    ("caption_device", "caption", "device", str, "auto | cpu | cuda | cuda:N"),
    ("caption_dtype", "caption", "dtype", str, "float32 | bfloat16 | float16"),
    ("phrase_mode", "phrases", "mode", str, f"phrase source: {' | '.join(PHRASE_MODES)}"),
    ("max_phrases", "phrases", "max_phrases", int, "at most this many queries per image (CLOC: 20)"),
    ("dedupe_phrases", "phrases", "dedupe", parse_bool, "de-duplicate phrases (default: on for both, off otherwise)"),
    ("spacy_model", "phrases", "spacy_model", str, "spaCy pipeline name (default auto)"),
    (
        "referring_expressions",
        "phrases",
        "referring_expressions",
        parse_bool,
        "spaCy chunks grown into GRIT's ref_exps",
    ),
    ("drop_abstract_nouns", "phrases", "drop_abstract_nouns", parse_bool, "skip spaCy chunks headed by abstract nouns"),
    ("shared_parse", "phrases", "shared_parse", parse_bool, "both: one spaCy parse feeds CLOC's grammar too"),
    ("max_ngram_len", "phrases", "max_ngram_len", int, "ngrams: longest N-gram (OWL-ST: 10)"),
    ("clean_captions", "phrases", "clean_captions", parse_bool, "unescape HTML entities, blank tags and URLs"),
    ("detector_backend", "detect", "backend", str, "detector backend: torch | jax (vesl.models.backends)"),
    ("checkpoint", "detect", "checkpoint", str, "OWLv2 checkpoint: HF id, local folder or gs:// folder"),
    ("image_size", "detect", "image_size", int, "detector input size in pixels (CLOC: 448)"),
    ("device", "detect", "device", str, "auto | cpu | cuda | cuda:N (cuda without a GPU fails)"),
    ("dtype", "detect", "dtype", str, "float32 | bfloat16 | float16"),
    ("batch_size", "detect", "batch_size", int, "images per detector batch"),
    ("query_buckets", "detect", "query_buckets", _ints, "comma-separated query-count buckets"),
    ("max_candidates", "detect", "max_candidates", int, "candidate boxes per image before filtering"),
    (
        "pad_value",
        "detect",
        "pad_value",
        float,
        "grey the detector input is padded with, in [0, 1]: 0.5 as scenic (OWLv2's home); 0.0 as transformers",
    ),
    ("max_image_pixels", "detect", "max_image_pixels", int, "reject images with more pixels"),
    ("share_model_across_processes", "detect", "share_model_across_processes", parse_bool, "one model per machine"),
    ("model_copies", "detect", "model_copies", _optional_int, "with sharing: models per machine (Beam)"),
    ("position_embedding", "detect", "position_embedding", str, "truncate (scenic) | interpolate (transformers)"),
    ("text_cache_size", "detect", "text_cache_size", int, "phrase embeddings kept on the device"),
    ("score_threshold", "filter", "score_threshold", float, "keep boxes with score > this (CLOC: 0.1)"),
    ("min_box_side_px", "filter", "min_box_side_px", float, "drop boxes with a side under this many pixels"),
    ("nms_iou", "filter", "nms_iou", _optional_float, "class-agnostic NMS IoU threshold, or off"),
    ("max_regions_per_image", "filter", "max_regions_per_image", _optional_int, "cap per image, or off"),
    ("keep_image_min_score", "filter", "keep_image_min_score", _optional_float, "OWL-ST image rule, or off"),
    ("drop_images_without_regions", "filter", "drop_images_without_regions", parse_bool, "GRIT image rule"),
    ("write_parquet", "write", "parquet", parse_bool, "write Parquet shards (default true)"),
    ("write_tfrecord", "write", "tfrecord", parse_bool, "write TFRecord shards (default true)"),
    ("write_webdataset", "write", "webdataset", parse_bool, "write WebDataset tar shards (default false)"),
    ("parquet_compression", "write", "parquet_compression", str, "zstd | snappy | gzip | none"),
    ("tfrecord_compression", "write", "tfrecord_compression", str, "none | gzip"),
    ("write_image_bytes", "write", "write_image_bytes", parse_bool, "embed encoded images in the outputs"),
]


class VeslOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--input",
            action="append",
            default=None,
            help="input: img2dataset output folders (any format), other folders (searched for shards), "
            "globs or files: .tar (webdataset), .parquet, .tfrecord, .jsonl (manifest); local or gs://; "
            "repeat or comma-separate",
        )
        parser.add_argument("--output", default=None, help="output folder (local or gs://)")
        parser.add_argument(
            "--preset", default=None, help=f"cloc (default) | cloc-full | owlst | grit; default {DEFAULT_PRESET}"
        )
        parser.add_argument(
            "--overwrite",
            type=parse_bool,
            nargs="?",
            const=True,
            default=False,
            help="replace VESL outputs already in --output",
        )
        parser.add_argument(
            "--wait",
            type=parse_bool,
            nargs="?",
            const=True,
            default=True,
            help="wait for the job to finish and print its summary (false: submit and return)",
        )
        parser.add_argument(
            "--allow_empty",
            type=parse_bool,
            nargs="?",
            const=True,
            default=False,
            help="exit 0 even when the run writes no record (by default a run that writes nothing fails)",
        )
        parser.add_argument(
            "--take_over_lease",
            type=parse_bool,
            nargs="?",
            const=True,
            default=False,
            help="take --output from the run that holds it even if it looks alive (a submitted job "
            "known to be gone); a dead or silent run's lease is taken over without it",
        )
        parser.add_argument(
            "--progress",
            choices=("auto", "true", "false"),
            default="auto",
            help="progress line on stderr for local runs (auto: when stderr is a terminal)",
        )
        parser.add_argument(
            "--list_shards",
            choices=("auto", "driver", "workers"),
            default="auto",
            help="where the input is listed: driver (before the job: the shard count is known up front, the "
            "job graph holds the list) or workers (the job lists it: for 100k+ shards, the graph holds only the "
            "patterns); auto: driver for local runners, workers otherwise",
        )
        parser.add_argument(
            "--cpu_threads",
            default="auto",
            help="CPU threads each worker process's models may use (PyTorch's intra-op pool): a count, or "
            "auto: the machine's cores shared among the runner's processes on it (vesl.threads)",
        )
        parser.add_argument(
            "--detect_accelerator",
            default=None,
            help="Beam resource hint for the detection stage only, e.g. "
            "'type:nvidia-l4;count:1;install-nvidia-driver' (Dataflow: CPU stages need no GPU machine "
            "where the runner supports per-transform hints)",
        )
        for flag, _, _, kind, help_text in _FIELDS:
            parser.add_argument(f"--{flag}", type=kind, default=None, help=help_text)
        for backend, flag in backend_flags():
            parser.add_argument(
                f"--{flag.flag}", type=flag.parse, default=None, help=f"{flag.help} ({backend} backend)"
            )


def backend_flags():
    """(backend name, BackendFlag) of every registered detector backend's own settings."""
    from vesl.models.backends import BACKENDS

    return [(name, flag) for name, backend in BACKENDS.items() for flag in backend.flags]


def config_from_options(options: VeslOptions) -> VeslConfig:
    """The preset's config with the options given on top. A flag of a detector backend other than the
    run's is an error, not silently ignored."""
    values = options.get_all_options()
    preset = options.preset or DEFAULT_PRESET
    overrides: dict[str, dict[str, Any]] = {}
    for flag, section, field, _, _ in _FIELDS:
        if values.get(flag) is not None:
            overrides.setdefault(section, {})[field] = values[flag]
    backend = overrides.get("detect", {}).get("backend") or load_preset(preset).get("detect", {}).get("backend")
    backend = backend or DEFAULT_DETECTOR_BACKEND
    for owner, flag in backend_flags():
        if values.get(flag.flag) is None:
            continue
        if owner != backend:
            raise ValueError(f"--{flag.flag} is a setting of the {owner} detector backend; this run uses {backend}")
        options_given = overrides.setdefault("detect", {}).setdefault("options", {})
        options_given[flag.field] = values[flag.flag]
    return build_config(preset, overrides)


def all_options_parser():
    """One parser of every option VESL and Beam know: each ``PipelineOptions`` class's own arguments (the
    way Beam gathers them), VESL's included."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False, exit_on_error=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    return parser


def check_arguments(argv: list[str]) -> None:
    """ValueError, in one line, for an argument neither VESL nor Beam knows (with Beam's "did you mean"
    suggestion) or a value an option refuses: Beam itself only logs "Discarding unparseable args" and
    runs the job with the default, a billion images labelled with the wrong setting."""
    import argparse
    import difflib

    parser = all_options_parser()
    try:
        _, unknown = parser.parse_known_args(argv)
    except argparse.ArgumentError as exc:
        raise ValueError(str(exc)) from None
    except Exception as exc:  # an option's own action refused its value (e.g. JSON it cannot read)
        raise ValueError(f"a value is not what its option takes ({type(exc).__name__}: {exc})") from None
    if not unknown:
        return
    first = next((arg for arg in unknown if arg.startswith("-")), unknown[0])
    if not first.startswith("-"):
        raise ValueError(f"unexpected argument {first!r} (options are --name value)")
    name = first.split("=", 1)[0]
    known = [option for action in parser._actions for option in action.option_strings]
    close = difflib.get_close_matches(name, known)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown option {name!r}: neither VESL nor Beam has it{hint}")
