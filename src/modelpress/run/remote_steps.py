"""The run's measurements on other devices (the recipe's ``devices:``): every built artifact,
after this machine has measured it, is measured on each device too; its rows carry the device's
name. Remote rows are measured on every run (not cached: a device's state is not ours to key).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..devices.spec import Device

if TYPE_CHECKING:
    from ..measure.results import Record
    from .pipeline import Pipeline


def resolve_devices(pipe: Pipeline) -> list[Device]:
    """The recipe's devices from its devices file (checked before any training: a typo fails
    the run at once, with the file's line)."""
    from ..devices.spec import load_devices, pick

    recipe = pipe.recipe
    if not recipe.devices:
        return []
    path = Path(recipe.devices_file)
    if not path.is_absolute():
        path = pipe.recipe_path.parent / path
    return pick(load_devices(path), recipe.devices, f"recipe {pipe.recipe_path}: devices")


def measure_on_devices(pipe: Pipeline, devices: list[Device], plans: list) -> list[Record]:
    """Rows of every built artifact of ``plans`` measured on each of ``devices``."""
    from ..devices.remote import measure_on
    from ..measure.bench import BenchJob, _record
    from .steps import bench_settings

    settings = bench_settings(pipe).to_dict()
    built = [(p, job) for p in plans for job in p.jobs if job.built is not None]
    records: list[Record] = []
    for device in devices:
        pipe.log(f"  [run]    measure on {device.name} ({device.url}): {len(built)} artifact(s)")
        todo = [(job.built, p.target, dict(p.options), p.ref) for p, job in built]
        for (p, job), fields in zip(built, measure_on(device, todo, settings, pipe.log)):
            bjob = BenchJob(
                job.built, p.target, job.precision, p.options, model=job.label, family=p.run.family
            )
            records.append(_record(bjob, job.built, fields, job.build_s))
    return records
