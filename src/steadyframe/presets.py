"""Motion presets: named sets of sampling settings a job starts from (no torch).

A job's own ``steps``/``guidance``/``use_dynamic_cfg`` override its preset's values.

- ``balanced``: the CogVideoX model cards' settings, 50 steps, guidance 6, dynamic CFG.
- ``fast``: half the steps for a quick draft; motion and detail are rougher.
- ``quality``: more steps and slightly stronger guidance for cleaner detail; slowest.
- ``high_motion``: stronger guidance with dynamic CFG, which keeps large movements coherent.
- ``subtle``: weak, constant guidance: gentle, small movements close to the prompt's stillness.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from steadyframe.spec import PresetName


@dataclass(frozen=True)
class Preset:
    """Sampling settings: denoising ``steps``, CFG ``guidance`` and whether guidance ramps up."""

    name: PresetName
    steps: int
    guidance: float
    use_dynamic_cfg: bool
    description: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("balanced", 50, 6.0, True, "the model card's settings: good motion and detail"),
        Preset("fast", 25, 6.0, True, "half the steps: a quick draft, rougher detail"),
        Preset("quality", 75, 7.0, True, "more steps, firmer guidance: cleaner detail, slowest"),
        Preset("high_motion", 50, 8.0, True, "strong ramped guidance: large, coherent movement"),
        Preset("subtle", 50, 4.5, False, "weak constant guidance: gentle, small movement"),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ValueError naming the choices when there is none."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
