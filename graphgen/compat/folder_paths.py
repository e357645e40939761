"""`folder_paths`: ComfyUI's model, input, output and temp folders, mapped onto graphgen's settings.

The folders are the running Engine's (`--models-dir`, `--input-dir`, `--output-dir`; temp is the
output folder's `.temp`). Model folders are `<models dir>/<name>` with ComfyUI's names (and its
legacy aliases: `clip` for `text_encoders`, `unet` for `diffusion_models`...); packs may add their
own with `add_model_folder_path` or by editing `folder_names_and_paths`.

Names are resolved as ComfyUI resolves them (an absolute name, or `..`, in a file input reaches any
file a local user names), except in a confined run (`EngineSettings.confine_paths`: `graphgen serve`):
there a name given to `get_annotated_filepath` must stay inside the folder it is resolved against or
the engine's input, models and output folders (`graphgen.paths`, the rule built-in nodes follow), so
that a served workflow cannot read other files through a pack's LoadImage-like node. `get_full_path`
and `get_save_image_path` refuse names leaving their folder in every run, as ComfyUI's do.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

from graphgen import paths
from graphgen.compat import _runtime

supported_pt_extensions: set[str] = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}

# Folder name -> subfolders of the models folder it covers (the first is where new files go).
_DEFAULT_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("checkpoints",), "configs": ("configs",), "loras": ("loras",), "vae": ("vae",),
    "text_encoders": ("text_encoders", "clip"), "diffusion_models": ("unet", "diffusion_models"),
    "clip_vision": ("clip_vision",), "style_models": ("style_models",), "embeddings": ("embeddings",),
    "diffusers": ("diffusers",), "vae_approx": ("vae_approx",), "controlnet": ("controlnet", "t2i_adapter"),
    "gligen": ("gligen",), "upscale_models": ("upscale_models",), "hypernetworks": ("hypernetworks",),
    "photomaker": ("photomaker",), "classifiers": ("classifiers",), "model_patches": ("model_patches",),
    "audio_encoders": ("audio_encoders",), "kolors": ("kolors",),
}
_LEGACY_NAMES = {"clip": "text_encoders", "unet": "diffusion_models"}

folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {
    name: ([], set(supported_pt_extensions)) for name in _DEFAULT_FOLDERS
}
folder_names_and_paths["configs"] = ([], {".yaml"})
_defaults_now: dict[str, list[str]] = {}
_sync_lock = threading.Lock()
_synced_for: Path | None = None
_directories: dict[str, str] = {}  # set_*_directory overrides


def _models_dir() -> Path:
    return Path(_runtime.settings().models_dir or "models").absolute()


def _sync() -> None:
    """Point the default entries of `folder_names_and_paths` at the current models folder."""
    global _synced_for
    root = _models_dir()
    if root == _synced_for:
        return
    with _sync_lock:
        for name, subfolders in _DEFAULT_FOLDERS.items():
            paths, _ = folder_names_and_paths.setdefault(name, ([], set(supported_pt_extensions)))
            old = _defaults_now.get(name, [])
            kept = [p for p in paths if p not in old]
            new = [str(root / sub) for sub in subfolders]
            paths[:] = new + kept
            _defaults_now[name] = new
        _synced_for = root


def __getattr__(name: str) -> Any:
    # Module variables of ComfyUI's folder_paths, computed from the current settings.
    if name in ("models_dir", "base_path"):
        return str(_models_dir() if name == "models_dir" else _models_dir().parent)
    if name in ("output_directory", "input_directory", "temp_directory", "user_directory"):
        return {"output_directory": get_output_directory, "input_directory": get_input_directory,
                "temp_directory": get_temp_directory, "user_directory": get_user_directory}[name]()
    raise AttributeError(f"module 'folder_paths' has no attribute {name!r} (graphgen does not provide it)")


def map_legacy(folder_name: str) -> str:
    return _LEGACY_NAMES.get(folder_name, folder_name)


def get_output_directory() -> str:
    return _directories.get("output") or str(Path(_runtime.settings().output_dir).absolute())


def get_input_directory() -> str:
    return _directories.get("input") or str(Path(_runtime.settings().input_dir).absolute())


def get_temp_directory() -> str:
    settings = _runtime.settings()
    return _directories.get("temp") or str(Path(settings.temp_dir or Path(settings.output_dir) / ".temp").absolute())


def get_user_directory() -> str:
    return _directories.get("user") or str(Path(get_output_directory()).parent / "user")


def set_output_directory(path: str) -> None:
    _directories["output"] = str(path)


def set_input_directory(path: str) -> None:
    _directories["input"] = str(path)


def set_temp_directory(path: str) -> None:
    _directories["temp"] = str(path)


def set_user_directory(path: str) -> None:
    _directories["user"] = str(path)


def get_directory_by_type(type_name: str) -> str | None:
    """`output`, `temp` or `input` -> that folder; anything else -> None."""
    return {"output": get_output_directory, "temp": get_temp_directory,
            "input": get_input_directory}.get(type_name, lambda: None)()


def annotated_filepath(name: str) -> tuple[str, str | None]:
    """`"x.png [output]"` -> `("x.png", <output folder>)`; no annotation -> `(name, None)`."""
    for kind in ("output", "input", "temp"):
        suffix = f" [{kind}]"
        if name.endswith(suffix):
            return name[: -len(suffix)], get_directory_by_type(kind)
    return name, None


def _resolve_annotated(name: str, default_dir: str | None) -> tuple[str, bool]:
    """The path `name` stands for, and whether this run may read it (always, unless confined)."""
    relative, base = annotated_filepath(name)
    folder = base or default_dir or get_input_directory()
    path = os.path.join(folder, relative)  # an absolute `relative` replaces the folder, as in ComfyUI
    settings = _runtime.settings()
    return path, not settings.confine_paths or paths.inside_roots(settings, path, also=(folder,))


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    """`name` (`"x.png"`, `"x.png [output]"`) in its folder: the annotated one, else `default_dir`, else input.

    Raises:
        PathNotAvailableError: in a confined run, `name` leaves that folder and the engine's folders
            (`..`, an absolute path); the message is `graphgen.paths`' one.
    """
    path, allowed = _resolve_annotated(name, default_dir)
    if not allowed:
        raise paths.not_available("file", name)
    return path


def exists_annotated_filepath(name: str) -> bool:
    """Whether `name` is a file this run may read (False for one a confined run refuses, existing or not)."""
    path, allowed = _resolve_annotated(name, None)
    return allowed and os.path.exists(path)


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    """Also look in `full_folder_path` for `folder_name` models (first when `is_default`)."""
    _sync()
    folder_name = map_legacy(folder_name)
    paths, _ = folder_names_and_paths.setdefault(folder_name, ([], set(supported_pt_extensions)))
    if full_folder_path in paths:
        paths.remove(full_folder_path)
    paths.insert(0, full_folder_path) if is_default else paths.append(full_folder_path)


def get_folder_paths(folder_name: str) -> list[str]:
    _sync()
    return list(folder_names_and_paths[map_legacy(folder_name)][0])


def recursive_search(directory: str, excluded_dir_names: list[str] | None = None) -> tuple[list[str], dict[str, float]]:
    """Files under `directory` (relative, `/`-separated) and the folders seen with their mtimes."""
    if not os.path.isdir(directory):
        return [], {}
    excluded = set(excluded_dir_names or []) | {".git"}
    files: list[str] = []
    dirs: dict[str, float] = {directory: os.path.getmtime(directory)}
    for root, subdirs, names in os.walk(directory, followlinks=True):
        subdirs[:] = [d for d in subdirs if d not in excluded]
        for sub in subdirs:
            path = os.path.join(root, sub)
            dirs[path] = os.path.getmtime(path)
        files.extend(os.path.relpath(os.path.join(root, n), directory).replace(os.sep, "/") for n in names)
    return files, dirs


def filter_files_extensions(files: list[str], extensions: set[str] | list[str]) -> list[str]:
    wanted = {e.lower() for e in extensions}
    return sorted(f for f in files if not wanted or os.path.splitext(f)[1].lower() in wanted)


def get_filename_list(folder_name: str) -> list[str]:
    """The model files of `folder_name`, relative to their folder, sorted."""
    _sync()
    paths, extensions = folder_names_and_paths.get(map_legacy(folder_name), ([], set()))
    found: set[str] = set()
    for directory in paths:
        files, _ = recursive_search(directory, excluded_dir_names=[".git"])
        found.update(filter_files_extensions(files, extensions))
    return sorted(found)


def get_full_path(folder_name: str, filename: str) -> str | None:
    """Where `filename` of `folder_name` is; None if absent (names may not leave the folder)."""
    _sync()
    if folder_name not in folder_names_and_paths and map_legacy(folder_name) not in folder_names_and_paths:
        return None
    relative = os.path.normpath(os.path.relpath(os.path.join("/", filename), "/"))
    if relative.startswith(".."):
        return None
    for directory in folder_names_and_paths[map_legacy(folder_name)][0]:
        path = os.path.join(directory, relative)
        if os.path.isfile(path):
            return path
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    path = get_full_path(folder_name, filename)
    if path is None:
        raise FileNotFoundError(f"model {filename!r} not found in the {folder_name!r} folders "
                                f"({', '.join(get_folder_paths(folder_name)) or 'none'}); "
                                "put it there or point --models-dir at the folder above them")
    return path


def get_save_image_path(filename_prefix: str, output_dir: str, image_width: int = 0,
                        image_height: int = 0) -> tuple[str, str, int, str, str]:
    """`(folder, file name, counter, subfolder, prefix)` for numbered files `<name>_<counter:05>_.png`.

    The counter is one past the highest already used, so nothing is overwritten; a prefix that
    leaves `output_dir` is refused.
    """
    filename_prefix = filename_prefix.replace("%width%", str(image_width)).replace("%height%", str(image_height))
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    root = os.path.abspath(output_dir)
    if os.path.commonpath((root, os.path.abspath(full_output_folder))) != root:
        raise ValueError(f"filename prefix {filename_prefix!r} would save outside the output folder {root!r}; "
                         "use a prefix without '..' or an absolute path")
    pattern = re.compile(re.escape(filename) + r"_(\d+)_?")
    counter = 0
    if os.path.isdir(full_output_folder):
        for name in os.listdir(full_output_folder):
            match = pattern.match(name)
            if match:
                counter = max(counter, int(match.group(1)))
    return full_output_folder, filename, counter + 1, subfolder, filename_prefix
