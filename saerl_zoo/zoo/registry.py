"""The zoo's catalog: one validated entry per published SAE, probe or stitch map.

A catalog is data (YAML), not code. Entries come from three kinds of source,
all with the same schema and the same validation:

* the built-in catalog shipped in the package (`saerl_zoo/zoo/catalog.yaml`),
* catalogs kept in Hugging Face Hub repos, each pinned by a revision (listed
  under `hub_catalogs:` of any catalog file, or in `SAERL_ZOO_HUB_CATALOGS`),
  so new artifacts appear without a package release,
* user catalog files (`SAERL_ZOO_CATALOG`, os.pathsep-separated, or passed in).

A later source overrides an entry of the same name from an earlier one (user
files win over Hub catalogs, which win over the built-in one). Every problem
is reported as `catalog <source>: entry <name>: field <field>: <what is wrong>`,
and an unknown name comes back with the closest known names.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
import warnings
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Union

import yaml

from saerl_zoo.errors import UserError

BUILTIN_CATALOG = Path(__file__).with_name("catalog.yaml")
CATALOG_ENV = "SAERL_ZOO_CATALOG"
HUB_CATALOGS_ENV = "SAERL_ZOO_HUB_CATALOGS"
SCHEMA_VERSION = 1

Kind = Literal["sae", "difficulty-probe", "quality-probe", "stitch"]
Site = Literal["resid_out", "resid_in", "mlp_out", "attn_out"]
SourceType = Literal["package", "hub", "sae-lens", "local"]
Format = Literal["sae-lens", "sparsify", "probe", "stitch"]
KINDS: tuple[str, ...] = typing.get_args(Kind)
SITES: tuple[str, ...] = typing.get_args(Site)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class CatalogError(UserError):
    """A catalog file or entry that does not follow the schema."""


class UnknownArtifactError(KeyError, UserError):
    """A name that is in no catalog; the message lists the closest known names.

    A KeyError (a failed lookup) and a ValueError (bad input, as the CLI reports it).
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------- schema


@dataclasses.dataclass
class HostModel:
    """The model whose activations the artifact reads."""

    id: str  # Hugging Face model id (for embedded artifacts: the id it is published under)
    revision: str | None = None  # commit or tag of the model the artifact was trained on
    package_path: str | None = None  # embedded model: folder inside saerl_zoo/default


@dataclasses.dataclass
class Hook:
    """Where the activations are read: a Hugging Face module name plus an explicit site.

    `resid_out` is the module's output (a decoder block's output = the residual
    stream after it), `resid_in` its input; `mlp_out` / `attn_out` are the
    outputs of the block's MLP / attention module (which `module` then names).
    """

    module: str  # e.g. "model.layers.12" or "model.layers.12.mlp"
    site: Site
    layer: int  # decoder block index, from 0


@dataclasses.dataclass
class SaeSpec:
    architecture: str  # sae-lens architecture: standard, topk, batchtopk, jumprelu, gated, ...
    d_in: int
    d_sae: int  # width
    k: int | None = None  # for top-k architectures


@dataclasses.dataclass
class Source:
    """Where the files live.

    package: `path` is a folder inside `saerl_zoo/default` (works offline);
    hub: `path` is a folder inside the Hub repo `repo_id` at `revision`;
    sae-lens: `release` / `sae_id` of sae-lens's own pretrained registry;
    local: `path` is a folder next to the catalog file that lists the entry
    (user catalogs only: e.g. a stitch fitted on this machine).
    A package entry may also name the `repo_id` it is published to.
    """

    type: SourceType
    format: Format
    path: str = ""
    repo_id: str | None = None
    revision: str | None = None
    release: str | None = None
    sae_id: str | None = None


@dataclasses.dataclass
class Preprocessing:
    """How activations must be prepared before the SAE sees them."""

    context_length: int  # tokens per sequence the artifact was trained / evaluated with
    special_tokens: Literal["drop", "keep"]  # BOS / pad / chat-template tokens skipped?
    normalization_scale: float = 1.0  # activations are multiplied by this before encoding
    outlier_norm_ratio: float | None = None  # drop tokens whose norm > ratio x median (attention sinks)
    tokenizer_sha256: str | None = None  # sha256 of the host tokenizer's tokenizer.json


@dataclasses.dataclass
class Artifact:
    """One catalog entry."""

    name: str
    kind: Kind
    description: str
    model: HostModel
    hook: Hook
    source: Source
    files: dict[str, str]  # path inside source.path -> sha256
    license: str
    metrics: dict[str, Any]
    preprocessing: Preprocessing
    sae: SaeSpec | None = None  # required for kind "sae"
    features: str | None = None  # probes / stitches: name of the SAE entry whose codes they read
    card: str | None = None  # rendered card, relative to the repository's cards/ folder
    training: dict[str, Any] | None = None  # data, tokens, steps, seed, command (shown on the card)
    limitations: list[str] = dataclasses.field(default_factory=list)
    tags: list[str] = dataclasses.field(default_factory=list)
    origin: str = dataclasses.field(default="", compare=False)  # which catalog it came from (not in YAML)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (no `origin`, no empty optional fields)."""
        out = _prune(dataclasses.asdict(self))
        out.pop("origin", None)
        return out

    @property
    def published(self) -> bool:
        return self.source.repo_id is not None


def _prune(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _prune(v) for k, v in obj.items() if v is not None and v != [] and v != ""}
    if isinstance(obj, list):
        return [_prune(v) for v in obj]
    return obj


@dataclasses.dataclass
class HubCatalogRef:
    """A catalog file kept in a Hub repo, pinned by revision."""

    repo_id: str
    revision: str
    path: str = "catalog.yaml"

    @classmethod
    def parse(cls, text: str) -> HubCatalogRef:
        """`org/repo@revision[:path/in/repo.yaml]`."""
        match = re.fullmatch(r"([^@\s]+)@([^:\s]+)(?::(\S+))?", text.strip())
        if match is None:
            raise CatalogError(f"{HUB_CATALOGS_ENV}: {text!r} is not ORG/REPO@REVISION[:PATH]")
        ref = cls(match.group(1), match.group(2), match.group(3) or "catalog.yaml")
        _check_hub_ref(ref, f"{HUB_CATALOGS_ENV} {text!r}")
        return ref


# --------------------------------------------------------------------------- validation


def check_relative_path(path: str, where: str) -> str:
    """A path inside a repo or package: relative, '/'-separated, no '..', no empty parts."""
    if not isinstance(path, str):
        raise CatalogError(f"{where}: expected a path string, got {type(path).__name__}")
    if path == "":
        return path
    if "\\" in path or "\x00" in path:
        raise CatalogError(f"{where}: {path!r} contains a backslash or NUL; use '/'-separated relative paths")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path) or PurePosixPath(path).is_absolute():
        raise CatalogError(f"{where}: {path!r} is an absolute path; paths must stay inside the repo/cache folder")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise CatalogError(f"{where}: {path!r} has an empty, '.' or '..' component; paths must stay inside the repo/cache folder")
    return path


def _check_hub_ref(ref: HubCatalogRef, where: str) -> None:
    if not _REPO_ID_RE.match(ref.repo_id):
        raise CatalogError(f"{where}: repo_id {ref.repo_id!r} is not ORG/NAME")
    if not ref.revision:
        raise CatalogError(f"{where}: a Hub catalog must be pinned by a revision")
    check_relative_path(ref.path, f"{where}: path")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return str(tp).replace("typing.", "")
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _at(where: str, path: str) -> str:
    return f"{where}: field {path}" if path else where


def _convert(value: Any, tp: Any, where: str, path: str) -> Any:
    """Check `value` against the annotation `tp` (recursively), returning the typed value."""
    at = _at(where, path)
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise CatalogError(f"{at}: expected {_type_name(tp)}, got null")
        real = [a for a in args if a is not type(None)]
        if len(real) == 1:
            return _convert(value, real[0], where, path)
        for arg in real:
            try:
                return _convert(value, arg, where, path)
            except CatalogError:
                continue
        raise CatalogError(f"{at}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise CatalogError(f"{at}: {value!r} is not one of {', '.join(map(repr, typing.get_args(tp)))}")
        return value
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise CatalogError(f"{at}: expected a mapping, got {type(value).__name__}")
        return {_convert(k, key_tp, where, path): _convert(v, val_tp, where, f"{path}.{k}") for k, v in value.items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise CatalogError(f"{at}: expected a list, got {type(value).__name__}")
        return [_convert(v, item_tp, where, f"{path}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where, path)
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CatalogError(f"{at}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise CatalogError(f"{at}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise CatalogError(f"{at}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise CatalogError(f"{at}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r}")  # a schema bug, not a catalog error


def _build(cls: type, raw: Any, where: str, path: str = "") -> Any:
    if not isinstance(raw, dict):
        raise CatalogError(f"{_at(where, path)}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "origin"}
    unknown = sorted(str(k) for k in set(raw) - set(fields))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(fields), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        sub = f"{path}.{unknown[0]}" if path else unknown[0]
        raise CatalogError(f"{where}: field {sub}: unknown field{hint}")
    kwargs = {}
    for name, field in fields.items():
        sub = f"{path}.{name}" if path else name
        if name not in raw:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise CatalogError(f"{where}: field {sub}: missing (required)")
            continue
        kwargs[name] = _convert(raw[name], hints[name], where, sub)
    return cls(**kwargs)


def _entry_where(origin: str, name: Any) -> str:
    return f"catalog {origin}: entry {name!r}"


def validate_entry(raw: Any, origin: str = "<dict>", index: int = 0) -> Artifact:
    """Build an `Artifact` from its YAML mapping; raise `CatalogError` naming entry and field."""
    name = raw.get("name", f"#{index}") if isinstance(raw, dict) else f"#{index}"
    where = _entry_where(origin, name)
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: expected a mapping, got {type(raw).__name__}")
    art: Artifact = _build(Artifact, raw, where)
    art.origin = origin

    def fail(field: str, msg: str) -> typing.NoReturn:
        raise CatalogError(f"{where}: field {field}: {msg}")

    if not _NAME_RE.match(art.name) or ".." in art.name:
        fail("name", f"{art.name!r} must be letters, digits, '.', '_', '-' in '/'-separated parts")
    for path, digest in art.files.items():
        check_relative_path(path, f"{where}: field files")
        if path == "":
            fail("files", "an empty file name")
        if not _SHA256_RE.match(digest):
            fail(f"files.{path}", f"{digest!r} is not a lowercase hex sha256")
    if not art.files and art.source.type != "sae-lens":
        fail("files", "lists no files (each file needs its sha256)")
    check_relative_path(art.source.path, f"{where}: field source.path")
    src = art.source
    if src.type == "hub":
        if src.repo_id is None:
            fail("source.repo_id", "required for a hub source")
        if not src.revision:
            fail("source.revision", "required for a hub source (pin a commit or tag)")
    if src.repo_id is not None and not _REPO_ID_RE.match(src.repo_id):
        fail("source.repo_id", f"{src.repo_id!r} is not ORG/NAME")
    if src.type == "sae-lens" and (not src.release or not src.sae_id):
        fail("source.release", "a sae-lens source needs release and sae_id")
    if art.model.package_path is not None:
        check_relative_path(art.model.package_path, f"{where}: field model.package_path")
    if art.hook.layer < 0:
        fail("hook.layer", f"{art.hook.layer} is negative")
    if art.kind == "sae":
        if art.sae is None:
            fail("sae", "required for an SAE (architecture, d_in, d_sae)")
        if src.format not in ("sae-lens", "sparsify"):
            fail("source.format", f"an SAE is stored as 'sae-lens' or 'sparsify', not {src.format!r}")
        for key in ("l0", "explained_variance", "dead_fraction"):
            if not isinstance(art.metrics.get(key), (int, float)) or isinstance(art.metrics.get(key), bool):
                fail(f"metrics.{key}", "required number for an SAE")
        if not isinstance(art.metrics.get("eval_set"), str):
            fail("metrics.eval_set", "required: the eval set the SAE metrics were measured on")
    elif art.kind in ("difficulty-probe", "quality-probe"):
        if src.format != "probe":
            fail("source.format", f"a probe is stored as 'probe', not {src.format!r}")
        if not isinstance(art.metrics.get("heldout"), dict) or not art.metrics["heldout"]:
            fail("metrics.heldout", "required: the probe's held-out metrics")
        if not isinstance(art.metrics.get("labels"), str):
            fail("metrics.labels", "required: what labels the probe was fitted on")
        if art.features is None:
            fail("features", "a probe must name the SAE entry whose codes it reads")
    elif art.kind == "stitch":
        if src.format != "stitch":
            fail("source.format", f"a stitch is stored as 'stitch', not {src.format!r}")
        if art.features is None:
            fail("features", "a stitch must name the SAE entry it feeds")
        if not isinstance(art.metrics.get("explained_variance"), (int, float)) or isinstance(art.metrics.get("explained_variance"), bool):
            fail("metrics.explained_variance", "required number for a stitch: held-out explained variance of the host's activations")
    if src.type == "local" and not src.path:
        fail("source.path", "required for a local source (a folder next to the catalog file)")
    if art.preprocessing.normalization_scale <= 0:
        fail("preprocessing.normalization_scale", "must be positive")
    if art.preprocessing.context_length < 1:
        fail("preprocessing.context_length", "must be positive")
    if art.preprocessing.tokenizer_sha256 is not None and not _SHA256_RE.match(art.preprocessing.tokenizer_sha256):
        fail("preprocessing.tokenizer_sha256", "not a lowercase hex sha256")
    if art.card is not None:
        check_relative_path(art.card, f"{where}: field card")
    return art


# --------------------------------------------------------------------------- catalogs


def parse_catalog(data: Any, origin: str) -> tuple[list[Artifact], list[HubCatalogRef]]:
    """Validate a parsed catalog document: `{version: 1, artifacts: [...], hub_catalogs: [...]}`."""
    if data is None:
        return [], []
    if not isinstance(data, dict):
        raise CatalogError(f"catalog {origin}: expected a mapping with 'artifacts', got {type(data).__name__}")
    unknown = sorted(set(data) - {"version", "artifacts", "hub_catalogs"})
    if unknown:
        raise CatalogError(f"catalog {origin}: unknown top-level field {unknown[0]!r}")
    version = data.get("version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise CatalogError(f"catalog {origin}: schema version {version!r} is not supported (this saerl-zoo reads {SCHEMA_VERSION})")
    raw_entries = data.get("artifacts") or []
    if not isinstance(raw_entries, list):
        raise CatalogError(f"catalog {origin}: 'artifacts' must be a list")
    entries, seen = [], set()
    for i, raw in enumerate(raw_entries):
        art = validate_entry(raw, origin, i)
        if art.name in seen:
            raise CatalogError(f"{_entry_where(origin, art.name)}: field name: listed twice in the same catalog")
        seen.add(art.name)
        entries.append(art)
    refs = []
    for i, raw in enumerate(data.get("hub_catalogs") or []):
        where = f"catalog {origin}: hub_catalogs[{i}]"
        ref = _build(HubCatalogRef, raw, where)
        _check_hub_ref(ref, where)
        refs.append(ref)
    return entries, refs


def read_catalog_file(path: str | os.PathLike[str]) -> tuple[list[Artifact], list[HubCatalogRef]]:
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"catalog {path}: file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise CatalogError(f"catalog {path}: not valid YAML: {err}") from err
    return parse_catalog(data, str(path))


def fetch_hub_catalog(ref: HubCatalogRef) -> Path:
    """Download (or find in the HF cache, offline) a pinned Hub catalog file."""
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(ref.repo_id, ref.path, revision=ref.revision))


class Catalog:
    """All known artifacts, by name."""

    def __init__(self, entries: list[Artifact] | None = None):
        self.entries: dict[str, Artifact] = {}
        for art in entries or []:
            self.add(art)

    def add(self, art: Artifact) -> None:
        self.entries[art.name] = art

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self):
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def names(self) -> list[str]:
        return sorted(self.entries)

    def get(self, name: str) -> Artifact:
        try:
            return self.entries[name]
        except KeyError:
            raise UnknownArtifactError(unknown_name_message(name, self.names())) from None

    def filter(self, kind: str | None = None, model: str | None = None) -> list[Artifact]:
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
        out = []
        for art in sorted(self, key=lambda a: a.name):
            if kind is not None and art.kind != kind:
                continue
            if model is not None and model.lower() not in art.model.id.lower():
                continue
            out.append(art)
        return out

    @classmethod
    def load(
        cls,
        paths: list[str | os.PathLike[str]] | None = None,
        *,
        hub: list[HubCatalogRef | str] | None = None,
        builtin: bool = True,
        use_env: bool = True,
        fetch_hub: bool = True,
    ) -> Catalog:
        """Built-in catalog, then pinned Hub catalogs, then user files (later wins)."""
        cat = cls()
        refs: list[HubCatalogRef] = []
        user_files: list[Path] = []
        if builtin:
            entries, builtin_refs = read_catalog_file(BUILTIN_CATALOG)
            for art in entries:
                art.origin = "built-in"
                cat.add(art)
            refs += builtin_refs
        if use_env:
            user_files += [Path(p) for p in os.environ.get(CATALOG_ENV, "").split(os.pathsep) if p.strip()]
            refs += [HubCatalogRef.parse(t) for t in os.environ.get(HUB_CATALOGS_ENV, "").replace(",", " ").split()]
        user_files += [Path(p) for p in paths or []]
        parsed_user = []
        for path in user_files:
            entries, more_refs = read_catalog_file(path)
            parsed_user.append(entries)
            refs += more_refs
        refs += [HubCatalogRef.parse(r) if isinstance(r, str) else r for r in hub or []]
        if fetch_hub:
            for ref in refs:
                where = f"hub:{ref.repo_id}@{ref.revision}:{ref.path}"
                try:
                    local = fetch_hub_catalog(ref)
                except Exception as err:  # offline and not cached, or no such repo: keep the other sources
                    warnings.warn(f"catalog {where}: not available ({type(err).__name__}: {err}); skipped", stacklevel=2)
                    continue
                entries, _ = parse_catalog(yaml.safe_load(Path(local).read_text()), where)
                for art in entries:
                    cat.add(art)
        for entries in parsed_user:
            for art in entries:
                cat.add(art)
        return cat


_CATALOG_CACHE: dict[tuple[str, str], Catalog] = {}


def get_catalog(refresh: bool = False) -> Catalog:
    """The merged catalog (built-in, pinned Hub catalogs, user files), cached per environment."""
    files = [p for p in os.environ.get(CATALOG_ENV, "").split(os.pathsep) if p.strip()]
    stamps = tuple((p, os.path.getmtime(p) if os.path.isfile(p) else None) for p in files)
    key = (repr(stamps), os.environ.get(HUB_CATALOGS_ENV, ""))  # an edited user catalog is re-read
    if refresh or key not in _CATALOG_CACHE:
        _CATALOG_CACHE.clear()
        _CATALOG_CACHE[key] = Catalog.load()
    return _CATALOG_CACHE[key]


def unknown_name_message(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    if not close:  # also match on the last part: "sae" -> "saerl-tiny-math/sae"
        tails = {k.rsplit("/", 1)[-1]: k for k in known}
        close = [tails[t] for t in difflib.get_close_matches(name.rsplit("/", 1)[-1], list(tails), n=3, cutoff=0.6)]
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"no artifact named {name!r} in the zoo catalog{hint} (`saerl-zoo list` shows them all)"


def dump_catalog(entries: list[Artifact], path: str | os.PathLike[str], *, header: str = "", hub_catalogs: list[HubCatalogRef] | None = None) -> None:
    """Write entries as a catalog file (atomically), keeping a leading comment header."""
    from saerl_zoo.storage import atomic_path

    doc: dict[str, Any] = {"version": SCHEMA_VERSION}
    if hub_catalogs:
        doc["hub_catalogs"] = [dataclasses.asdict(r) for r in hub_catalogs]
    doc["artifacts"] = [a.to_dict() for a in entries]
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
    with atomic_path(path) as tmp:
        tmp.write_text(header + text)


def read_header(path: str | os.PathLike[str]) -> str:
    """The leading '#' comment lines of a YAML file."""
    path = Path(path)
    if not path.is_file():
        return ""
    lines = []
    for line in path.read_text().splitlines(keepends=True):
        if not line.startswith("#"):
            break
        lines.append(line)
    return "".join(lines)


def upsert_entry(path: str | os.PathLike[str], art: Artifact) -> None:
    """Add or replace one entry in a catalog file (created if missing)."""
    path = Path(path)
    entries, refs = read_catalog_file(path) if path.is_file() else ([], [])
    replaced = [art if e.name == art.name else e for e in entries]
    if not any(e.name == art.name for e in entries):
        replaced.append(art)
    validate_entry(art.to_dict(), str(path))
    dump_catalog(replaced, path, header=read_header(path), hub_catalogs=refs)
