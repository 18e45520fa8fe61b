"""The operator's model catalog: which models this server offers, by name (no torch, no network).

Entries come from three places, later ones overriding earlier names:

1. the built-in tiny families (``tiny-t2v`` ...): random weights built locally on first use;
2. the real families by name (``CogVideoX-2b`` -> repo ``THUDM/CogVideoX-2b``);
3. ``settings.models`` (``STEADYFRAME_MODELS``), a JSON object
   ``{"NAME": {"source": "owner/repo[@revision]" | "/a/local/folder", "family": "CogVideoX-2b"}}``;
   ``family`` may be left out when the repo's last part or the folder's configs name it.

When ``settings.model`` (``STEADYFRAME_MODEL``) is a repo id or a folder rather than a name, the
catalog also holds it as ``default``. API and UI clients pick catalog names only
(:func:`api_entry`); the CLI, run by the operator, may also name a folder or a repo id
(:func:`resolve_model`). Messages for API clients never name a path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from steadyframe.errors import InvalidInputError, ModelUnavailableError
from steadyframe.families import (
    FAMILIES,
    REAL_FAMILIES,
    TINY_FAMILIES,
    Family,
    ModelRef,
    builtin_dir,
    family_for_repo,
    family_from_folder,
)
from steadyframe.model_files import PULL_MARKER, FolderState, folder_size, inspect_folder, inspect_repo, split_repo_source
from steadyframe.settings import Settings
from steadyframe.spec import Mode

DEFAULT_ENTRY = "default"
_TINY_FOR_MODE: dict[Mode, str] = {"t2v": "tiny-t2v", "v2v": "tiny-t2v", "i2v": "tiny-i2v"}


class CatalogConfigError(ValueError):
    """``STEADYFRAME_MODELS`` (or ``STEADYFRAME_MODEL``) names something the catalog cannot offer."""


class NotInCatalog(InvalidInputError):
    """An API client named a model this server does not offer (or something that is not a name)."""


@dataclass(frozen=True)
class CatalogEntry:
    """One offered model: a name, its family's rules, and where its weights come from."""

    name: str
    family: Family
    repo_id: str | None = None
    revision: str | None = None
    folder: Path | None = None  # an operator's local folder (never pulled)

    @property
    def builtin(self) -> bool:
        return self.family.builtin and self.repo_id is None and self.folder is None

    @property
    def pullable(self) -> bool:
        return self.repo_id is not None

    @property
    def source(self) -> str:
        """Where the weights come from, as shown to API clients: a repo id or "local folder"."""
        if self.repo_id:
            return self.repo_id + (f"@{self.revision}" if self.revision else "")
        return "built-in" if self.builtin else "local folder"

    @property
    def pull_command(self) -> str:
        return f"steadyframe pull {self.name}"


def _settings_entry(name: str, raw: dict[str, str]) -> CatalogEntry:
    source = str(raw.get("source", "")).strip()
    family_name = raw.get("family")
    if family_name is not None and family_name not in FAMILIES:
        raise CatalogConfigError(f"model {name!r}: unknown family {family_name!r}; one of {', '.join(FAMILIES)}")
    repo = split_repo_source(source) if not source.startswith(("/", "~", ".")) else None
    if repo is not None:
        family = FAMILIES[family_name] if family_name else family_for_repo(repo[0])
        if family is None:
            raise CatalogConfigError(f"model {name!r}: say which family {repo[0]} is (\"family\": ...)")
        return CatalogEntry(name, family, repo_id=repo[0], revision=repo[1])
    if not source:
        raise CatalogConfigError(f"model {name!r}: no \"source\" (a repo id or a folder)")
    folder = Path(source).expanduser()
    if family_name:
        return CatalogEntry(name, FAMILIES[family_name], folder=folder)
    try:
        return CatalogEntry(name, family_from_folder(folder), folder=folder)
    except ModelUnavailableError as exc:
        raise CatalogConfigError(f"model {name!r}: {exc.message} Give its \"family\".") from None


def catalog(settings: Settings) -> dict[str, CatalogEntry]:
    """Every model this server offers, by name (raises CatalogConfigError for a bad setting)."""
    entries: dict[str, CatalogEntry] = {f.name: CatalogEntry(f.name, f) for f in TINY_FAMILIES}
    entries.update({f.name: CatalogEntry(f.name, f, repo_id=f.repo_id) for f in REAL_FAMILIES})
    for name, raw in settings.models.items():
        if not _valid_name(name):
            raise CatalogConfigError(f"model name {name!r}: use letters, digits, '.', '_' and '-' only")
        entries[name] = _settings_entry(name, raw)
    configured = (settings.model or "").strip()
    if configured and configured not in entries and configured != "tiny":
        entries[DEFAULT_ENTRY] = _settings_entry(DEFAULT_ENTRY, {"source": configured})
    return entries


def _valid_name(name: str) -> bool:
    return 0 < len(name) <= 64 and all(ch.isascii() and (ch.isalnum() or ch in "._-") for ch in name)


def default_name(settings: Settings, mode: Mode) -> str:
    """The catalog name a job without a model gets."""
    configured = (settings.model or "").strip()
    if not configured or configured == "tiny":
        return _TINY_FOR_MODE[mode]
    return configured if configured in catalog(settings) else DEFAULT_ENTRY


def api_entry(model: str | None, settings: Settings, mode: Mode = "t2v") -> CatalogEntry:
    """The catalog entry an API/UI client asked for; anything but a catalog name is NotInCatalog."""
    entries = catalog(settings)
    name = default_name(settings, mode) if model is None else model
    entry = entries.get(name) if isinstance(name, str) else None
    if entry is None:
        raise NotInCatalog(
            "The model is not one this server offers; pick a model by its catalog name.",
            advice="Offered: " + ", ".join(entries) + " (GET /v1/models lists them).",
        )
    return entry


def entry_state(entry: CatalogEntry, settings: Settings) -> FolderState:
    """What is on disk for ``entry`` (a built-in model is always usable: it is built on first use)."""
    if entry.builtin:
        folder = builtin_dir(entry.family, settings)
        size = folder_size(folder) if folder.is_dir() else 0
        return FolderState("present", folder, size, where="builtin")
    if entry.folder is not None:
        if (entry.folder / "model_index.json").is_file():
            return FolderState("present", entry.folder, folder_size(entry.folder), where="folder")
        return FolderState("absent", where="folder")
    assert entry.repo_id is not None
    return inspect_repo(settings.resolved_models_dir, entry.repo_id, entry.revision)


def entry_ref(entry: CatalogEntry, settings: Settings, state: FolderState | None = None) -> ModelRef:
    state = state or entry_state(entry, settings)
    local = state.folder if state.state == "present" else None
    return ModelRef(
        entry.family, entry.name, local_dir=local, repo_id=entry.repo_id, revision=entry.revision,
        build_tiny=entry.builtin,
    )  # fmt: skip


def _check_mode(ref: ModelRef, mode: Mode) -> ModelRef:
    if mode not in ref.family.modes:
        wanted = {"t2v": "text-to-video", "i2v": "image-to-video", "v2v": "video-to-video"}[mode]
        raise InvalidInputError(
            f"The model {ref.family.name} cannot do {wanted}.",
            advice="Pick an image-to-video (I2V) model for images, and a text-to-video model for text or video.",
        )
    return ref


def resolve_model(model: str | None, settings: Settings, mode: Mode = "t2v") -> ModelRef:
    """A catalog name, or (operator only: CLI, settings) a repo id[@revision] or a folder -> ModelRef.

    None means ``settings.model``, and when that is unset the built-in tiny family for ``mode``.
    Raises InvalidInputError for a model that cannot do ``mode`` and ModelUnavailableError for a
    name that is none of these.
    """
    name = (model or "").strip() or default_name(settings, mode)
    if name == "tiny":
        name = _TINY_FOR_MODE[mode]
    entries = catalog(settings)
    if name in entries:
        return _check_mode(entry_ref(entries[name], settings), mode)
    if not name.startswith(("/", "~", ".")) and (repo := split_repo_source(name)) is not None:
        family = family_for_repo(repo[0])
        if family is None:
            raise ModelUnavailableError(
                f"The model {name!r} is not a supported CogVideoX family.",
                advice="Supported: " + ", ".join(f.repo_id for f in REAL_FAMILIES if f.repo_id) + ".",
            )
        state = inspect_repo(settings.resolved_models_dir, *repo)
        local = state.folder if state.state == "present" else None
        return _check_mode(ModelRef(family, name, local_dir=local, repo_id=repo[0], revision=repo[1]), mode)
    try:
        folder = Path(name).expanduser()
    except RuntimeError:  # "~nosuchuser"
        folder = None
    if folder is not None and folder.is_dir():
        if inspect_folder(folder).state == "broken" or (folder / PULL_MARKER).exists():
            raise ModelUnavailableError(
                "That folder holds an unfinished or damaged download.",
                advice=f"Run `steadyframe pull {name}` with its repo id, or copy a complete model there.",
            )
        return _check_mode(ModelRef(family_from_folder(folder), name, local_dir=folder.resolve()), mode)
    raise ModelUnavailableError(
        f"The model {name!r} is neither a catalog name, a Hugging Face repo id nor an existing folder.",
        advice="Run `steadyframe models` to see the catalog and what is downloaded.",
    )


def pull_entry(model: str, settings: Settings) -> CatalogEntry:
    """What ``steadyframe pull MODEL`` fetches: a catalog name, or (operator) a repo id[@revision]."""
    entries = catalog(settings)
    if model in entries:
        return entries[model]
    repo = split_repo_source(model)
    if repo is None:
        raise ModelUnavailableError(
            f"The model {model!r} is neither a catalog name nor a Hugging Face repo id.",
            advice="Run `steadyframe models` to see the catalog.",
        )
    family = family_for_repo(repo[0])
    if family is None:
        raise ModelUnavailableError(
            f"The model {model!r} is not a supported CogVideoX family.",
            advice="Add it to STEADYFRAME_MODELS with its \"family\", then pull it by that name.",
        )
    return CatalogEntry(model, family, repo_id=repo[0], revision=repo[1])
