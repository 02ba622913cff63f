"""``dpmot reproduce CONFIG``: a paper protocol on your own model and data, from one experiment file.

The file (YAML, or TOML on Python >= 3.11) has five sections; relative paths are relative to the file::

    name: cifar10-ncsnv2                 # the report's name
    data:    {path: cifar10.npz, value_range: [0, 255]}      # train / heldout (or test) splits
    model:   {path: checkpoint.pth, config: cifar10.yml}     # or a diffusers directory (+ scheduler)
    protocol:
      presets: [paper, default]          # DPM-OT presets (samplers dpm-ot-paper, dpm-ot)
      baselines: [langevin, dpmpp-2m]    # baseline samplers at the same NFE
      nfe: [11]                          # NFE list (the claims compare at the first one)
      seeds: [0]
      samples: 40000                     # per (sampler, NFE, seed) cell
      latents: 10000                     # DPM-OT targets: the first rows of the held-out split
      maps: {paper: maps/paper-11.npz}   # optional: maps fitted elsewhere (e.g. under torchrun)
    metrics:
      features: inception                # or raw
      inception_weights: pt_inception-2015-12-05-6726825d.pth
      fid_stats: cifar10-train.npz       # optional: dpmot fid-stats output (else the train split's features)
      kid: true
      classifier: vit-cifar10.ts         # optional TorchScript classifier: the mode-mixture ratio
    device: cuda
    out: reports/cifar10

Every key is checked before any work: an unknown key, a mistyped value or a missing file is one line.
The run is a benchmark suite (resumable with ``--resume``, progress bars, one result file per cell) and
writes the same report as ``dpmot report``: ``index.md``, figures, ``results.csv`` / ``results.json``.
``--stage fit`` fits the DPM-OT maps only (under ``torchrun`` the Monte Carlo is shared out over the
processes); the next full run reuses them.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CorruptFileError, InputError

SECTIONS = {"name", "data", "model", "protocol", "metrics", "device", "out"}
_KEYS = {
    "data": {"path", "value_range", "name"},
    "model": {"path", "config", "scheduler"},
    "protocol": {"presets", "baselines", "nfe", "seeds", "samples", "latents", "maps", "options"},
    "metrics": {"features", "inception_weights", "fid_stats", "kid", "classifier", "reference_rows"},
}
PRESET_SAMPLERS = {"default": "dpm-ot", "paper": "dpm-ot-paper"}


@dataclass(frozen=True)
class ReproduceConfig:
    name: str
    experiment: object  # bench.experiment.Experiment
    samplers: tuple[str, ...]
    nfes: tuple[int, ...]
    seeds: tuple[int, ...]
    samples: int
    latents: int | None
    maps: dict = field(default_factory=dict)
    device: str = "cpu"
    out: Path = Path("reports/reproduce")
    path: Path = Path(".")


def example_configs() -> dict[str, Path]:
    """The shipped experiment files (``dpmot reproduce --example NAME``), by name."""
    folder = Path(__file__).resolve().parent.parent / "configs"
    return {p.stem: p for p in sorted(folder.glob("*.yml"))}


def _read(path: Path) -> dict:
    if not path.is_file():
        raise CorruptFileError(f"experiment file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            if sys.version_info < (3, 11):
                raise InputError("TOML experiment files need Python >= 3.11 (tomllib); use YAML")
            import tomllib

            config = tomllib.loads(text)
        elif path.suffix.lower() in (".yml", ".yaml"):
            import yaml

            config = yaml.safe_load(text)  # plain data only: no Python objects are constructed
        else:
            raise InputError(f"experiment file {str(path)!r} must end in .yml, .yaml or .toml")
    except InputError:
        raise
    except Exception as err:  # yaml.YAMLError / tomllib.TOMLDecodeError: the parser's first line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        kind = "TOML" if path.suffix.lower() == ".toml" else "YAML"
        raise CorruptFileError(f"{str(path)!r} is not valid {kind} ({first})") from None
    if not isinstance(config, dict):
        raise CorruptFileError(f"{str(path)!r} must hold a mapping of sections ({', '.join(sorted(SECTIONS))})")
    return config


def _section(config: dict, name: str, required: bool) -> dict:
    value = config.get(name)
    if value is None:
        if required:
            raise InputError(f"the experiment file needs a {name!r} section")
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{name} must be a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - _KEYS[name])
    if unknown:
        raise InputError(f"{name} has no key {', '.join(unknown)}; its keys: {', '.join(sorted(_KEYS[name]))}")
    return value


def _ints(value, key: str, low: int) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in values):
        raise InputError(f"{key} must be an integer >= {low} or a non-empty list of them, got {value!r}")
    return tuple(values)


def _int(value, key: str, low: int, optional: bool = False):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{key} must be an integer >= {low}, got {value!r}")
    return value


def _file(value, base: Path, key: str, optional: bool = True) -> str | None:
    if value is None:
        if optional:
            return None
        raise InputError(f"{key} is required")
    if not isinstance(value, str) or not value:
        raise InputError(f"{key} must be a path, got {value!r}")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.exists():
        raise InputError(f"{key}: {str(path)!r} does not exist")
    return str(path)


def load_config(path: str | Path) -> ReproduceConfig:
    """Read and check an experiment file (see the module docstring); nothing runs yet."""
    from ..bench.experiment import Experiment
    from ..bench.suites import ALL_SAMPLERS
    from ..errors import unknown_name

    path = Path(path)
    config = _read(path)
    unknown = sorted(set(config) - SECTIONS)
    if unknown:
        raise InputError(f"the experiment file has no section {', '.join(unknown)}; its sections: "
                         f"{', '.join(sorted(SECTIONS))}")
    base = path.parent
    data, model = _section(config, "data", True), _section(config, "model", False)
    protocol, metrics = _section(config, "protocol", True), _section(config, "metrics", False)
    name = config.get("name", path.stem)
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise InputError(f"name must be a non-empty text without '/', got {name!r}")

    presets = protocol.get("presets", ["paper", "default"])
    presets = presets if isinstance(presets, list) else [presets]
    for preset in presets:
        if preset not in PRESET_SAMPLERS:
            raise unknown_name("protocol.presets entry", preset, PRESET_SAMPLERS)
    baselines = protocol.get("baselines", [])
    baselines = baselines if isinstance(baselines, list) else [baselines]
    for sampler in baselines:
        if sampler not in ALL_SAMPLERS or sampler in PRESET_SAMPLERS.values():
            raise unknown_name("protocol.baselines entry", sampler,
                               [s for s in ALL_SAMPLERS if s not in PRESET_SAMPLERS.values()])
    samplers = tuple(dict.fromkeys([PRESET_SAMPLERS[p] for p in presets] + baselines))
    if not samplers:
        raise InputError("protocol needs at least one preset or baseline")
    maps = protocol.get("maps") or {}
    if not isinstance(maps, dict) or any(k not in presets for k in maps):
        raise InputError(f"protocol.maps must map presets of this protocol ({', '.join(presets)}) to OT files, "
                         f"got {maps!r}")
    options = protocol.get("options") or {}
    if not isinstance(options, dict) or any(k not in samplers or not isinstance(v, dict) for k, v in options.items()):
        raise InputError(f"protocol.options must map samplers of this protocol to option mappings, got {options!r}")
    value_range = data.get("value_range")
    if value_range is not None and (not isinstance(value_range, list) or len(value_range) != 2):
        raise InputError(f"data.value_range must be a list [low, high], got {value_range!r}")
    kid = metrics.get("kid", True)
    if not isinstance(kid, bool):
        raise InputError(f"metrics.kid must be true or false, got {kid!r}")
    experiment = Experiment(
        data=_file(data.get("path"), base, "data.path", optional=False), value_range=value_range,
        name=data.get("name") or name,
        model=model.get("path") if model.get("path") in (None, "exact", "trained") else _file(model.get("path"), base, "model.path"),
        model_config=_file(model.get("config"), base, "model.config"),
        scheduler=_file(model.get("scheduler"), base, "model.scheduler"),
        features=metrics.get("features", "raw"),
        inception_weights=_file(metrics.get("inception_weights"), base, "metrics.inception_weights"),
        fid_stats=_file(metrics.get("fid_stats"), base, "metrics.fid_stats"),
        classifier=_file(metrics.get("classifier"), base, "metrics.classifier"), kid=kid,
        reference_rows=_int(metrics.get("reference_rows"), "metrics.reference_rows", 2, optional=True),
        options={k: dict(v) for k, v in options.items()})
    device = config.get("device", "cpu")
    if not isinstance(device, str):
        raise InputError(f"device must be a text such as cpu or cuda, got {device!r}")
    out = config.get("out", f"reports/{name}")
    if not isinstance(out, str) or not out:
        raise InputError(f"out must be a folder path, got {out!r}")
    return ReproduceConfig(
        name=name, experiment=experiment, samplers=samplers,
        nfes=_ints(protocol.get("nfe", [11]), "protocol.nfe", 1), seeds=_ints(protocol.get("seeds", [0]), "protocol.seeds", 0),
        samples=_int(protocol.get("samples", 1000), "protocol.samples", 2),
        latents=_int(protocol.get("latents"), "protocol.latents", 2, optional=True),
        maps={PRESET_SAMPLERS[k]: _file(v, base, f"protocol.maps.{k}", optional=False) for k, v in maps.items()},
        device=device, out=Path(out) if Path(out).is_absolute() else base / out, path=path)


def suite_of(config: ReproduceConfig, dataset_name: str):
    """The benchmark suite a reproduce config runs: its samplers x NFEs x seeds on the user's dataset."""
    from ..bench.suites import Suite

    nfes = config.nfes
    return Suite(
        config.name, f"{', '.join(config.samplers)} x NFE {{{', '.join(map(str, nfes))}}} x {len(config.seeds)} "
        f"seed(s) on {dataset_name} ({config.samples} samples per cell"
        + (f", {config.latents} latents" if config.latents else "") + f"); experiment file {config.path.name}",
        datasets=(dataset_name,), samplers=config.samplers, nfes=nfes, seeds=config.seeds,
        n_samples={dataset_name: config.samples},
        n_latents={dataset_name: config.latents} if config.latents else {},
        figure_nfe=nfes[0], claim_nfe=nfes[0], reference_nfe=max(nfes),
        regenerate=f"dpmot reproduce {config.path}")


def reproduce(config: ReproduceConfig, *, device=None, out=None, resume: bool = False, progress: bool = True,
              stage: str = "all") -> Path | list[str]:
    """Run a checked config: ``stage="all"`` writes the report (returns index.md's path), ``"fit"`` only
    fits (or, under torchrun, jointly fits) the DPM-OT maps into ``OUT/work/maps`` (returns their paths)."""
    from ..bench.experiment import UserData
    from ..devices import as_device
    from ..io import ensure_writable_dir
    from .build import build_report

    device = as_device(device if device is not None else config.device)
    user = UserData(config.experiment, device, progress)  # every file read and checked before out exists
    user.maps = dict(config.maps)
    out = ensure_writable_dir(Path(out) if out is not None else config.out)
    suite = suite_of(config, user.name)
    if stage == "fit":
        return fit_maps(suite, out, user, device, progress)
    if stage != "all":
        raise InputError(f"stage must be all or fit, got {stage!r}")
    return build_report(suite, out, resume=resume, device=device, progress=progress, user=user)


def fit_maps(suite, out: Path, user, device, progress: bool) -> list[str] | None:
    """Every DPM-OT map of the suite, fitted and saved by the main process (all processes compute); the
    maps' paths on the main process, None on the others."""
    from ..bench.context import Context
    from ..bench.runner import expand
    from ..ot.distributed import process_group

    from ..ot.distributed import is_main_process

    with process_group(device) as device:
        ctx = Context(suite, out / "work", device, progress, user)
        for cell in (c for c in expand(suite) if c.task == "ot-fit"):
            ctx.ot_map(cell.dataset, cell.method, cell.nfe)
        main = is_main_process()
    return sorted(str(p) for p in (out / "work" / "maps").glob("*.npz")) if main else None
