"""Block families, stems and heads: the parts an `Arch` names, each with a table of its knobs.

A family builds one stage of the network, elastic (supernet) or static (sub-network). Its `KNOBS` table names
the family's own knobs (the schema is in `supernet.knobs`). Stems and heads are described the same way, as
`Component`s. Every part registers itself in `supernet.registry` when its module is imported; this package
imports them all and re-exports the schema and the filled registries, so import them from here.

A new family is one new file in this folder, with its stage class decorated by `@register_family(...)` (its FFN
or transition, if new, by `@register_ffn(kind)` / `@register_transition(kind)` plus the kind's name in
`transformer.FFN_KINDS` / `TRANSITION_KINDS`), and one import line below. The registries keep import order, which
fixes the order names are listed and sampled in: a module registers where it is first imported (fwa imports
ghost and transformer; transformer registers no family, which is why mhsa has a file of its own).
Modules inside supernet/ import the schema from `supernet.knobs` and `supernet.registry`, never from here:
this package imports them.
"""

# Import order is registry order (not alphabetical): macro first, so the conv and patch stems/heads lead.
from supernet import macro  # noqa: F401
from supernet.blocks import ghost  # noqa: F401
from supernet.blocks import fwa  # noqa: F401
from supernet.blocks import lightvit  # noqa: F401
from supernet.blocks import lvt  # noqa: F401
from supernet.blocks import saevit  # noqa: F401
from supernet.blocks import mhsa  # noqa: F401
from supernet.knobs import REQUIRED, Knob, StageCheck, block_knobs, is_bool, is_int, is_number, one_of
from supernet.registry import DROP_PATH_BLOCKS, FAMILIES, FFNS, HEADS, STEMS, TRANSITIONS, Component, Family

__all__ = [
    "DROP_PATH_BLOCKS", "FAMILIES", "FFNS", "HEADS", "REQUIRED", "STEMS", "TRANSITIONS", "Component", "Family", "Knob",
    "StageCheck", "block_knobs", "is_bool", "is_int", "is_number", "one_of",
]
